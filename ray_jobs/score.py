"""Score a gallery with Ray Data batch inference, keep a streaming top-K per query in both
directions, and write the results to Parquet.

    rocoray score --model fusion --checkpoint runs/fusion-demo --data data/synthetic --split test
    rocoray score --model two_tower --checkpoint runs/two-tower-demo --data data/synthetic
    rocoray score --model rerank --checkpoint runs/fusion-demo --retriever runs/two-tower-demo

fusion     1. encode every caption and image ONCE on an actor pool (map_batches with a
              callable class: GPUs on a cluster, fractional CPUs here);
           2. cut the caption x image matrix into tiles, score them with the fusion head on an
              actor pool; each tile sends back only its top-K lists and rank counts;
           3. merge into a streaming top-K per query (O(N*K) memory), exact ranks included.
two_tower  embed both sides once, chunked matrix product, the same top-K output.
rerank     the two-tower model's top-k candidates re-scored by the fusion head (N*k pairs).

Outputs in --out: t2i.parquet / i2t.parquet (query, top-K ids and scores, rank of the first
correct item), scoring.json (metrics, timings, peak memory, skipped rows). The work dir is
restartable: encoded blocks and finished tiles are kept, a rerun skips them, and the final
output is identical.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data
import torch

from core.checkpoint import load_checkpoint, read_checkpoint_config
from core.data.preprocess import build_preprocessor, count_skips, merge_counts
from core.data.rocov2 import columns_to_read, resolve_split, row_groups
from core.evaluation import (concat, num_items, positive_tiles, score_candidates,
                             stream_retrieval)
from core.feature_store import (FeatureStore, arrays_exist, features_from_numpy,
                                features_to_numpy, read_arrays, write_arrays)
from core.metrics import bidirectional_metrics
from core.retrieval import StreamingRetrieval, positive_keys, reduce_tile, rerank
from ray_jobs.runtime import Progress, init_ray, setup_logging

log = logging.getLogger("rocoray.score")

GALLERY = "gallery.parquet"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def resolve_checkpoint(path: str) -> str:
    """A checkpoint directory, or a training run directory (its best checkpoint)."""
    p = Path(path)
    if (p / "model.safetensors").exists():
        return str(p)
    result = p / "result.json"
    if result.exists():
        info = json.loads(result.read_text())
        chosen = info.get("best_checkpoint") or info.get("latest_checkpoint")
        if chosen:
            return chosen
    if not p.exists():
        raise FileNotFoundError(f"checkpoint path does not exist: {path}")
    raise FileNotFoundError(f"{path} is neither a checkpoint (model.safetensors) nor a "
                            f"training run with a result.json")


def _device(use_gpu: bool) -> str:
    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"


# --- stage 1: encode the gallery once ------------------------------------------------------

class GalleryEncoder:
    """Ray Data actor: reads a Parquet row group, preprocesses it and encodes both sides.

    Reading, preprocessing and encoding live in this ONE actor stage on purpose: with no
    separate read tasks competing with the actor pool for CPUs, the stage cannot deadlock
    on a small cluster (the failure mode of read tasks + actors on 2 CPUs)."""

    def __init__(self, checkpoint: str, filesystem, columns: list[str], use_gpu: bool = False,
                 batch_size: int = 64):
        self.device = _device(use_gpu)
        loaded = load_checkpoint(checkpoint, device=self.device)
        self.model = loaded.model
        self.preprocessor = build_preprocessor(loaded.config.model, loaded.tokenizer)
        self.filesystem, self.columns, self.batch_size = filesystem, columns, batch_size

    @torch.no_grad()
    def _encode(self, batch: dict) -> dict:
        out = {k: batch[k] for k in ("image_id", "caption", "group", "skip")}
        pixels = torch.as_tensor(batch["pixel_values"]).to(self.device)
        ids = torch.as_tensor(batch["input_ids"]).to(self.device)
        mask = torch.as_tensor(batch["attention_mask"]).to(self.device)
        for side, feats in (("text", self.model.encode_text(ids, mask)),
                            ("image", self.model.encode_image(pixels))):
            for name, value in features_to_numpy(feats).items():
                out[f"{side}.{name}"] = value
        return out

    def __call__(self, units: dict) -> dict:
        from core.data.rocov2 import read_row_group

        parts = []
        for path, group in zip(units["path"], units["row_group"]):
            table = read_row_group(self.filesystem, str(path), int(group), self.columns)
            for start in range(0, table.num_rows, self.batch_size):
                parts.append(self._encode(self.preprocessor(table.slice(start, self.batch_size))))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def encode_gallery(args, checkpoint: str, kind: str, workdir: str) -> dict:
    """Encode the split once into a FeatureStore (skipped when a previous run finished it)."""
    store = FeatureStore(f"{workdir}/features", kind)
    meta = store.read_meta()
    if meta and meta.get("complete") and meta.get("block_size") == args.block:
        log.info("encoded gallery found in %s (%d items): reusing it", workdir, meta["n"])
        return meta
    files = resolve_split(args.data, args.split)
    units = row_groups(files, args.max_items)
    if not units:
        raise ValueError(f"the gallery is empty: split {args.split!r} of {args.data} has no rows")
    ds = ray.data.from_items([{"path": p, "row_group": g} for p, g, _ in units],
                             override_num_blocks=len(units))
    ds = ds.map_batches(GalleryEncoder, fn_constructor_kwargs={
        "checkpoint": checkpoint, "filesystem": files.filesystem,
        "columns": columns_to_read(files), "use_gpu": args.use_gpu},
        batch_size=1, compute=ray.data.ActorPoolStrategy(size=args.actors),
        num_cpus=args.cpus_per_actor, num_gpus=args.gpus_per_actor or None,
        batch_format="numpy")
    # Deterministic row order: the same gallery indices on every (re)run.
    ds.context.execution_options.preserve_order = True
    if args.max_items is not None:
        ds = ds.limit(args.max_items)
    t0 = time.perf_counter()
    pending: list[dict] = []
    ids, captions, groups, skipped = [], [], [], {}
    blocks = 0
    progress = Progress("encoded rows", every=5.0)

    def flush(final: bool = False):
        nonlocal pending, blocks
        while pending and (final or sum(len(p["group"]) for p in pending) >= args.block):
            merged = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            head = {k: v[:args.block] for k, v in merged.items()}
            rest = {k: v[args.block:] for k, v in merged.items()}
            for side in ("text", "image"):
                arrays = {k.split(".", 1)[1]: v for k, v in head.items() if k.startswith(side + ".")}
                store.write_block(side, blocks, features_from_numpy(kind, side, arrays))
            blocks += 1
            pending = [rest] if len(rest["group"]) else []

    for batch in ds.iter_batches(batch_size=args.block, batch_format="numpy"):
        skipped = merge_counts(skipped, count_skips(batch["skip"]))
        keep = np.asarray(batch["skip"]) == 0
        progress.update(len(keep))
        if not keep.any():
            continue
        batch = {k: np.asarray(v)[keep] for k, v in batch.items()}
        ids.extend(batch["image_id"].tolist())
        captions.extend(batch["caption"].tolist())
        groups.append(batch["group"])
        pending.append({k: v for k, v in batch.items()
                        if k.startswith(("text.", "image.")) or k == "group"})
        flush()
    flush(final=True)
    if not ids:
        raise ValueError(f"the gallery is empty: split {args.split!r} of {args.data} has no "
                         f"usable rows (skipped: {skipped or 'none'})")
    table = pa.table({"image_id": ids, "caption": captions,
                      "group": np.concatenate(groups)})
    with _open(workdir, GALLERY, "wb") as f:
        pq.write_table(table, f)
    meta = {"n": len(ids), "block_size": args.block, "blocks": blocks, "kind": kind,
            "skipped": skipped, "source": files.source, "split": args.split,
            "encode_s": time.perf_counter() - t0, "complete": True}
    store.write_meta(meta)
    log.info("encoded %d items in %d blocks (%.1fs); skipped %s", len(ids), blocks,
             meta["encode_s"], skipped or "none")
    return meta


def _open(workdir: str, name: str, mode: str):
    import fsspec

    fs, base = fsspec.core.url_to_fs(workdir)
    return fs.open(f"{base}/{name}", mode)


def read_gallery(workdir: str) -> pa.Table:
    with _open(workdir, GALLERY, "rb") as f:
        return pq.read_table(f)


# --- stage 2: score tiles on an actor pool -------------------------------------------------

class TileScorer:
    """Ray Data actor: scores work items against blocks from the FeatureStore and writes each
    item's reduced result atomically; items whose result exists are skipped (restart)."""

    def __init__(self, checkpoint: str, workdir: str, kind: str, k: int, block: int,
                 use_gpu: bool = False, fail_after: int | None = None):
        self.device = _device(use_gpu)
        self.model = load_checkpoint(checkpoint, device=self.device).model
        self.workdir, self.k, self.block = workdir, k, block
        self.store = FeatureStore(f"{workdir}/features", kind)
        groups = read_gallery(workdir).column("group").to_numpy()
        self.groups = groups
        self.positives = None
        if arrays_exist(workdir, "positives.npz"):
            p = read_arrays(workdir, "positives.npz")
            self.positives = (p["t2i"], p["i2t"])
        self.candidates = None
        if arrays_exist(workdir, "candidates.npz"):
            self.candidates = read_arrays(workdir, "candidates.npz")
        self.fail_after, self.done = fail_after, 0

    def _ids(self, b: int) -> np.ndarray:
        return np.arange(b * self.block, min((b + 1) * self.block, len(self.groups)))

    def _tile_scores(self, a: int, b: int) -> np.ndarray:
        text = self.store.read_block("text", a, self.device)
        image = self.store.read_block("image", b, self.device)
        return self.model.score(text, image).float().cpu().numpy()

    @torch.no_grad()
    def _run(self, kind: str, a: int, b: int) -> dict:
        if kind == "pos":
            # A tile holding correct pairs: kept whole, so the positives' scores and the
            # tile pass use the very same numbers (exact ranks, bit for bit).
            return {"scores": self._tile_scores(a, b)}
        if kind == "tile":
            pos_tile = item_name("pos", a, b)
            scores = (read_arrays(self.workdir, pos_tile)["scores"]
                      if arrays_exist(self.workdir, pos_tile) else self._tile_scores(a, b))
            return reduce_tile(self._ids(a), self._ids(b), scores, self.groups, self.groups,
                               self.k, self.positives)
        # rerank: queries of block a against their first-stage candidates
        side, other = ("text", "image") if kind == "rr_t2i" else ("image", "text")
        queries = self.store.read_block(side, a, self.device)
        cand = self.candidates[kind[3:]][self._ids(a)]  # (nq, kc) gallery rows
        gallery = self.store.rows(other, cand.reshape(-1), self.block, self.device)
        return {"scores": score_candidates(self.model, queries, gallery, cand.shape[1], side)}

    def __call__(self, batch: dict) -> dict:
        status, seconds = [], []
        for kind, a, b in zip(batch["kind"], batch["a"], batch["b"]):
            name = item_name(str(kind), int(a), int(b))
            t0 = time.perf_counter()
            if arrays_exist(self.workdir, name):
                status.append("cached")
            else:
                if self.fail_after is not None and self.done >= self.fail_after:
                    raise RuntimeError("test hook: simulated scoring crash")
                write_arrays(self.workdir, name, self._run(str(kind), int(a), int(b)))
                self.done += 1
                status.append("done")
            seconds.append(time.perf_counter() - t0)
        return {"kind": batch["kind"], "a": batch["a"], "b": batch["b"],
                "status": np.asarray(status), "seconds": np.asarray(seconds),
                "rss_mb": np.full(len(status), peak_rss_mb())}


