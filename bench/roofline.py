"""Roofline of the fusion head: achieved GFLOP/s of block scoring (FLOPs counted from the
shapes) vs this machine's fp32 matmul GFLOP/s, measured in the same run (target >= 30%).

GPU figures come only from a GPU run (bench/gpu.py), never from this CPU measurement.

    python -m bench.roofline [--n 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench._checkpoints import checkpoint_record
from bench._common import load_fusion, load_gallery, write_result
from bench.pairwise_scoring import model_measured
from core.evaluation.reference import encode_batches, score_matrix


def fusion_flops_per_pair(tokens: float, width: int, layers: int, patches: int,
                          mlp_ratio: float) -> float:
    """Multiply-adds x 2 of one (caption, image) pair in FusionModel.score: per valid token
    and layer the attention logits and values (2 P d), the output projection (d^2), the
    feed-forward (2 d^2 r), and from layer 2 on the query projection (d^2); then the head."""
    d, ff = width, 2 * width * width * mlp_ratio
    per_token = layers * (2 * patches * d + d * d + ff) + (layers - 1) * d * d
    return 2.0 * (tokens * per_token + d * d + d)


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--checkpoint", default="runs/demo/train/fusion")
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    model, tokenizer, cfg, source = load_fusion(args.checkpoint)
    batch = load_gallery(cfg, tokenizer, args.data, "train", args.n)
    with torch.no_grad():
        enc = encode_batches(model, [batch])
        tokens = float(enc["text"].mask.sum(1).float().mean())
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            score_matrix(model, enc["text"], enc["image"])
            times.append(time.perf_counter() - t0)
    fc = cfg.model.fusion
    flops = fusion_flops_per_pair(tokens, fc.width, fc.num_layers, model.image_encoder.num_patches,
                                  fc.mlp_ratio)
    seconds = statistics.median(times)
    head = args.n * args.n * flops / seconds / 1e9
    peak = matmul_gflops()
    fraction = head / peak
    result = {"bench": "roofline", "weights": source,
              "checkpoint": checkpoint_record(args.checkpoint)
              if source.startswith("trained") else None, "n": args.n, "mean_tokens": tokens,
              "flops_per_pair": flops, "score_s": seconds, "head_gflops": head,
              "matmul_gflops": peak, "fraction_of_matmul": fraction, "target_fraction": 0.3}
    write_result(result)
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    return [(f"fusion head roofline ({model_measured(r)})", f"{r['head_gflops']:.0f} GFLOP/s = "
             f"{100 * r['fraction_of_matmul']:.0f}% of measured matmul {r['matmul_gflops']:.0f} GFLOP/s",
             ">= 30%", "met" if r["fraction_of_matmul"] >= 0.3 else "missed")]


if __name__ == "__main__":
    main()
