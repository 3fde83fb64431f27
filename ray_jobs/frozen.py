"""The frozen encoders' outputs of a split, encoded once (``core.frozen_store``) by a Ray Data
batch-inference stage, or reused when a store with the same key exists:

    store, meta = ensure_store(cache, model, config, tokenizer, files, ...)
    [(store, meta), ...] = ensure_stores(cache, model, config, tokenizer, [train, val], ...)

Training workers hold the stored splits in memory (``core.frozen_store.StoredSplit``); the
scoring jobs run each model's trainable rest over them (``ray_jobs.gallery``).

The encode stage is one actor stage (read row groups + preprocess + run the frozen layers):
no read tasks compete with the actors for CPUs. On CPUs each actor runs as many calls at once
as the CPUs it reserves, each call on one torch thread (``stage_streams``): whole batches side
by side, instead of one batch's ops split over threads that wait for each other at every op
(``bench.encode_rate`` measures the two in one process). Starting an actor (a worker process,
torch and the model) costs seconds, so the splits a job needs (training's train and
validation) are encoded by one stage, one start-up for all of them.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import threading
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
    """Ray Data actor: read row groups, preprocess, run the model's frozen layers. A unit is
    (part, path, row group): ``part`` indexes the splits encoded by this stage (their
    filesystems and columns) and comes back with each output row. Calls may run at once, in
    threads (``stage_streams``): each thread preprocesses with its own copy of the
    preprocessor (a fast tokenizer must not be shared between threads); the model is only read."""

    def __init__(self, build_model: Callable[[], torch.nn.Module], preprocessor,
                 filesystems: list, columns: list[list[str]], threads: int,
                 device: str = "cpu", precision: str = "fp32"):
        torch.set_num_threads(threads)  # each call's torch threads, not Ray's one thread
        self.device = "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"
        self.model = build_model().to(self.device).eval()
        self.preprocessor, self.filesystems, self.columns = preprocessor, filesystems, columns
        self.precision, self.local = precision, threading.local()

    def __call__(self, units: dict) -> dict:
        if not hasattr(self.local, "preprocessor"):
            self.local.preprocessor = copy.deepcopy(self.preprocessor)
        parts = []
        for part, path, group in zip(units["part"], units["path"], units["row_group"]):
            part = int(part)
            table = read_row_group(self.filesystems[part], str(path), int(group),
                                   self.columns[part])
            cui = table.column("cui").to_pylist() if "cui" in table.column_names else None
            for start in range(0, table.num_rows, 64):
                rows = self.local.preprocessor(table.slice(start, 64))
                out = encode_frozen(self.model, rows, device=self.device, precision=self.precision)
                n = len(rows["skip"])
                out["cui"] = np.empty(n, dtype=object)
                out["cui"][:] = [list(c or []) for c in cui[start:start + 64]] if cui else [[]] * n
                out["part"] = np.full(n, part, dtype=np.int32)
                parts.append(out)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def ensure_store(cache: str, model, model_config, tokenizer, files: SplitFiles,
                 max_rows: int | None, build_model: Callable[[], torch.nn.Module],
                 preprocessor, actors: int = 1, cpus: float = 1.0,
                 gpus_per_actor: float = 0.0,
                 precision: str = "fp32") -> tuple[FrozenStore, dict] | None:
    """The complete frozen store of one split (``ensure_stores`` of one)."""
    found = ensure_stores(cache, model, model_config, tokenizer, [files], max_rows,
                          build_model, preprocessor, actors, cpus, gpus_per_actor, precision)
    return None if found is None else found[0]


def ensure_stores(cache: str, model, model_config, tokenizer, splits: list[SplitFiles],
                  max_rows: int | None, build_model: Callable[[], torch.nn.Module],
                  preprocessor, actors: int = 1, cpus: float = 1.0,
                  gpus_per_actor: float = 0.0,
                  precision: str = "fp32") -> list[tuple[FrozenStore, dict]] | None:
    """The complete frozen store of each split for ``model``'s frozen layers (their first
    ``max_rows`` rows), in the order given: reused when one with the same key exists under
    ``cache``; the others encoded now, all in ONE Ray Data stage of up to ``actors`` actors
    sharing ``cpus`` CPUs (``build_model`` makes the model inside each actor; each runs torch
    on the cores it reserved, in ``precision``: the run's training precision, so training,
    scoring and serve share one store). None when the model has no frozen layers."""
    keys = [store_key(model, model_config, tokenizer, split_identity(f), max_rows, precision)
            for f in splits]
    if keys[0] is None:
        return None
    out, todo = [None] * len(splits), {}
    for i, (files, key) in enumerate(zip(splits, keys)):
        found = _find(cache, model, model_config, tokenizer, files, key, max_rows, precision)
        if found is not None:
            out[i] = _reused(found, files.split, max_rows)
        else:  # a split named twice is encoded once
            todo.setdefault(json.dumps(key, sort_keys=True, default=str), []).append(i)
    if todo:
        first = [same[0] for same in todo.values()]
        encoded = _encode(cache, [splits[i] for i in first], [keys[i] for i in first], max_rows,
                          build_model, preprocessor, actors, cpus, gpus_per_actor, precision)
        for same, done in zip(todo.values(), encoded):
            for i in same:
                out[i] = done
    return out


def _find(cache, model, model_config, tokenizer, files, key, max_rows, precision):
    """A complete store that holds this split's first ``max_rows`` rows, or None."""
    if max_rows is not None:  # the whole split's store serves its first rows too
        whole = FrozenStore.find(cache, store_key(model, model_config, tokenizer,
                                                 split_identity(files), None, precision))
        if whole is not None:
            return whole
    return FrozenStore.find(cache, key)