def item_name(kind: str, a: int, b: int) -> str:
    return f"items/{kind}-{a:05d}-{b:05d}.npz"


def run_items(args, checkpoint: str, kind: str, workdir: str, items: list[tuple[str, int, int]],
              label: str, on_result=None) -> dict:
    """Spread work items over an actor pool; call ``on_result(kind, a, b)`` as each lands."""
    ds = ray.data.from_items([{"kind": k, "a": a, "b": b} for k, a, b in items],
                             # one item per block: results (and progress) land item by item
                             override_num_blocks=max(1, min(len(items), 4096)))
    ds = ds.map_batches(TileScorer, fn_constructor_kwargs={
        "checkpoint": checkpoint, "workdir": workdir, "kind": kind, "k": args.k,
        "block": args.block, "use_gpu": args.use_gpu, "fail_after": args.fail_after_items},
        batch_size=1, compute=ray.data.ActorPoolStrategy(size=args.actors),
        num_cpus=args.cpus_per_actor, num_gpus=args.gpus_per_actor or None,
        batch_format="numpy")
    progress = Progress(label, total=len(items), every=5.0)
    stats = {"done": 0, "cached": 0, "actor_seconds": 0.0, "actor_peak_rss_mb": 0.0}
    for row in ds.iter_rows():
        stats[str(row["status"])] += 1
        stats["actor_seconds"] += float(row["seconds"])
        stats["actor_peak_rss_mb"] = max(stats["actor_peak_rss_mb"], float(row["rss_mb"]))
        if on_result is not None:
            on_result(str(row["kind"]), int(row["a"]), int(row["b"]))
        progress.update(1, f"({stats['cached']} cached)")
    return stats


