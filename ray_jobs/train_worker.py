"""The Ray Train worker loop (``train_loop_per_worker``): plain PyTorch plus Ray Train's
``get_dataset_shard`` / ``prepare_model`` / ``report``, as setup, restore, train one epoch,
validate, save. ``ray_jobs.train`` (the driver) builds the datasets and the TorchTrainer
that runs it on every worker."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core import storage
from ray_jobs import faults
from core.concepts.detection import choose_threshold, probabilities
from core.checkpoint import (WEIGHTS, init_fusion_from_two_tower, load_train_state,
                             save_checkpoint, unwrap)
from core.batch import collate
from core.config import ExperimentConfig, config_from_dict, to_dict
from core.frozen_store import StoredSplit
from core.distributed import gather_objects, summed_counts
from core.evaluation.reference import encode_batches, validate
from core.losses.swap import swap_pairs
from core.metrics import flat_metrics
from core.models import build_model, count_parameters
from core.precision import training_precision
from core.training.global_batchnorm import sync_batchnorm
from core.training.loop import (LossModule, build_optimizer, build_scheduler, steps_per_epoch,
                                 train_one_epoch)
from core.models.kind import ModelKind
from ray_jobs.runtime import Progress, format_epoch

log = logging.getLogger("rocoray.train")

HISTORY = "history.json"  # every epoch's metrics, carried from checkpoint to checkpoint
# fatal_error-rank<r>.json: written by each rank instead of retrying a deterministic error
# before the run's first step
FATAL_PREFIX = "fatal_error-rank"


def initial_model(cfg: ExperimentConfig, init: bool = True, log_init: bool = False):
    """The run's model before its first step: pretrained encoders, and a fusion model's
    encoders and ITC heads from ``model.fusion.init_from`` (when ``init``)."""
    model = build_model(cfg.model)
    if init and cfg.model.kind == ModelKind.FUSION and cfg.model.fusion.init_from:
        copied = init_fusion_from_two_tower(model, cfg.model.fusion.init_from)
        if log_init:
            log.info("fusion encoders and ITC heads initialised from %s (%d tensors)",
                     cfg.model.fusion.init_from, copied)
    return model


@dataclass
class WorkerState:
    cfg: ExperimentConfig
    loss_module: torch.nn.Module  # LossModule, DDP-wrapped under several workers
    model: torch.nn.Module  # the bare model inside it
    optimizer: torch.optim.Optimizer
    scheduler: object
    device: torch.device
    rank: int
    world: int
    steps_per_epoch: int = 1
    start_epoch: int = 0
    step: int = 0
    history: list | None = None


def setup(loop_config: dict) -> WorkerState:
    import ray.train
    import ray.train.torch

    cfg = config_from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # Ray sets one thread per whole CPU (1 for 1.5 CPUs): use the fraction's cores too.
    torch.set_num_threads(max(1, math.ceil(cfg.train.cpus_per_worker)))
    torch.manual_seed(cfg.train.seed + rank)
    model = initial_model(cfg, init=not ray.train.get_checkpoint(), log_init=rank == 0)
    if world > 1:  # BatchNorm over the global batch: N x B/N computes what 1 x B computes
        model, synced = sync_batchnorm(model)
        if rank == 0 and synced:
            log.info("%d trainable BatchNorm layers normalise over all %d workers' rows",
                     synced, world)
    swap = (swap_pairs(loop_config["tokenizer"], cfg.model.fusion.swap_negatives)
            if cfg.model.kind == ModelKind.FUSION else None)
    vocab = loop_config.get("concepts")
    pos_weight = (torch.from_numpy(vocab.pos_weight(cfg.model.concepts.max_pos_weight))
                  if vocab is not None and cfg.model.concepts.num_concepts else None)
    loss_module = ray.train.torch.prepare_model(LossModule(
        model, cfg.model, swap=swap, concept_pos_weight=pos_weight,
        mask_token_id=getattr(loop_config["tokenizer"], "mask_token_id", None),
        mask_seed=cfg.train.seed * 1000 + rank))
    optimizer = build_optimizer(loss_module, cfg.train)
    # from the world size Ray Train started: an elastic run (train.min_workers) may have
    # fewer workers than train.num_workers
    steps = steps_per_epoch(loop_config["rows"], cfg.train.batch_size, world)
    scheduler = build_scheduler(optimizer, steps * cfg.train.epochs,
                                cfg.train.warmup_fraction)
    if rank == 0:
        log.info("%s model: %.1fM parameters, on %s", cfg.model.kind,
                 count_parameters(model) / 1e6, ray.train.torch.get_device())
    return WorkerState(cfg, loss_module, unwrap(loss_module).model, optimizer, scheduler,
                       ray.train.torch.get_device(), rank, world, steps, history=[])


def restore(state: WorkerState) -> None:
    """Continue from the latest checkpoint of this run, if there is one."""
    import ray.train
    from safetensors.torch import load_model

    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return
    with checkpoint.as_directory() as ckpt_dir:
        load_model(state.model, str(Path(ckpt_dir) / WEIGHTS), device=str(state.device))
        saved = load_train_state(ckpt_dir, device=state.device)
        history_file = Path(ckpt_dir) / HISTORY
        state.history = json.loads(history_file.read_text()) if history_file.exists() else []
    state.optimizer.load_state_dict(saved["optimizer"])
    state.start_epoch, state.step = saved["epoch"] + 1, saved["step"]
    saved_world = int(saved.get("world", state.world))
    if saved_world != state.world:
        # an elastic restart on another number of workers: the schedule ends with the run's
        # last step at this world size
        remaining = (state.cfg.train.epochs - state.start_epoch) * state.steps_per_epoch
        state.scheduler = build_scheduler(state.optimizer, state.step + remaining,
                                          state.cfg.train.warmup_fraction)
    state.scheduler.load_state_dict(saved["scheduler"])
    unwrap(state.loss_module).mask_step = state.step  # MCR masks continue where they were
    if state.rank == 0:
        # epochs count from 1 here as in the epoch lines: the checkpoint of epoch N resumes
        # at epoch N + 1
        log.info("resumed from the checkpoint of epoch %d (step %d)", state.start_epoch,
                 state.step)
        if saved_world != state.world:
            t = state.cfg.train
            log.warning("the run continues on %d of %d workers (it ran on %d; "
                        "train.min_workers=%s): global batch %d x %d", state.world,
                        t.num_workers, saved_world, t.min_workers, state.world, t.batch_size)


def batches(shard, batch_size: int, device, **kwargs):
    """Host batches (``core.batch``) from a Ray Data shard: the collate runs in Ray's prefetch
    threads, bookkeeping stays numpy, model inputs are pinned for the copy to a GPU."""
    from ray_jobs.data import HostCollate

    return shard.iter_torch_batches(batch_size=batch_size, prefetch_batches=2,
                                    collate_fn=HostCollate(pin_memory=device.type == "cuda"),
                                    **kwargs)


class Splits:
    """Where a worker's batches come from: its Ray Data shards, or the frozen store's splits
    held in memory (``core.frozen_store.StoredSplit``, rows split equally over the ranks)."""

    def __init__(self, loop_config: dict, rank: int, world: int):
        import ray.train

        cfg = config_from_dict(loop_config["config"])
        self.rank, self.world = rank, world
        self.local_shuffle = cfg.train.local_shuffle_buffer
        stored = loop_config.get("stored") or {}
        concepts = loop_config.get("concepts")
        use = concepts if cfg.model.concepts.num_concepts else None
        self.stored = {name: StoredSplit(s["store"], s["limit"], use) for name, s in stored.items()}
        self.shards = {name: ray.train.get_dataset_shard(name)
                       for name in ("train", "validation") if name not in self.stored}

    def train(self, batch_size: int, device, seed: int):
        if "train" in self.stored:
            pin = device.type == "cuda"
            return (collate(b, pin) for b in self.stored["train"].batches(
                batch_size, self.rank, self.world, seed))
        return batches(self.shards["train"], batch_size, device, local_shuffle_seed=seed,
                       local_shuffle_buffer_size=self.local_shuffle or None)

    def validation(self, batch_size: int, device):
        if "validation" in self.stored:
            return (collate(b, device.type == "cuda") for b in self.stored["validation"].batches(
                batch_size, self.rank, self.world))
        return batches(self.shards["validation"], batch_size, device)


def train_epoch(state: WorkerState, splits: Splits, epoch: int, attempt: dict):
    cfg = state.cfg
    progress = Progress(f"epoch {epoch + 1}/{cfg.train.epochs} steps", state.steps_per_epoch,
                        every=10.0) if state.rank == 0 else None

    def on_step(n: int, loss: torch.Tensor) -> None:
        state.step += 1
        attempt["steps"] += 1
        if progress is not None:
            progress.update(1, lambda: f"loss {loss.item():.4f}")
        faults.maybe_fail("train.step", state.step, hard=True)  # a worker dying (tests)

    data = splits.train(cfg.train.batch_size, state.device,
                        seed=cfg.train.seed + epoch * 1000 + state.rank)
    precision = training_precision(cfg.train.precision, state.device.type)
    return train_one_epoch(state.loss_module, state.optimizer, state.scheduler, data,
                           state.device, precision, cfg.train.grad_clip, on_step)


def validate_epoch(state: WorkerState, splits: Splits, epoch: int) -> dict | None:
    """Each rank encodes its shard of the validation split; rank 0 scores the gathered
    gallery (two-tower: all of it; fusion: the first ``fusion_val_max_items``; a fusion run
    that keeps its last checkpoint scores every pair in its last epoch only)."""
    cfg = state.cfg
    limit = cfg.train.fusion_val_max_items if cfg.model.kind == ModelKind.FUSION else cfg.train.val_max_items
    per_rank = None if limit is None else math.ceil(limit / state.world)
    state.model.eval()
    precision = training_precision(cfg.train.precision, state.device.type)  # as training runs
    kept, rows, skipped = [], 0, 0
    for batch in splits.validation(cfg.train.eval_batch_size, state.device):
        skipped += sum(batch.skipped.values())
        if per_rank is not None and rows >= per_rank:
            break
        kept.append(batch)
        rows += len(batch)
    local = None
    if rows:
        enc = encode_batches(state.model, kept, state.device, precision)
        if per_rank is not None:
            enc = {k: (v.index(slice(0, per_rank)) if k in ("text", "image") else v[:per_rank])
                   for k, v in enc.items()}
        local = {"text": enc["text"].to("cpu"), "image": enc["image"].to("cpu"),
                 "group": np.asarray(enc["group"]), "concept_logits": enc.get("concept_logits"),
                 "concepts": enc.get("concepts")}
    gathered = gather_objects({"part": local, "skipped": skipped})
    parts = [g["part"] for g in gathered if g["part"] is not None]
    out = {"val/skipped_rows": sum(g["skipped"] for g in gathered)}
    if state.rank != 0 or not parts:
        return out
    encoded = {side: type(parts[0][side]).cat([p[side] for p in parts]).to(state.device)
               for side in ("text", "image")}
    encoded["group"] = np.concatenate([p["group"] for p in parts])
    fc = cfg.model.fusion
    all_pairs = cfg.train.keep == "best" or epoch == cfg.train.epochs - 1
    out.update(flat_metrics(validate(state.model, encoded, max_items=limit, rerank_k=fc.rerank_k,
                                     rerank_alpha=fc.rerank_alpha, precision=precision,
                                     all_pairs=all_pairs), "val/"))
    if all(p["concept_logits"] is not None for p in parts):
        # ImageCLEF's per-image F1 on the validation images, at the best threshold there
        # (the threshold the test report uses is chosen on this split the same way).
        threshold, f1 = choose_threshold(np.concatenate([p["concepts"] for p in parts]),
                                         probabilities(np.concatenate([p["concept_logits"]
                                                                       for p in parts])))
        out.update({"val/concept_f1": f1, "val/concept_threshold": threshold})
    return out


def save(state: WorkerState, epoch: int, metrics: dict, tokenizer, concepts=None) -> None:
    """Rank 0 writes the checkpoint (weights, config, tokenizer, optimizer state, history);
    every rank reports, as Ray Train requires."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if state.rank == 0:
            cfg = state.cfg
            if "val/score_alpha" in metrics and cfg.model.fusion.score_alpha is None:
                # the checkpoint ranks with the fused score's alpha chosen on validation (an
                # epoch that did not choose it leaves it unset)
                cfg = config_from_dict(to_dict(cfg))
                cfg.model.fusion.score_alpha = state.model.score_alpha
            save_checkpoint(tmp, state.model, cfg, tokenizer,
                            {"optimizer": state.optimizer.state_dict(),
                             "scheduler": state.scheduler.state_dict(), "epoch": epoch,
                             "step": state.step, "world": state.world}, concepts=concepts)
            state.history.append(metrics)
            (Path(tmp) / HISTORY).write_text(storage.dumps_json(state.history))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
            log.info(format_epoch(metrics, state.cfg.train.epochs))
        ray.train.report(metrics, checkpoint=checkpoint,
                         checkpoint_dir_name=f"checkpoint_epoch_{epoch + 1:04d}")


