"""How the variant benches keep a variant: the one-standard-error rule on validation."""

import numpy as np
import pytest

from core.evaluation.selection import (cheapest_within_noise, cheapest_within_noise_over_seeds,
                                       per_query_mean_recall)


def test_per_query_mean_recall_averages_both_directions_of_each_pair():
    ranks = {"t2i": np.array([0, 4, 20]), "i2t": np.array([9, 0, 3])}
    # pair 0: t2i hits at 1/5/10, i2t only at 10; pair 1: t2i at 5/10, i2t at all; pair 2:
    # i2t at 5/10 only
    assert per_query_mean_recall(ranks).tolist() == pytest.approx([4 / 6, 5 / 6, 2 / 6])
    with pytest.raises(ValueError, match="one query per pair"):
        per_query_mean_recall({"t2i": np.zeros(3), "i2t": np.zeros(2)})


def _scores(rng, p, n=400):
    return (rng.random(n) < p).astype(float)


def test_the_cheapest_variant_within_the_bests_interval_is_kept_not_the_best():
    rng = np.random.default_rng(0)
    base = _scores(rng, 0.30)
    flip = rng.random(base.size)
    scores = {
        # 20 % of the queries re-drawn: a slightly higher mean, within the paired noise
        "best, slow": np.where(flip < 0.2, _scores(rng, 0.36), base),
        "cheap": base,
        "cheaper, much worse": np.where(flip < 0.5, 0.0, base),  # half its hits lost
    }
    cost = {"best, slow": 100.0, "cheap": 10.0, "cheaper, much worse": 1.0}
    choice = cheapest_within_noise(scores, cost)

    assert choice["best"] == "best, slow"
    assert choice["minus_best"]["best, slow"]["value"] == 0
    assert choice["minus_best"]["cheap"]["within_noise"]
    assert not choice["minus_best"]["cheaper, much worse"]["within_noise"]
    assert choice["kept"] == "cheap"


def test_only_candidates_are_kept_though_every_variant_is_scored_against_the_best():
    rng = np.random.default_rng(1)
    same = _scores(rng, 0.3)
    scores = {"no concept head": same, "preset": same.copy(), "slow": same.copy()}
    cost = {"no concept head": 1.0, "preset": 5.0, "slow": 50.0}
    choice = cheapest_within_noise(scores, cost, candidates=["preset", "slow"])
    assert choice["kept"] == "preset"
    assert set(choice["minus_best"]) == set(scores)
    with pytest.raises(ValueError, match="no candidate"):
        cheapest_within_noise(scores, cost, candidates=[])


def test_over_seeds_a_cheap_variant_with_one_lucky_seed_is_not_kept():
    """With one seed the cheap variant ties the steady one and would be kept; its other two
    seeds lose 60 % of the hits, so on scores averaged over seeds it is beyond the interval."""
    rng = np.random.default_rng(2)
    steady = [_scores(rng, 0.5) for _ in range(3)]
    drop = rng.random(steady[0].size) < 0.6
    lucky = [steady[0].copy(), np.where(drop, 0.0, steady[0]), np.where(drop, 0.0, steady[0])]
    cost = {"steady, slow": 100.0, "lucky, cheap": 10.0}
    assert cheapest_within_noise({"steady, slow": steady[0], "lucky, cheap": lucky[0]},
                                 cost)["kept"] == "lucky, cheap"  # one seed each

    choice = cheapest_within_noise_over_seeds({"steady, slow": steady, "lucky, cheap": lucky},
                                              cost)
    assert choice["best"] == choice["kept"] == "steady, slow"
    assert not choice["minus_best"]["lucky, cheap"]["within_noise"]
    seeds = choice["seeds"]["lucky, cheap"]
    assert seeds["by_seed"] == pytest.approx([s.mean() for s in lucky])
    assert seeds["mean"] == pytest.approx(np.mean([s.mean() for s in lucky]))
    assert seeds["sd"] == pytest.approx(np.std([s.mean() for s in lucky], ddof=1))
    assert cheapest_within_noise_over_seeds({"one": [steady[0]]}, {"one": 1.0})["seeds"]["one"][
        "sd"] is None