# --- the three methods ---------------------------------------------------------------------

def score_fusion(args, checkpoint: str, workdir: str, meta: dict) -> tuple[StreamingRetrieval, dict]:
    groups = read_gallery(workdir).column("group").to_numpy()
    n, blocks = meta["n"], meta["blocks"]
    timings = {}
    # Positives first (an O(N) pass): their keys make streaming ranks exact.
    t0 = time.perf_counter()
    if not arrays_exist(workdir, "positives.npz"):
        tiles = positive_tiles(groups, groups, args.block)
        run_items(args, checkpoint, "fusion", workdir, [("pos", a, b) for a, b in sorted(tiles)],
                  "tiles with correct pairs")
        ti, ii, scores = [], [], []
        for (a, b), (t, i) in sorted(tiles.items()):
            tile_scores = read_arrays(workdir, item_name("pos", a, b))["scores"]
            ti.append(t)
            ii.append(i)
            scores.append(tile_scores[t - a * args.block, i - b * args.block])
        pt, pi = positive_keys(np.concatenate(ti), np.concatenate(ii), np.concatenate(scores), n, n)
        write_arrays(workdir, "positives.npz", {"t2i": pt, "i2t": pi})
    pos = read_arrays(workdir, "positives.npz")
    timings["positives_s"] = time.perf_counter() - t0
    acc = StreamingRetrieval(groups, groups, args.k, (pos["t2i"], pos["i2t"]))
    block = args.block

    def merge(kind, a, b):
        part = read_arrays(workdir, item_name(kind, a, b))
        acc.add_partial(np.arange(a * block, min((a + 1) * block, n)),
                        np.arange(b * block, min((b + 1) * block, n)), **part)

    t0 = time.perf_counter()
    items = [("tile", a, b) for a in range(blocks) for b in range(blocks)]
    stats = run_items(args, checkpoint, "fusion", workdir, items, "fusion tiles", merge)
    timings["score_s"] = time.perf_counter() - t0
    timings["pairs"] = n * n
    timings.update(stats)
    return acc, timings


