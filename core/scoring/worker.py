"""The per-item computation of the scoring plan: what one worker (a Ray actor, or the
single process) does with one work item, given the model and a way to get feature blocks."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from core.features import Features
from core.precision import autocast
from core.retrieval import reduce_tile
from core.scoring.pairs import pair_scores
from core.scoring.plan import ScoringPlan, WorkItem, WorkKind

BlockSource = Callable[[str, int], Features]  # (side, block) -> features on the device


@torch.no_grad()
def score_block(model, text: Features, image: Features, chunk: int,
                only: set[tuple[int, int]] | None = None) -> np.ndarray:
    """(Nt, Ni) float32 scores of a block, computed in ``chunk`` x ``chunk`` sub-blocks.

    Sub-blocks are aligned to the block start; with blocks a multiple of ``chunk`` a pair's
    score comes from the same sub-block computation whichever tile computes it (the
    positives pass and the tile pass agree bit for bit). ``only``: compute just these
    sub-blocks (the rest stays NaN)."""
    nt, ni = len(text), len(image)
    out = torch.full((nt, ni), float("nan"), dtype=torch.float32)
    for a in range(0, nt, chunk):
        t = None
        for b in range(0, ni, chunk):
            if only is not None and (a // chunk, b // chunk) not in only:
                continue
            t = t if t is not None else text.index(slice(a, a + chunk))
            sub = model.score(t, image.index(slice(b, b + chunk)))
            out[a:a + chunk, b:b + chunk] = sub.float().cpu()
    return out.numpy()


def score_candidates(model, queries: Features, gallery: Features, candidates: np.ndarray,
                     query_side: str) -> np.ndarray:
    """Scores of each query with its own candidates: ``candidates`` (nq, kc) are rows of
    ``gallery``. Returns (nq, kc).

    The pairs path (``core.scoring.pairs``, cache-sized batches of pairs ordered by caption
    length) rather than each query with its candidates as a 1 x kc block (``model.score``):
    ``python -m bench.pair_batching`` times both."""
    nq, kc = candidates.shape
    own, listed = np.repeat(np.arange(nq), kc), candidates.reshape(-1)
    text, image, ti, ii = ((queries, gallery, own, listed) if query_side == "text"
                           else (gallery, queries, listed, own))
    return pair_scores(model, text, image, ti, ii).reshape(nq, kc)


def gather_rows(blocks: BlockSource, side: str, rows: np.ndarray, block: int) -> Features:
    """Features of arbitrary gallery rows (any order), from the blocks holding them."""
    rows = np.asarray(rows)
    parts, order = [], []
    for b in np.unique(rows // block):
        sel = np.nonzero(rows // block == b)[0]
        parts.append(blocks(side, int(b)).index(torch.as_tensor(rows[sel] - b * block)))
        order.append(sel)
    gathered = type(parts[0]).cat(parts)
    return gathered.index(torch.as_tensor(np.argsort(np.concatenate(order), kind="stable")))


class TileWorker:
    """Runs work items of a ``ScoringPlan``: ``run(item, context)`` -> dict of numpy arrays,
    each with ``pairs``: how many (caption, image) pairs the model scored for it.

    ``context`` carries what a phase needs: ``positives`` (t2i, i2t keys) for TILE items,
    ``candidates`` ({direction: (Nq, kc) gallery rows}) for RERANK items."""

    def __init__(self, model, blocks: BlockSource, plan: ScoringPlan, device="cpu",
                 precision: str = "fp32"):
        self.model, self.blocks, self.plan = model, blocks, plan
        self.device, self.precision = torch.device(device), precision
        self._positive_pairs = None

    def run(self, item: WorkItem, context: dict) -> dict[str, np.ndarray]:
        with autocast(self.device, self.precision):
            if item.kind is WorkKind.POSITIVES:
                return self._positives(item)
            if item.kind is WorkKind.TILE:
                return self._tile(item, context["positives"])
            return self._rerank(item, context["candidates"])

    def _positives(self, item: WorkItem) -> dict:
        if self._positive_pairs is None:
            self._positive_pairs = self.plan.positive_tiles()
        ti, ii = self._positive_pairs[(item.a, item.b)]
        plan = self.plan
        lt, li = ti - item.a * plan.block, ii - item.b * plan.block  # rows inside the tile
        only = set(zip((lt // plan.chunk).tolist(), (li // plan.chunk).tolist()))
        scores = score_block(self.model, self.blocks("text", item.a),
                             self.blocks("image", item.b), plan.chunk, only)
        nt, ni = scores.shape
        pairs = sum(min(plan.chunk, nt - a * plan.chunk) * min(plan.chunk, ni - b * plan.chunk)
                    for a, b in only)  # every pair of the sub-blocks computed, not only positives
        return {"text_index": ti, "image_index": ii, "scores": scores[lt, li],
                "pairs": np.int64(pairs)}

    def _tile(self, item: WorkItem, positives) -> dict:
        plan = self.plan
        scores = score_block(self.model, self.blocks("text", item.a),
                             self.blocks("image", item.b), plan.chunk)
        return {**reduce_tile(plan.rows("text", item.a), plan.rows("image", item.b), scores,
                              plan.text_groups, plan.image_groups, plan.k, positives),
                "pairs": np.int64(scores.size)}

    def _rerank(self, item: WorkItem, candidates: dict) -> dict:
        plan = self.plan
        side, other = ("text", "image") if item.direction == "t2i" else ("image", "text")
        cand = candidates[item.direction][plan.rows(side, item.a)]  # (nq, kc) gallery rows
        rows, local = np.unique(cand, return_inverse=True)  # each candidate gathered once
        gallery = gather_rows(self.blocks, other, rows, plan.block)
        return {"scores": score_candidates(self.model, self.blocks(side, item.a), gallery,
                                           local.reshape(cand.shape), side),
                "pairs": np.int64(cand.size)}


def local_executor(worker: TileWorker):
    """Run items one after another in this process: the single-process reference."""
    def execute(items, context):
        for item in items:
            yield item, worker.run(item, context)
    return execute