def replica_digest(model) -> str:
    """A digest of every parameter's bytes: DDP replicas that stayed in step agree exactly."""
    h = hashlib.blake2b(digest_size=16)
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def placement(state: WorkerState) -> dict:
    """Where the ranks ran and whether their model replicas are identical (after an epoch's
    all-reduced steps they must be): gathered from every rank."""
    import ray

    parts = gather_objects({"node": ray.get_runtime_context().get_node_id(),
                            "digest": replica_digest(state.model)})
    same = len({p["digest"] for p in parts}) == 1
    if not same and state.rank == 0:
        log.warning("model replicas differ between ranks after epoch: DDP is out of step")
    return {"train/world_size": len(parts), "train/nodes": len({p["node"] for p in parts}),
            "train/node_ids": ",".join(p["node"] for p in parts),  # by rank: where it ran
            "train/replicas_identical": same}


def epoch_metrics(state: WorkerState, epoch: int, stats) -> dict:
    """The epoch's training metrics, counted on every rank and summed (samples, skipped rows
    by reason; seconds: the slowest rank's): a row skipped on rank 1 is counted once."""
    summary = stats.summary()
    counts = summed_counts({"samples": stats.samples, "seconds": stats.seconds,
                            **{f"skipped/{k}": v for k, v in stats.skipped.items()}})
    skipped = {k.split("/", 1)[1]: int(v) for k, v in counts.items() if k.startswith("skipped/")}
    summary.pop("samples_per_s")
    return {"epoch": epoch + 1, "step": state.step, "start_epoch": state.start_epoch,
            "train/loss": summary.pop("loss", float("nan")),
            "train/lr": state.scheduler.get_last_lr()[0],
            "train/samples": int(counts["samples"]),
            "train/samples_per_s": counts["samples"] / max(counts["seconds"], 1e-9),
            "train/epoch_s": counts["seconds"],
            "train/torch_threads": torch.get_num_threads(),
            "train/skipped_rows": sum(skipped.values()),
            **{f"train/skipped/{k}": v for k, v in skipped.items()},
            **{f"train/{k}": v for k, v in summary.items()}}


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train

    attempt = {"steps": 0}  # optimizer steps taken in this attempt
    try:
        state = setup(loop_config)
        restore(state)
        splits = Splits(loop_config, state.rank, state.world)
        for epoch in range(state.start_epoch, state.cfg.train.epochs):
            stats = train_epoch(state, splits, epoch, attempt)
            metrics = {**epoch_metrics(state, epoch, stats), **placement(state)}
            metrics.update(validate_epoch(state, splits, epoch) or {})
            save(state, epoch, metrics, loop_config["tokenizer"], loop_config.get("concepts"))
    except Exception as exc:
        if attempt["steps"] or ray.train.get_checkpoint() is not None:
            # The run has made progress (in this attempt, or in an earlier one that left a
            # checkpoint: a restart after a node loss that fails while restoring): Ray Train
            # retries from the last checkpoint, up to train.max_failures.
            raise
        # Before the run's first step nothing has changed since the last attempt: a retry
        # would fail the same way. Every rank records its error and ends normally; the
        # driver raises them.
        rank = ray.train.get_context().get_world_rank()
        log.error("training failed before its first step (rank %d): %s: %s", rank,
                  type(exc).__name__, exc)
        storage.write_json(loop_config["run_dir"], fatal_name(rank),
                           {"error": f"{type(exc).__name__}: {exc}", "rank": rank,
                            "time": time.time()})


def fatal_name(rank: int) -> str:
    return f"{FATAL_PREFIX}{rank}.json"


# --- the driver ----------------------------------------------------------------------------
