"""Train either model with Ray Train: Ray Data streams the preprocessed shards into
TorchTrainer workers; each epoch reports loss, learning rate, throughput and validation
Recall@K with a safetensors checkpoint.

    rocoray train --model two_tower --config tiny --data data/synthetic --name tt-demo
    ray job submit --working-dir . -- python -m ray_jobs.train --model fusion --config base \\
        --data hf://datasets/eltorio/ROCOv2-radiology --storage-path s3://bucket/runs

Re-launching with the same --name (and storage path) resumes from the latest checkpoint;
``train.max_failures`` restarts a crashed worker group from it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core.checkpoint import WEIGHTS, load_train_state, save_checkpoint, unwrap
from core.config import ExperimentConfig, config_from_dict, load_config, save_config, to_dict
from core.data.preprocess import build_preprocessor, merge_counts, valid_rows
from core.data.tokenizer import resolve_tokenizer
from core.evaluation import concat, encode_batches, validate
from core.metrics import flat_metrics
from core.models import build_model, count_parameters
from core.training import LossModule, build_optimizer, build_scheduler, to_model_inputs
from ray_jobs.runtime import Progress, init_ray, setup_logging

log = logging.getLogger("rocoray.train")

TRAIN_COLUMNS = ["pixel_values", "input_ids", "attention_mask", "group", "skip"]
RESULT_FILE = "result.json"
HISTORY = "history.json"  # every epoch's metrics, carried from checkpoint to checkpoint


# --- the worker: plain PyTorch plus get_dataset_shard / prepare_model / report ---------------

def _all_ranks_agree(flag: bool, device) -> bool:
    """True if ``flag`` holds on every rank (collectives must stay in step)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(t)
    return t.item() == 0.0


