"""The ROCOv2 Parquet layout and its one reader.

ROCOv2 on the Hugging Face hub (``eltorio/ROCOv2-radiology``) is a set of Parquet shards
``data/{train,validation,test}-*.parquet`` written by ``datasets``:

    image     struct{bytes: binary, path: string}   encoded PNG/JPEG
    image_id  string
    caption   string
    cui       list<string>                          UMLS concept ids (optional here)

and optionally ``caption_group`` (string): rows with the same value are correct answers for
each other (without it, rows with the same normalised caption are).

``resolve_split`` finds a split's shards in a local directory, a list of files, or any
fsspec URL (``s3://``, ``gs://``, ``hf://datasets/eltorio/ROCOv2-radiology``), and checks
every shard's columns before anything is read, so a bad path or a missing column fails at
once with its name instead of deep inside a distributed job.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from core import storage

REQUIRED_COLUMNS = ("image", "image_id", "caption")
OPTIONAL_COLUMNS = ("cui", "caption_group")

# The Arrow schema ``datasets`` writes for the ROCOv2 columns.
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
ROCOV2_SCHEMA = pa.schema([
    ("image", IMAGE_TYPE),
    ("image_id", pa.string()),
    ("caption", pa.string()),
    ("cui", pa.list_(pa.string())),
])


class DataLayoutError(ValueError):
    """The data does not follow the ROCOv2 layout (a missing column, a wrong type)."""


@dataclass(frozen=True)
class SplitFiles:
    """The Parquet shards of one split, and the filesystem they live on."""

    source: str
    split: str
    paths: tuple[str, ...]
    filesystem: object  # an fsspec AbstractFileSystem


def _split_pattern_matches(fs, root: str, split: str) -> list[str]:
    found: list[str] = []
    for pattern in (f"{split}-*.parquet", f"data/{split}-*.parquet", f"{split}/*.parquet"):
        found.extend(fs.glob(posixpath.join(root, pattern)))
    return sorted(set(found))


def resolve_split(source: str | Sequence[str], split: str,
                  storage_options: dict | None = None, check: bool = True) -> SplitFiles:
    """Find the shards of ``split`` under ``source`` and check their columns.

    ``source`` is a directory (``{split}-*.parquet`` or ``data/{split}-*.parquet`` inside),
    a single Parquet file, a list of Parquet files, or a URL of any of these.
    """
    if isinstance(source, (list, tuple)):
        if not source:
            raise FileNotFoundError("empty list of ROCOv2 Parquet files")
        fs, _ = storage.filesystem(str(source[0]), storage_options)
        paths = []
        for item in source:
            _, path = storage.filesystem(str(item), storage_options)
            if not fs.exists(path):
                raise FileNotFoundError(f"ROCOv2 Parquet file not found: {item}")
            paths.append(path)
        label = f"{len(paths)} file(s) starting {source[0]}"
    else:
        source = str(source)
        fs, root = storage.filesystem(source, storage_options)
        if not fs.exists(root):
            raise FileNotFoundError(f"ROCOv2 data path does not exist: {source}")
        if fs.isfile(root):
            paths = [root]
        else:
            paths = _split_pattern_matches(fs, root, split)
            if not paths:
                listing = sorted(posixpath.basename(p) for p in fs.ls(root, detail=False))[:20]
                raise FileNotFoundError(
                    f"no Parquet shards for split {split!r} under {source} (looked for "
                    f"{split}-*.parquet, data/{split}-*.parquet, {split}/*.parquet; "
                    f"found: {', '.join(listing) or 'nothing'})")
        label = source
    files = SplitFiles(source=label, split=split, paths=tuple(paths), filesystem=fs)
    if check:
        check_columns(files)
    return files


def check_columns(files: SplitFiles) -> None:
    """Raise ``DataLayoutError`` naming the column and the file if a shard lacks one."""
    for path in files.paths:
        try:
            with files.filesystem.open(path, "rb") as handle:
                schema = pq.read_schema(handle)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataLayoutError(f"{path}: not a readable Parquet file ({exc})") from exc
        for column in REQUIRED_COLUMNS:
            if column not in schema.names:
                raise DataLayoutError(
                    f"{path}: missing required column {column!r} "
                    f"(has: {', '.join(schema.names)})")
        image_type = schema.field("image").type
        ok = image_type in (pa.binary(), pa.large_binary()) or (
            pa.types.is_struct(image_type) and image_type.get_field_index("bytes") >= 0)
        if not ok:
            raise DataLayoutError(
                f"{path}: column 'image' must be struct{{bytes, path}} or binary, "
                f"got {image_type}")


def split_identity(files: SplitFiles) -> dict:
    """What identifies a split's content for cached work: the split, and each shard's file
    name, size and content digest (``storage.content_digest``). Never where the shards live
    or when they were written: a moved, copied or re-synced dataset keeps its cached work
    (its frozen store above all), and changed bytes never reuse it."""
    shards = []
    for path in files.paths:
        info = files.filesystem.info(path)
        shards.append([posixpath.basename(path), int(info.get("size") or 0),
                       storage.content_digest(files.filesystem, path, info)])
    return {"split": files.split, "shards": shards}


def columns_to_read(files: SplitFiles) -> list[str]:
    """The required columns, plus the optional ones (``OPTIONAL_COLUMNS``) that the first
    shard has."""
    with files.filesystem.open(files.paths[0], "rb") as handle:
        names = pq.read_schema(handle).names
    return list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in names]


def row_groups(files: SplitFiles, max_rows: int | None = None) -> list[tuple[str, int, int]]:
    """(path, row group, rows) for the row groups of the split: the units a distributed
    reader spreads over tasks, known from the Parquet footers alone. With ``max_rows``, only
    the leading units that hold the first ``max_rows`` rows (footers past them are not read)."""
    units, total = [], 0
    for path in files.paths:
        with files.filesystem.open(path, "rb") as handle:
            meta = pq.ParquetFile(handle).metadata
        for g in range(meta.num_row_groups):
            if max_rows is not None and total >= max_rows:
                return units
            units.append((path, g, meta.row_group(g).num_rows))
            total += units[-1][2]
    return units


def read_row_group(filesystem, path: str, group: int, columns: Sequence[str]) -> pa.Table:
    """One row group of one shard, with the optional columns filled in."""
    with filesystem.open(path, "rb") as handle:
        pf = pq.ParquetFile(handle)
        wanted = [c for c in columns if c in pf.schema_arrow.names]
        return normalize_table(pf.read_row_group(group, columns=wanted))


def read_split(source: str | Sequence[str], split: str, columns: Sequence[str] | None = None,
               storage_options: dict | None = None, max_rows: int | None = None) -> pa.Table:
    """Read one split into memory (single process). For small data, tests and reports;
    the Ray jobs stream the same ``SplitFiles`` row group by row group (``read_row_group``)."""
    files = resolve_split(source, split, storage_options)
    return read_files(files, columns=columns, max_rows=max_rows)


def read_files(files: SplitFiles, columns: Sequence[str] | None = None,
               max_rows: int | None = None) -> pa.Table:
    tables = []
    total = 0
    for path in files.paths:
        with files.filesystem.open(path, "rb") as handle:
            schema = pq.read_schema(handle)
            wanted = None if columns is None else [c for c in columns if c in schema.names]
            handle.seek(0)
            table = pq.read_table(handle, columns=wanted)
        tables.append(normalize_table(table))
        total += table.num_rows
        if max_rows is not None and total >= max_rows:
            break
    table = pa.concat_tables(tables, promote_options="default")
    if max_rows is not None:
        table = table.slice(0, max_rows)
    return table


def image_bytes_column(table: pa.Table) -> list:
    """The encoded image bytes of each row (None where missing), whatever the image column's
    form: struct{bytes, path} (as ``datasets`` writes it) or plain binary."""
    import pyarrow.compute as pc

    column = table.column("image")
    if pa.types.is_struct(column.type):
        # struct_field keeps the parent's nulls (StructArray.field would drop them).
        column = pc.struct_field(column, "bytes")
    return column.to_pylist()


def normalize_table(table: pa.Table) -> pa.Table:
    """Give a shard the optional columns it lacks (an empty ``cui`` list), so that shards
    from different sources concatenate."""
    if "cui" not in table.column_names:
        table = table.append_column("cui", pa.array([[] for _ in range(table.num_rows)],
                                                    type=pa.list_(pa.string())))
    return table
