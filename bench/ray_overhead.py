"""Ray overhead, side by side in one run (two-tower, tiny preset, 2000 synthetic pairs):

1. training step throughput inside a TorchTrainer (1 worker, data pre-materialised so only
   Ray Train + Ray Data iteration is measured) vs the same loop in plain PyTorch over the
   same batches in memory, at the same torch thread count (target: Ray <= 1.2x slower);
2. the Ray Data input pipeline's rows/s (read + decode + resize + tokenize, streaming) vs
   the trainer's consumption in samples/s (target >= 1.5x, so training never starves).

    python -m bench.ray_overhead
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

import torch

from bench._common import write_result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args(argv)
    from core.config import load_config
    from core.data.preprocess import build_preprocessor
    from core.models import build_model
    from core.training.loop import LossModule, build_optimizer, build_scheduler, train_step
    from ray_jobs.data import HostCollate, read_split_dataset
    from ray_jobs.runtime import init_ray
    from ray_jobs.train import TRAIN_COLUMNS, fit, prepare_run

    init_ray()
    storage = tempfile.mkdtemp(prefix="rocoray-bench-")
    cfg = load_config("tiny", ["model.kind=two_tower", f"data.path={args.data}",
                               f"train.epochs={args.epochs}", f"train.storage_path={storage}",
                               "train.name=overhead", "train.local_shuffle_buffer=0"])
    cfg, tokenizer, *_ = prepare_run(cfg)
    pre = build_preprocessor(cfg.model, tokenizer)

    # 2. the input pipeline alone, streaming. Like training epochs after the first, later
    #    passes run on warm worker processes (the first pays their start-up and imports);
    #    the rate is the median of the warm passes.
    pipeline, _ = read_split_dataset(cfg.data.path, "train",
                                     num_cpus=cfg.train.preprocess_num_cpus, preprocessor=pre,
                                     batch_size=cfg.train.preprocess_batch_size, keep=TRAIN_COLUMNS)
    passes = []
    for _ in range(4):
        t0 = time.perf_counter()
        rows = sum(len(b["skip"]) for b in pipeline.iter_batches(batch_size=256))
        passes.append(rows / (time.perf_counter() - t0))
    pipeline_rows_per_s = statistics.median(passes[1:])

    # 1a. Ray Train over materialised data
    train_ds = pipeline.materialize()
    val_ds = read_split_dataset(cfg.data.path, "validation", num_cpus=0.5, preprocessor=pre,
                                keep=TRAIN_COLUMNS)[0].materialize()
    result = fit(cfg, tokenizer, datasets=({"train": train_ds, "validation": val_ds},
                                            train_ds.count()))
    from ray_jobs.train import summarize

    history = summarize(result, cfg)["history"]
    ray_rates = [h["train/samples_per_s"] for h in history[1:]]  # after the first epoch
    threads = int(history[-1]["train/torch_threads"])

    # 1b. the same loop in plain PyTorch, same batches in memory, same threads
    batches = list(train_ds.iter_torch_batches(batch_size=cfg.train.batch_size,
                                               collate_fn=HostCollate()))
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    loss_module = LossModule(model, cfg.model)
    opt = build_optimizer(loss_module, cfg.train)
    sched = build_scheduler(opt, len(batches) * args.epochs, cfg.train.warmup_fraction)
    plain_rates = []
    for _ in range(args.epochs):
        t0, seen = time.perf_counter(), 0
        for b in batches:
            train_step(loss_module, opt, sched, b, "fp32", cfg.train.grad_clip)
            seen += len(b)
        plain_rates.append(seen / (time.perf_counter() - t0))
    plain = statistics.median(plain_rates[1:] or plain_rates)
    ray_rate = statistics.median(ray_rates or [history[-1]["train/samples_per_s"]])
    shutil.rmtree(storage, ignore_errors=True)
    out = {"bench": "ray_overhead", "torch_threads": threads,
           "plain_samples_per_s": plain, "ray_samples_per_s": ray_rate,
           "slowdown": plain / ray_rate, "target_slowdown": 1.2,
           "pipeline_rows_per_s": pipeline_rows_per_s, "pipeline_first_pass_rows_per_s": passes[0],
           "pipeline_passes_rows_per_s": passes,
           "input_vs_consumption": pipeline_rows_per_s / ray_rate, "target_input_ratio": 1.5}
    write_result(out)
    return out


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    return [("Ray Train overhead (two-tower step, 1 worker)",
             f"{r['ray_samples_per_s']:.0f} vs {r['plain_samples_per_s']:.0f} samples/s plain "
             f"PyTorch: {r['slowdown']:.2f}x slower", "<= 1.2x slower",
             "met" if r["slowdown"] <= 1.2 else "missed"),
            ("Ray Data input pipeline vs trainer consumption",
             f"{r['pipeline_rows_per_s']:.0f} rows/s vs {r['ray_samples_per_s']:.0f} samples/s: "
             f"{r['input_vs_consumption']:.2f}x", ">= 1.5x",
             "met" if r["input_vs_consumption"] >= 1.5 else "missed")]


if __name__ == "__main__":
    main()