def _gather_encoded(encoded: dict | None) -> dict | None:
    """Every rank's validation features on every rank (they are small: a gallery's worth)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return encoded
    parts = [None] * dist.get_world_size()
    local = None if encoded is None else {k: (v.cpu() if hasattr(v, "cpu") else v)
                                          for k, v in encoded.items() if k in ("text", "image", "group")}
    dist.all_gather_object(parts, local)
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return {"text": concat([p["text"] for p in parts]), "image": concat([p["image"] for p in parts]),
            "group": np.concatenate([p["group"] for p in parts])}


def _maybe_fail(cfg, step: int) -> None:
    """Test hook: kill this worker process once, after ``fail_at_step`` optimizer steps."""
    t = cfg.train
    if t.fail_at_step is None or step != t.fail_at_step:
        return
    marker = Path(t.fail_marker or tempfile.gettempdir()) / "rocoray_fail_marker"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(step))
    log.warning("fail_at_step=%d: killing this worker (test hook)", step)
    os._exit(1)


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg: ExperimentConfig = config_from_dict(loop_config["config"])
    tokenizer = loop_config["tokenizer"]
    steps_per_epoch = loop_config["steps_per_epoch"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.train.seed + rank)
    device = ray.train.torch.get_device()
    use_bf16 = cfg.train.precision == "bf16" and device.type == "cuda"

    model = build_model(cfg.model)
    loss_module = ray.train.torch.prepare_model(LossModule(model, cfg.model))
    model = unwrap(loss_module).model
    optimizer = build_optimizer(loss_module, cfg.train)
    scheduler = build_scheduler(optimizer, steps_per_epoch * cfg.train.epochs,
                                cfg.train.warmup_fraction)
    start_epoch, step, history = 0, 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        from safetensors.torch import load_model

        with checkpoint.as_directory() as ckpt_dir:
            load_model(model, str(Path(ckpt_dir) / WEIGHTS), device=str(device))
            state = load_train_state(ckpt_dir, device=device)
            history_file = Path(ckpt_dir) / HISTORY
            history = json.loads(history_file.read_text()) if history_file.exists() else []
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        if rank == 0:
            log.info("resumed from the checkpoint of epoch %d (step %d)", start_epoch - 1, step)

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation")
    per_rank_val = None
    if cfg.model.kind == "fusion":
        per_rank_val = math.ceil(cfg.train.fusion_val_max_items / world)
    elif cfg.train.val_max_items is not None:
        per_rank_val = math.ceil(cfg.train.val_max_items / world)

    for epoch in range(start_epoch, cfg.train.epochs):
        progress = Progress(f"epoch {epoch + 1}/{cfg.train.epochs} steps", steps_per_epoch,
                            every=10.0) if rank == 0 else None
        loss_module.train()
        t0 = time.perf_counter()
        seen, losses, skipped, extras = 0, [], {}, {}
        for batch in train_shard.iter_torch_batches(
                batch_size=cfg.train.batch_size, prefetch_batches=2,
                local_shuffle_buffer_size=cfg.train.local_shuffle_buffer or None,
                local_shuffle_seed=cfg.train.seed + epoch * 1000 + rank,
                pin_memory=device.type == "cuda"):
            batch, skip_counts = valid_rows(batch)
            skipped = merge_counts(skipped, skip_counts)
            n = len(batch["group"])
            if not _all_ranks_agree(n >= 2, device):
                continue  # a contrastive step needs 2 rows; every rank skips together
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss, stats = loss_module(**to_model_inputs(batch, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(loss_module.parameters(), cfg.train.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            seen += n
            losses.append(loss.item())
            for key, value in stats.items():
                extras.setdefault(key, []).append(float(value))
            if progress is not None:
                progress.update(1, f"loss {losses[-1]:.4f}")
            _maybe_fail(cfg, step)
        train_time = time.perf_counter() - t0

        # Validation: each rank encodes its shard, rank 0 scores the gathered gallery.
        model.eval()
        val_batches, val_skipped = [], {}
        rows = 0
        for batch in val_shard.iter_torch_batches(batch_size=cfg.train.eval_batch_size,
                                                  prefetch_batches=1):
            if per_rank_val is not None and rows >= per_rank_val:
                break
            batch, counts = valid_rows(batch)
            val_skipped = merge_counts(val_skipped, counts)
            if per_rank_val is not None:
                batch = {k: v[: per_rank_val - rows] for k, v in batch.items()}
            rows += len(batch["group"])
            val_batches.append(batch)
        encoded = encode_batches(model, [b for b in val_batches if len(b["group"])], device) \
            if rows else None
        encoded = _gather_encoded(encoded)

        metrics = {"epoch": epoch + 1, "step": step, "start_epoch": start_epoch,
                   "train/loss": float(np.mean(losses)) if losses else float("nan"),
                   "train/lr": scheduler.get_last_lr()[0],
                   "train/samples_per_s": seen * world / max(train_time, 1e-9),
                   "train/epoch_s": train_time,
                   "train/torch_threads": torch.get_num_threads(),
                   "train/skipped_rows": sum(skipped.values()) * world,
                   "val/skipped_rows": sum(val_skipped.values()) * world}
        metrics.update({f"train/{k}": float(np.mean(v)) for k, v in extras.items()})
        checkpoint_obj = None
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                if encoded is not None:
                    model_cpu = model
                    val = validate(model_cpu, {k: _to(v, device) for k, v in encoded.items()},
                                   max_items=cfg.train.fusion_val_max_items
                                   if cfg.model.kind == "fusion" else cfg.train.val_max_items)
                    metrics.update(flat_metrics(val, "val/"))
                save_checkpoint(tmp, model, cfg, tokenizer,
                                {"optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict(), "epoch": epoch, "step": step})
                history.append(metrics)
                (Path(tmp) / HISTORY).write_text(json.dumps(history, default=float))
                checkpoint_obj = ray.train.Checkpoint.from_directory(tmp)
                log.info("epoch %d/%d: %s", epoch + 1, cfg.train.epochs,
                         {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
            ray.train.report(metrics, checkpoint=checkpoint_obj,
                             checkpoint_dir_name=f"checkpoint_epoch_{epoch + 1:04d}")


def _to(value, device):
    from core.evaluation import to_device

    if isinstance(value, np.ndarray):
        return value
    return to_device(value, device)


# --- the driver ----------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rocoray train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["two_tower", "fusion"], default=None,
                   help="model kind (overrides model.kind)")
    p.add_argument("--config", default="tiny", help="preset name (tiny, base) or YAML path")
    p.add_argument("--data", default=None, help="ROCOv2 data: dir, file list or URL")
    p.add_argument("--name", default=None, help="run name; the same name resumes")
    p.add_argument("--storage-path", default=None, help="local dir or s3:// (train.storage_path)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. train.lr=3e-4 model.two_tower.embed_dim=256")
    p.add_argument("--address", default=None, help="Ray cluster address")
    return p.parse_args(argv)


def config_from_args(args) -> ExperimentConfig:
    overrides = list(args.set)
    for flag, key in ((args.model, "model.kind"), (args.data, "data.path"),
                      (args.name, "train.name"), (args.storage_path, "train.storage_path"),
                      (args.epochs, "train.epochs"), (args.num_workers, "train.num_workers")):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    return load_config(args.config, overrides)


def storage_root(cfg: ExperimentConfig) -> str:
    path = cfg.train.storage_path
    return path if "://" in path else str(Path(path).resolve())


def run_dir(cfg: ExperimentConfig) -> str:
    return f"{storage_root(cfg).rstrip('/')}/{cfg.train.name}"


def build_datasets(cfg: ExperimentConfig, tokenizer) -> tuple[dict, int]:
    """Preprocessed train/validation Ray Datasets, and the number of training rows."""
    from ray_jobs.data import preprocess, read_split_dataset, split_rows

    pre = build_preprocessor(cfg.model, tokenizer)
    datasets, rows = {}, 0
    for name, split in (("train", cfg.data.train_split), ("validation", cfg.data.val_split)):
        raw, files = read_split_dataset(cfg.data.path, split, cfg.data.storage_options,
                                        cfg.data.max_rows)
        if name == "train":
            rows = split_rows(files, cfg.data.max_rows)  # from the Parquet footers
            # Shuffle blocks every epoch (rows within a block by the local shuffle buffer).
            raw = raw.randomize_block_order(seed=cfg.train.seed)
        ds = preprocess(raw, pre, num_cpus=cfg.train.preprocess_num_cpus,
                        batch_size=cfg.train.preprocess_batch_size)
        # Its own fractional CPUs too: a 1-CPU default deadlocks concurrent Tune trials.
        datasets[name] = ds.select_columns(TRAIN_COLUMNS, num_cpus=cfg.train.preprocess_num_cpus)
    return datasets, rows


def prepare_run(cfg: ExperimentConfig) -> tuple[ExperimentConfig, object, str]:
    """Fill in what the run needs before it starts: a name, the tokenizer and its vocab size."""
    if not cfg.train.name:
        cfg.train.name = f"{cfg.model.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    tokenizer, source = resolve_tokenizer(cfg.model.text, cfg.data.path, cfg.data.train_split,
                                          cfg.data.storage_options)
    if not cfg.model.text.name_or_path:
        cfg.model.text.vocab_size = len(tokenizer)
    if cfg.train.precision == "bf16" and not cfg.train.use_gpu:
        log.warning("precision bf16 needs GPUs (train.use_gpu=true); training in fp32")
    return cfg, tokenizer, source


def fit(cfg: ExperimentConfig, tokenizer, callbacks=None, datasets=None):
    """Build and fit the TorchTrainer; returns the ray.train.Result. ``datasets`` (train,
    validation, and the number of training rows) replaces the config's data, for benchmarks."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    datasets, rows = datasets or build_datasets(cfg, tokenizer)
    t = cfg.train
    steps_per_epoch = max(1, math.ceil(rows / (t.batch_size * t.num_workers)))
    resources = {"CPU": t.cpus_per_worker}
    if t.use_gpu:
        resources["GPU"] = t.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker=train_loop_per_worker,
        train_loop_config={"config": to_dict(cfg), "tokenizer": tokenizer,
                           "steps_per_epoch": steps_per_epoch},
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=t.name, storage_path=storage_root(cfg), callbacks=callbacks,
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=t.checkpoints_to_keep,
                                               checkpoint_score_attribute="val/mean_recall",
                                               checkpoint_score_order="max")),
        datasets=datasets)
    log.info("training %s on %d rows: %d worker(s) x batch %d, %d steps/epoch, %d epochs",
             cfg.model.kind, rows, t.num_workers, t.batch_size, steps_per_epoch, t.epochs)
    return trainer.fit()


