"""The README's real-data command as a user runs it: ``rocoray demo --data <real ROCO>
--config roco_cpu``, in a subprocess, through every stage (prepare, both trainings, the three
scoring jobs, every analysis, the explanations, the report) on a slice of the embedded CC BY
ROCO figures small enough for CI. The real demo once crashed in its last stage after 39
minutes (Grad-CAM on a frozen tower) and no test ran that far."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROCO_CCBY = Path(__file__).resolve().parents[1] / "datasets" / "roco-ccby"
ROWS = {"train": 96, "validation": 48, "test": 48}

# What the report of a real-data run must show: every analysis that real figures allow.
SECTIONS = ["## Verdict", "## Retrieval quality", "## Report quality of the retrieved captions",
            "## Modality gap", "## Concept detection", "## Concept-aware retrieval",
            "## Explanations: agreement and faithfulness", "## Training", "## Speed and cost",
            "## Examples"]


def roco_slice(out: Path) -> Path:
    out.mkdir(parents=True)
    for split, n in ROWS.items():
        table = pq.read_table(ROCO_CCBY / f"{split}-00000-of-00001.parquet").slice(0, n)
        pq.write_table(table, out / f"{split}-00000-of-00001.parquet", row_group_size=32)
    return out


@pytest.fixture(scope="module")
def real_demo(tmp_path_factory) -> tuple[Path, str]:
    """(the run directory, its log) of the README's real-data command on the slice."""
    tmp = tmp_path_factory.mktemp("real-demo")
    data = roco_slice(tmp / "roco")
    out = tmp / "run"
    rocoray = Path(sys.executable).parent / "rocoray"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
    done = subprocess.run([str(rocoray), "demo", "--data", str(data), "--config", "roco_cpu",
                           "--out", str(out), "--epochs", "2", "--explain-cases", "2",
                           "--set", "train.batch_size=32"],
                          capture_output=True, text=True, env=env, timeout=840)
    return out, done.stdout + done.stderr + f"\nexit code {done.returncode}"


@pytest.mark.timeout(900)
def test_the_real_data_demo_runs_every_stage_and_encodes_each_split_once(real_demo):
    out, log = real_demo
    assert log.endswith("exit code 0"), log[-4000:]
    assert "Traceback" not in log, log[-4000:]

    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["gallery_size"] == ROWS["test"]
    report = (out / "eval" / "report.md").read_text()
    for heading in SECTIONS:
        assert heading in report, heading
    assert "failed on this data" not in report  # every analysis ran on real figures
    assert metrics["explanations"]["available"] and metrics["explanations"]["cases"] == 2
    assert (out / "eval" / "report.html").exists()

    summary = json.loads((out / "summary.json").read_text())
    for stage in ("prepare", "train two_tower", "train fusion", "score and evaluate",
                  "evaluate: score fusion", "evaluate: explanations", "evaluate: report"):
        assert summary["stages"][stage]["seconds"] > 0, stage
        assert summary["stages"][stage]["peak_rss_mb"] > 0, stage

    # The fusion run keeps its last checkpoint (train.fusion_keep): only its last epoch scored
    # every validation pair and chose the fused score's alpha, which that checkpoint records;
    # the first epoch validated from the ITC top-k candidates.
    fusion = json.loads((out / "train" / "fusion" / "result.json").read_text())
    assert fusion["keep"] == "last" and fusion["best_checkpoint"] == fusion["latest_checkpoint"]
    first, last = fusion["history"]
    assert "val/mean_recall" not in first and "val/score_alpha" not in first
    assert first["val/rerank/mean_recall"] >= 0 and first["val/itc/mean_recall"] >= 0
    assert last["val/score_alpha"] >= 0 and last["val/mean_recall"] >= 0
    kept = yaml.safe_load((out / "train" / "fusion" / fusion["best_checkpoint"]
                           / "config.yaml").read_text())
    assert kept["model"]["fusion"]["score_alpha"] == last["val/score_alpha"]

    # Encode once: the frozen towers ran over each split exactly once (one store per split);
    # the fusion training and every scoring job reused them.
    stores = sorted((out / "cache").glob("frozen-*/meta.json"))
    assert len(stores) == 3, stores
    assert sorted(json.loads(p.read_text())["rows"] for p in stores) == [48, 48, 96]
    stages = sorted(json.loads(p.read_text()).get("stage", {}).get("splits", [])
                    for p in stores)  # train and validation: one stage, one actor start-up
    assert stages == [["test"], ["train", "validation"], ["train", "validation"]], stages
    assert log.count("frozen encoders ran once over") == 3, log[-4000:]
    assert log.count("outputs of 96 rows reused") >= 2  # the fusion training and cross-split



