"""Is a difference more than noise? Bootstrap confidence intervals over queries, built once
here for the report, the demo's verdict and the fine-grained evaluation.

Every retrieval metric here is a mean over queries of a per-query value (a hit at K, a
reciprocal rank, a sibling won or lost), so the queries are the resampling unit:

- ``bootstrap_ci(values)``: the mean and its 95 % percentile-bootstrap interval;
- ``paired_difference(a, b)``: mean(a) - mean(b) over the SAME queries, with its paired
  bootstrap interval (queries resampled jointly, so per-query difficulty cancels out); the
  difference is called significant when the interval excludes 0.

``scipy.stats.bootstrap`` does the resampling; the seed is fixed, so a report regenerated
from the same results says the same thing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0


@dataclass
class Estimate:
    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


@dataclass
class Difference(Estimate):
    significant: bool = False  # the interval excludes 0


def _interval(data: tuple, statistic) -> tuple[float, float]:
    from scipy.stats import bootstrap

    values = [np.asarray(d, dtype=np.float64) for d in data]
    if len(values[0]) < 2 or all(np.ptp(v) == 0 for v in values):
        point = float(statistic(*values))  # no spread to resample: the interval is a point
        return point, point
    res = bootstrap(tuple(values), statistic, paired=len(values) > 1, vectorized=True,
                    n_resamples=RESAMPLES, confidence_level=CONFIDENCE, method="percentile",
                    random_state=np.random.default_rng(SEED))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _cluster_sums(clusters, *values) -> tuple[np.ndarray, ...]:
    """Per-cluster sums of each of ``values`` and the cluster sizes."""
    _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    size = np.bincount(inverse).astype(np.float64)
    return tuple(np.bincount(inverse, weights=v) for v in values) + (size,)


def bootstrap_ci(values, clusters=None) -> Estimate:
    """Mean of per-query ``values`` with its 95 % bootstrap interval. ``clusters``: the unit
    each value belongs to when values are not independent (the 4 comparisons of one
    sibling pair): whole clusters are resampled (a cluster bootstrap of the ratio mean)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no queries to estimate from")
    if clusters is None:
        low, high = _interval((values,), lambda v, axis=-1: v.mean(axis=axis))
    else:
        sums, size = _cluster_sums(clusters, values)
        low, high = _interval((sums, size), lambda s, n, axis=-1: s.sum(axis) / n.sum(axis))
    return Estimate(float(values.mean()), low, high, int(values.size))


def paired_difference(a, b, clusters=None) -> Difference:
    """mean(a) - mean(b) over the same queries, with its paired 95 % bootstrap interval
    (``clusters``: as ``bootstrap_ci``)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired values need the same, non-empty queries ({a.shape} vs {b.shape})")
    if clusters is None:
        low, high = _interval((a, b), lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis))
    else:
        sa, sb, size = _cluster_sums(clusters, a, b)
        low, high = _interval((sa, sb, size),
                              lambda x, y, n, axis=-1: (x.sum(axis) - y.sum(axis)) / n.sum(axis))
    return Difference(float(a.mean() - b.mean()), low, high, int(a.size),
                      significant=bool(low > 0 or high < 0))


def per_query(ranks, metric: str) -> np.ndarray:
    """The per-query value whose mean is ``metric`` (``R@K`` or ``MRR``), from 0-based ranks."""
    ranks = np.asarray(ranks)
    if metric == "MRR":
        return 1.0 / (ranks + 1.0)
    if metric.startswith("R@"):
        return (ranks < int(metric[2:])).astype(np.float64)
    raise ValueError(f"no per-query form for {metric!r}")