def summarize(result, cfg: ExperimentConfig) -> dict:
    best = result.get_best_checkpoint("val/mean_recall", "max") if result.best_checkpoints else None
    history = []
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as ckpt_dir:
            path = Path(ckpt_dir) / HISTORY
            history = json.loads(path.read_text()) if path.exists() else []
    return {"name": cfg.train.name, "model": cfg.model.kind, "path": run_dir(cfg),
            "final": result.metrics,
            "best_checkpoint": best.path if best else None,
            "latest_checkpoint": result.checkpoint.path if result.checkpoint else None,
            "history": history}


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging()
    cfg = config_from_args(args)
    init_ray(args.address)
    cfg, tokenizer, source = prepare_run(cfg)
    log.info("tokenizer: %s (%d tokens); model: %s, %.1fM parameters", source, len(tokenizer),
             cfg.model.kind, count_parameters(build_model(cfg.model)) / 1e6)
    result = fit(cfg, tokenizer)
    if result.error:
        raise result.error
    summary = summarize(result, cfg)
    out = run_dir(cfg)
    if "://" not in out:
        save_config(cfg, Path(out) / "config.yaml")
        (Path(out) / RESULT_FILE).write_text(json.dumps(summary, indent=2, default=str))
    final = summary["final"] or {}
    print(f"\n{cfg.model.kind} run {cfg.train.name}: epoch {final.get('epoch')}, "
          f"val mean recall {final.get('val/mean_recall', float('nan')):.3f}, "
          f"t2i R@1/5/10 {final.get('val/t2i/R@1', float('nan')):.3f}/"
          f"{final.get('val/t2i/R@5', float('nan')):.3f}/{final.get('val/t2i/R@10', float('nan')):.3f}"
          + (f", match acc {final['val/match_acc']:.3f}" if "val/match_acc" in final else ""))
    print(f"results: {out}  best checkpoint: {summary['best_checkpoint']}")
    return summary


if __name__ == "__main__":
    main()
