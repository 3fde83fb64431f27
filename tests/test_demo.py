"""The main job, end to end in a short form, on the REAL chest X-ray sample: prepare ->
train both models -> a 2-trial Tune stage -> score three ways -> evaluate -> report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.timeout(900)
def test_demo_pipeline_on_the_real_sample(ray_session, real_sample, tmp_path, capsys):
    from ray_jobs.demo import main

    out = tmp_path / "demo"
    summary = main(["--data", str(real_sample), "--out", str(out), "--epochs", "1",
                    "--rerank-k", "16", "--block", "16", "--tune",
                    "--set", "train.batch_size=32", "train.fusion_val_max_items=32"])
    printed = capsys.readouterr().out
    assert "two-tower" in printed and "rerank" in printed and "report:" in printed
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["gallery_size"] == 38  # every test row of the sample decoded and scored
    assert set(metrics["methods"]) == {"two_tower", "fusion", "rerank"}
    for m in metrics["methods"].values():
        assert 0.0 <= m["metrics"]["t2i"]["R@10"] <= 1.0 and m["timings"]["pairs_per_s"] > 0
    assert len(metrics["scaling"]["sizes"]) >= 1
    for name in ("report.md", "report.html", "figures/recall_at_k.png",
                 "figures/time_vs_gallery.png", "figures/examples_t2i.png"):
        assert (out / "eval" / name).stat().st_size > 0, name
    html = (out / "eval" / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 4  # charts and thumbnails are embedded
    assert summary["training"]["fusion"]["final"]["epoch"] == 1
    # the optional tune stage: 2 trials, a best config that train accepts
    best = summary["tune"]["best"]
    assert best is not None and Path(best["config"]).exists()
    assert (out / "tune" / "demo" / "trials.csv").read_text().count("\n") == 3  # header + 2
