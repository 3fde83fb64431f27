"""Retrieve-and-rerank vs full fusion at N=2000, with the trained tiny models: time ratio
and the share of full fusion's Recall@10 kept, for k in {16, 32, 64} (target: >= 10x
faster while keeping >= 95% of its Recall@10 at some k). Reuses the full-fusion run of
bench.scaling at the same N when it is there.

    python -m bench.rerank [--n 2000] [--ks 16 32 64]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from bench._common import RESULTS, held_out_split, write_result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--ks", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--fusion", default="runs/demo/train/fusion")
    p.add_argument("--two-tower", default="runs/demo/train/two_tower")
    p.add_argument("--data", default=None,
                   help="default: a held-out synthetic test split (bench._common.held_out_split)")
    p.add_argument("--split", default="test")
    p.add_argument("--work", default=str(RESULTS / "tmp_rerank"))
    p.add_argument("--scaling-work", default=str(RESULTS / "tmp_scaling"))
    args = p.parse_args(argv)
    from ray_jobs.runtime import init_ray
    from ray_jobs.score import ScoreConfig
    from ray_jobs.score import run as score

    init_ray()
    held_out = args.data is None
    if held_out:
        args.data, args.split = held_out_split(args.n)
    shutil.rmtree(args.work, ignore_errors=True)
    common = {"data": args.data, "split": args.split, "max_items": args.n, "block": 128}
    full_dir = Path(args.scaling_work) / f"n{args.n}"
    scaling = RESULTS / "scaling.json"
    same_data = scaling.exists() and json.loads(scaling.read_text()).get("data") == args.data
    if same_data and (full_dir / "scoring.json").exists():
        full = json.loads((full_dir / "scoring.json").read_text())
    else:
        full = score(ScoreConfig(model="fusion", checkpoint=args.fusion, **common,
                                 out=str(Path(args.work) / "fusion")))
    full_r10 = (full["metrics"]["t2i"]["R@10"] + full["metrics"]["i2t"]["R@10"]) / 2
    full_s = full["timings"]["score_s"] + full["timings"].get("positives_s", 0.0)
    rows = []
    for k in args.ks:
        out = Path(args.work) / f"k{k}"
        s = score(ScoreConfig(model="rerank", checkpoint=args.fusion, retriever=args.two_tower,
                              **common, rerank_k=k, out=str(out)))
        # the scoring cost of rerank: the retriever's scoring + the fusion head on 2Nk pairs
        # (score_s covers both)
        rerank_s = s["timings"]["score_s"]
        r10 = (s["metrics"]["t2i"]["R@10"] + s["metrics"]["i2t"]["R@10"]) / 2
        rows.append({"k": k, "score_s": rerank_s, "speedup": full_s / rerank_s,
                     "R@10": r10, "recall_share": r10 / full_r10 if full_r10 else float("nan"),
                     "metrics": s["metrics"]})
        print({k: v for k, v in rows[-1].items() if k != "metrics"})
    good = [r for r in rows if r["speedup"] >= 10 and r["recall_share"] >= 0.95]
    best = max(good or rows, key=lambda r: (r in good, r["recall_share"]))
    result = {"bench": "rerank", "n": full["n"], "data": args.data, "split": args.split,
              "held_out": held_out, "full_fusion_score_s": full_s,
              "full_fusion_R@10": full_r10, "ks": rows,
              "best": {k: best[k] for k in ("k", "speedup", "recall_share", "R@10")} if rows else None}
    write_result(result)
    return result


if __name__ == "__main__":
    main()
