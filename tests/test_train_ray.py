"""Training on Ray Train (CPU, tiny preset): reports, checkpoints, resume by name,
recovery from a worker that dies mid-epoch, and two DDP workers. Each run is small and under
a timeout, with fractional CPUs (2-CPU machines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.checkpoint import load_checkpoint, load_train_state

SMALL = ["train.batch_size=32", "train.eval_batch_size=64", "train.fusion_val_max_items=32"]


def _train(synthetic_dir, tmp_path, *extra):
    from ray_jobs.train import main

    return main(["--data", str(synthetic_dir), "--storage-path", str(tmp_path), *extra])


@pytest.mark.timeout(420)
def test_two_tower_reports_checkpoints_and_resumes_by_name(ray_session, synthetic_dir, tmp_path):
    first = _train(synthetic_dir, tmp_path, "--model", "two_tower", "--name", "tt", "--epochs", "1",
                   "--num-workers", "2", "--set", *SMALL, "train.cpus_per_worker=0.5")
    final = first["final"]
    for key in ("train/loss", "train/lr", "train/samples_per_s", "val/t2i/R@1", "val/t2i/R@10",
                "val/i2t/R@5", "val/t2i/MRR", "val/t2i/median_rank", "val/mean_recall"):
        assert key in final, key
    assert final["epoch"] == 1 and final["val/gallery_size"] == 64  # every worker's shard
    ckpt = Path(first["latest_checkpoint"])
    assert (ckpt / "model.safetensors").exists() and (ckpt / "tokenizer" / "tokenizer.json").exists()
    assert load_train_state(ckpt)["epoch"] == 0
    assert load_checkpoint(ckpt, expected_kind="two_tower").model.kind == "two_tower"
    run = tmp_path / "tt"
    assert (run / "config.yaml").exists()
    assert json.loads((run / "result.json").read_text())["name"] == "tt"

    # the same name again, with one more epoch: it resumes instead of starting over
    second = _train(synthetic_dir, tmp_path, "--model", "two_tower", "--name", "tt", "--epochs", "2",
                    "--num-workers", "2", "--set", *SMALL, "train.cpus_per_worker=0.5")
    assert second["final"]["epoch"] == 2
    assert second["final"]["start_epoch"] == 1  # epoch 1 was not trained again
    assert second["final"]["step"] == 2 * first["final"]["step"]
    assert [h["epoch"] for h in second["history"]] == [1, 2]  # history carried over


@pytest.mark.timeout(420)
def test_fusion_survives_a_worker_dying_mid_epoch(ray_session, synthetic_dir, tmp_path):
    # 256 rows / batch 32 = 8 steps per epoch: die in the middle of epoch 2, once.
    summary = _train(synthetic_dir, tmp_path, "--model", "fusion", "--name", "fu", "--epochs", "2",
                     "--set", *SMALL, "train.max_failures=1", "train.fail_at_step=12",
                     f"train.fail_marker={tmp_path}")
    assert (tmp_path / "rocoray_fail_marker").read_text() == "12"  # it did die
    final = summary["final"]
    assert final["epoch"] == 2 and final["start_epoch"] == 1  # restarted from epoch 1's checkpoint
    assert final["step"] == 16
    assert 0.0 <= final["val/match_acc"] <= 1.0 and "train/match_acc" in final


@pytest.mark.timeout(120)
def test_wrong_data_path_fails_before_ray_work(ray_session, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _train(tmp_path / "nowhere", tmp_path, "--model", "two_tower", "--epochs", "1")
