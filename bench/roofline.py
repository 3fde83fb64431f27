"""Roofline of the fusion head: achieved GFLOP/s of block scoring (FLOPs counted from the
shapes) vs this machine's fp32 matmul GFLOP/s, measured in the same run (target >= 30%).

Also projects the cost of scoring ROCOv2's ~10k x 10k test pairs with the `base` preset on
GPUs, from the FLOPs per pair and the efficiency measured here (a projection, not a run).

    python -m bench.roofline [--n 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench._common import load_fusion, load_gallery, write_result
from core.config import load_config
from core.evaluation import encode_batches, score_matrix


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
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 8])
    p.add_argument("--gpu-peak-tflops", type=float, default=989.0,
                   help="dense bf16 peak of the cluster's GPU (H100 SXM: 989)")
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
    # Projection for ROCOv2's test split with the base preset on GPUs.
    base = load_config("base").model
    base_flops = fusion_flops_per_pair(30.0, base.fusion.width, base.fusion.num_layers, 49,
                                       base.fusion.mlp_ratio)
    pairs = 10_000 ** 2
    projection_s = {g: pairs * base_flops / (g * args.gpu_peak_tflops * 1e12 * fraction)
                    for g in args.gpus}
    projection = (
        "Projection (not a run): scoring ROCOv2's ~10k x 10k test pairs with the `base` fusion "
        f"head costs {base_flops / 1e6:.1f} MFLOP per pair (~30 tokens, 7x7 patches, width "
        f"{base.fusion.width}, {base.fusion.num_layers} layers), {pairs * base_flops / 1e15:.1f} "
        f"PFLOP in all; at the {100 * fraction:.0f}% of peak measured here on a "
        f"{args.gpu_peak_tflops:.0f} TFLOP/s bf16 GPU that is "
        + ", ".join(f"{s:.1f} s on {g} GPU{'s' if g > 1 else ''}" for g, s in projection_s.items())
        + f" (at a more cautious 30% of peak: {projection_s[args.gpus[0]] * fraction / 0.3:.0f} s on "
        f"{args.gpus[0]}); the 2 x 10k encoder passes add about 0.15 PFLOP (ResNet-50 + BERT-base); "
        "rerank with k=32 needs 2 x 32 / 10,000 = 0.64% of the head's work.")
    result = {"bench": "roofline", "weights": source, "n": args.n, "mean_tokens": tokens,
              "flops_per_pair": flops, "score_s": seconds, "head_gflops": head,
              "matmul_gflops": peak, "fraction_of_matmul": fraction, "target_fraction": 0.3,
              "base_flops_per_pair": base_flops, "projection_rocov2_test_s": projection_s,
              "projection": projection}
    write_result(result)
    return result


if __name__ == "__main__":
    main()
