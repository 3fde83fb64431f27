"""Synthetic ROCOv2 generation speed: pairs/s per core at 224 px (target >= 300).

One process, one core: render + caption + encode, the whole row, timed over a split plan.
Prints one JSON line and writes bench/results/synthetic_generation.json.

    python bench/synthetic_generation.py [--pairs 1000] [--image-size 224]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench._common import write_result

from core.synthetic.generate import SyntheticSpec, plan_split, render_rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    spec = SyntheticSpec(sizes={"train": args.pairs, "validation": 1, "test": 1},
                         image_size=args.image_size)
    rows = plan_split(spec, "train")
    render_rows(spec, "train", rows[:20])  # warm-up
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        table = render_rows(spec, "train", rows)
        rates.append(table.num_rows / (time.perf_counter() - t0))
    result = {
        "bench": "synthetic_generation",
        "image_size": args.image_size,
        "pairs": args.pairs,
        "pairs_per_s_per_core": round(statistics.median(rates), 1),
        "target_pairs_per_s_per_core": 300,
        "ratio_to_target": round(statistics.median(rates) / 300, 2),
    }
    write_result(result)
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    v = r["pairs_per_s_per_core"]
    return [("synthetic data generation (224 px, 1 core)", f"{v:.0f} pairs/s",
             ">= 300 pairs/s", "met" if v >= 300 else "missed")]


if __name__ == "__main__":
    main()
