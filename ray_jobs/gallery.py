"""Stage 1 of the scoring job: encode every caption and image of a split once, as Ray Data
batch inference (read + preprocess + encode in one actor stage), into feature blocks that go
to the object store for the scoring actors and to a keyed cache for reruns."""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
import ray
import ray.data
import torch

from core import storage
from core.batch import collate
from core.checkpoint import checkpoint_identity, load_checkpoint
from core.data.preprocess import build_preprocessor, count_skips, merge_counts
from core.data.rocov2 import columns_to_read, read_row_group, row_groups, split_identity
from core.evaluation.reference import encode_inputs
from core.feature_store import FeatureStore
from core.frozen_store import frozen_identity, model_batch
from core.models import MODELS
from core.models.kind import ModelKind
from core.precision import autocast, training_precision
from core.scoring import outputs
from core.work_cache import keyed_dir
from ray_jobs.options import UserError
from ray_jobs.runtime import Progress

log = logging.getLogger("rocoray.score")

# What the driver keeps of every encoded row (outputs.write_gallery's columns, in order).
HOST_COLUMNS = ("image_id", "caption", "group", "concept_logits")


def torch_device(job_device: str) -> str:
    return "cuda" if job_device == "cuda" and torch.cuda.is_available() else "cpu"


def actor_resources(cfg) -> dict:
    return {"num_cpus": cfg.cpus_per_actor, "num_gpus": cfg.gpus_per_actor if cfg.use_gpu else 0}


