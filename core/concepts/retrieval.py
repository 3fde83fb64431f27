"""Concept-aware retrieval metrics, from the stored top-K lists (nothing is re-scored).

Exact-match Recall@K counts only a query's own pair as correct. Disease-aware retrieval work
judges a retrieved item by how many concepts it shares with the query instead:

- graded relevance = Jaccard overlap of the query's and the item's concept sets;
  nDCG@5 with linear gains, the ideal ranking taken over the WHOLE gallery (the best five
  items that exist), so a list is not flattered by a short candidate list;
- binary relevance = Jaccard >= 0.5: P@5, mAP@K (AP over the top K, normalised by
  min(relevant items in the gallery, K)) and MRR (1 / rank of the first relevant item in
  the top K, 0 if none).

Queries without any concept id have no relevance to judge: they are counted and left out.
Both retrieval directions use the same sets (a row's concepts belong to its image and its
caption alike); the gallery may be another split (``--gallery-split train``).
"""

from __future__ import annotations

import numpy as np

BINARY_JACCARD = 0.5


def jaccard(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(Nq, Ng) Jaccard overlaps of multi-hot concept rows (0 where both sets are empty)."""
    q = np.asarray(queries, np.float32)
    g = np.asarray(gallery, np.float32)
    inter = q @ g.T
    union = q.sum(1)[:, None] + g.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _dcg(gains: np.ndarray) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(2, gains.shape[1] + 2))
    return gains @ discounts


def per_query(query_concepts: np.ndarray, gallery_concepts: np.ndarray, topk: np.ndarray,
              ndcg_k: int = 5, p_k: int = 5, batch: int = 1024) -> dict:
    """Per-query nDCG@ndcg_k, P@p_k, AP@K and reciprocal rank (K = the lists' length) for the
    queries that have concepts; ``kept`` says which rows those are."""
    topk = np.asarray(topk)
    k = topk.shape[1]
    kept = np.nonzero(np.asarray(query_concepts).any(1))[0]
    out = {name: np.zeros(len(kept)) for name in ("ndcg", "precision", "ap", "rr")}
    for start in range(0, len(kept), batch):
        rows = kept[start:start + batch]
        rel = jaccard(query_concepts[rows], gallery_concepts)  # (b, Ng)
        got = np.take_along_axis(rel, topk[rows], 1)  # (b, K) in rank order
        ideal = -np.sort(-rel, axis=1)[:, :ndcg_k]
        idcg = _dcg(ideal)
        part = slice(start, start + len(rows))
        out["ndcg"][part] = np.divide(_dcg(got[:, :ndcg_k]), idcg, out=np.zeros(len(rows)),
                                      where=idcg > 0)
        hit = got >= BINARY_JACCARD
        out["precision"][part] = hit[:, :p_k].sum(1) / p_k
        relevant = (rel >= BINARY_JACCARD).sum(1)
        precision_at = np.cumsum(hit, 1) / np.arange(1, k + 1)
        out["ap"][part] = (precision_at * hit).sum(1) / np.maximum(np.minimum(relevant, k), 1)
        first = np.where(hit.any(1), hit.argmax(1) + 1, 0)
        out["rr"][part] = np.divide(1.0, first, out=np.zeros(len(rows)), where=first > 0)
    return {"kept": kept, **out}


def concept_retrieval(query_concepts: np.ndarray, gallery_concepts: np.ndarray,
                      topk: np.ndarray, ndcg_k: int = 5, p_k: int = 5) -> dict:
    """Means of ``per_query`` with the names the report uses."""
    k = np.asarray(topk).shape[1]
    per = per_query(query_concepts, gallery_concepts, topk, ndcg_k, p_k)
    n = len(per["kept"])
    return {f"nDCG@{ndcg_k}": float(per["ndcg"].mean()) if n else None,
            f"P@{p_k}": float(per["precision"].mean()) if n else None,
            f"mAP@{k}": float(per["ap"].mean()) if n else None,
            f"MRR@{k}": float(per["rr"].mean()) if n else None,
            "queries": n, "queries_without_concepts": int(len(query_concepts) - n)}