def score_two_tower(args, checkpoint: str, workdir: str, meta: dict) -> tuple[StreamingRetrieval, dict]:
    groups = read_gallery(workdir).column("group").to_numpy()
    store = FeatureStore(f"{workdir}/features", "two_tower")
    text = concat([store.read_block("text", b) for b in range(meta["blocks"])])
    image = concat([store.read_block("image", b) for b in range(meta["blocks"])])
    model = load_checkpoint(checkpoint).model
    t0 = time.perf_counter()
    acc = stream_retrieval(model, text, image, groups, groups, k=args.k, tile=4096)
    return acc, {"score_s": time.perf_counter() - t0, "pairs": num_items(text) * num_items(image)}


def score_rerank(args, checkpoint: str, retriever: str, workdir: str, meta: dict):
    """Two-tower top-k candidates (from the retriever's own scoring run) re-scored by fusion."""
    first = Path(getattr(args, "retriever_out", None) or Path(workdir) / "retriever")
    first_args = argparse.Namespace(**{**vars(args), "out": str(first), "model": "two_tower",
                                       "checkpoint": retriever, "k": args.rerank_k})
    first_result = score(first_args)
    gallery = read_gallery(workdir)
    groups = gallery.column("group").to_numpy()
    fg = read_gallery(str(first))
    if fg.column("image_id").to_pylist() != gallery.column("image_id").to_pylist():
        raise ValueError("the retriever's gallery differs from the re-ranker's (different data?)")
    cands, firsts, ranks = {}, {}, {}
    for direction in ("t2i", "i2t"):
        table = pq.read_table(first / f"{direction}.parquet")
        cands[direction] = np.asarray(table.column("topk_index").to_pylist(), dtype=np.int64)
        firsts[direction] = np.asarray(table.column("topk_scores").to_pylist(), dtype=np.float32)
        ranks[direction] = table.column("rank").to_numpy()
    write_arrays(workdir, "candidates.npz", cands)
    t0 = time.perf_counter()
    n_blocks = meta["blocks"]
    items = [(f"rr_{d}", a, 0) for d in ("t2i", "i2t") for a in range(n_blocks)]
    stats = run_items(args, checkpoint, "fusion", workdir, items, "rerank items")
    out = {}
    for direction in ("t2i", "i2t"):
        fused = np.concatenate([read_arrays(workdir, item_name(f"rr_{direction}", a, 0))["scores"]
                                for a in range(n_blocks)])
        if args.alpha:
            fused = fused + args.alpha * firsts[direction]
        out[direction] = rerank(cands[direction], fused, ranks[direction], groups, groups, args.k)
    timings = {"score_s": time.perf_counter() - t0, "pairs": 2 * len(groups) * args.rerank_k,
               "retriever_s": first_result["timings"]["total_s"], **stats}
    return out, timings


