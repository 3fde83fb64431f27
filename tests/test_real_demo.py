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


@pytest.mark.timeout(900)
def test_the_real_data_demo_runs_every_stage_and_encodes_each_split_once(tmp_path):
    data = roco_slice(tmp_path / "roco")
    out = tmp_path / "run"
    rocoray = Path(sys.executable).parent / "rocoray"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
    done = subprocess.run([str(rocoray), "demo", "--data", str(data), "--config", "roco_cpu",
                           "--out", str(out), "--epochs", "2", "--explain-cases", "2",
                           "--set", "train.batch_size=32"],
                          capture_output=True, text=True, env=env, timeout=840)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
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
