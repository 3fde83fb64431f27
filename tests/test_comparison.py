"""Chance with caption groups, and a verdict that reads a tie as a tie."""

from __future__ import annotations

from itertools import permutations
from pathlib import Path

import numpy as np
import pytest

from core.evaluation.comparison import chance_level, compare, positives_per_query

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest-xray-sample"


def brute_force(metric: str, gallery: int, positives: list[int]) -> float:
    """Every ordering of the gallery enumerated: the exact expectation."""
    values = []
    for m in positives:
        correct = set(range(m))
        per_order = []
        for order in permutations(range(gallery)):
            first = next(r for r, item in enumerate(order) if item in correct)
            per_order.append(first < int(metric[2:]) if metric.startswith("R@") else 1 / (first + 1))
        values.append(np.mean(per_order))
    return float(np.mean(values))


@pytest.mark.parametrize("metric", ["R@1", "R@2", "R@5", "MRR"])
def test_chance_counts_every_correct_item_of_a_query(metric):
    positives = [1, 2, 2, 3, 1, 1]
    assert chance_level(metric, 6, positives) == pytest.approx(brute_force(metric, 6, positives))
    # with groups chance is higher than the one-correct-item K / N
    if metric != "R@5":
        assert chance_level(metric, 6, positives) > chance_level(metric, 6)


def test_group_aware_chance_decides_at_chance():
    """A result between K/N and the group-aware chance is at chance, not above it."""
    rng = np.random.default_rng(0)
    n = 100
    groups = np.repeat(np.arange(25), 4)  # every caption shared by 4 images
    assert positives_per_query(groups).tolist() == [4] * n
    # random rankings: the first correct item of 4 lands in the top 10 about 35 % of the time
    ranks = {m: {d: np.array([rng.permutation(n)[:4].min() for _ in range(n)])
                 for d in ("t2i", "i2t")} for m in ("two_tower", "fusion")}
    naive = compare(ranks, n)
    aware = compare(ranks, n, groups=groups)
    assert naive["chance"]["R@10"] == pytest.approx(0.10)
    assert aware["chance"]["R@10"] == pytest.approx(1 - (90 * 89 * 88 * 87) / (100 * 99 * 98 * 97))
    assert not any(naive["at_chance"]["two_tower"].values())  # the biased "above chance"
    assert all(aware["at_chance"]["two_tower"].values())


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data/chest-xray-sample is absent")
def test_chest_xray_test_split_chance():
    from core.data.preprocess import clean_caption, group_key
    from core.data.rocov2 import read_split

    captions = read_split(str(SHARED), "test", columns=["caption"]).column("caption").to_pylist()
    groups = np.array([group_key(clean_caption(c)[0]) for c in captions])
    assert chance_level("R@10", len(groups)) == pytest.approx(0.263, abs=5e-4)
    assert chance_level("R@10", len(groups), positives_per_query(groups)) == pytest.approx(0.305, abs=5e-4)


def test_a_tie_in_wins_reads_as_a_tie():
    n = 200
    good = np.zeros(n, dtype=int)
    bad = np.full(n, 50)
    # fusion and rerank both perfect, two-tower far behind: each beats it at every K
    ranks = {"two_tower": {"t2i": bad, "i2t": bad},
             "fusion": {"t2i": good, "i2t": good},
             "rerank": {"t2i": good.copy(), "i2t": good.copy()}}
    summary = compare(ranks, n)["verdict"]["summary"]
    assert "tie for the most" in summary and "wins most" not in summary
    ranks["rerank"] = {"t2i": np.full(n, 20), "i2t": np.full(n, 20)}
    assert "wins most of them" in compare(ranks, n)["verdict"]["summary"]
