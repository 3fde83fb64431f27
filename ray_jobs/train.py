"""Train either model with Ray Train: Ray Data streams the preprocessed shards into
TorchTrainer workers; each epoch reports loss, learning rate, throughput and validation
Recall@K with a safetensors checkpoint.

    rocoray train --model two_tower --config tiny --data data/synthetic --name tt
    ray job submit --working-dir . -- python -m ray_jobs.train --model fusion --config base \\
        --data hf://datasets/eltorio/ROCOv2-radiology --storage-path s3://bucket/runs

Re-launching with the same --name (and storage path) resumes from the latest checkpoint;
``train.max_failures`` restarts a crashed worker group from it. An error before the first
optimizer step (a bad setting, a bug) is deterministic: it ends the run at once with its
message instead of being retried.
"""

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

from core import faults, storage
from core.concept_metrics import choose_threshold, probabilities
from core.concepts import resolve_vocabulary
from core.checkpoint import (RUN_RESULT, WEIGHTS, init_fusion_from_two_tower, load_train_state,
                             read_checkpoint_config, resolve_checkpoint, save_checkpoint, unwrap)
from core.config import ExperimentConfig, config_from_dict, load_config, save_config, to_dict
from core.data.preprocess import build_preprocessor
from core.data.rocov2 import resolve_split
from core.data.tokenizer import resolve_tokenizer
from core.distributed import gather_objects, summed_counts
from core.evaluation import encode_batches, validate
from core.frozen_features import encode_frozen
from core.losses.swap import swap_pairs
from core.metrics import flat_metrics
from core.models import build_model, count_parameters
from core.precision import training_precision
from core.training import LossModule, build_optimizer, build_scheduler, train_one_epoch
from ray_jobs.options import UserError, opt, parse, run_cli
from ray_jobs.runtime import Progress, format_epoch, init_ray, setup_logging, storage_reach

log = logging.getLogger("rocoray.train")

TRAIN_COLUMNS = ["pixel_values", "input_ids", "attention_mask", "group", "skip"]
HISTORY = "history.json"  # every epoch's metrics, carried from checkpoint to checkpoint
FATAL = "fatal_error.json"  # written instead of retrying a deterministic first-step error


def initial_model(cfg: ExperimentConfig, init: bool = True, log_init: bool = False):
    """The run's model before its first step: pretrained encoders, and a fusion model's
    encoders and ITC heads from ``model.fusion.init_from`` (when ``init``)."""
    model = build_model(cfg.model)
    if init and cfg.model.kind == "fusion" and cfg.model.fusion.init_from:
        copied = init_fusion_from_two_tower(model, cfg.model.fusion.init_from)
        if log_init:
            log.info("fusion encoders and ITC heads initialised from %s (%d tensors)",
                     cfg.model.fusion.init_from, copied)
    return model


class FrozenEncoder:
    """Ray Data actor: the run's initial model (the worker builds the same one), applied to
    each row's frozen encoder layers once (``core.frozen_features``)."""

    def __init__(self, config: dict):
        import os

        # Alone on the node while this stage runs (training starts after it): all its cores.
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        self.model = initial_model(config_from_dict(config)).eval()

    def __call__(self, rows: dict) -> dict:
        return encode_frozen(self.model, rows)


def encode_frozen_once(ds, cfg: ExperimentConfig, rows: int):
    """The training split with the frozen encoder layers' outputs in place of their inputs,
    computed once and held in the object store for every epoch."""
    import ray.data

    t0 = time.time()
    ds = ds.map_batches(FrozenEncoder, fn_constructor_args=(to_dict(cfg),),
                        compute=ray.data.ActorPoolStrategy(size=1), batch_size=64,
                        batch_format="numpy", num_cpus=1,
                        num_gpus=cfg.train.gpus_per_worker if cfg.train.use_gpu else 0)
    ds = ds.materialize()
    log.info("frozen encoder layers (image stages %s, text layers %s) encoded once for %d "
             "training rows in %.0f s", cfg.model.image.freeze_stages,
             cfg.model.text.freeze_layers, rows, time.time() - t0)
    return ds