def _encode(cache, splits: list[SplitFiles], keys: list[dict], max_rows, build_model,
            preprocessor, actors, cpus, gpus_per_actor, precision) -> list[tuple[FrozenStore, dict]]:
    """One Ray Data actor stage over every row group of ``splits``, written into one new
    store per split: [(store, meta)]."""
    stores = [FrozenStore.open(cache, key)[0] for key in keys]
    units = [(part, *unit) for part, files in enumerate(splits)
             for unit in row_groups(files, max_rows)]
    rows = [sum(n for q, _, _, n in units if q == part) for part in range(len(splits))]
    rows = rows if max_rows is None else [min(r, max_rows) for r in rows]
    actors = max(1, min(actors, len(units)))
    cpus_per_actor = cpus / actors
    streams, threads = stage_streams(cpus_per_actor, gpus_per_actor)
    ds = ray.data.from_items([{"part": q, "path": p, "row_group": g} for q, p, g, _ in units],
                             override_num_blocks=len(units))
    with warnings.catch_warnings():
        # max_restarts=0, as the gallery encoder: a failed actor surfaces instead of
        # restarting, and Ray core prints no error-level note about restarting an actor whose
        # constructor arguments live in the object store (ray-project/ray#53727)
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ds.map_batches(
            FrozenStageEncoder,
            fn_constructor_args=(build_model, preprocessor, [f.filesystem for f in splits],
                                 [columns_to_read(f) for f in splits], threads,
                                 "cuda" if gpus_per_actor else "cpu", precision),
            batch_size=1, batch_format="numpy", num_cpus=cpus_per_actor, num_gpus=gpus_per_actor,
            compute=ray.data.ActorPoolStrategy(size=actors, max_concurrent_calls_per_actor=streams,
                                               enable_true_multi_threading=streams > 1),
            max_restarts=0)
    ds.context.execution_options.preserve_order = True  # the stores keep the splits' order
    names = [f.split for f in splits]
    written = _write(stores, ds, names, rows)
    out = []
    for files, store, (blocks, n, skipped, seconds) in zip(splits, stores, written):
        stage = {"splits": names, "seconds": sum(w[3] for w in written)}
        meta = dict(store.finish(blocks, n, skipped, seconds, stage), reused=False,
                    limit=max_rows)
        log.info("%s split: frozen encoders ran once over %d rows (%s: %d rows in %.0f s, "
                 "%.1f rows/s, %d actor(s) x %d call(s) at once x %d thread(s), %s); skipped %s",
                 files.split, n,
                 "one stage for the " + " + ".join(names) + " splits" if len(names) > 1
                 else "its stage", sum(w[1] for w in written), stage["seconds"],
                 sum(w[1] for w in written) / max(stage["seconds"], 1e-9), actors, streams,
                 threads, precision, skipped or "none")
        out.append((store, meta))
    return out


