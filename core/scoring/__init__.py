"""Retrieval scoring over tiles: the plan (work items, positives pass, merging), the
per-item computation, and the gallery / top-K outputs. See ``plan.py``."""

from core.scoring.plan import DIRECTIONS, ScoringPlan, WorkItem, WorkKind, fit_tile, tile_shape
from core.scoring.worker import TileWorker, local_executor, score_block

__all__ = ["DIRECTIONS", "ScoringPlan", "TileWorker", "WorkItem", "WorkKind",
           "fit_tile", "local_executor", "score_block", "tile_shape"]
