"""What the evaluation concludes: each method's recall with its 95 % interval, paired
differences between methods, which results are indistinguishable from chance, and the
verdict written from them. Pure numpy/scipy; the report renders it, the demo logs it."""

from __future__ import annotations

from itertools import combinations

import numpy as np

from scipy.special import gammaln

from core.evaluation.significance import bootstrap_ci, paired_difference, per_query
from core.scoring.settings import Method

# the scored methods, in the order every table and chart lists them
METHODS = tuple(Method)
# The fusion model's own ITC heads, compared beside the methods in the fine-grained study.
FUSION_ITC = "fusion_itc"
DIRECTIONS = {"t2i": "text → image", "i2t": "image → text"}
LABELS = {"two_tower": "two-tower", "fusion": "fusion (all pairs)", "rerank": "rerank",
          FUSION_ITC: "fusion's ITC heads (ablation)"}
COLORS = {"two_tower": "#1f77b4", "fusion": "#d62728", "rerank": "#2ca02c"}
METRICS = ("R@1", "R@5", "R@10", "MRR")


def _log_comb(n, k):
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def chance_level(metric: str, gallery: int, positives=None) -> float:
    """Expected value of ``metric`` for a random ranking of ``gallery`` items, averaged over
    queries, where query q has ``positives[q]`` correct items (caption groups: every image
    with the same caption is correct; None: one each). Recall@K of a query with m correct
    items is 1 - C(N-m, K) / C(N, K); MRR is E[1 / rank of the first correct item]."""
    m = np.ones(1, dtype=np.int64) if positives is None else np.asarray(positives, np.int64)
    if len(m) == 0:
        raise ValueError("chance level of no queries")
    if m.min() < 1 or m.max() > gallery:
        raise ValueError(f"every query needs 1..{gallery} correct items, got {m.min()}..{m.max()}")
    values, counts = np.unique(m, return_counts=True)
    if metric.startswith("R@"):
        k = int(metric[2:])
        if k >= gallery:
            return 1.0
        miss = np.where(gallery - values >= k,
                        np.exp(_log_comb(gallery - values, k) - _log_comb(gallery, k)), 0.0)
        per_value = 1.0 - miss
    else:  # MRR: P(first correct at rank r) = C(N - r, m - 1) / C(N, m)
        r = np.arange(1, gallery + 1)[:, None]
        log_p = _log_comb(np.maximum(gallery - r, 0), values[None] - 1) - _log_comb(gallery, values)[None]
        p = np.where(gallery - r >= values[None] - 1, np.exp(log_p), 0.0)
        per_value = (p / r).sum(0)
    return float((per_value * counts).sum() / counts.sum())


def positives_per_query(groups: np.ndarray) -> np.ndarray:
    """How many gallery items share each query's caption group (the query's own pair
    included), for a split queried against itself."""
    _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    return counts[inverse]


def compare(ranks: dict[str, dict[str, np.ndarray]], gallery: int, groups=None) -> dict:
    """``ranks[method][direction]``: 0-based rank of each query's first correct item (the same
    queries for every method). ``groups``: the caption group of each item (a split queried
    against itself), so that chance counts every correct item of a query. Returns
    estimates, pairwise differences, chance levels and the verdict, as plain JSON-able
    data."""
    methods = list(ranks)
    metrics = [m for m in METRICS if not m.startswith("R@") or int(m[2:]) <= gallery]
    estimates = {m: {d: {k: bootstrap_ci(per_query(ranks[m][d], k)).as_dict() for k in metrics}
                     for d in DIRECTIONS} for m in methods}
    positives = None if groups is None else positives_per_query(groups)
    chance = {k: chance_level(k, gallery, positives) for k in metrics}
    at_chance = {m: {d: estimates[m][d]["R@10" if "R@10" in metrics else metrics[-2]]["low"]
                     <= chance["R@10" if "R@10" in metrics else metrics[-2]]
                     for d in DIRECTIONS} for m in methods}
    differences = []
    for a, b in combinations(methods, 2):
        for d in DIRECTIONS:
            for k in metrics:
                diff = paired_difference(per_query(ranks[a][d], k), per_query(ranks[b][d], k))
                differences.append({"a": a, "b": b, "direction": d, "metric": k,
                                    **diff.as_dict(), "significant": diff.significant})
    result = {"gallery_size": gallery, "metrics": metrics, "estimates": estimates,
              "chance": chance, "at_chance": at_chance, "differences": differences}
    result["verdict"] = verdict(result)
    return result


def _fmt(e: dict) -> str:
    return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"


def _diff(x: dict, flip: bool = False) -> str:
    v, lo, hi = (x["value"], x["low"], x["high"]) if not flip else (-x["value"], -x["high"], -x["low"])
    return f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def find_difference(result: dict, a: str, b: str, direction: str, metric: str) -> tuple[dict, bool]:
    """(the recorded a-vs-b difference, whether it is stored as b - a)."""
    for x in result["differences"]:
        if x["direction"] == direction and x["metric"] == metric:
            if (x["a"], x["b"]) == (a, b):
                return x, False
            if (x["a"], x["b"]) == (b, a):
                return x, True
    raise KeyError(f"no difference {a} vs {b} {direction} {metric}")


def verdict(result: dict) -> dict[str, str]:
    """One paragraph per direction: who wins at each K, by how much, and whether the lead is
    more than noise (95 % paired-bootstrap interval of the difference excludes 0)."""
    est = result["estimates"]
    methods = list(est)
    out = {}
    for d, name in DIRECTIONS.items():
        sentences = []
        for k in [m for m in result["metrics"] if m.startswith("R@")]:
            ranked = sorted(methods, key=lambda m: -est[m][d][k]["value"])
            best = ranked[0]
            leads = []
            for other in ranked[1:]:
                x, flip = find_difference(result, best, other, d, k)
                sig = x["significant"]
                if x["value"] == 0:
                    leads.append(f"tied with {LABELS[other]}")
                    continue
                leads.append(f"ahead of {LABELS[other]} by {_diff(x, flip)}"
                             f"{'' if sig else ' (within noise)'}")
            sentences.append(f"at {k} {LABELS[best]} leads with {_fmt(est[best][d][k])}, "
                             + "; ".join(leads) + f"; chance {result['chance'][k]:.3f}")
        chance_methods = [LABELS[m] for m in methods if result["at_chance"][m][d]]
        tail = (f" Indistinguishable from chance: {', '.join(chance_methods)}."
                if chance_methods else "")
        out[d] = f"{name.capitalize()}: " + ". ".join(s[0].upper() + s[1:] for s in sentences) \
            + "." + tail
    # the overall line: which method has the most significant wins
    wins = {m: 0 for m in methods}
    for x in result["differences"]:
        if x["significant"] and x["metric"].startswith("R@"):
            wins[x["a"] if x["value"] > 0 else x["b"]] += 1
    most = max(wins.values())
    leaders = [m for m in methods if wins[m] == most]
    recall = [x for x in result["differences"] if x["metric"].startswith("R@")]
    significant = sum(x["significant"] for x in recall)
    ks = ", ".join(k for k in result["metrics"] if k.startswith("R@"))
    if not most:
        tail = "no method beats another beyond noise."
    elif len(leaders) == 1:
        tail = f"{LABELS[leaders[0]]} wins most of them ({most})."
    else:
        tail = (f"{' and '.join(LABELS[m] for m in leaders)} tie for the most of them "
                f"({most} each).")
    out["summary"] = (f"Over both directions at {ks}, {significant} of {len(recall)} pairwise "
                      "recall differences are beyond noise (95 % paired bootstrap); " + tail)
    return out
