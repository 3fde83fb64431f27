"""Streaming retrieval: per-query top-K and exact ranks over score blocks, in O(N*K) memory.

The full caption x image score matrix is never held: blocks (tiles) are scored one at a
time, each query keeps its K best gallery items, and its exact rank is counted as the
number of *incorrect* gallery items ordered before its best correct item (whose key comes
from a cheap O(N) pass over the correct pairs, ``positive_keys``). The ordering is
``core.metrics``' (score desc, gallery index asc), so the result equals the full-matrix
computation; tiles can arrive in any order and partial results merge (restartable jobs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.metrics import bidirectional_metrics, keys_to_index, keys_to_scores, order_keys


def topk_keys(keys: np.ndarray, k: int) -> np.ndarray:
    """The k largest keys of each row, sorted descending; rows shorter than k pad with -1."""
    n, m = keys.shape
    if m < k:
        keys = np.concatenate([keys, np.full((n, k - m), -1, np.int64)], axis=1)
        m = k
    if m > k:
        keys = np.take_along_axis(keys, np.argpartition(-keys, k - 1, axis=1)[:, :k], axis=1)
    return -np.sort(-keys, axis=1)


def topk_rows(scores: np.ndarray, k: int, columns: np.ndarray | None = None) -> np.ndarray:
    """Each row's top-k column indices (or ``columns``' entries), best first; ties go to the
    lower column (``core.metrics.order_keys``)."""
    cols = np.arange(scores.shape[1]) if columns is None else columns
    keys = order_keys(scores, np.broadcast_to(cols, scores.shape) if cols.ndim == 1 else cols)
    return keys_to_index(topk_keys(keys, k))


@dataclass
class Direction:
    """Running state of one retrieval direction (queries -> gallery)."""

    keys: np.ndarray  # (Nq, K) int64, descending, -1 = empty
    beaten_by: np.ndarray  # (Nq,) incorrect items ordered before the best correct one
    positive: np.ndarray | None  # (Nq,) key of the best correct item, when known

    @classmethod
    def empty(cls, n_queries: int, k: int, positive: np.ndarray | None = None) -> Direction:
        return cls(np.full((n_queries, k), -1, np.int64), np.zeros(n_queries, np.int64),
                   positive)

    @property
    def k(self) -> int:
        return self.keys.shape[1]

    def add_keys(self, query_ids: np.ndarray, keys: np.ndarray) -> None:
        """Merge a block's (or a partial result's) keys for the listed queries."""
        merged = np.concatenate([self.keys[query_ids], keys], axis=1)
        self.keys[query_ids] = topk_keys(merged, self.k)

    def topk(self) -> tuple[np.ndarray, np.ndarray]:
        """(gallery indices, scores), each (Nq, K), best first."""
        return keys_to_index(self.keys), keys_to_scores(self.keys)

    def ranks(self) -> np.ndarray:
        if self.positive is None:
            raise ValueError("exact ranks need the positives' keys (positive_keys)")
        return self.beaten_by.copy()


def positive_keys(text_index: np.ndarray, image_index: np.ndarray, scores: np.ndarray,
                  n_texts: int, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys of each caption's best correct image and each image's best correct caption,
    from the scores of the correct pairs (text_index[j], image_index[j])."""
    text_index = np.asarray(text_index)
    image_index = np.asarray(image_index)
    t2i = np.full(n_texts, -1, np.int64)
    i2t = np.full(n_images, -1, np.int64)
    np.maximum.at(t2i, text_index, order_keys(scores, image_index))
    np.maximum.at(i2t, image_index, order_keys(scores, text_index))
    for name, keys in (("caption", t2i), ("image", i2t)):
        if (keys < 0).any():
            raise ValueError(f"{name} {int(np.argmax(keys < 0))} has no correct pair")
    return t2i, i2t