@pytest.mark.timeout(600)
def test_the_fusion_variants_bench_trains_on_the_stored_towers_and_its_own_image_blocks(
        real_demo, tmp_path):
    """`python -m bench.fusion_variants --run <a roco_cpu demo>` (the README's fusion variants
    table), run as its docstring says on the demo above, every variant for a tenth of its
    epochs: those trained on the demo's frozen store and those whose image tower's last
    blocks are fine-tuned for fusion only (the bench encodes their 14x14 prefix itself).
    The finer-grid variant reads the frozen image tower at 448 px (its 14x14 grid, encoded by
    the bench too). Each is scored on validation three ways; the kept one is the cheapest
    within the paired interval of the best; the test split is scored for the preset and the
    kept variant only."""
    out, log = real_demo
    assert log.endswith("exit code 0"), log[-4000:]
    results = tmp_path / "fusion_variants.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "bench.fusion_variants", "--run", str(out),
                           "--epochs-scale", "0.1", "--seeds", "2", "--out", str(results)],
                          capture_output=True, text=True, env=env, timeout=540,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    result = json.loads(results.read_text())

    assert result["test_items"] == ROWS["test"]
    rows = {r["variant"]: r for r in result["variants"]}
    own_blocks = [name for name, r in rows.items()
                  if "model.image.freeze_stages=7" in r["overrides"]]
    assert len(own_blocks) == 2 and len(rows) > 2
    assert done.stdout.count("frozen layers to (7, -1, 224) encoded") == 1  # once, for both
    # the finer grid reads the same frozen tower at 448 px: its own inputs, encoded once
    finer = [name for name, r in rows.items() if "model.image.image_size=448" in r["overrides"]]
    assert len(finer) == 1 and rows[finer[0]]["own_encode_seconds"] > 0
    assert done.stdout.count("frozen layers to (-1, -1, 448) encoded") == 1
    for row in rows.values():
        assert row["train_seconds"] > 0
        assert set(row["validation"]) == {"itm", "fused", "rerank"}
        for rule in row["validation"].values():
            assert 0 <= rule["mean_recall"] <= 1
        assert row["val_mean_recall"] == max(v["mean_recall"] for v in row["validation"].values())
    # kept on validation: the cheapest whose paired interval against the best reaches 0
    best = max(rows.values(), key=lambda r: r["val_mean_recall"])
    assert [n for n, r in rows.items() if r["best"]] == [best["variant"]]
    cost = {n: r["own_encode_seconds"] + r["train_seconds"] + r["validation_all_pairs_seconds"]
            for n, r in rows.items()}
    assert all(cost[n] > 0 for n in own_blocks) and all(
        rows[n]["own_encode_seconds"] > 0 for n in own_blocks)
    within = [n for n, r in rows.items() if r["val_minus_best"]["high"] >= 0]
    assert result["one_seed"] == {"best": best["variant"],
                                  "kept": min(within, key=cost.__getitem__)}
    presets = [n for n, r in rows.items() if r["preset"]]  # the one roco_cpu equals today
    assert len(presets) == 1
    # the second round: the first round's best and kept and the preset, with 2 seeds each,
    # per-query scores averaged over the seeds; its kept is the bench's
    check = result["seed_check"]
    finalists = {result["one_seed"]["best"], result["one_seed"]["kept"], *presets}
    assert set(check["variants"]) == finalists and check["seeds"] == 2
    for name, c in check["variants"].items():
        assert c["seeds"] == [rows[name]["seed"], rows[name]["seed"] + 1]
        assert c["val_mean_recall_by_seed"][0] == rows[name]["val_mean_recall"]
        assert c["val_mean_recall"] == pytest.approx(np.mean(c["val_mean_recall_by_seed"]))
    assert check["best"] == max(finalists, key=lambda n: check["variants"][n]["val_mean_recall"])
    within = [n for n in finalists if check["variants"][n]["minus_best"]["high"] >= 0]
    kept = rows[min(within, key=cost.__getitem__)]
    assert check["kept"] == result["kept"] == kept["variant"] and kept.get("kept")
    assert [n for n, r in rows.items() if r.get("kept")] == [kept["variant"]]
    assert [n for n, r in rows.items() if "test" in r] == sorted({*presets, kept["variant"]},
                                                                key=list(rows).index)
    for row in rows.values():
        for rule, ci in row.get("test", {}).items():
            assert ci["t2i/R@10"]["n"] == ROWS["test"], rule


