"""Choosing retrieve-and-rerank's k and alpha on the VALIDATION split, never on test: the
candidates' scores are computed once at the largest k, and every (k, alpha) is a cheap
re-ordering of them (``core.retrieval.fuse``)."""

from __future__ import annotations

import numpy as np

from core.metrics import bidirectional_metrics
from core.retrieval import fuse

CRITERION = ("validation mean recall (R@1/5/10, both directions); ties go to the smaller k, "
             "then the smaller alpha")


def select_rerank(rescored: dict, groups: np.ndarray, ks, alphas) -> dict:
    """{"k", "alpha", "table": every candidate setting with its validation metrics}."""
    groups = np.asarray(groups)
    n = len(groups)
    kc = rescored["t2i"]["candidates"].shape[1]
    report_ks = tuple(k for k in (1, 5, 10) if k <= min(n, kc))
    table = []
    for k in sorted({min(int(k), kc) for k in ks}):
        for alpha in sorted({float(a) for a in alphas}):
            fused = fuse(rescored, groups, groups, alpha, k, min(10, kc))
            m = bidirectional_metrics(fused["t2i"][2], fused["i2t"][2], n_images=n, n_texts=n,
                                      ks=report_ks)
            table.append({"k": k, "alpha": alpha, "mean_recall": m["mean_recall"],
                          "t2i_R@1": m["t2i"]["R@1"], "i2t_R@1": m["i2t"]["R@1"]})
    best = max(table, key=lambda r: (round(r["mean_recall"], 9), -r["k"], -r["alpha"]))
    return {"k": best["k"], "alpha": best["alpha"], "table": table, "criterion": CRITERION,
            "queries": n}
