"""The frozen encoders' outputs of a split, encoded once (``core.frozen_store``) by a Ray Data
batch-inference stage, or reused when a store with the same key exists:

    store, meta = ensure_store(cache, model, config, tokenizer, files, ...)

Training workers hold the stored splits in memory (``core.frozen_store.StoredSplit``); the
scoring jobs run each model's trainable rest over them (``ray_jobs.gallery``).

The encode stage is one actor stage (read row groups + preprocess + run the frozen layers):
no read tasks compete with the actors for CPUs, and each actor runs torch on as many
threads as the CPUs it reserves (Ray would give it one).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Callable

import numpy as np
import ray
import ray.data
import torch

from core.data.preprocess import count_skips, merge_counts
from core.data.rocov2 import SplitFiles, columns_to_read, read_row_group, row_groups, split_identity
from core.frozen_store import FrozenStore, store_key
from core.training.frozen_features import encode_frozen
from ray_jobs.runtime import Progress

log = logging.getLogger("rocoray.frozen")

STORE_BLOCK = 128  # rows per stored block (about 22 MB at 224 px with a 7x7x1280 grid)


class FrozenStageEncoder:
    """Ray Data actor: read row groups, preprocess, run the model's frozen layers."""

    def __init__(self, build_model: Callable[[], torch.nn.Module], preprocessor, filesystem,
                 columns: list[str], threads: int, device: str = "cpu",
                 precision: str = "fp32"):
        torch.set_num_threads(threads)  # the CPUs this actor reserved, not Ray's one thread
        self.device = "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"
        self.model = build_model().to(self.device).eval()
        self.preprocessor, self.filesystem, self.columns = preprocessor, filesystem, columns
        self.precision = precision

    def __call__(self, units: dict) -> dict:
        parts = []
        for path, group in zip(units["path"], units["row_group"]):
            table = read_row_group(self.filesystem, str(path), int(group), self.columns)
            cui = table.column("cui").to_pylist() if "cui" in table.column_names else None
            for start in range(0, table.num_rows, 64):
                rows = self.preprocessor(table.slice(start, 64))
                out = encode_frozen(self.model, rows, device=self.device, precision=self.precision)
                out["cui"] = np.empty(len(rows["skip"]), dtype=object)
                out["cui"][:] = [list(c or []) for c in cui[start:start + 64]] if cui else [[]] * len(
                    rows["skip"])
                parts.append(out)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def ensure_store(cache: str, model, model_config, tokenizer, files: SplitFiles,
                 max_rows: int | None, build_model: Callable[[], torch.nn.Module],
                 preprocessor, actors: int = 1, cpus: float = 1.0,
                 gpus_per_actor: float = 0.0,
                 precision: str = "fp32") -> tuple[FrozenStore, dict] | None:
    """The complete frozen store of this split for ``model``'s frozen layers: reused when one
    with the same key exists under ``cache``, else encoded now by up to ``actors`` actors
    sharing ``cpus`` CPUs (``build_model`` makes the model inside each actor; each runs
    torch on the cores it reserved, in ``precision``: the run's training precision, so
    training, scoring and serve share one store). None when the model has no frozen layers."""
    identity = split_identity(files)
    key = store_key(model, model_config, tokenizer, identity, max_rows, precision)
    if key is None:
        return None
    if max_rows is not None:  # the whole split's store serves its first rows too
        whole = FrozenStore.find(cache, store_key(model, model_config, tokenizer, identity, None,
                                                 precision))
        if whole is not None:
            return _reused(whole, files.split, max_rows)
    store = FrozenStore.find(cache, key)
    if store is not None:
        return _reused(store, files.split, max_rows)
    store, _ = FrozenStore.open(cache, key)
    units = row_groups(files, max_rows)
    rows = sum(n for _, _, n in units)
    rows = rows if max_rows is None else min(rows, max_rows)
    actors = max(1, min(actors, len(units)))
    cpus_per_actor = cpus / actors
    threads = max(1, math.ceil(cpus_per_actor - 1e-9))
    ds = ray.data.from_items([{"path": p, "row_group": g} for p, g, _ in units],
                             override_num_blocks=len(units))
    with warnings.catch_warnings():
        # max_restarts=0, as the gallery encoder: a failed actor surfaces instead of
        # restarting, and Ray core prints no error-level note about restarting an actor whose
        # constructor arguments live in the object store (ray-project/ray#53727)
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ds.map_batches(
            FrozenStageEncoder, fn_constructor_args=(build_model, preprocessor, files.filesystem,
                                                     columns_to_read(files), threads,
                                                     "cuda" if gpus_per_actor else "cpu",
                                                     precision),
            batch_size=1, batch_format="numpy", num_cpus=cpus_per_actor, num_gpus=gpus_per_actor,
            compute=ray.data.ActorPoolStrategy(size=actors), max_restarts=0)
    ds.context.execution_options.preserve_order = True  # the store keeps the split's order
    if max_rows is not None:
        ds = ds.limit(max_rows)
    blocks, written, skipped, seconds = _write(store, ds, files.split, rows)
    meta = dict(store.finish(blocks, written, skipped, seconds), reused=False, limit=max_rows)
    log.info("%s split: frozen encoders ran once over %d rows in %.0f s (%.1f rows/s, %d "
             "actor(s) x %d thread(s), %s); skipped %s", files.split, written, seconds,
             written / max(seconds, 1e-9), actors, threads, precision,
             skipped or "none")
    return store, meta


def _write(store: FrozenStore, ds, split: str, rows: int) -> tuple[int, int, dict, float]:
    """The stage's output into the store, block by block, with progress: (blocks, rows
    written, skipped counts, seconds)."""
    t0 = time.perf_counter()
    progress = Progress(f"{split} split: frozen encoder outputs", total=rows, every=10.0)
    blocks, written, skipped = 0, 0, {}
    for batch in ds.iter_batches(batch_size=STORE_BLOCK, batch_format="numpy"):
        store.write_block(blocks, batch)
        blocks += 1
        written += len(batch["skip"])
        skipped = merge_counts(skipped, count_skips(np.asarray(batch["skip"])))
        progress.update(len(batch["skip"]))
    return blocks, written, skipped, time.perf_counter() - t0


def _reused(store: FrozenStore, split: str, limit: int | None) -> tuple[FrozenStore, dict]:
    meta = dict(store.meta(), reused=True, limit=limit)
    log.info("%s split: the frozen encoders' outputs of %d rows reused%s (%s)", split,
             meta["rows"], f" (its first {limit})" if limit is not None else "", store.root)
    return store, meta