# --- the worker: plain PyTorch plus get_dataset_shard / prepare_model / report ---------------

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
    swap = (swap_pairs(loop_config["tokenizer"], cfg.model.fusion.swap_negatives)
            if cfg.model.kind == "fusion" else None)
    vocab = loop_config.get("concepts")
    pos_weight = (torch.from_numpy(vocab.pos_weight(cfg.model.concepts.max_pos_weight))
                  if vocab is not None and cfg.model.concepts.num_concepts else None)
    loss_module = ray.train.torch.prepare_model(LossModule(
        model, cfg.model, swap=swap, concept_pos_weight=pos_weight,
        mask_token_id=getattr(loop_config["tokenizer"], "mask_token_id", None),
        mask_seed=cfg.train.seed * 1000 + rank))
    optimizer = build_optimizer(loss_module, cfg.train)
    scheduler = build_scheduler(optimizer, loop_config["steps_per_epoch"] * cfg.train.epochs,
                                cfg.train.warmup_fraction)
    if rank == 0:
        log.info("%s model: %.1fM parameters, on %s", cfg.model.kind,
                 count_parameters(model) / 1e6, ray.train.torch.get_device())
    return WorkerState(cfg, loss_module, unwrap(loss_module).model, optimizer, scheduler,
                       ray.train.torch.get_device(), rank, world, history=[])


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
    state.scheduler.load_state_dict(saved["scheduler"])
    state.start_epoch, state.step = saved["epoch"] + 1, saved["step"]
    unwrap(state.loss_module).mask_step = state.step  # MCR masks continue where they were
    if state.rank == 0:
        # epochs count from 1 here as in the epoch lines: the checkpoint of epoch N resumes
        # at epoch N + 1
        log.info("resumed from the checkpoint of epoch %d (step %d)", state.start_epoch,
                 state.step)


def batches(shard, batch_size: int, device, **kwargs):
    """Host batches (``core.batch``) from a Ray Data shard: the collate runs in Ray's prefetch
    threads, bookkeeping stays numpy, model inputs are pinned for the copy to a GPU."""
    from ray_jobs.data import HostCollate

    return shard.iter_torch_batches(batch_size=batch_size, prefetch_batches=2,
                                    collate_fn=HostCollate(pin_memory=device.type == "cuda"),
                                    **kwargs)


def train_epoch(state: WorkerState, shard, epoch: int, steps_per_epoch: int, attempt: dict):
    cfg = state.cfg
    progress = Progress(f"epoch {epoch + 1}/{cfg.train.epochs} steps", steps_per_epoch,
                        every=10.0) if state.rank == 0 else None

    def on_step(n: int, loss: torch.Tensor) -> None:
        state.step += 1
        attempt["steps"] += 1
        if progress is not None:
            progress.update(1, lambda: f"loss {loss.item():.4f}")
        faults.maybe_fail("train.step", state.step, hard=True)  # a worker dying (tests)

    data = batches(shard, cfg.train.batch_size, state.device,
                   local_shuffle_buffer_size=cfg.train.local_shuffle_buffer or None,
                   local_shuffle_seed=cfg.train.seed + epoch * 1000 + state.rank)
    precision = training_precision(cfg.train.precision, state.device.type)
    return train_one_epoch(state.loss_module, state.optimizer, state.scheduler, data,
                           state.device, precision, cfg.train.grad_clip, on_step)


