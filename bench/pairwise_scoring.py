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

from bench._checkpoints import checkpoint_record, short
from bench._common import load_gallery, load_fusion, write_result
from core.evaluation.reference import encode_batches, score_matrix
from core.metrics import ranks_from_scores


@torch.no_grad()
def naive_scores(model, batch, pairs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    px, ids, mask = (batch.inputs[k] for k in ("pixel_values", "input_ids", "attention_mask"))
    out = []
    for a in range(0, len(pairs), batch_size):
        t, i = pairs[a:a + batch_size, 0], pairs[a:a + batch_size, 1]
        out.append(model(px[i], ids[t], mask[t]).numpy())
    return np.concatenate(out)


@torch.no_grad()
def flop_bound(model, batch, n: int = 16) -> dict:
    """FLOPs per pair counted by torch's FlopCounterMode: the naive forward (encoders + head)
    vs split scoring (encoders amortised over an n x n block + the head). Their ratio is the
    most the split form can gain at that n, whatever the implementation."""
    from torch.utils.flop_counter import FlopCounterMode

    sub = batch.select(slice(0, n))
    px, ids, mask = (sub.inputs[k] for k in ("pixel_values", "input_ids", "attention_mask"))
    with FlopCounterMode(display=False) as naive:
        model(px, ids, mask)
    with FlopCounterMode(display=False) as enc:
        feats = encode_batches(model, [sub])
    with FlopCounterMode(display=False) as head:
        model.score(feats["text"], feats["image"])
    naive_pp = naive.get_total_flops() / n
    head_pp = head.get_total_flops() / (n * n)
    encode_per_item = enc.get_total_flops() / n
    return {"naive_flops_per_pair": naive_pp, "head_flops_per_pair": head_pp,
            "encode_flops_per_caption_plus_image": encode_per_item,
            # at large N the encoders vanish from the split cost: the asymptotic bound
            "bound_speedup": naive_pp / head_pp}


def base_flop_bound(tokens: int = 30) -> dict:
    """The same count for the `base` preset (ResNet-50 at 224 px + BERT-base), built from
    config with random weights: what the split form can gain on the cluster's models."""
    from core.config import load_config
    from core.models import build_model

    cfg = load_config("base", ["model.kind=fusion", "model.image.pretrained=false"])
    cfg.model.text.name_or_path = None  # built from config: same shapes, no download
    model = build_model(cfg.model).eval()
    n = 2
    size = cfg.model.image.image_size
    from core.batch import collate

    batch = collate({"pixel_values": np.zeros((n, 3, size, size), np.uint8),
                     "input_ids": np.ones((n, tokens), np.int64),
                     "attention_mask": np.ones((n, tokens), np.int64), "group": np.arange(n),
                     "skip": np.zeros(n, np.int8)})
    return flop_bound(model, batch, n)


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
        sub = batch.select(slice(0, n))
        t0 = time.perf_counter()
        enc = encode_batches(model, [sub])
        encode_s = time.perf_counter() - t0
        split_times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            split = score_matrix(model, enc["text"], enc["image"])
            split_times.append(time.perf_counter() - t0)
        split_s = statistics.median(split_times) + encode_s
        full = n <= args.full_naive_max
        pairs = (np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
                 if full else rng.integers(0, n, (args.naive_pairs, 2)))
        naive_times = []
        for _ in range(1 if full else args.repeats):  # the full N=128 matrix is slow enough
            t0 = time.perf_counter()
            naive = naive_scores(model, sub, pairs)
            naive_times.append(time.perf_counter() - t0)
        naive_s = statistics.median(naive_times)
        diff = float(np.abs(naive - split[pairs[:, 0], pairs[:, 1]]).max())
        row = {"n": n, "split_pairs_per_s": n * n / split_s,
               "naive_pairs_per_s": len(pairs) / naive_s, "max_abs_diff": diff,
               "naive_pairs_timed": len(pairs), "split_encode_s": encode_s}
        row["speedup"] = row["split_pairs_per_s"] / row["naive_pairs_per_s"]
        if full:
            naive_m = naive.reshape(n, n)
            g = sub.group
            same_ranks = (ranks_from_scores(naive_m, g, g) == ranks_from_scores(split, g, g)).all()
            same_top = (np.argsort(-naive_m, 1, kind="stable")[:, :10]
                        == np.argsort(-split, 1, kind="stable")[:, :10]).all()
            row["rankings_identical"] = bool(same_ranks and same_top)
        else:  # every pair of the naive path at this N would take too long: not checked here
            row["rankings_identical"] = None
            row["rankings_note"] = (f"not checked at this N (rate from sampled pairs); checked at "
                                    f"N <= {args.full_naive_max}")
        sizes.append(row)
        print(f"N={n}: split {row['split_pairs_per_s']:.0f} pairs/s, naive "
              f"{row['naive_pairs_per_s']:.0f} pairs/s, {row['speedup']:.1f}x, max diff {diff:.1e}")
    bound = flop_bound(model, batch)
    base = base_flop_bound()
    print(f"FLOP bound on the speed-up: tiny {bound['bound_speedup']:.1f}x, "
          f"base {base['bound_speedup']:.0f}x")
    result = {"bench": "pairwise_scoring", "weights": source,
              "checkpoint": checkpoint_record(args.checkpoint)
              if source.startswith("trained") else None, "sizes": sizes,
              "target_speedup": 30, "flop_bound_tiny": bound, "flop_bound_base": base}
    write_result(result)
    return result


def model_measured(r: dict) -> str:
    """The fusion model a results file measured, for its README row: the demo checkpoint, or
    the random-init tiny model ``load_fusion`` falls back to when there is none."""
    if r.get("checkpoint"):
        return short(r["checkpoint"])
    return f"tiny fusion, {r.get('weights', 'random init')}: no demo checkpoint"


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    last = r["sizes"][-1]
    # rankings are compared only where the naive path scored every pair
    checked = [row for row in r["sizes"] if "rankings_note" not in row]
    identical = bool(checked) and all(row["rankings_identical"] for row in checked)
    where = "/".join(str(row["n"]) for row in checked) or "none"
    measured = (f"{last['speedup']:.1f}x ({last['split_pairs_per_s']:.0f} vs "
                f"{last['naive_pairs_per_s']:.0f} pairs/s), max abs diff {last['max_abs_diff']:.1e}, "
                f"rankings identical where every pair was checked (N={where}): {identical}")
    bound = r.get("flop_bound_tiny")
    if bound:
        measured += (f"; FLOP ratio naive/split for `tiny` {bound['bound_speedup']:.1f}x "
                     f"(`base`: {r['flop_bound_base']['bound_speedup']:.0f}x)")
    return [(f"fusion scoring, split vs naive (N={last['n']}; {model_measured(r)})", measured,
             ">= 30x, identical rankings",
             "met" if last["speedup"] >= 30 and identical else "missed")]


if __name__ == "__main__":
    main()
