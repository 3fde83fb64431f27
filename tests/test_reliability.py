"""Nothing lost, nothing stale: cached work keyed on everything that produced it, runs that
can move, strict JSON, and a demo that never replaces an earlier run by mistake."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from core import storage
from core.checkpoint import RUN_RESULT, resolve_checkpoint, save_checkpoint
from core.config import load_config
from core.models import build_model
from core.work_cache import keyed_dir
from tests.helpers import with_scoring

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_checkpoints(tiny_tokenizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        cfg = load_config("tiny", ["model.kind=fusion"])
        cfg.model.text.vocab_size = len(tiny_tokenizer)
        out[name] = str(save_checkpoint(root / name, build_model(cfg.model), cfg, tiny_tokenizer))
    return out


def test_cached_work_is_keyed_on_everything_that_produced_it(two_checkpoints, synthetic_dir,
                                                            tmp_path, caplog):
    """The score job's keys for encoded features and finished items change with each input
    (no Ray needed: validation and keys come before Ray starts)."""
    from ray_jobs.gallery import features_key
    from ray_jobs.score import ScoreConfig, prepare
    from ray_jobs.score_methods import fusion_items_key

    other_data = tmp_path / "copy"  # the same bytes elsewhere: a copy, a re-sync
    shutil.copytree(synthetic_dir, other_data)
    changed_data = tmp_path / "changed"  # the same names, one row fewer in the test split
    shutil.copytree(synthetic_dir, changed_data)
    shard = sorted(changed_data.glob("test-*.parquet"))[0]
    pq.write_table(pq.read_table(shard).slice(1), shard)
    base = dict(model="fusion", checkpoint=two_checkpoints["a"], data=str(synthetic_dir),
                out=str(tmp_path / "o"), k=5)

    def keys(block=16, chunk=8, **changes):
        job = prepare(ScoreConfig(**with_scoring(**{**base, **changes})))
        fkey = features_key(job, "fusion", block)
        return fkey, fusion_items_key(job, "fusion", fkey, chunk)

    reference = keys()
    variants = {
        "checkpoint": keys(checkpoint=two_checkpoints["b"]),
        "data content": keys(data=str(changed_data)),
        "split": keys(split="validation"),
        "max items": keys(max_items=32),
        "block": keys(block=32),
        "chunk": keys(chunk=4),
        "k": keys(k=3),
        "precision": keys(precision="bf16"),
    }
    for what, (_, ikey) in variants.items():
        assert ikey != reference[1], f"changing the {what} must not reuse finished items"
    for what in ("checkpoint", "data content", "split", "max items", "block", "precision"):
        assert variants[what][0] != reference[0], f"changing the {what} must not reuse features"
    # the data's bytes, not where they live or when they were written, identify it: a copy
    # elsewhere with new modification times reuses the encoded features and finished items
    for p in other_data.rglob("*.parquet"):
        os.utime(p, (1e9, 1e9))
    assert keys(data=str(other_data)) == reference
    # the model kind and method: rerank's items are keyed apart from fusion's, and a two-tower
    # gallery apart from a fusion one (the checkpoint identity carries the kind)
    job = prepare(ScoreConfig(**with_scoring(**base)))
    assert fusion_items_key(job, "fusion", reference[0], 8) != \
        fusion_items_key(job, "rerank", reference[0], 8)
    assert reference[0]["checkpoint"]["kind"] == "fusion"

    # a changed key gets its own directory (the earlier one stays) and the log says why
    root = str(tmp_path / "cache")
    first, existed = keyed_dir(root, "items", reference[1])
    assert not existed and keyed_dir(root, "items", reference[1]) == (first, True)
    with caplog.at_level(logging.INFO, logger="rocoray.cache"):
        second, existed = keyed_dir(root, "items", variants["k"][1])
    assert not existed and second != first and Path(first).exists()
    assert "came from other inputs: k)" in caplog.text


def test_runs_are_relocatable_and_a_missing_checkpoint_says_so(two_checkpoints, tmp_path):
    run = tmp_path / "runs" / "fu"
    shutil.copytree(two_checkpoints["a"], run / "checkpoint_epoch_0001")
    storage.write_json(run, RUN_RESULT, {"best_checkpoint": "checkpoint_epoch_0001"})
    moved = tmp_path / "elsewhere" / "fu"
    shutil.copytree(run, moved)
    shutil.rmtree(run)
    assert resolve_checkpoint(moved) == str(moved / "checkpoint_epoch_0001")
    shutil.rmtree(moved / "checkpoint_epoch_0001")
    with pytest.raises(FileNotFoundError, match="its checkpoint checkpoint_epoch_0001 is missing"):
        resolve_checkpoint(moved)
    with pytest.raises(FileNotFoundError, match="checkpoint path does not exist"):
        resolve_checkpoint(tmp_path / "nowhere")


def test_json_is_strict(tmp_path):
    storage.write_json(tmp_path, "m.json", {"slope": float("nan"), "x": [1.0, float("inf")],
                                            "ok": 0.5, "text": "30 °C"})
    raw = (tmp_path / "m.json").read_text(encoding="utf-8")

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    assert json.loads(raw, parse_constant=refuse) == {"slope": None, "x": [1.0, None], "ok": 0.5,
                                                      "text": "30 °C"}


def test_slopes_are_fitted_only_where_they_mean_something():
    from core.report import fit_exponent, slope_text

    assert fit_exponent([38], [0.5]) is None  # one size (the 38-row real sample)
    assert fit_exponent([100, 200, 300], [1.0, 4.0, 9.0]) is None  # spans 3x only
    assert fit_exponent([100, 200, 400], [0.001, 0.002, 0.004]) is None  # below the noise floor
    assert fit_exponent([100, 200, 400], [1.0, 4.0, 16.0]) == pytest.approx(2.0)
    assert slope_text([38], [0.5]).startswith("slope not measured")


def _tree_digest(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_typo_in_demo_data_leaves_the_previous_run_untouched(tmp_path):
    previous = tmp_path / "demo"
    (previous / "eval").mkdir(parents=True)
    (previous / "summary.json").write_text('{"minutes": 7.0}')
    (previous / "eval" / "report.html").write_text("<html>earlier results</html>")
    before = _tree_digest(previous)
    for overwrite in ([], ["--overwrite"]):  # not even --overwrite touches it before checks
        out = subprocess.run([sys.executable, "-m", "ray_jobs.demo", "--data",
                              str(tmp_path / "chest-xray-sampel"), "--out", str(previous),
                              *overwrite], capture_output=True, text=True, timeout=120,
                             cwd=REPO, env={**os.environ})
        assert out.returncode == 2
        assert out.stderr.strip().splitlines() == [
            f"rocoray demo: error: ROCOv2 data path does not exist: {tmp_path / 'chest-xray-sampel'}"]
        assert "Ray" not in out.stdout + out.stderr  # refused before Ray starts
        assert _tree_digest(previous) == before
    existing = subprocess.run([sys.executable, "-m", "ray_jobs.demo", "--data",
                               str(REPO / "data-that-is-not-there"), "--out", str(previous)],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
    assert existing.returncode == 2


def test_demo_refuses_to_replace_an_earlier_run_without_overwrite(synthetic_dir, tmp_path):
    from ray_jobs.demo import DemoConfig, check
    from ray_jobs.options import UserError

    previous = tmp_path / "demo"
    previous.mkdir()
    (previous / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="already holds a demo run; pass --overwrite"):
        check(DemoConfig(data=str(synthetic_dir), out=str(previous)))
    assert DemoConfig(data="../shared/data/chest-xray-sample").out_dir() == \
        Path("runs/demo-chest-xray-sample")  # the default output depends on the data
    assert DemoConfig().out_dir() == Path("runs/demo")