def validate_epoch(state: WorkerState, shard) -> dict | None:
    """Each rank encodes its shard of the validation split; rank 0 scores the gathered
    gallery (two-tower: all of it; fusion: the first ``fusion_val_max_items``)."""
    cfg = state.cfg
    limit = cfg.train.fusion_val_max_items if cfg.model.kind == "fusion" else cfg.train.val_max_items
    per_rank = None if limit is None else math.ceil(limit / state.world)
    state.model.eval()
    precision = training_precision(cfg.train.precision, state.device.type)  # as training runs
    kept, rows, skipped = [], 0, 0
    for batch in batches(shard, cfg.train.eval_batch_size, state.device):
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
    out.update(flat_metrics(validate(state.model, encoded, max_items=limit, rerank_k=fc.rerank_k,
                                     rerank_alpha=fc.rerank_alpha, precision=precision),
                                "val/"))
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
            save_checkpoint(tmp, state.model, state.cfg, tokenizer,
                            {"optimizer": state.optimizer.state_dict(),
                             "scheduler": state.scheduler.state_dict(), "epoch": epoch,
                             "step": state.step}, concepts=concepts)
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
        train_shard = ray.train.get_dataset_shard("train")
        val_shard = ray.train.get_dataset_shard("validation")
        for epoch in range(state.start_epoch, state.cfg.train.epochs):
            stats = train_epoch(state, train_shard, epoch, loop_config["steps_per_epoch"], attempt)
            metrics = {**epoch_metrics(state, epoch, stats), **placement(state)}
            metrics.update(validate_epoch(state, val_shard) or {})
            save(state, epoch, metrics, loop_config["tokenizer"], loop_config.get("concepts"))
    except Exception as exc:
        if attempt["steps"]:
            raise  # after real progress: Ray Train retries from the last checkpoint
        # Before the first step nothing has changed since the last attempt: a retry would
        # fail the same way. Record the error and end normally; the driver raises it.
        log.error("training failed before its first step: %s: %s", type(exc).__name__, exc)
        if ray.train.get_context().get_world_rank() == 0:
            storage.write_json(loop_config["run_dir"], FATAL,
                               {"error": f"{type(exc).__name__}: {exc}", "time": time.time()})


# --- the driver ----------------------------------------------------------------------------

@dataclass
class TrainArgs:
    model: str | None = opt(None, "model kind (overrides model.kind)", choices=["two_tower", "fusion"])
    config: str = opt("tiny", "preset name (tiny, base) or a YAML file")
    data: str | None = opt(None, "ROCOv2 data: a directory, a Parquet file, or a URL "
                           "(default: the config's data.path)")
    name: str | None = opt(None, "run name; the same name resumes (default: <model>-<time>)")
    storage_path: str | None = opt(None, "local dir or s3:// for runs (default: train.storage_path)")
    epochs: int | None = opt(None, "override train.epochs")
    num_workers: int | None = opt(None, "override train.num_workers")
    init_from: str | None = opt(None, "fusion: a two-tower checkpoint or run that initialises "
                                "the encoders and ITC heads (model.fusion.init_from)")
    set: list = opt([], "config overrides, e.g. train.lr=3e-4 model.two_tower.embed_dim=256",
                    metavar="KEY=VALUE")
    address: str | None = opt(None, "Ray cluster address (default: RAY_ADDRESS, else a local Ray)")

    def experiment(self) -> ExperimentConfig:
        overrides = list(self.set)
        for value, key in ((self.model, "model.kind"), (self.data, "data.path"),
                           (self.name, "train.name"), (self.storage_path, "train.storage_path"),
                           (self.epochs, "train.epochs"), (self.num_workers, "train.num_workers"),
                           (self.init_from, "model.fusion.init_from")):
            if value is not None:
                overrides.append(f"{key}={value}")
        return load_config(self.config, overrides)


def run_dir(cfg: ExperimentConfig) -> str:
    return storage.join(storage.absolute(cfg.train.storage_path), cfg.train.name)


