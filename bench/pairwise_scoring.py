"""Pairwise fusion scoring, naive vs split, side by side in one run (tiny preset, same weights).

naive: what a straightforward implementation does: the full model forward (both encoders,
       cross-attention, head) for every caption x image pair of the gallery, batched.
split: encode each caption and image once, then score the tiles with the cached features
       (FusionModel.score, as the scoring job does).
For each N: pairs/s of both, the speed-up, the max |score difference| on the pairs both
scored, and (where naive scores the full matrix, N <= --full-naive-max) whether the
rankings (top-10 lists and ranks of the correct items) are identical.

    python -m bench.pairwise_scoring [--sizes 128 256 512] [--checkpoint runs/demo/train/fusion]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bench._common import load_gallery, load_fusion, write_result
from core.evaluation import encode_batches, score_matrix
from core.metrics import ranks_from_scores


@torch.no_grad()
def naive_scores(model, batch, pairs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    px = torch.as_tensor(batch["pixel_values"])
    ids = torch.as_tensor(batch["input_ids"])
    mask = torch.as_tensor(batch["attention_mask"])
    out = []
    for a in range(0, len(pairs), batch_size):
        t, i = pairs[a:a + batch_size, 0], pairs[a:a + batch_size, 1]
        out.append(model(px[i], ids[t], mask[t]).numpy())
    return np.concatenate(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--checkpoint", default="runs/demo/train/fusion")
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--naive-pairs", type=int, default=4096,
                   help="pairs timed for naive where the full matrix is too slow")
    p.add_argument("--full-naive-max", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    model, tokenizer, cfg, source = load_fusion(args.checkpoint)
    batch = load_gallery(cfg, tokenizer, args.data, "train", max(args.sizes))
    rng = np.random.default_rng(0)
    sizes = []
    for n in args.sizes:
        sub = {k: v[:n] for k, v in batch.items()}
        t0 = time.perf_counter()
        enc = encode_batches(model, [sub])
        encode_s = time.perf_counter() - t0
        split_times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            split = score_matrix(model, enc["text"], enc["image"], tile=256)
            split_times.append(time.perf_counter() - t0)
        split_s = statistics.median(split_times) + encode_s
        full = n <= args.full_naive_max
        pairs = (np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
                 if full else rng.integers(0, n, (args.naive_pairs, 2)))
        t0 = time.perf_counter()
        naive = naive_scores(model, sub, pairs)
        naive_s = time.perf_counter() - t0
        diff = float(np.abs(naive - split[pairs[:, 0], pairs[:, 1]]).max())
        row = {"n": n, "split_pairs_per_s": n * n / split_s,
               "naive_pairs_per_s": len(pairs) / naive_s, "max_abs_diff": diff,
               "naive_pairs_timed": len(pairs), "split_encode_s": encode_s}
        row["speedup"] = row["split_pairs_per_s"] / row["naive_pairs_per_s"]
        if full:
            naive_m = naive.reshape(n, n)
            g = sub["group"]
            same_ranks = (ranks_from_scores(naive_m, g, g) == ranks_from_scores(split, g, g)).all()
            same_top = (np.argsort(-naive_m, 1, kind="stable")[:, :10]
                        == np.argsort(-split, 1, kind="stable")[:, :10]).all()
            row["rankings_identical"] = bool(same_ranks and same_top)
        else:
            row["rankings_identical"] = sizes[-1]["rankings_identical"] if sizes else None
            row["rankings_note"] = f"checked at N={args.full_naive_max}; rate from sampled pairs"
        sizes.append(row)
        print(f"N={n}: split {row['split_pairs_per_s']:.0f} pairs/s, naive "
              f"{row['naive_pairs_per_s']:.0f} pairs/s, {row['speedup']:.1f}x, max diff {diff:.1e}")
    result = {"bench": "pairwise_scoring", "weights": source, "sizes": sizes,
              "target_speedup": 30}
    write_result(result)
    return result


if __name__ == "__main__":
    main()
