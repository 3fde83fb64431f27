"""Which variant a bench keeps, decided on validation.

- ``per_query_mean_recall(ranks)``: each validation query's mean of R@1/5/10 over both
  directions (caption i's text-to-image rank and image i's image-to-text rank: the same
  pair), whose mean over queries is the benches' "validation mean recall".
- ``cheapest_within_noise(scores, cost)``: the one-standard-error rule (Hastie, Tibshirani &
  Friedman, The Elements of Statistical Learning, 7.10) with a paired bootstrap interval in
  place of the standard error: find the best candidate by mean score, then keep the
  cheapest candidate whose paired 95 % interval against the best does not lie wholly below
  0. A variant is never kept for a lead the validation split cannot resolve when a cheaper
  one scores the same within that split's noise.
- ``cheapest_within_noise_over_seeds(scores_by_seed, cost)``: the same rule when each
  variant was trained more than once (seeds: weight initialisation, data order, sampled
  negatives), on each query's score averaged over the variant's seeds.
"""

from __future__ import annotations

import numpy as np

from core.evaluation.significance import paired_difference, per_query

KS = (1, 5, 10)


def per_query_mean_recall(ranks: dict, ks=KS) -> np.ndarray:
    """(Q,) floats: query i's mean over R@k (``ks``) of ``ranks["t2i"][i]`` and
    ``ranks["i2t"][i]`` (0-based ranks of the pair's true match, one query per pair)."""
    t2i, i2t = np.asarray(ranks["t2i"]), np.asarray(ranks["i2t"])
    if t2i.shape != i2t.shape:
        raise ValueError(f"one query per pair in both directions, got {t2i.shape} and {i2t.shape}")
    return np.mean([per_query(r, f"R@{k}") for r in (t2i, i2t) for k in ks], axis=0)


def cheapest_within_noise(scores: dict, cost: dict, candidates=None) -> dict:
    """``scores``: variant -> per-query validation scores (the same queries for all);
    ``cost``: variant -> what it costs (seconds); ``candidates``: the variants that may be kept
    (default: all; the others are scored against the best for the record only).

    Returns {"best": the best candidate, "kept": the cheapest candidate within noise of it,
    "minus_best": variant -> paired difference from the best (``Difference.as_dict()`` with
    "significant" and "within_noise")}."""
    candidates = list(scores) if candidates is None else [c for c in scores if c in candidates]
    if not candidates:
        raise ValueError("no candidate variant to keep")
    means = {name: float(np.mean(s)) for name, s in scores.items()}
    best = max(candidates, key=lambda name: means[name])
    minus_best = {}
    for name, s in scores.items():
        diff = paired_difference(s, scores[best])
        minus_best[name] = {**diff.as_dict(), "within_noise": bool(diff.high >= 0)}
    within = [name for name in candidates if minus_best[name]["within_noise"]]
    kept = min(within, key=lambda name: (cost[name], -means[name]))
    return {"best": best, "kept": kept, "minus_best": minus_best}


def cheapest_within_noise_over_seeds(scores_by_seed: dict, cost: dict, candidates=None) -> dict:
    """``scores_by_seed``: variant -> [per-query validation scores of one training run, one
    array per seed] (the same queries for all). ``cheapest_within_noise`` on each query's
    score averaged over the variant's seeds, plus per variant "by_seed" (each run's mean),
    "mean" (over seeds) and "sd" (between seeds; None for one seed)."""
    averaged = {name: np.mean(np.stack(runs), axis=0) for name, runs in scores_by_seed.items()}
    choice = cheapest_within_noise(averaged, cost, candidates)
    choice["seeds"] = {name: {"by_seed": [float(np.mean(r)) for r in runs],
                              "mean": float(np.mean(averaged[name])),
                              "sd": float(np.std([np.mean(r) for r in runs], ddof=1))
                              if len(runs) > 1 else None}
                       for name, runs in scores_by_seed.items()}
    return choice
