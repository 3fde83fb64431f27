"""bf16 autocast against fp32 for the fusion model's pair scoring on this CPU, side by side in
one run, on a VALIDATION split (the choice ``roco_cpu``'s ``train.precision: bf16`` rests
on): the same checkpoint and the same encoded gallery scored twice by ``rocoray score``
(every caption x image pair), then recall, the correct item's rank per query and the
scoring time compared.

    python -m bench.cpu_bf16 [--checkpoint runs/bench-roco_sample/train/fusion]
                             [--data ../shared/data/roco-sample] [--split validation]
                             [--out FILE]

bf16 only pays on CPUs with native bf16 arithmetic (AVX512-BF16 / AMX; ``core.precision``):
the result records whether this one has it. Writes bench/results/cpu_bf16.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench._checkpoints import checkpoint_record, short
from bench._common import write_result

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")


def score(checkpoint: str, data: str, split: str, precision: str, out: Path, cache: Path) -> dict:
    subprocess.run([sys.executable, "-m", "ray_jobs.score", "--model", "fusion", "--checkpoint",
                    checkpoint, "--data", data, "--split", split, "--precision", precision,
                    "--out", str(out), "--cache", str(cache)], check=True, cwd=ROOT)
    return json.loads((out / "scoring.json").read_text())


def ranks(out: Path, direction: str) -> np.ndarray:
    import pyarrow.parquet as pq

    return np.asarray(pq.read_table(out / f"{direction}.parquet", columns=["rank"])
                      .column("rank").to_numpy())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/bench-roco_sample/train/fusion")
    p.add_argument("--data", default="../shared/data/roco-sample")
    p.add_argument("--split", default="validation")
    p.add_argument("--out", default=None,
                   help="the results file (default bench/results/cpu_bf16.json)")
    args = p.parse_args(argv)
    from core.precision import cpu_has_native_bf16

    checkpoint = checkpoint_record(args.checkpoint)  # which model: read before it is scored
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"  # one encoding of the gallery, read by both runs
        for precision in PRECISIONS:
            out = Path(tmp) / precision
            s = score(args.checkpoint, args.data, args.split, precision, out, cache)
            runs[precision] = {"metrics": s["metrics"], "score_s": s["timings"]["score_s"],
                               "pairs": s["timings"]["pairs"],
                               "ranks": {d: ranks(out, d) for d in ("t2i", "i2t")}}
    agreement = {}
    for d in ("t2i", "i2t"):
        a, b = runs["fp32"]["ranks"][d], runs["bf16"]["ranks"][d]
        agreement[d] = {"same_rank_share": float((a == b).mean()),
                        "mean_abs_rank_change": float(np.abs(a - b).mean()),
                        "max_abs_rank_change": int(np.abs(a - b).max())}
    for r in runs.values():
        del r["ranks"]
    result = {"bench": "cpu_bf16", "data": args.data, "split": args.split,
              "checkpoint": checkpoint, "native_bf16": cpu_has_native_bf16(),
              "runs": runs, "rank_agreement": agreement,
              "speedup": runs["fp32"]["score_s"] / runs["bf16"]["score_s"],
              "mean_recall_change": runs["bf16"]["metrics"]["mean_recall"]
              - runs["fp32"]["metrics"]["mean_recall"]}
    print(f"bf16 {result['speedup']:.2f}x faster; mean recall "
          f"{runs['fp32']['metrics']['mean_recall']:.4f} -> {runs['bf16']['metrics']['mean_recall']:.4f}")
    write_result(result, out=args.out)
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's row of the README's performance table (``bench.summary``)."""
    f, b = (r["runs"][p] for p in PRECISIONS)
    same = min(a["same_rank_share"] for a in r["rank_agreement"].values())
    moved = max(a["max_abs_rank_change"] for a in r["rank_agreement"].values())
    checkpoint = f", {short(r['checkpoint'])}" if isinstance(r["checkpoint"], dict) else ""
    return [(f"fusion pair scoring, bf16 vs fp32 autocast on this CPU ({r['split']} split, "
             f"{f['pairs']:,} pairs{checkpoint})",
             f"{r['speedup']:.2f}x faster; mean recall {f['metrics']['mean_recall']:.4f} -> "
             f"{b['metrics']['mean_recall']:.4f}; the correct item's rank unchanged for "
             f">= {same:.0%} of queries (at most {moved} "
             "places otherwise)", "faster, recall within noise",
             "met" if r["speedup"] > 1 and abs(r["mean_recall_change"]) < 0.01 else "missed")]


if __name__ == "__main__":
    main()
