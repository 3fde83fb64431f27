"""Retrieval metrics, one implementation for the whole project.

Everything derives from the 0-based RANK of each query's first correct gallery item:
Recall@K = share of queries with rank < K, MRR = mean 1 / (rank + 1), median rank is
1-based (as papers report it). Ranks come from a full score matrix (``ranks_from_scores``)
or from the streaming accumulator in ``core.retrieval`` (O(N*K) memory); both use the same
ordering, so they give the same numbers.

Ordering and ties: gallery items are ordered by score, highest first; equal scores are
ordered by gallery index, lowest first (what a stable sort does). The rank of a query is the
number of items ordered before its best-placed correct item.

Several correct answers: each item has a group id (identical captions, several images of
one case); any gallery item of the query's group is a hit.
"""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (1, 5, 10)

# Scores and gallery indices are folded into one int64 key that orders exactly as
# (score desc, index asc): the float's bits made monotonic, then the inverted index.
_INDEX_BITS = 31
_INDEX_MAX = (1 << _INDEX_BITS) - 1


def order_keys(scores: np.ndarray, gallery_index: np.ndarray) -> np.ndarray:
    """int64 keys, larger = ranked earlier: by float32 score, then by lower gallery index."""
    s = np.ascontiguousarray(scores, dtype=np.float32) + np.float32(0.0)  # -0.0 -> +0.0
    if np.isnan(s).any():
        raise ValueError("scores contain NaN: the model produced invalid outputs")
    bits = s.view(np.uint32).astype(np.int64)
    monotonic = np.where(bits & 0x80000000, (~bits) & 0xFFFFFFFF, bits | 0x80000000)
    index = np.asarray(gallery_index, dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() > _INDEX_MAX):
        raise ValueError("gallery index out of range for ranking keys")
    return (monotonic << _INDEX_BITS) | (_INDEX_MAX - index)


def keys_to_index(keys: np.ndarray) -> np.ndarray:
    return np.where(keys < 0, -1, _INDEX_MAX - (keys & _INDEX_MAX))


def keys_to_scores(keys: np.ndarray) -> np.ndarray:
    monotonic = (keys >> _INDEX_BITS) & 0xFFFFFFFF
    bits = np.where(monotonic & 0x80000000, monotonic & 0x7FFFFFFF, (~monotonic) & 0xFFFFFFFF)
    out = bits.astype(np.uint32).view(np.float32)
    return np.where(keys < 0, -np.inf, out).astype(np.float32)


def check_ks(ks, gallery_size: int) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if gallery_size <= 0:
        raise ValueError("the gallery is empty: nothing to retrieve")
    too_big = [k for k in ks if k > gallery_size]
    if too_big:
        raise ValueError(f"Recall@{too_big[0]} asked for, but the gallery holds only "
                         f"{gallery_size} item(s): K must not exceed the gallery size")
    return ks


def ranks_from_scores(scores: np.ndarray, query_groups: np.ndarray,
                      gallery_groups: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """0-based rank of the first correct item for each row of a full (Nq, Ng) matrix."""
    scores = np.asarray(scores, dtype=np.float32)
    nq, ng = scores.shape
    query_groups, gallery_groups = np.asarray(query_groups), np.asarray(gallery_groups)
    gallery_index = np.arange(ng)
    ranks = np.empty(nq, dtype=np.int64)
    for start in range(0, nq, chunk):
        block = scores[start:start + chunk]
        keys = order_keys(block, gallery_index[None, :])
        correct = query_groups[start:start + chunk, None] == gallery_groups[None, :]
        missing = ~correct.any(1)
        if missing.any():
            raise ValueError(f"query {start + int(np.argmax(missing))} has no correct item "
                             "in the gallery (its group appears on one side only)")
        best = np.where(correct, keys, -1).max(1)
        ranks[start:start + chunk] = (keys > best[:, None]).sum(1)
    return ranks


def ranks_from_topk(topk_index: np.ndarray, query_groups: np.ndarray,
                    gallery_groups: np.ndarray) -> np.ndarray:
    """Ranks from per-query top-K gallery indices (-1 = empty slot). A query whose correct
    item is not in its list gets rank K: exact for Recall@k, k <= K."""
    topk_index = np.asarray(topk_index)
    k = topk_index.shape[1]
    valid = topk_index >= 0
    hit = valid & (np.asarray(gallery_groups)[np.where(valid, topk_index, 0)]
                   == np.asarray(query_groups)[:, None])
    return np.where(hit.any(1), hit.argmax(1), k).astype(np.int64)


def retrieval_metrics(ranks: np.ndarray, ks=DEFAULT_KS, gallery_size: int | None = None) -> dict:
    """Recall@K, MRR and median rank (1-based) from 0-based ranks."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no queries to evaluate")
    if gallery_size is not None:
        ks = check_ks(ks, gallery_size)
    out = {f"R@{k}": float((ranks < k).mean()) for k in ks}
    out["MRR"] = float((1.0 / (ranks + 1)).mean())
    out["median_rank"] = float(np.median(ranks + 1))
    out["queries"] = int(ranks.size)
    return out


def bidirectional_metrics(t2i_ranks: np.ndarray, i2t_ranks: np.ndarray, n_images: int,
                          n_texts: int, ks=DEFAULT_KS) -> dict:
    """Both directions and their mean recall (the average of the 2 x len(ks) recalls)."""
    t2i = retrieval_metrics(t2i_ranks, ks, gallery_size=n_images)
    i2t = retrieval_metrics(i2t_ranks, ks, gallery_size=n_texts)
    recalls = [d[f"R@{k}"] for d in (t2i, i2t) for k in ks]
    return {"t2i": t2i, "i2t": i2t, "mean_recall": float(np.mean(recalls))}


def evaluate_scores(scores: np.ndarray, text_groups: np.ndarray, image_groups: np.ndarray,
                    ks=DEFAULT_KS) -> dict:
    """Both directions from a full (captions x images) score matrix."""
    scores = np.asarray(scores, dtype=np.float32)
    t2i = ranks_from_scores(scores, text_groups, image_groups)
    i2t = ranks_from_scores(scores.T, image_groups, text_groups)
    return bidirectional_metrics(t2i, i2t, n_images=scores.shape[1], n_texts=scores.shape[0],
                                 ks=ks)


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """{"t2i/R@1": ..., "i2t/MRR": ..., "mean_recall": ...} for logging."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(flat_metrics(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out