def correct_pairs(text_groups: np.ndarray, image_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (caption, image) index pairs that share a group: the diagonal for unique captions,
    a g x g block for a group of g identical captions."""
    text_groups, image_groups = np.asarray(text_groups), np.asarray(image_groups)
    by_group: dict = {}
    for j, g in enumerate(image_groups.tolist()):
        by_group.setdefault(g, []).append(j)
    ti, ii = [], []
    for i, g in enumerate(text_groups.tolist()):
        for j in by_group.get(g, ()):
            ti.append(i)
            ii.append(j)
    return np.asarray(ti, np.int64), np.asarray(ii, np.int64)


class StreamingRetrieval:
    """Both directions over (captions x images) score tiles.

    Build it with the groups of both sides and (for exact ranks) the positives' keys; feed it
    tiles with ``add_tile(text_ids, image_ids, scores)`` in any order; read ``metrics()``,
    ``topk("t2i")`` / ``topk("i2t")``."""

    def __init__(self, text_groups: np.ndarray, image_groups: np.ndarray, k: int,
                 positives: tuple[np.ndarray, np.ndarray] | None = None):
        self.text_groups = np.asarray(text_groups)
        self.image_groups = np.asarray(image_groups)
        nt, ni = len(self.text_groups), len(self.image_groups)
        if nt == 0 or ni == 0:
            raise ValueError("the gallery is empty: nothing to retrieve")
        if k > min(nt, ni):
            raise ValueError(f"top-K with K={k} asked for, but the gallery holds only "
                             f"{min(nt, ni)} item(s) on its smaller side")
        pt, pi = positives if positives is not None else (None, None)
        self.t2i = Direction.empty(nt, k, pt)
        self.i2t = Direction.empty(ni, k, pi)

    def add_tile(self, text_ids: np.ndarray, image_ids: np.ndarray, scores: np.ndarray) -> None:
        """A (len(text_ids), len(image_ids)) block of caption x image scores."""
        positives = None
        if self.t2i.positive is not None:
            positives = (self.t2i.positive, self.i2t.positive)
        self.add_partial(text_ids, image_ids, **reduce_tile(
            text_ids, image_ids, scores, self.text_groups, self.image_groups, self.t2i.k,
            positives))

    def add_partial(self, text_ids, image_ids, t2i_keys, i2t_keys, t2i_beaten, i2t_beaten):
        """Merge a tile's already-reduced result (see ``reduce_tile``)."""
        self.t2i.add_keys(text_ids, t2i_keys)
        self.i2t.add_keys(image_ids, i2t_keys)
        self.t2i.beaten_by[text_ids] += t2i_beaten
        self.i2t.beaten_by[image_ids] += i2t_beaten

    def topk(self, direction: str) -> tuple[np.ndarray, np.ndarray]:
        return {"t2i": self.t2i, "i2t": self.i2t}[direction].topk()

    def ranks(self) -> tuple[np.ndarray, np.ndarray]:
        return self.t2i.ranks(), self.i2t.ranks()

    def metrics(self, ks=(1, 5, 10)) -> dict:
        t2i, i2t = self.ranks()
        return bidirectional_metrics(t2i, i2t, n_images=len(self.image_groups),
                                     n_texts=len(self.text_groups), ks=ks)


def reduce_tile(text_ids: np.ndarray, image_ids: np.ndarray, scores: np.ndarray,
                text_groups: np.ndarray, image_groups: np.ndarray, k: int,
                positives: tuple[np.ndarray, np.ndarray] | None) -> dict[str, np.ndarray]:
    """A tile's contribution in O((nt + ni) * K): its top-K keys and, given the positives'
    keys, how many incorrect items each query's best correct item is beaten by, for both
    directions. What a scoring worker sends back instead of the tile's scores."""
    text_ids, image_ids = np.asarray(text_ids), np.asarray(image_ids)
    if positives is None:
        positives = (None, None)
    scores = np.asarray(scores, dtype=np.float32)
    correct = text_groups[text_ids, None] == image_groups[None, image_ids]
    out = {}
    for name, q_ids, g_ids, s, c, pos in (
            ("t2i", text_ids, image_ids, scores, correct, positives[0]),
            ("i2t", image_ids, text_ids, scores.T, correct.T, positives[1])):
        keys = order_keys(s, g_ids[None, :])
        out[f"{name}_keys"] = topk_keys(keys, k)
        out[f"{name}_beaten"] = (np.zeros(len(q_ids), np.int64) if pos is None
                                 else ((keys > pos[q_ids, None]) & ~c).sum(1))
    return out


def fused_scores(rerank_scores, first_scores, alpha: float) -> np.ndarray:
    """THE retrieve-and-rerank rule, used everywhere a candidate is re-ordered: the
    re-ranker's score (fusion match logit) + ``alpha`` x the first stage's (two-tower
    cosine). float32, whatever the inputs."""
    return (np.asarray(rerank_scores, np.float32)
            + np.float32(alpha) * np.asarray(first_scores, np.float32))


def fuse(rescored: dict, text_groups, image_groups, alpha: float = 0.0, k: int | None = None,
         top: int | None = None) -> dict:
    """Re-order each query's first ``k`` candidates (all by default) by ``fused_scores``.
    ``rescored[d]`` = {candidates, scores (the re-ranker's), first, first_ranks} per direction
    (``ScoringPlan.rescore_candidates``). Returns {d: (top rows, top scores, exact ranks)},
    ``top`` (default all of the ``k``) kept per query."""
    out = {}
    for d in ("t2i", "i2t"):
        r = rescored[d]
        kc = r["candidates"].shape[1] if k is None else k
        queries, gallery = ((text_groups, image_groups) if d == "t2i"
                            else (image_groups, text_groups))
        fused = fused_scores(r["scores"][:, :kc], r["first"][:, :kc], alpha)
        out[d] = rerank(r["candidates"][:, :kc], fused, r["first_ranks"], queries, gallery,
                        min(top or kc, kc))
    return out


def rerank(candidates: np.ndarray, scores: np.ndarray, first_stage_ranks: np.ndarray,
           query_groups: np.ndarray, gallery_groups: np.ndarray, k: int):
    """Re-order each query's first-stage candidates by new scores (retrieve-and-rerank, as
    ALBEF/BLIP evaluate). Items outside the candidates keep their first-stage order behind
    the re-ordered candidates, so a query whose correct item was not retrieved keeps its
    first-stage rank (>= the number of candidates). Returns (top-k indices, top-k scores,
    exact ranks)."""
    candidates = np.asarray(candidates)
    n, kc = candidates.shape
    if k > kc:
        raise ValueError(f"top-{k} asked for, but only {kc} candidates were re-scored")
    keys = order_keys(scores, candidates)
    order = np.argsort(-keys, axis=1, kind="stable")
    ranked = np.take_along_axis(candidates, order, axis=1)
    ranked_scores = np.take_along_axis(np.asarray(scores, np.float32), order, axis=1)
    hit = np.asarray(gallery_groups)[ranked] == np.asarray(query_groups)[:, None]
    ranks = np.where(hit.any(1), hit.argmax(1), np.asarray(first_stage_ranks)).astype(np.int64)
    return ranked[:, :k], ranked_scores[:, :k], ranks
