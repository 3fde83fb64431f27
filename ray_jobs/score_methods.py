"""The three scoring methods of ``rocoray score`` on an encoded gallery (``ray_jobs.gallery``):
two-tower (the plan in this process, a matmul per tile), fusion over all pairs (the plan on
one actor pool) and retrieve-and-rerank (the two-tower top-k re-scored by the fusion head).
Each returns (top-K results per direction, timings)."""

from __future__ import annotations

import time

import torch

from core import storage
from core.checkpoint import load_checkpoint
from core.evaluation.reference import in_memory_blocks
from core.models.kind import ModelKind
from core.scoring import ScoringPlan, TileWorker, fit_tile, local_executor, outputs, tile_shape
from core.scoring.settings import Method
from ray_jobs.actor_pool import ActorExecutor
from ray_jobs.gallery import Gallery
from ray_jobs.options import UserError


def tile_side(job, kind: ModelKind) -> tuple[int, int]:
    """(block, chunk) of ``kind``'s tiles on the job's device (flags win)."""
    memory = (torch.cuda.get_device_properties(0).total_memory
              if job.device == "cuda" and torch.cuda.is_available() else None)
    block, chunk = tile_shape(kind, job.device, memory)
    return fit_tile(job.settings.block or block, job.settings.chunk or chunk)


def two_tower_topk(job, gallery: Gallery, k: int):
    """Two-tower retrieval: the plan in this process, a matmul per tile (4096 x 4096 unless
    --block / --chunk say otherwise)."""
    model = load_checkpoint(job.checkpoints[ModelKind.TWO_TOWER]).model
    text, image = gallery.features("text"), gallery.features("image")
    block, chunk = tile_side(job, ModelKind.TWO_TOWER)
    plan = ScoringPlan(gallery.groups, gallery.groups, block=block, chunk=chunk, k=k)
    t0 = time.perf_counter()
    acc = plan.run_retrieval(local_executor(TileWorker(model, in_memory_blocks(text, image, block),
                                                       plan)))
    results = {d: (*acc.topk(d), r) for d, r in zip(("t2i", "i2t"), acc.ranks())}
    return results, {"score_s": time.perf_counter() - t0, "pairs": sum(plan.pairs_scored.values()),
                     "pairs_by_item": plan.pairs_scored}


def fusion_items_key(job, method: Method, features: dict, chunk: int) -> dict:
    """Everything a finished fusion work item depends on: the encoded gallery's own key, the
    sub-block, K, precision, the method (and for rerank its candidates)."""
    key = {"features": features, "chunk": chunk, "k": job.settings.k, "precision": job.precision,
           "method": method, "format": 2}  # 2: each item's result counts the pairs it scored
    if method is Method.RERANK:
        key["rerank_k"] = job.settings.rerank_k
    return key


def fusion_plan(job, gallery: Gallery, k: int) -> ScoringPlan:
    block, chunk = tile_side(job, ModelKind.FUSION)
    return ScoringPlan(gallery.groups, gallery.groups, block=block, chunk=chunk, k=k)


def fusion_topk(job, gallery: Gallery):
    plan = fusion_plan(job, gallery, job.settings.k)
    execute = ActorExecutor(job, ModelKind.FUSION, plan, gallery,
                            fusion_items_key(job, Method.FUSION, gallery.key, plan.chunk))
    t0 = time.perf_counter()
    acc = plan.run_retrieval(execute)
    results = {d: (*acc.topk(d), r) for d, r in zip(("t2i", "i2t"), acc.ranks())}
    stats = execute.stats
    tiles_s = stats["actor_seconds_by_kind"].get("tile", 0.0)
    # what the tiles cost beyond scoring them: the positives pass and the per-item cache
    overhead = stats["actor_seconds_by_kind"].get("positives", 0.0) + stats["cache_write_s"]
    return results, {"score_s": time.perf_counter() - t0, **stats,
                     "pairs": sum(plan.pairs_scored.values()), "pairs_by_item": plan.pairs_scored,
                     "overhead_share_of_tiles": overhead / tiles_s if tiles_s else None}


def rerank_topk(job, first: Gallery, gallery: Gallery):
    """The two-tower top-k candidates re-scored by the fusion head (2Nk pairs)."""
    if first.table.column("image_id").to_pylist() != gallery.table.column("image_id").to_pylist():
        raise UserError("the two-tower and fusion galleries differ: were they trained on "
                        "different data? Give --data explicitly")
    t0 = time.perf_counter()
    first_stage, first_timings = two_tower_topk(job, first, job.settings.rerank_k)
    for direction, (index, scores, ranks) in first_stage.items():  # what the retriever gave
        outputs.write_topk(storage.join(job.out, "first_stage"), direction, first.table, index,
                           scores, ranks)
    plan = fusion_plan(job, gallery, job.settings.k)
    execute = ActorExecutor(job, ModelKind.FUSION, plan, gallery, {
        **fusion_items_key(job, Method.RERANK, gallery.key, plan.chunk), "first_stage": first.key})
    rescored = plan.rescore_candidates(execute, first_stage)
    outputs.write_rescored(job.out, rescored)  # k and alpha can be re-chosen from these
    results = plan.fuse(rescored, job.settings.alpha)
    return results, {"score_s": time.perf_counter() - t0, **execute.stats,
                     "pairs": sum(plan.pairs_scored.values()), "pairs_by_item": plan.pairs_scored,
                     "first_stage_pairs": first_timings["pairs"],
                     "first_stage_score_s": first_timings["score_s"]}


