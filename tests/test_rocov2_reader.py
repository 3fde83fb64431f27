"""The one ROCOv2 reader: layouts, URLs, and clear errors for wrong paths and columns."""

from __future__ import annotations

import shutil

import fsspec
import pyarrow as pa
import pytest
from helpers import jpeg_bytes, rocov2_table, write_parquet

from core.data.rocov2 import DataLayoutError, read_split, resolve_split


def test_reads_synthetic_splits(synthetic_dir):
    for split, n in (("train", 256), ("validation", 64), ("test", 64)):
        table = read_split(synthetic_dir, split)
        assert table.num_rows == n
        assert {"image", "image_id", "caption", "cui"} <= set(table.column_names)
    files = resolve_split(synthetic_dir, "train")
    assert len(files.paths) == 2  # 256 rows at 128 per shard


def test_hub_layout_with_data_subdir_and_file_list(synthetic_dir, tmp_path):
    (tmp_path / "data").mkdir()
    for p in synthetic_dir.glob("test-*.parquet"):
        shutil.copy(p, tmp_path / "data" / p.name)
    assert read_split(tmp_path, "test").num_rows == 64
    listed = sorted(str(p) for p in synthetic_dir.glob("train-*.parquet"))
    assert read_split(listed, "ignored").num_rows == 256
    assert read_split(listed[0], "ignored").num_rows == 128


def test_fsspec_urls(synthetic_dir):
    # file:// and an in-memory filesystem go through the same fsspec path as s3:// and hf://
    assert read_split(f"file://{synthetic_dir}", "test").num_rows == 64
    mem = fsspec.filesystem("memory")
    for p in synthetic_dir.glob("validation-*.parquet"):
        mem.pipe(f"/rocov2/data/{p.name}", p.read_bytes())
    assert read_split("memory://rocov2", "validation").num_rows == 64


def test_missing_path_names_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        resolve_split(str(missing), "train")
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        resolve_split([str(tmp_path / "nope.parquet")], "train")


def test_missing_split_lists_what_is_there(synthetic_dir):
    with pytest.raises(FileNotFoundError, match="split 'dev'.*train-00000-of-00002"):
        resolve_split(synthetic_dir, "dev")


@pytest.mark.parametrize("dropped", ["caption", "image", "image_id"])
def test_missing_column_names_column_and_file(tmp_path, dropped):
    table = rocov2_table([{"image": jpeg_bytes(), "image_id": "a", "caption": "c"}])
    write_parquet(table.drop_columns([dropped]), tmp_path / "train-00000-of-00001.parquet")
    with pytest.raises(DataLayoutError, match=f"train-00000-of-00001.parquet.*'{dropped}'"):
        resolve_split(tmp_path, "train")


def test_not_parquet_is_a_clear_error(tmp_path):
    (tmp_path / "train-00000-of-00001.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataLayoutError, match="not a readable Parquet file"):
        resolve_split(tmp_path, "train")


def test_plain_binary_image_column_and_missing_cui(tmp_path):
    table = pa.table({"image": pa.array([jpeg_bytes()], pa.binary()), "image_id": ["x"],
                      "caption": ["a caption"]})
    write_parquet(table, tmp_path / "test-00000-of-00001.parquet")
    out = read_split(tmp_path, "test")
    assert out.column("cui").to_pylist() == [[]]


def test_real_sample_loads(real_sample):
    for split, n in (("train", 244), ("validation", 39), ("test", 38)):
        table = read_split(real_sample, split)
        assert table.num_rows == n
        assert "caption_group" in table.column_names


def test_row_groups_up_to_max_rows(synthetic_dir):
    from core.data.rocov2 import resolve_split, row_groups

    files = resolve_split(synthetic_dir, "train")
    every = row_groups(files)
    assert sum(n for _, _, n in every) == 256
    limited = row_groups(files, 100)  # 2 shards x 1 row group of 128: the first is enough
    assert limited == every[:len(limited)] and len(limited) < len(every)
    assert sum(n for _, _, n in limited) >= 100 > sum(n for _, _, n in limited[:-1])
    assert row_groups(files, 10_000) == every


def test_a_splits_identity_follows_its_bytes_not_its_place_or_time(synthetic_dir, tmp_path):
    """Cached work (each split's frozen store above all) is keyed on ``split_identity``. A
    dataset copied elsewhere and re-synced with new modification times (as ../shared is at
    every session start) keeps its identity, so nothing is encoded again; the same file with
    one byte changed, its size and modification time kept, does not, as a later run sees it
    (a new process: within one, a digest is computed once per path, size and time)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from core.data.rocov2 import split_identity

    before = split_identity(resolve_split(synthetic_dir, "validation"))
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_dir, copy)
    for p in copy.glob("*.parquet"):
        os.utime(p, (1e9, 1e9))
    assert split_identity(resolve_split(str(copy), "validation")) == before

    shard = next(copy.glob("validation-*.parquet"))
    data, stat = bytearray(shard.read_bytes()), shard.stat()
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    later = subprocess.run(
        [sys.executable, "-c", "import json, sys; from core.data.rocov2 import resolve_split, "
         "split_identity; print(json.dumps(split_identity(resolve_split(sys.argv[1], "
         "'validation'))))", str(copy)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    changed = __import__("json").loads(later.stdout)
    assert changed["shards"][0][:2] == before["shards"][0][:2]  # same name, same size
    assert changed != before


def test_a_digest_the_store_reports_is_used_without_reading_the_object():
    """S3's ETag, the Hub's LFS sha256: an object store's own digest of the bytes stands for
    them, so keying cached work on a remote split reads no image."""
    from core import storage

    class Unreadable:
        protocol = "s3"

        def open(self, *args, **kwargs):
            raise AssertionError("the object was read")

    fs = Unreadable()
    assert storage.content_digest(fs, "bucket/a.parquet", {"size": 9, "ETag": '"9b2c"'}) == "ETag:9b2c"
    assert storage.content_digest(fs, "repo/b.parquet", {
        "size": 9, "blob_id": "f00", "lfs": {"sha256": "ab12", "size": 9}}) == "sha256:ab12"