# --- the job -------------------------------------------------------------------------------

def write_topk(workdir: str, gallery: pa.Table, direction: str, index: np.ndarray,
               scores: np.ndarray, ranks: np.ndarray) -> None:
    ids = np.asarray(gallery.column("image_id").to_pylist(), dtype=object)
    table = pa.table({
        "query_index": np.arange(len(ranks)),
        "query_id": ids,
        "topk_index": [row.tolist() for row in index],
        "topk_ids": [ids[row].tolist() for row in index],
        "topk_scores": [row.tolist() for row in scores.astype(np.float32)],
        "rank": ranks.astype(np.int64),
    })
    with _open(workdir, f"{direction}.parquet", "wb") as f:
        pq.write_table(table, f)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rocoray score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["fusion", "two_tower", "rerank"], required=True)
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint dir, or a training run dir (its best checkpoint); for "
                        "rerank: the fusion model")
    p.add_argument("--retriever", default=None, help="rerank: the two-tower checkpoint/run")
    p.add_argument("--data", default=None, help="data (default: the checkpoint's data.path)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", default=None, help="work/output dir (default runs/score/<model>)")
    p.add_argument("--k", type=int, default=10, help="top-K kept per query")
    p.add_argument("--rerank-k", type=int, default=32, help="rerank: candidates per query")
    p.add_argument("--alpha", type=float, default=0.0,
                   help="rerank: add alpha x the two-tower score to the fusion score")
    p.add_argument("--block", type=int, default=64, help="rows per feature block = tile side")
    p.add_argument("--max-items", type=int, default=None, help="score only the first N rows")
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--cpus-per-actor", type=float, default=0.5)
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--fail-after-items", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--address", default=None)
    return p.parse_args(argv)