def build_datasets(cfg: ExperimentConfig, tokenizer, concepts=None) -> tuple[dict, int]:
    """Preprocessed train/validation Ray Datasets, and the number of training rows."""
    from ray_jobs.data import read_split_dataset, split_rows

    pre = build_preprocessor(cfg.model, tokenizer, concepts)
    keep = TRAIN_COLUMNS + (["concepts"] if pre.concepts is not None else [])
    datasets, rows = {}, 0
    for name, split in (("train", cfg.data.train_split), ("validation", cfg.data.val_split)):
        # Read + preprocess in one stage of fractional-CPU tasks (a 1-CPU default deadlocks
        # concurrent Tune trials on small machines); only the training columns leave it.
        datasets[name], files = read_split_dataset(
            cfg.data.path, split, cfg.data.storage_options, cfg.data.max_rows,
            num_cpus=cfg.train.preprocess_num_cpus, preprocessor=pre,
            batch_size=cfg.train.preprocess_batch_size, keep=keep,
            shuffle_seed=cfg.train.seed if name == "train" else None)
        if name == "train":
            rows = split_rows(files, cfg.data.max_rows)  # from the Parquet footers
            if (cfg.train.encode_frozen_once and cfg.model.mcr.mode == "off"
                    and (cfg.model.image.freeze_stages or cfg.model.text.freeze_layers)):
                datasets[name] = encode_frozen_once(datasets[name], cfg, rows)
    return datasets, rows


def prepare_run(cfg: ExperimentConfig) -> tuple[ExperimentConfig, object, str, object]:
    """Check the data and fill in what the run needs before it starts: a name, the tokenizer
    and its vocabulary size, the concept vocabulary and the concept head's size. Raises user
    errors (a wrong path, a missing split) before Ray."""
    for split in (cfg.data.train_split, cfg.data.val_split):
        resolve_split(cfg.data.path, split, cfg.data.storage_options)
    if cfg.model.kind == "fusion" and cfg.model.fusion.init_from:
        source = resolve_checkpoint(cfg.model.fusion.init_from)
        if read_checkpoint_config(source).model.kind != "two_tower":
            raise UserError(f"model.fusion.init_from {cfg.model.fusion.init_from} is not a "
                            "two-tower checkpoint or run")
        cfg.model.fusion.init_from = str(Path(source).resolve())  # workers run elsewhere
    if cfg.model.kind == "fusion" and cfg.model.fusion.freeze_encoders:
        cfg.model.image.freeze_stages = cfg.model.text.freeze_layers = -1
    if not cfg.train.name:
        cfg.train.name = f"{cfg.model.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    tokenizer, source = resolve_tokenizer(cfg.model.text, cfg.data.path, cfg.data.train_split,
                                          cfg.data.storage_options)
    if not cfg.model.text.name_or_path:
        cfg.model.text.vocab_size = len(tokenizer)
    if training_precision(cfg.train.precision, "cuda" if cfg.train.use_gpu else "cpu") != \
            cfg.train.precision:
        log.info("train.precision bf16 applies on GPUs; this CPU run trains in fp32")
    return cfg, tokenizer, source, concept_vocabulary(cfg)


def concept_vocabulary(cfg: ExperimentConfig):
    """The concept vocabulary when the run trains a concept head (``model.concepts.weight``
    > 0 and concept ids in the data), with ``model.concepts.num_concepts`` set; else None."""
    cc = cfg.model.concepts
    cc.num_concepts = 0
    if cc.weight <= 0:
        return None
    vocab, where = resolve_vocabulary(cfg.data.path, cfg.data.train_split, cc.min_count,
                                      cfg.data.storage_options)
    if not len(vocab):
        log.info("no concept ids in this data (%s): no concept head", where)
        return None
    cc.num_concepts = len(vocab)
    log.info("concept head: %d concepts (%s; %d of %d training images without any)",
             len(vocab), where, vocab.empty_images, vocab.images)
    return vocab