@pytest.mark.timeout(600)
def test_the_fusion_learning_curve_bench_retrains_both_models_on_nested_fractions(
        real_demo, tmp_path):
    """`python -m bench.fusion_learning_curve --run <a roco_cpu demo>` (the README's learning
    curve), run as its docstring says on the demo above, with short epochs: for each fraction
    and seed both models are trained on the demo's stored frozen outputs of that many
    training pairs, and only the validation split is scored. Each fraction's figures are the
    seeds' mean, its margins the fusion rules minus the two-tower model on the same queries,
    and the trend per doubling is a slope with its interval."""
    out, log = real_demo
    assert log.endswith("exit code 0"), log[-4000:]
    results = tmp_path / "curve.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "bench.fusion_learning_curve", "--run", str(out),
                           "--fractions", "1", "0.5", "--seeds", "2", "--epochs-scale", "0.1",
                           "--out", str(results)],
                          capture_output=True, text=True, env=env, timeout=540,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    result = json.loads(results.read_text())
    assert (result["train_items"], result["validation_items"]) == (ROWS["train"],
                                                                  ROWS["validation"])
    table = result["fractions"]
    assert [r["fraction"] for r in table] == [0.5, 1.0]
    assert [r["train_pairs"] for r in table] == [ROWS["train"] // 2, ROWS["train"]]
    runs = result["runs"]
    assert sorted((r["fraction"], r["seed"]) for r in runs) == [(0.5, 0), (0.5, 1), (1.0, 0),
                                                                (1.0, 1)]
    for run in runs:
        assert 1 <= run["two_tower"]["best_epoch"] <= run["two_tower"]["epochs"]
        assert run["fusion"]["train_seconds"] > 0
        assert set(run["fusion"]) >= {"itm", "fused", "rerank"}
    for row in table:
        mine = [r for r in runs if r["fraction"] == row["fraction"]]
        assert row["seeds"] == 2
        assert row["two_tower"] == pytest.approx(np.mean([r["two_tower"]["mean_recall"]
                                                          for r in mine]))
        for rule in ("itm", "fused", "rerank"):
            assert row[rule] == pytest.approx(np.mean([r["fusion"][rule]["mean_recall"]
                                                       for r in mine]))
            margin = row[f"{rule}_minus_two_tower"]
            assert margin["value"] == pytest.approx(row[rule] - row["two_tower"])
            assert margin["low"] <= margin["value"] <= margin["high"]
    for rule in ("itm", "fused", "rerank"):
        trend = result["trend_per_doubling"][rule]  # two fractions, one doubling apart
        gain = (table[1][f"{rule}_minus_two_tower"]["value"]
                - table[0][f"{rule}_minus_two_tower"]["value"])
        assert trend["value"] == pytest.approx(gain, abs=1e-9)
        assert trend["low"] <= trend["value"] <= trend["high"]
    assert Path(results.with_suffix(".png")).stat().st_size > 0


@pytest.mark.timeout(600)
def test_the_benches_that_read_a_demo_checkpoint_record_which_one_they_measured(
        real_demo, tmp_path):
    """`bench.cpu_bf16` and `bench.pair_batching` read a demo run's fusion checkpoint (the
    README rows behind roco_cpu's bf16 and rerank batch size). A demo rerun replaces that
    checkpoint in place, so each results file must name the checkpoint it measured: its
    resolved path and the digest of its weights, not the run directory alone. The demo's own
    results file (`bench.demo_run`) names the same checkpoint by the same digest, so a bench
    row and the demo row it came from match by weights."""
    import hashlib

    from core.checkpoint import resolve_checkpoint

    out, log = real_demo
    assert log.endswith("exit code 0"), log[-4000:]
    fusion = Path(resolve_checkpoint(out / "train" / "fusion"))
    digest = hashlib.blake2b((fusion / "model.safetensors").read_bytes(), digest_size=16)
    other = hashlib.blake2b(
        (Path(resolve_checkpoint(out / "train" / "two_tower")) / "model.safetensors")
        .read_bytes(), digest_size=16)
    assert digest.hexdigest() != other.hexdigest()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
    runs = {"pair_batching": ["--run", str(out), "--repeats", "1"],
            "cpu_bf16": ["--checkpoint", str(out / "train" / "fusion"),
                         "--data", str(out.parent / "roco")],
            "demo_run": ["--name", "real_demo", "--run", str(out)]}
    for bench, args in runs.items():
        results = tmp_path / f"{bench}.json"
        done = subprocess.run([sys.executable, "-m", f"bench.{bench}", *args,
                               "--out", str(results)], capture_output=True, text=True,
                              env=env, timeout=280, cwd=Path(__file__).resolve().parents[1])
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        written = json.loads(results.read_text())
        record = written["checkpoints"]["fusion"] if bench == "demo_run" else written["checkpoint"]
        assert record["kind"] == "fusion", bench
        assert record["weights"]["blake2b"] == digest.hexdigest(), bench
        if bench == "demo_run":  # and the two-tower the demo evaluated, by its own weights
            assert (written["checkpoints"]["two_tower"]["weights"]["blake2b"]
                    == other.hexdigest())
        assert Path(record["path"]).name == fusion.name, bench
        assert record["model"]["fusion_width"] == yaml.safe_load(
            (fusion / "config.yaml").read_text())["model"]["fusion"]["width"]