def pool_size(cfg, units: int | None = None) -> int:
    """``cfg.actors``, capped at what the cluster can place at once (an actor that can never
    be placed would stall the pool: 2 one-GPU actors on a one-GPU machine) and at the work
    units there are."""
    total = ray.cluster_resources()
    fits = [cfg.actors]
    if cfg.cpus_per_actor:
        fits.append(int(total.get("CPU", 0) // cfg.cpus_per_actor))
    if cfg.use_gpu and cfg.gpus_per_actor:
        fits.append(int(total.get("GPU", 0) // cfg.gpus_per_actor))
    if units is not None:
        fits.append(units)
    size = max(1, min(fits))
    if size < cfg.actors:
        log.info("using %d actor(s) of the %d asked for (what fits: %s)", size, cfg.actors,
                 {k: total.get(k) for k in ("CPU", "GPU")})
    return size


class GalleryEncoder:
    """Ray Data actor: reads row groups, preprocesses and encodes both sides. Reading,
    preprocessing and encoding are ONE actor stage: no read tasks compete with the actor pool
    for CPUs (a deadlock on 2-CPU machines). Skipped rows come back with zero features and
    their reason, so the driver counts them."""

    def __init__(self, checkpoint: str, filesystem, columns: list[str], device: str,
                 precision: str, batch_size: int = 64, threads: int = 1):
        torch.set_num_threads(threads)  # the CPUs this actor reserved (Ray would give it one)
        self.device = torch_device(device)
        loaded = load_checkpoint(checkpoint, device=self.device)
        self.model, self.precision = loaded.model, precision
        self.preprocessor = build_preprocessor(loaded.config.model, loaded.tokenizer)
        self.filesystem, self.columns, self.batch_size = filesystem, columns, batch_size

    @torch.no_grad()
    def _encode(self, rows: dict) -> dict:
        batch = collate(rows, pin_memory=self.device == "cuda")
        keep = np.asarray(rows["skip"]) == 0
        out = {k: rows[k] for k in ("image_id", "caption", "group", "skip")}
        if not len(batch):
            return out | {"empty": np.ones(len(keep), bool)}
        inputs = batch.to(self.device).inputs
        texts = []
        with autocast(self.device, self.precision):
            image, concepts = encode_inputs(self.model, inputs, texts)
        feats = {"text": texts[0], "image": image}
        if concepts is not None:
            value = concepts.float().cpu().numpy()
            out["concept_logits"] = np.zeros((len(keep), value.shape[1]), np.float32)
            out["concept_logits"][keep] = value
        for side, f in feats.items():
            for name, value in f.numpy().items():
                full = np.zeros((len(keep), *value.shape[1:]), value.dtype)
                full[keep] = value
                out[f"{side}.{name}"] = full
        return out

    def __call__(self, units: dict) -> dict:
        parts = []
        for path, group in zip(units["path"], units["row_group"]):
            table = read_row_group(self.filesystem, str(path), int(group), self.columns)
            for start in range(0, table.num_rows, self.batch_size):
                parts.append(self._encode(self.preprocessor(table.slice(start, self.batch_size))))
        parts = [p for p in parts if "empty" not in p] or parts[:1]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "empty"}


@dataclass
class Gallery:
    """An encoded gallery: its rows, and its feature blocks in the object store."""

    kind: ModelKind
    key: dict  # what produced it (features_key)
    table: object  # pyarrow Table: image_id, caption, group
    refs: dict  # side -> [ObjectRef of a block's numpy arrays]
    block: int
    store: FeatureStore
    meta: dict

    @property
    def groups(self) -> np.ndarray:
        return self.table.column("group").to_numpy()

    def features(self, side: str):
        """Every block of one side, in this process."""
        types = MODELS[self.kind].feature_types
        return types[side].cat([types[side].from_numpy(ray.get(r)) for r in self.refs[side]])


def features_key(job, kind: ModelKind, block: int) -> dict:
    """Everything an encoded gallery depends on: the checkpoint's content (weights and
    config: model kind, preprocessing), the data shards and split, the rows, the block, the
    precision."""
    return {"checkpoint": checkpoint_identity(job.checkpoints[kind]),
            "data": split_identity(job.files), "max_items": job.cfg.max_items, "block": block,
            "precision": job.precision}


def encode(job, kind: ModelKind, block: int) -> Gallery:
    """Encode the split with ``kind``'s checkpoint once (``job``: a validated
    ``ray_jobs.score.Job``), or reuse a cached encoding that came from the same checkpoint,
    data, split, rows, block and precision."""
    checkpoint = job.checkpoints[kind]
    key = features_key(job, kind, block)
    root, _ = keyed_dir(job.cache, f"features-{kind}", key)
    store = FeatureStore(root, MODELS[kind].feature_types)
    meta = store.read_meta()
    if meta and meta.get("complete"):
        log.info("%s gallery: reusing %d encoded items from %s", kind, meta["n"], root)
        refs = {side: [ray.put(store.read_block(side, b).numpy()) for b in range(meta["blocks"])]
                for side in ("text", "image")}
        return Gallery(kind, key, storage.read_parquet(root, outputs.GALLERY), refs, block, store,
                       meta)

    loaded = load_checkpoint(checkpoint)
    if frozen_identity(loaded.model) is not None:
        return encode_from_frozen(job, kind, block, key, store, loaded)
    return encode_pixels(job, kind, block, key, store)


def encoder_dataset(job, checkpoint: str):
    """The split's row groups through ``GalleryEncoder`` actors, in the split's order."""
    cfg = job.cfg
    units = row_groups(job.files, cfg.max_items)
    ds = ray.data.from_items([{"path": p, "row_group": g} for p, g, _ in units],
                             override_num_blocks=len(units))
    with warnings.catch_warnings():
        # max_restarts=0: a failed encoder surfaces instead of restarting, and Ray core has
        # no error-level note to log about restarting an actor whose arguments live in the
        # object store. Ray Data's own docs name this keyword, which it also calls deprecated.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ds.map_batches(GalleryEncoder, fn_constructor_kwargs={
            "checkpoint": checkpoint, "filesystem": job.files.filesystem,
            "columns": columns_to_read(job.files), "device": job.device,
            "precision": job.precision,
            "threads": max(1, math.ceil(cfg.cpus_per_actor - 1e-9))},
            batch_size=1, compute=ray.data.ActorPoolStrategy(size=pool_size(cfg, len(units))),
            batch_format="numpy", max_restarts=0, **actor_resources(cfg))
    ds.context.execution_options.preserve_order = True  # the same gallery order on every run
    return ds.limit(cfg.max_items) if cfg.max_items is not None else ds


def encode_pixels(job, kind: ModelKind, block: int, key: dict, store: FeatureStore) -> Gallery:
    """Ray Data batch inference over the split's row groups (``GalleryEncoder``): the
    feature blocks go to the store and the object store as they come."""
    cfg, root = job.cfg, store.root
    ds = encoder_dataset(job, job.checkpoints[kind])
    t0 = time.perf_counter()
    refs, host, skipped, pending = {"text": [], "image": []}, [], {}, []
    progress = Progress(f"{kind} gallery: encoded rows", total=job.rows, every=5.0)

    def flush(final: bool = False) -> None:
        while pending and (final or sum(len(p["group"]) for p in pending) >= block):
            merged = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            head = {k: v[:block] for k, v in merged.items()}
            rest = {k: v[block:] for k, v in merged.items()}
            for side in ("text", "image"):
                arrays = {k.split(".", 1)[1]: v for k, v in head.items() if k.startswith(side + ".")}
                store.write_block(side, len(refs[side]), store.types[side].from_numpy(arrays))
                refs[side].append(ray.put(arrays))
            pending[:] = [rest] if len(rest["group"]) else []

    for batch in ds.iter_batches(batch_size=block, batch_format="numpy"):
        skip = np.asarray(batch["skip"])
        skipped = merge_counts(skipped, count_skips(skip))
        progress.update(len(skip))
        keep = skip == 0
        if keep.any():
            host.append({k: batch[k][keep] for k in HOST_COLUMNS if k in batch})
            pending.append({k: v[keep] for k, v in batch.items()
                            if k.startswith(("text.", "image.")) or k == "group"})
            flush()
    flush(final=True)
    if not host:
        raise UserError(f"the gallery is empty: split {cfg.split!r} of {cfg.data} has no usable "
                        f"rows (skipped: {skipped or 'none'})")
    table = outputs.write_gallery(root, *(np.concatenate([h[k] for h in host])
                                          if k in host[0] else None for k in HOST_COLUMNS))
    # every gallery row went through both towers once (rows skipped before encoding did not)
    meta = {"n": table.num_rows, "blocks": len(refs["text"]), "block": block, "skipped": skipped,
            "encode_s": time.perf_counter() - t0, "complete": True,
            "encoder_passes": {"text": table.num_rows, "image": table.num_rows}}
    store.write_meta(meta)
    log.info("%s gallery: encoded %d items in %d blocks (%.1fs); skipped %s", kind, meta["n"],
             meta["blocks"], meta["encode_s"], skipped or "none")
    return Gallery(kind, key, table, refs, block, store, meta)


def _load_model(checkpoint: str):
    return load_checkpoint(checkpoint).model


def write_blocks(store: FeatureStore, pending: list[dict], block: int) -> dict:
    """Each side's encoded rows, in blocks of ``block``, into the feature store and the
    object store: {side: [object refs]}."""
    refs = {"text": [], "image": []}
    for side in refs:
        features = store.types[side].cat([p[side] for p in pending])
        for i, start in enumerate(range(0, len(features), block)):
            part = features.index(slice(start, start + block))
            store.write_block(side, i, part)
            refs[side].append(ray.put(part.numpy()))
    return refs


def encode_from_frozen(job, kind: ModelKind, block: int, key: dict, store: FeatureStore,
                       loaded) -> Gallery:
    """A model with frozen encoder layers: their outputs over the split come from the frozen
    store (``ray_jobs.frozen``: encoded once by a Ray Data stage, or reused from training,
    the other model or an earlier job), and only the trainable rest of the model runs here,
    block by block, on them."""
    from ray_jobs.frozen import ensure_store

    cfg = job.cfg
    frozen, meta = ensure_store(
        job.cache, loaded.model, loaded.config.model, loaded.tokenizer, job.files, cfg.max_items,
        build_model=partial(_load_model, job.checkpoints[kind]),
        preprocessor=build_preprocessor(loaded.config.model, loaded.tokenizer),
        actors=pool_size(cfg), cpus=cfg.actors * cfg.cpus_per_actor,  # the pool's CPUs
        gpus_per_actor=cfg.gpus_per_actor if cfg.use_gpu else 0,  # in training's precision:
        precision=training_precision(loaded.config.train.precision, job.device))  # its store
    t0 = time.perf_counter()
    model, device = loaded.model.eval(), "cpu"
    host, pending, skipped, left = [], [], {}, meta["limit"]
    for b in range(meta["blocks"]):
        if left is not None and left <= 0:
            break
        rows = model_batch(frozen.read_block(b))
        if left is not None:
            rows = {k: v[:left] for k, v in rows.items()}
            left -= len(rows["skip"])
        batch = collate(rows)
        skipped = merge_counts(skipped, batch.skipped)
        if not len(batch):
            continue
        texts = []
        with torch.no_grad(), autocast(device, job.precision):
            image, concepts = encode_inputs(model, batch.inputs, texts)
        host.append({"image_id": batch.image_id, "caption": batch.caption, "group": batch.group,
                     **({"concept_logits": concepts.float().numpy()} if concepts is not None else {})})
        pending.append({"text": texts[0], "image": image})
    if not host:
        raise UserError(f"the gallery is empty: split {cfg.split!r} of {cfg.data} has no usable "
                        f"rows (skipped: {skipped or 'none'})")
    refs = write_blocks(store, pending, block)
    table = outputs.write_gallery(store.root, *(np.concatenate([h[k] for h in host])
                                                if k in host[0] else None for k in HOST_COLUMNS))
    gallery_meta = {"n": table.num_rows, "blocks": len(refs["text"]), "block": block,
                    "skipped": skipped, "complete": True,
                    # encode_s is the cost from scratch: the frozen layers' encoding (timed
                    # when it ran, maybe by an earlier job that this one reused) + the rest
                    "frozen_encode_s": meta["encode_s"], "frozen_store": frozen.root,
                    "frozen_reused": meta["reused"],
                    "encode_s": time.perf_counter() - t0 + meta["encode_s"],
                    # passes through the encoders this job ran (0 when the store was reused)
                    "encoder_passes": {"text": 0 if meta["reused"] else table.num_rows,
                                       "image": 0 if meta["reused"] else table.num_rows}}
    store.write_meta(gallery_meta)
    now = gallery_meta["encode_s"] - (meta["encode_s"] if meta["reused"] else 0.0)
    log.info("%s gallery: %d items from the frozen encoders' outputs (%s) in %.1fs%s; "
             "skipped %s", kind, gallery_meta["n"], "reused" if meta["reused"] else "encoded now",
             now, f" (+ {meta['encode_s']:.1f}s when the reused outputs were encoded)"
             if meta["reused"] else "", skipped or "none")
    return Gallery(kind, key, table, refs, block, store, gallery_meta)