def fit(cfg: ExperimentConfig, tokenizer, callbacks=None, datasets=None, concepts=None):
    """Build and fit the TorchTrainer; returns the ray.train.Result. ``datasets`` (train,
    validation, and the number of training rows) replaces the config's data, for benchmarks."""
    from ray.train import (CheckpointConfig, FailureConfig, LoggingConfig, RunConfig,
                           ScalingConfig)
    from ray.train.torch import TorchTrainer

    datasets, rows = datasets or build_datasets(cfg, tokenizer, concepts)
    t = cfg.train
    steps_per_epoch = max(1, math.ceil(rows / (t.batch_size * t.num_workers)))
    resources = {"CPU": t.cpus_per_worker}
    if t.use_gpu:
        resources["GPU"] = t.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker=train_loop_per_worker,
        train_loop_config={"config": to_dict(cfg), "tokenizer": tokenizer, "concepts": concepts,
                           "steps_per_epoch": steps_per_epoch, "run_dir": run_dir(cfg)},
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                                     resources_per_worker=resources,
                                     placement_strategy=t.placement_strategy),
        run_config=RunConfig(
            name=t.name, storage_path=storage.absolute(t.storage_path), callbacks=callbacks,
            failure_config=FailureConfig(max_failures=t.max_failures),
            # Ray Train's own INFO lines (worker group start, every report) repeat what the
            # epoch line says; its warnings and errors still show.
            logging_config=LoggingConfig(log_level="WARNING"),
            checkpoint_config=CheckpointConfig(num_to_keep=t.checkpoints_to_keep,
                                               checkpoint_score_attribute="val/mean_recall",
                                               checkpoint_score_order="max")),
        datasets=datasets)
    log.info("training %s on %d rows: %d worker(s) x batch %d, %d steps/epoch, %d epochs",
             cfg.model.kind, rows, t.num_workers, t.batch_size, steps_per_epoch, t.epochs)
    started = time.time()
    result = trainer.fit()
    out = run_dir(cfg)
    if storage.exists(out, FATAL):
        fatal = storage.read_json(out, FATAL)
        if fatal["time"] >= started:
            raise RuntimeError(f"training run {t.name} failed before its first step (not "
                               f"retried): {fatal['error']}")
    return result


def summarize(result, cfg: ExperimentConfig) -> dict:
    """The run's result.json: final metrics, every epoch, and checkpoints RELATIVE to the run
    directory (a run can be moved)."""
    best = result.get_best_checkpoint("val/mean_recall", "max") if result.best_checkpoints else None
    history = []
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as ckpt_dir:
            path = Path(ckpt_dir) / HISTORY
            history = json.loads(path.read_text()) if path.exists() else []
    out = run_dir(cfg)
    return {"name": cfg.train.name, "model": cfg.model.kind,
            "final": result.metrics, "epochs": cfg.train.epochs,
            "best_checkpoint": storage.relative_to(best.path, out) if best else None,
            "latest_checkpoint": (storage.relative_to(result.checkpoint.path, out)
                                  if result.checkpoint else None),
            "history": history}


def run(cfg: ExperimentConfig, address: str | None = None) -> dict:
    """Validate, start (or join) Ray, train; returns the run summary (with its ``path``)."""
    cfg, tokenizer, source, concepts = prepare_run(cfg)
    init_ray(address)
    warning = storage_reach(cfg.train.storage_path)
    if warning:
        log.warning("train.storage_path: %s", warning)
    log.info("tokenizer: %s (%d tokens)", source, len(tokenizer))
    result = fit(cfg, tokenizer, concepts=concepts)
    if result.error:
        raise result.error
    summary = summarize(result, cfg)
    out = run_dir(cfg)
    if not storage.is_url(out):
        save_config(cfg, Path(out) / "config.yaml")
    storage.write_json(out, RUN_RESULT, summary)
    summary["path"] = out
    return summary


def main(argv=None) -> dict:
    args = parse(TrainArgs, argv, "rocoray train", __doc__)
    setup_logging()
    summary = run_cli("rocoray train", lambda: run(args.experiment(), args.address))
    final = summary["final"] or {}
    print(f"\n{summary['model']} run {summary['name']}: {format_epoch(final, summary['epochs'])}")
    print(f"results: {summary['path']}  best checkpoint: {summary['best_checkpoint']}")
    return summary


if __name__ == "__main__":
    main()
