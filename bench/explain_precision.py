"""bf16 autocast against fp32 for the report's explanations on this CPU, side by side in one
run, on a VALIDATION split (the choice that the evaluate stage explains in the scoring
jobs' precision rests on): every map of both models (fusion cross-attention, Grad-CAM and
pixel Integrated Gradients; two-tower Grad-CAM and pixel IG) and the caption's token IG,
for the same pairs, computed twice. Reports the time of each precision and how far the bf16
maps agree with the fp32 ones (Pearson r of the maps upsampled to pixels, IoU of their top
20 % pixels, as ``core.explain.agreement`` scores two methods). The deletion / insertion
curves that score the maps stay fp32 in the report, so they are not timed here.

    python -m bench.explain_precision [--run runs/bench-roco_sample]
                                      [--data ../shared/data/roco-sample] [--split validation]

Writes bench/results/explain_precision.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench._checkpoints import checkpoint_record, short
from bench._common import write_result

PRECISIONS = ("fp32", "bf16")


def explain_all(loaded: dict, batches: dict, rows: list[int], precision: str) -> tuple:
    """({kind: [per pair: every map and the token IG]}, seconds) in ``precision``."""
    from core.explain import attribution as explain
    from core.explain.study import _tensors as tensors
    from core.precision import autocast

    out, t0 = {}, time.perf_counter()
    with autocast("cpu", precision):
        for kind, lo in loaded.items():
            out[kind] = [explain.explain(lo.model, *tensors(batches[kind], i)) for i in rows]
    return out, time.perf_counter() - t0


def agreement(maps: dict, size: int) -> dict:
    """Per map: mean / min Pearson r and mean top-20 % IoU of bf16 against fp32, over pairs."""
    from core.explain.agreement import map_agreement, upsample
    from core.explain.attribution import LABELS, METHODS

    out = {}
    for kind, names in METHODS.items():
        for name in names:
            found = [map_agreement(upsample(a[name], size), upsample(b[name], size))
                     for a, b in zip(maps["fp32"][kind], maps["bf16"][kind])]
            r = [f["pearson"] for f in found]
            out[LABELS[(kind, name)]] = {"pearson_mean": float(np.mean(r)),
                                         "pearson_min": float(np.min(r)),
                                         "iou20_mean": float(np.mean([f["iou@20%"] for f in found]))}
        r = [float(np.corrcoef(a["token_ig"], b["token_ig"])[0, 1])
             for a, b in zip(maps["fp32"][kind], maps["bf16"][kind])]
        out[f"{kind.replace('_', '-')} token IG"] = {"pearson_mean": float(np.mean(r)),
                                                      "pearson_min": float(np.min(r))}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/bench-roco_sample",
                   help="a demo's output directory (its train/<kind> runs are explained)")
    p.add_argument("--data", default="../shared/data/roco-sample")
    p.add_argument("--split", default="validation")
    p.add_argument("--pairs", type=int, default=8)
    args = p.parse_args(argv)
    import torch

    from core.checkpoint import load_checkpoint, resolve_checkpoint
    from core.data.rocov2 import read_split
    from core.explain.study import _cases as cases
    from core.precision import cpu_has_native_bf16

    torch.set_num_threads(2)
    checkpoints = {k: resolve_checkpoint(f"{args.run}/train/{k}") for k in ("fusion", "two_tower")}
    loaded = {k: load_checkpoint(c) for k, c in checkpoints.items()}
    records = {k: checkpoint_record(c) for k, c in checkpoints.items()}  # which models
    table = read_split(args.data, args.split, columns=["image_id", "image", "caption", "cui"])
    table = table.slice(0, args.pairs)
    batches, rows = cases(table, loaded)  # the report's own preprocessing and skips
    explain_all(loaded, batches, rows[:1], "fp32")  # warm-up: first-call allocations
    maps, seconds = {}, {}
    for precision in PRECISIONS:
        maps[precision], seconds[precision] = explain_all(loaded, batches, rows, precision)
    size = batches["fusion"]["pixel_values"].shape[-1]
    result = {"bench": "explain_precision", "data": args.data, "split": args.split,
              "checkpoints": records, "pairs": len(rows), "native_bf16": cpu_has_native_bf16(),
              "seconds": seconds, "speedup": seconds["fp32"] / seconds["bf16"],
              "agreement": agreement(maps, size)}
    worst = min(a["pearson_min"] for a in result["agreement"].values())
    print(f"bf16 explanations {result['speedup']:.2f}x faster ({seconds['fp32']:.0f} -> "
          f"{seconds['bf16']:.0f} s for {len(rows)} pairs, both models); lowest Pearson r of a "
          f"bf16 map with its fp32 map {worst:.3f}")
    write_result(result)
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's row of the README's performance table (``bench.summary``)."""
    a = r["agreement"]
    mean = min(v["pearson_mean"] for v in a.values())
    worst = min(v["pearson_min"] for v in a.values())
    models = "".join(f"; {short(c)}" for c in r["checkpoints"].values() if isinstance(c, dict))
    return [(f"explanations (every map of both models + token IG), bf16 vs fp32 autocast on "
             f"this CPU ({r['split']} split, {r['pairs']} pairs{models})",
             f"{r['speedup']:.2f}x faster ({r['seconds']['fp32']:.0f} -> "
             f"{r['seconds']['bf16']:.0f} s); bf16 maps vs fp32: Pearson r >= {mean:.3f} on "
             f"average per map, >= {worst:.3f} on every pair",
             "faster, maps r >= 0.9 on average", "met" if r["speedup"] > 1 and mean >= 0.9
             else "missed")]


if __name__ == "__main__":
    main()
