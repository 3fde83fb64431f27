"""Epoch metrics are counted on every rank and summed, never rank 0's times the world."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from core import distributed
from core.training.loop import EpochStats


def test_a_row_skipped_only_on_rank_1_is_counted_once(monkeypatch):
    from ray_jobs import train_worker

    rank0 = EpochStats(steps=4, samples=120, seconds=10.0, skipped={})
    rank1 = {"samples": 90, "seconds": 12.0, "skipped/image_undecodable": 1}
    # rank 0's view of the collective: its own counts and rank 1's
    monkeypatch.setattr(distributed, "gather_objects", lambda obj: [obj, rank1])
    state = SimpleNamespace(step=4, start_epoch=0, world=2,
                            scheduler=SimpleNamespace(get_last_lr=lambda: [1e-3]))
    rank0.sums = {"loss": torch.tensor(8.0)}
    m = train_worker.epoch_metrics(state, 0, rank0)
    assert m["train/samples"] == 210
    assert m["train/skipped_rows"] == 1 and m["train/skipped/image_undecodable"] == 1
    assert m["train/epoch_s"] == 12.0  # the slowest rank
    assert m["train/samples_per_s"] == pytest.approx(210 / 12.0)
    assert m["train/loss"] == pytest.approx(2.0)


def test_summed_counts_without_a_process_group_is_the_identity():
    assert distributed.summed_counts({"samples": 3, "seconds": 1.5}) == {"samples": 3, "seconds": 1.5}
