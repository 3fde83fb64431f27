"""The scoring plan: what work a retrieval over a gallery is cut into, and how the pieces
come back together. Ray-free: the single-process reference (``core.evaluation``) and the Ray
scoring job (``ray_jobs.score``) run the very same plan, each with its own executor.

The caption x image score matrix is cut into ``block`` x ``block`` tiles:

    1. POSITIVES  the tiles that hold correct (caption, image) pairs score those pairs;
                  their keys (``core.retrieval.positive_keys``) make ranks exact.
    2. TILE       every tile is scored; each sends back only its top-K lists and, per
                  query, how many incorrect items beat the query's best correct item.
    3. RERANK     (retrieve-and-rerank) a block of queries is scored against each query's
                  own first-stage candidates.

A work item is a small frozen dataclass; an executor maps items to results (dicts of numpy
arrays). ``run_retrieval`` and ``run_rerank`` are the whole algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable, Iterator

import numpy as np

from core.retrieval import StreamingRetrieval, correct_pairs, fuse, positive_keys
from core.models.kind import ModelKind

DIRECTIONS = ("t2i", "i2t")


class WorkKind(str, Enum):
    POSITIVES = "positives"
    TILE = "tile"
    RERANK = "rerank"


@dataclass(frozen=True)
class WorkItem:
    kind: WorkKind
    a: int  # text block (RERANK: the query block)
    b: int = 0  # image block (RERANK: unused)
    direction: str = "t2i"  # RERANK only: t2i (caption queries) or i2t (image queries)

    @property
    def name(self) -> str:
        if self.kind is WorkKind.RERANK:
            return f"{self.kind.value}-{self.direction}-{self.a:05d}"
        return f"{self.kind.value}-{self.a:05d}-{self.b:05d}"


def tile_shape(kind: str, device_type: str, memory_bytes: int | None = None) -> tuple[int, int]:
    """(block, chunk) sized for the device. On CPUs small working sets run fastest (a 16 x 16
    fusion sub-block); a GPU wants hundreds of thousands of pairs per tile: 256 x 256
    sub-blocks in 1024 x 1024 tiles, halved on GPUs with less than 40 GB. The GPU sizes are
    a default, not a measurement: no GPU run has measured them yet (`python -m bench.gpu`
    writes bench/results/gpu.json, which would). The two-tower score is one matmul per tile."""
    if kind == ModelKind.TWO_TOWER:
        return (4096, 4096)
    if device_type != "cuda":
        return (64, 16)
    chunk = 256 if (memory_bytes or 0) >= 40 * 2**30 else 128
    return (4 * chunk, chunk)


def fit_tile(block: int, chunk: int) -> tuple[int, int]:
    """(block, chunk) with the chunk no larger than the block and the block a multiple of it
    (positives and tiles must share sub-blocks): the one rounding rule of every caller."""
    chunk = min(chunk, block)
    return block - block % chunk, chunk


def default_tile(model, device_type: str = "cpu") -> tuple[int, int]:
    """``tile_shape`` for a model object (its ``kind``)."""
    return tile_shape(model.kind, device_type)


# An executor runs work items with a context (positives, candidates) and yields
# (item, result) as results land, in any order.
Executor = Callable[[list[WorkItem], dict], Iterator[tuple[WorkItem, dict]]]


@dataclass
class ScoringPlan:
    text_groups: np.ndarray  # caption-group id of each caption (= gallery row)
    image_groups: np.ndarray  # caption-group id of each image
    block: int  # rows per feature block = tile side
    chunk: int  # sub-block side inside a tile (block is a multiple of it)
    k: int  # top-K kept per query

    def __post_init__(self):
        # (caption, image) pairs the model scored, counted from the items' results by kind
        # (a result reused from a cache counts: it is what the model computed for this output)
        self.pairs_scored: dict[str, int] = {}
        self.text_groups = np.asarray(self.text_groups)
        self.image_groups = np.asarray(self.image_groups)
        if self.block < 1 or self.chunk < 1 or self.block % self.chunk:
            raise ValueError(f"block ({self.block}) must be a positive multiple of chunk "
                             f"({self.chunk}): positives and tiles must share sub-blocks")

    def size(self, side: str) -> int:
        return len(self.text_groups if side == "text" else self.image_groups)

    def blocks(self, side: str) -> int:
        return -(-self.size(side) // self.block)

    def rows(self, side: str, b: int) -> np.ndarray:
        return np.arange(b * self.block, min((b + 1) * self.block, self.size(side)))

    # --- the items ---------------------------------------------------------------------------
    def positive_tiles(self) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
        """The tiles (a, b) that hold correct pairs, with those pairs' (caption, image) rows."""
        ti, ii = correct_pairs(self.text_groups, self.image_groups)
        tiles: dict = {}
        for t, i in zip(ti.tolist(), ii.tolist()):
            pair = tiles.setdefault((t // self.block, i // self.block), ([], []))
            pair[0].append(t)
            pair[1].append(i)
        return {key: (np.asarray(t), np.asarray(i)) for key, (t, i) in sorted(tiles.items())}

    def positive_items(self) -> list[WorkItem]:
        return [WorkItem(WorkKind.POSITIVES, a, b) for a, b in self.positive_tiles()]

    def tile_items(self) -> list[WorkItem]:
        return [WorkItem(WorkKind.TILE, a, b) for a in range(self.blocks("text"))
                for b in range(self.blocks("image"))]

    def rerank_items(self) -> list[WorkItem]:
        return [WorkItem(WorkKind.RERANK, a, direction=d) for d in DIRECTIONS
                for a in range(self.blocks("text" if d == "t2i" else "image"))]

    # --- putting results together ------------------------------------------------------------
    def _counted(self, results: Iterable[tuple[WorkItem, dict]]):
        for item, part in results:
            part = dict(part)
            kind = item.kind.value
            self.pairs_scored[kind] = self.pairs_scored.get(kind, 0) + int(part.pop("pairs"))
            yield item, part

    def positive_keys(self, results: Iterable[tuple[WorkItem, dict]]):
        parts = [r for _, r in self._counted(results)]
        if not parts:
            raise ValueError("no correct pairs in the gallery")
        return positive_keys(np.concatenate([p["text_index"] for p in parts]),
                             np.concatenate([p["image_index"] for p in parts]),
                             np.concatenate([p["scores"] for p in parts]),
                             self.size("text"), self.size("image"))

    def run_retrieval(self, execute: Executor, on_tile=None) -> StreamingRetrieval:
        """Positives first (an O(N) pass), then every tile, merged into a streaming top-K with
        exact ranks. ``on_tile(item)`` is called as each tile lands (progress)."""
        positives = self.positive_keys(execute(self.positive_items(), {}))
        acc = StreamingRetrieval(self.text_groups, self.image_groups, self.k, positives)
        for item, part in self._counted(execute(self.tile_items(), {"positives": positives})):
            acc.add_partial(self.rows("text", item.a), self.rows("image", item.b), **part)
            if on_tile is not None:
                on_tile(item)
        return acc

    def rescore_candidates(self, execute: Executor, first_stage: dict) -> dict:
        """The re-ranker's scores of each query's first-stage candidates.

        ``first_stage[d]`` = (candidate rows (Nq, kc), first-stage scores, first-stage ranks)
        per direction. Returns {d: {candidates, scores (the re-ranker's), first, first_ranks}}:
        everything any (k, alpha) choice needs (``fuse``)."""
        candidates = {d: np.asarray(first_stage[d][0]) for d in DIRECTIONS}
        scores = {d: np.empty(candidates[d].shape, np.float32) for d in DIRECTIONS}
        for item, part in self._counted(execute(self.rerank_items(), {"candidates": candidates})):
            side = "text" if item.direction == "t2i" else "image"
            scores[item.direction][self.rows(side, item.a)] = part["scores"]
        return {d: {"candidates": candidates[d], "scores": scores[d],
                    "first": np.asarray(first_stage[d][1], np.float32),
                    "first_ranks": np.asarray(first_stage[d][2])} for d in DIRECTIONS}

    def fuse(self, rescored: dict, alpha: float = 0.0, k: int | None = None) -> dict:
        """``core.retrieval.fuse`` with this plan's groups, the plan's K kept per query."""
        return fuse(rescored, self.text_groups, self.image_groups, alpha, k, self.k)

    def run_rerank(self, execute: Executor, first_stage: dict, alpha: float = 0.0) -> dict:
        """Retrieve-and-rerank: ``rescore_candidates`` then ``fuse`` with ``alpha``."""
        return self.fuse(self.rescore_candidates(execute, first_stage), alpha)