def stage_streams(cpus_per_actor: float, gpus_per_actor: float = 0.0) -> tuple[int, int]:
    """(calls at once, torch threads per call) for an encode actor reserving these CPUs: on
    CPUs one single-threaded call per reserved core; on a GPU one call, its preprocessing on
    all the reserved cores."""
    cores = max(1, math.ceil(cpus_per_actor - 1e-9))
    return (1, cores) if gpus_per_actor else (cores, 1)


def _write(stores: list[FrozenStore], ds, names: list[str],
           rows: list[int]) -> list[tuple[int, int, dict, float]]:
    """The stage's output into each split's store (rows go by their ``part``; each split
    keeps its first ``rows`` rows), in blocks of ``STORE_BLOCK``, with progress: per split
    (blocks, rows written, skipped counts, seconds). A split's seconds are its share of the
    stage's wall time by rows (the actors' start-up shared): the splits' outputs overlap in
    the stream, so no split has a wall time of its own."""
    t0 = time.perf_counter()
    progress = Progress(f"{' + '.join(names)} split{'s' if len(names) > 1 else ''}: frozen "
                        "encoder outputs",
                        total=sum(rows), every=10.0)
    pending = [[] for _ in stores]
    state = [{"blocks": 0, "rows": 0, "skipped": {}} for _ in stores]

    def flush(i: int, final: bool) -> None:
        held = sum(len(p["skip"]) for p in pending[i])
        while held and (held >= STORE_BLOCK or final):
            batch = {k: np.concatenate([p[k] for p in pending[i]]) for k in pending[i][0]}
            take = min(STORE_BLOCK, held)
            stores[i].write_block(state[i]["blocks"], {k: v[:take] for k, v in batch.items()})
            state[i]["blocks"] += 1
            pending[i] = [{k: v[take:] for k, v in batch.items()}] if held > take else []
            held -= take

    for batch in ds.iter_batches(batch_size=STORE_BLOCK, batch_format="numpy"):
        for i in np.unique(batch["part"]):
            i = int(i)
            room = rows[i] - state[i]["rows"]
            part = {k: v[batch["part"] == i][:room] for k, v in batch.items()}
            n = len(part["skip"])
            if not n:
                continue
            pending[i].append(part)
            state[i]["rows"] += n
            state[i]["skipped"] = merge_counts(state[i]["skipped"], count_skips(part["skip"]))
            progress.update(n)
            flush(i, final=state[i]["rows"] == rows[i])  # its last block when complete
    for i in range(len(stores)):
        flush(i, final=True)  # a split with fewer rows than its footers said
    seconds = time.perf_counter() - t0
    total = max(1, sum(s["rows"] for s in state))
    return [(s["blocks"], s["rows"], s["skipped"], seconds * s["rows"] / total) for s in state]


def _reused(store: FrozenStore, split: str, limit: int | None) -> tuple[FrozenStore, dict]:
    meta = dict(store.meta(), reused=True, limit=limit)
    log.info("%s split: the frozen encoders' outputs of %d rows reused%s (%s)", split,
             meta["rows"], f" (its first {limit})" if limit is not None else "", store.root)
    return store, meta