def score(args) -> dict:
    t_start = time.perf_counter()
    checkpoint = resolve_checkpoint(args.checkpoint)
    expected = "fusion" if args.model in ("fusion", "rerank") else "two_tower"
    cfg = read_checkpoint_config(checkpoint)
    if cfg.model.kind != expected:
        raise ValueError(f"--model {args.model} needs a {expected} checkpoint, but "
                         f"{checkpoint} holds a {cfg.model.kind} model")
    if args.model == "rerank":
        if not args.retriever:
            raise ValueError("--model rerank needs --retriever (a two-tower checkpoint)")
        retriever = resolve_checkpoint(args.retriever)
        if read_checkpoint_config(retriever).model.kind != "two_tower":
            raise ValueError(f"--retriever {retriever} is not a two-tower checkpoint")
        if not args.k <= args.rerank_k:
            raise ValueError(f"--k {args.k} must not exceed --rerank-k {args.rerank_k}")
    args.data = args.data or cfg.data.path
    workdir = args.out or f"runs/score/{args.model}"
    if "://" not in workdir:
        workdir = str(Path(workdir).resolve())
        Path(workdir).mkdir(parents=True, exist_ok=True)
    args.out = workdir
    meta = encode_gallery(args, checkpoint, expected, workdir)
    n = meta["n"]
    k_needed = args.rerank_k if args.model == "rerank" else args.k
    if k_needed > n:
        raise ValueError(f"top-{k_needed} asked for, but the gallery holds only {n} item(s)")
    gallery = read_gallery(workdir)
    if args.model == "fusion":
        acc, timings = score_fusion(args, checkpoint, workdir, meta)
        results = {d: (*acc.topk(d), r) for d, r in zip(("t2i", "i2t"), acc.ranks())}
    elif args.model == "two_tower":
        acc, timings = score_two_tower(args, checkpoint, workdir, meta)
        results = {d: (*acc.topk(d), r) for d, r in zip(("t2i", "i2t"), acc.ranks())}
    else:
        results, timings = score_rerank(args, checkpoint, retriever, workdir, meta)
    for direction, (index, scores, ranks) in results.items():
        write_topk(workdir, gallery, direction, index, scores, ranks)
    metrics = bidirectional_metrics(results["t2i"][2], results["i2t"][2], n_images=n, n_texts=n)
    timings["encode_s"] = meta["encode_s"]
    timings["total_s"] = time.perf_counter() - t_start
    timings["pairs_per_s"] = timings["pairs"] / max(timings["score_s"], 1e-9)
    timings["driver_peak_rss_mb"] = peak_rss_mb()
    summary = {"model": args.model, "checkpoint": checkpoint, "data": str(args.data),
               "split": args.split, "n": n, "k": args.k, "skipped": meta["skipped"],
               "metrics": metrics, "timings": timings}
    if args.model == "rerank":
        summary.update(rerank_k=args.rerank_k, alpha=args.alpha, retriever=retriever)
    with _open(workdir, "scoring.json", "wb") as f:
        f.write(json.dumps(summary, indent=2, default=float).encode())
    log.info("%s on %d items: t2i R@1/5/10 %.3f/%.3f/%.3f, i2t %.3f/%.3f/%.3f (%.1fs)", args.model,
             n, *(metrics["t2i"][f"R@{k}"] for k in (1, 5, 10)),
             *(metrics["i2t"][f"R@{k}"] for k in (1, 5, 10)), timings["total_s"])
    return summary


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging()
    init_ray(args.address)
    summary = score(args)
    print(json.dumps({k: summary[k] for k in ("model", "n", "metrics")}, default=float))
    print(f"results: {args.out}")
    return summary


if __name__ == "__main__":
    main()
