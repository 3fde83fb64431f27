"""Evaluate and compare fusion, two-tower and retrieve-and-rerank on one split, and write
the report.

    rocoray evaluate --two-tower runs/two-tower-demo --fusion runs/fusion-demo \\
        --data data/synthetic --split test --out runs/eval

Runs the three scoring jobs (``ray_jobs.score``), measures scoring time against gallery size
in one process, and writes metrics.json, report.md, report.html and figures/ to --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from core.checkpoint import load_checkpoint
from core.data.rocov2 import image_bytes_column, read_split
from core.evaluation import concat, score_candidates, stream_retrieval, take
from core.feature_store import FeatureStore
from core.models import count_parameters
from core.report import fit_exponent, headline_table, write_report
from ray_jobs.runtime import init_ray, setup_logging
from ray_jobs.score import parse_args as score_args
from ray_jobs.score import read_gallery, resolve_checkpoint, score

log = logging.getLogger("rocoray.evaluate")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rocoray evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--two-tower", required=True, help="two-tower checkpoint or run dir")
    p.add_argument("--fusion", required=True, help="fusion checkpoint or run dir")
    p.add_argument("--data", default=None, help="data (default: the checkpoints' data.path)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", default="runs/eval")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--rerank-k", type=int, default=32)
    p.add_argument("--alpha", type=float, default=0.0)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--max-items", type=int, default=None)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--cpus-per-actor", type=float, default=0.5)
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--examples", type=int, default=3, help="sample queries shown in the report")
    p.add_argument("--scaling-points", type=int, default=4,
                   help="gallery sizes for the time-vs-size chart")
    p.add_argument("--address", default=None)
    return p.parse_args(argv)


def _score_args(args, model: str, checkpoint: str, out: Path, **extra) -> argparse.Namespace:
    argv = ["--model", model, "--checkpoint", checkpoint, "--split", args.split,
            "--out", str(out), "--k", str(args.k), "--rerank-k", str(args.rerank_k),
            "--alpha", str(args.alpha), "--block", str(args.block), "--actors", str(args.actors),
            "--cpus-per-actor", str(args.cpus_per_actor),
            "--gpus-per-actor", str(args.gpus_per_actor)]
    if args.data:
        argv += ["--data", str(args.data)]
    if args.max_items:
        argv += ["--max-items", str(args.max_items)]
    if args.use_gpu:
        argv.append("--use-gpu")
    ns = score_args(argv)
    for key, value in extra.items():
        setattr(ns, key, value)
    return ns


def _load_features(workdir: Path, kind: str):
    store = FeatureStore(f"{workdir}/features", kind)
    meta = store.read_meta()
    text = concat([store.read_block("text", b) for b in range(meta["blocks"])])
    image = concat([store.read_block("image", b) for b in range(meta["blocks"])])
    return text, image


def scaling_curve(out: Path, fusion_ckpt: str, tt_ckpt: str, n: int, points: int,
                  rerank_k: int) -> dict:
    """Scoring time of each method at growing gallery sizes, one process, on the features the
    scoring jobs already encoded (so encoders are excluded: they are linear in N)."""
    fusion = load_checkpoint(fusion_ckpt).model
    two_tower = load_checkpoint(tt_ckpt).model
    f_text, f_image = _load_features(out / "fusion", "fusion")
    t_text, t_image = _load_features(out / "two_tower", "two_tower")
    groups = read_gallery(str(out / "fusion")).column("group").to_numpy()
    low = max(rerank_k, min(64, n))
    sizes = sorted({int(s) for s in np.geomspace(low, n, points)}) if n > low else [n]
    seconds = {"fusion": [], "two_tower": [], "rerank": []}
    for size in sizes:
        head, g = slice(0, size), groups[:size]
        t0 = time.perf_counter()
        stream_retrieval(fusion, take(f_text, head), take(f_image, head), g, g, k=10, tile=64)
        seconds["fusion"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        acc = stream_retrieval(two_tower, take(t_text, head), take(t_image, head), g, g,
                               k=min(rerank_k, size), tile=4096)
        seconds["two_tower"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for direction, queries, gallery, side in (("t2i", f_text, f_image, "text"),
                                                  ("i2t", f_image, f_text, "image")):
            cand, _ = acc.topk(direction)
            score_candidates(fusion, take(queries, head), take(gallery, cand.reshape(-1)),
                             cand.shape[1], side)
        seconds["rerank"].append(seconds["two_tower"][-1] + time.perf_counter() - t0)
        log.info("scaling N=%d: %s", size, {m: round(s[-1], 3) for m, s in seconds.items()})
    return {"sizes": sizes, "seconds": seconds,
            "exponents": {m: fit_exponent(sizes, s) for m, s in seconds.items()}}


def pick_examples(out: Path, methods: list[str], n: int, count: int, seed: int = 0) -> dict:
    gallery = read_gallery(str(out / "fusion"))
    ids = gallery.column("image_id").to_pylist()
    captions = gallery.column("caption").to_pylist()
    groups = gallery.column("group").to_numpy()
    queries = np.random.default_rng(seed).choice(n, size=min(count, n), replace=False)
    examples = {}
    for m in methods:
        tables = {d: pq.read_table(out / m / f"{d}.parquet") for d in ("t2i", "i2t")}
        top = {d: tables[d].column("topk_index").to_pylist() for d in tables}
        examples[m] = {
            "t2i": [{"query_id": ids[q], "query_caption": captions[q],
                     "top_ids": [ids[j] for j in top["t2i"][q][:3]],
                     "hits": [bool(groups[j] == groups[q]) for j in top["t2i"][q][:3]]}
                    for q in queries],
            "i2t": [{"query_id": ids[q], "query_caption": captions[q],
                     "top_captions": [captions[j] for j in top["i2t"][q][:3]],
                     "hits": [bool(groups[j] == groups[q]) for j in top["i2t"][q][:3]]}
                    for q in queries],
        }
    return examples


def example_images(data, split: str, examples: dict) -> dict[str, bytes]:
    wanted = set()
    for per_method in examples.values():
        for q in per_method["t2i"]:
            wanted.update(q["top_ids"])
        for q in per_method["i2t"]:
            wanted.add(q["query_id"])
    table = read_split(data, split, columns=["image_id", "image"])
    ids = table.column("image_id").to_pylist()
    blobs = image_bytes_column(table)
    return {i: b for i, b in zip(ids, blobs) if i in wanted}


def evaluate(args) -> dict:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tt_ckpt, fu_ckpt = resolve_checkpoint(args.two_tower), resolve_checkpoint(args.fusion)
    summaries = {
        "two_tower": score(_score_args(args, "two_tower", tt_ckpt, out / "two_tower")),
        "fusion": score(_score_args(args, "fusion", fu_ckpt, out / "fusion")),
        "rerank": score(_score_args(args, "rerank", fu_ckpt, out / "rerank", retriever=tt_ckpt,
                                    retriever_out=str(out / "two_tower"))),
    }
    n = summaries["fusion"]["n"]
    for m, s in summaries.items():
        if s["n"] != n:
            raise RuntimeError(f"{m} scored {s['n']} items, fusion {n}: galleries differ")
    data = summaries["fusion"]["data"]
    params = {"two_tower": count_parameters(load_checkpoint(tt_ckpt).model),
              "fusion": count_parameters(load_checkpoint(fu_ckpt).model)}
    params["rerank"] = params["two_tower"] + params["fusion"]
    metrics = {
        "data": data, "split": args.split, "gallery_size": n,
        "skipped": summaries["fusion"]["skipped"],
        "methods": {m: {"metrics": s["metrics"], "timings": s["timings"],
                        "parameters": params[m], "checkpoint": s["checkpoint"],
                        **({"rerank_k": s["rerank_k"], "alpha": s["alpha"]} if m == "rerank" else {})}
                    for m, s in summaries.items()},
        "scaling": scaling_curve(out, fu_ckpt, tt_ckpt, n, args.scaling_points, args.rerank_k),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    examples = pick_examples(out, list(summaries), n, args.examples)
    paths = write_report(metrics, examples, example_images(data, args.split, examples), out)
    metrics["report"] = paths
    return metrics


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging()
    init_ray(args.address)
    metrics = evaluate(args)
    print("\n" + headline_table(metrics))
    print(f"\nreport: {metrics['report']['html']}  (and {metrics['report']['markdown']})")
    return metrics


if __name__ == "__main__":
    main()
