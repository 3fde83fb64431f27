"""The command line a user meets: unknown jobs, --version, help with defaults, and user
errors as one line with exit code 2, before Ray starts and before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def rocoray(*args, cwd=REPO, timeout=120):
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    return subprocess.run([sys.executable, "-m", "ray_jobs.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_unknown_job_and_version():
    bad = rocoray("nonsense")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == ("rocoray: error: unknown job 'nonsense'; choose one of: demo, "
                                  "train, tune, score, evaluate, prepare, ablation, serve")
    version = rocoray("--version")
    assert version.returncode == 0 and version.stdout.startswith("rocoray 0.")


@pytest.mark.parametrize("job", ["score", "evaluate", "train", "demo", "tune", "prepare",
                                 "ablation", "serve"])
def test_every_option_has_help_and_a_shown_default(job):
    out = rocoray(job, "--help")
    assert out.returncode == 0
    from ray_jobs import options

    module = __import__(f"ray_jobs.{job}", fromlist=["x"])
    cls = {"score": "ScoreConfig", "evaluate": "EvaluateConfig", "train": "TrainArgs",
           "demo": "DemoConfig", "tune": "TuneArgs", "prepare": "PrepareConfig",
           "ablation": "AblationConfig", "serve": "ServeConfig"}[job]
    import dataclasses

    for f in dataclasses.fields(getattr(module, cls)):
        assert f.metadata.get("help", "").strip(), f"{job} --{f.name} has no help"
    flags = [line for line in out.stdout.splitlines() if line.strip().startswith("--")]
    assert flags
    text = " ".join(out.stdout.split())
    assert text.count("(default:") >= len([f for f in dataclasses.fields(getattr(module, cls))
                                          if not f.metadata.get("required")]) - 1
    assert options.USER_ERRORS  # the same module the jobs use


def test_score_help_examples_use_the_demos_paths():
    text = rocoray("score", "--help").stdout
    assert "runs/demo/train/fusion" in text and "runs/fusion-demo" not in text


@pytest.mark.parametrize("args,expect", [
    (("score", "--model", "fusion", "--checkpoint", "{tmp}/nope"),
     "rocoray score: error: checkpoint path does not exist: {tmp}/nope"),
    (("train", "--data", "{tmp}/typo", "--name", "x", "--storage-path", "{tmp}/runs"),
     "rocoray train: error: ROCOv2 data path does not exist: {tmp}/typo"),
    (("train", "--set", "train.lrr=1"), "rocoray train: error: unknown config key(s) train.lrr"),
    (("train", "--data", "{tmp}/typo", "--num-workers", "2", "--set", "train.min_workers=1",
      "train.elastic_resize_interval_s=-1"),
     "rocoray train: error: train.elastic_resize_interval_s must be >= 0, got -1.0"),
    (("train", "--data", "{tmp}/typo", "--set", "model.fusion.concept_soft_labels=1.5"),
     "rocoray train: error: model.fusion.concept_soft_labels must be in [0, 1], got 1.5"),
    (("prepare",), "rocoray prepare: error: give exactly one of --synthetic"),
    (("ablation", "--data", "{tmp}/typo", "--out", "{tmp}/runs"),
     "rocoray ablation: error: ROCOv2 data path does not exist: {tmp}/typo"),
    (("evaluate", "--two-tower", "x", "--fusion", "y", "--ablation", "{tmp}/none", "--out",
      "{tmp}/runs"), "rocoray evaluate: error: --ablation {tmp}/none: no ablation.json there"),
    (("serve", "--two-tower", "{tmp}/nope"),
     "rocoray serve: error: checkpoint path does not exist: {tmp}/nope"),
    (("serve", "--two-tower", "x", "--evaluation", "{tmp}/none"),
     "rocoray serve: error: --evaluation {tmp}/none: no metrics.json there"),
    (("serve", "--two-tower", "x", "--port", "70000"),
     "rocoray serve: error: --port must be in 1..65535, got 70000"),
])
def test_user_errors_are_one_line_exit_2_before_ray(tmp_path, args, expect):
    out = rocoray(*(a.format(tmp=tmp_path) for a in args))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expect.format(tmp=tmp_path)), out.stderr
    assert "Traceback" not in out.stderr and "Started a local Ray" not in out.stdout + out.stderr
    assert not (tmp_path / "runs").exists()


def test_evaluate_names_its_own_flags(tmp_path):
    from core.checkpoint import save_checkpoint
    from core.config import load_config
    from core.models import build_model

    cfg = load_config("tiny", ["model.kind=fusion"])
    save_checkpoint(tmp_path / "fu", build_model(cfg.model), cfg)
    out = rocoray("evaluate", "--two-tower", tmp_path / "fu", "--fusion", tmp_path / "fu",
                  "--out", tmp_path / "eval")
    assert out.returncode == 2
    assert out.stderr.strip() == (f"rocoray evaluate: error: --two-tower {tmp_path / 'fu'} holds a "
                                  "fusion model, but --two-tower needs a two_tower checkpoint or "
                                  "training run")
    assert not (tmp_path / "eval").exists()
