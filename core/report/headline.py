"""Headline numbers as plain text, for the end of the demo and the evaluate job's log."""

from __future__ import annotations

from core.evaluation.comparison import DIRECTIONS, LABELS
from core.report.common import cost_seconds, ks_of, methods_of


def headline_table(metrics: dict) -> str:
    """A compact plain-text table for the end of the demo, and the verdict."""
    ks = ks_of(metrics)
    lines = [f"{'method':<20}" + "".join(f"{d + ' R@' + str(k):>11}" for d in DIRECTIONS for k in ks)
             + f"{'ms/query':>10}"]
    n = metrics["gallery_size"]
    for m in methods_of(metrics):
        r, t = metrics["methods"][m]["metrics"], metrics["methods"][m]["timings"]
        lines.append(f"{LABELS[m]:<20}" + "".join(f"{r[d][f'R@{k}']:>11.3f}" for d in DIRECTIONS
                                                  for k in ks)
                     + f"{1000 * cost_seconds(t) / (2 * n):>10.1f}")
    lines.append(f"{'chance':<20}" + "".join(f"{metrics['comparison']['chance'][f'R@{k}']:>11.3f}"
                                             for _ in DIRECTIONS for k in ks))
    lines += ["", metrics["comparison"]["verdict"]["summary"]]
    return "\n".join(lines)
