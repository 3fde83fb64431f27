"""The frozen towers' encode stage through Ray against the same work in one process, side by
side in one run: rows/s of EfficientNet-Lite0 + MiniLM (roco_cpu, 224 px) over the same
real figures (the embedded datasets/roco-ccby training split), decode and preprocessing
included in both, both in the precision roco_cpu's training runs in (bf16 on CPUs with
native bf16: ``core.precision``).

  in process   one process on all the machine's cores: read, preprocess, run the frozen
               layers (``core.training.frozen_features.encode_frozen``), 64 rows a batch,
               one batch per core at once, each on one torch thread, as the Ray stage runs
               its calls (``ray_jobs.frozen.stage_streams``); Ray is up and idle beside it,
               as in a user's job
  Ray stage    ``ray_jobs.frozen.ensure_store``: the Ray Data actor stage that every job uses
               (the CPUs a training run reserves), writing the store; its wall time includes
               starting the actor and loading the model, a fixed cost, so the rate is
               measured on the first 640 rows and on the whole split; the actor keeps its
               own clock (``bench._timed_encoder``), so the whole split's wall time is
               told in parts: before its first call, in its calls, between and after them
  2 x 1        the same CPUs split over two actors of one thread each (as the scoring jobs'
               default pool, 2 actors x 0.75 CPU, runs the stage), 640 rows
  train + val  the stage as training runs it: the train and validation splits in one stage
               (``ensure_stores``: one actor start-up for both), against encoding both
               splits in one process
  unfolded     in process, the frozen image stages run as they are, without their
               BatchNorms folded into the convolutions (``core.models.bn_folding``), 640 rows
  one batch    in process, one batch at a time, its ops on torch threads over all the cores
               (how the stage ran before its calls ran side by side), 640 rows

Each arm is measured as ``--repeats`` pairs, the in-process run and the Ray stage back to
back, the arms taking turns: this machine's speed drifts by tens of percent within minutes,
and a ratio of two runs minutes apart measures the drift. Reported: the median pair ratio
and the range.

    python -m bench.encode_rate [--rows 640] [--repeats 3]
    python -m bench.encode_rate --data ../shared/data/roco-sample \
        --out bench/results/encode_rate_roco_sample.json     # the ROCO sample's larger splits

Target: the Ray stage at >= 80 % of the in-process rate. Writes bench/results/encode_rate.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from bench._common import write_result

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "datasets" / "roco-ccby"


def build(config):
    from core.models import build_model

    return build_model(config.model).eval()


def in_process(config, tokenizer, rows: int | None, precision: str, fold: bool = True,
               splits=("train",), data: Path = DATA, streams: int | None = None) -> float:
    """Rows/s of read + preprocess + the frozen layers in this process, 64 rows a batch,
    ``streams`` batches at once in threads (default: as the Ray stage runs on this machine's
    cores, ``ray_jobs.frozen.stage_streams``), the cores shared among them as torch threads;
    ``streams=1``: one batch at a time, its ops on all the cores."""
    import copy
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from unittest import mock

    from core.data.preprocess import build_preprocessor
    from core.data.rocov2 import read_split
    from core.training.frozen_features import encode_frozen
    from ray_jobs.frozen import stage_streams

    cores = os.cpu_count() or 1
    streams, threads = stage_streams(cores) if streams is None else (streams, cores // streams)
    torch.set_num_threads(max(1, threads))
    model = build(config)
    if not fold:  # the stages as they are: what folding is measured against
        with mock.patch("core.models.encoders.fold_batchnorm", lambda *a: None):
            model.image_encoder.frozen_prefix(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    pre, local = build_preprocessor(config.model, tokenizer), threading.local()

    def encode(table) -> int:  # each thread its own preprocessor, as the stage's calls
        if not hasattr(local, "pre"):
            local.pre = copy.deepcopy(pre)
        with torch.no_grad():
            return len(encode_frozen(model, local.pre(table), precision=precision)["skip"])

    t0 = time.perf_counter()
    tables = [read_split(str(data), split, max_rows=rows) for split in splits]
    with ThreadPoolExecutor(streams) as pool:
        n = sum(pool.map(encode, (t.slice(start, 64) for t in tables
                                  for start in range(0, t.num_rows, 64))))
    return n / (time.perf_counter() - t0)


def ray_stage(config, tokenizer, rows: int | None, cpus: float, precision: str,
              actors: int = 1, splits=("train",), data: Path = DATA) -> tuple[float, dict]:
    from unittest import mock

    from core.data.preprocess import build_preprocessor
    from core.data.rocov2 import resolve_split
    from core.frozen_store import FrozenStore
    from bench._timed_encoder import CLOCK, TimedEncoder, stage_parts
    from ray_jobs import frozen
    from ray_jobs.runtime import init_ray

    init_ray(num_cpus=os.cpu_count())
    model = build(config)
    clocks, write_block = {}, FrozenStore.write_block

    def timed_write_block(store, block, arrays):  # each call's clock, from the rows it made
        write_block(store, block, arrays)
        for values in zip(*(arrays[name] for name in CLOCK)):
            clocks[values] = dict(zip(CLOCK, values))

    with tempfile.TemporaryDirectory() as cache, \
            mock.patch.object(FrozenStore, "write_block", timed_write_block), \
            mock.patch.object(frozen, "FrozenStageEncoder", TimedEncoder):
        t0 = time.time()
        stores = frozen.ensure_stores(cache, model, config.model, tokenizer,
                                      [resolve_split(str(data), s) for s in splits], rows,
                                      build_model=partial(build, config),
                                      preprocessor=build_preprocessor(config.model, tokenizer),
                                      actors=actors, cpus=cpus, precision=precision)
        t_end = time.time()
    n = sum(meta["rows"] for _, meta in stores)
    wall = t_end - t0
    return n / wall, {"rows": n, "wall_s": wall, "stage_s": stores[0][1]["stage"]["seconds"],
                      "splits": list(splits),
                      **stage_parts(t0, t_end, list(clocks.values()), n)}


ARMS = {  # name: (rows: "rows" for --rows, None for all; splits; actors)
    "first rows": ("rows", ("train",), 1),
    "whole split": (None, ("train",), 1),
    "2 actors x 1 thread": ("rows", ("train",), 2),
    "train + validation": (None, ("train", "validation"), 1),
}


def arm_pairs(pairs: list[dict]) -> dict:
    """An arm's alternated (in process, Ray stage) pairs and their medians."""
    med = lambda key: statistics.median(p[key] for p in pairs)  # noqa: E731
    return {"rows": pairs[0]["ray_stage"]["rows"], "pairs": pairs, "ratio": med("ratio"),
            "ratio_range": [min(p["ratio"] for p in pairs), max(p["ratio"] for p in pairs)],
            "in_process_rows_per_s": med("in_process_rows_per_s"),
            "ray_stage_rows_per_s": med("ray_stage_rows_per_s"),
            "ray_stage": {k: statistics.median(p["ray_stage"][k] for p in pairs)
                          for k in pairs[0]["ray_stage"] if k != "splits"}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=640)
    p.add_argument("--repeats", type=int, default=3, help="alternated pairs per arm")
    p.add_argument("--data", type=Path, default=DATA, help="real figures in the ROCOv2 layout")
    p.add_argument("--out", default=None, help="results file (default: "
                   "bench/results/encode_rate.json)")
    args = p.parse_args(argv)
    data = args.data
    from core.config import load_config
    from core.data.tokenizer import resolve_tokenizer
    from core.precision import training_precision
    from ray_jobs.frozen import stage_streams
    from ray_jobs.runtime import init_ray

    config = load_config("roco_cpu")
    tokenizer, _ = resolve_tokenizer(config.model.text, str(data))
    cpus = config.train.num_workers * config.train.cpus_per_worker  # what training reserves
    precision = training_precision(config.train.precision, "cpu")  # as roco_cpu's training runs
    init_ray(num_cpus=os.cpu_count())  # idle beside the in-process arms, as in a user's job
    pairs, folding, streams = {name: [] for name in ARMS}, [], []
    for _ in range(args.repeats):  # each pair back to back: a slow spell of the machine hits both
        for name, (rows, splits, actors) in ARMS.items():
            rows = args.rows if rows == "rows" else None
            local = in_process(config, tokenizer, rows, precision, splits=splits, data=data)
            staged, info = ray_stage(config, tokenizer, rows, cpus, precision, actors=actors,
                                     splits=splits, data=data)
            pairs[name].append({"in_process_rows_per_s": local, "ray_stage_rows_per_s": staged,
                                "ratio": staged / local, "ray_stage": info})
            print(f"{name}: in process {local:.1f} rows/s, Ray stage {staged:.1f} rows/s "
                  f"({staged / local:.2f}x)", flush=True)
        folded = in_process(config, tokenizer, args.rows, precision, data=data)
        unfolded = in_process(config, tokenizer, args.rows, precision, fold=False, data=data)
        folding.append({"folded_rows_per_s": folded, "unfolded_rows_per_s": unfolded,
                        "speedup": folded / unfolded})
        one_batch = in_process(config, tokenizer, args.rows, precision, data=data, streams=1)
        streams.append({"side_by_side_rows_per_s": folded, "one_batch_rows_per_s": one_batch,
                        "speedup": folded / one_batch})
    result = {"bench": "encode_rate", "data": str(data), "rows": args.rows,
              "repeats": args.repeats, "precision": precision, "ray_stage_cpus": cpus,
              "streams_in_process": stage_streams(os.cpu_count() or 1), "target_ratio": 0.8,
              "arms": {name: arm_pairs(got) for name, got in pairs.items()},
              "folding": {"pairs": folding,
                          "speedup": statistics.median(f["speedup"] for f in folding),
                          "folded_rows_per_s": statistics.median(
                              f["folded_rows_per_s"] for f in folding),
                          "unfolded_rows_per_s": statistics.median(
                              f["unfolded_rows_per_s"] for f in folding)},
              "streams": {"pairs": streams, **{key: statistics.median(f[key] for f in streams)
                                               for key in streams[0]}}}
    write_result(result, out=args.out)
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    on = "" if r["data"].endswith("roco-ccby") else f", on {r['data']}"
    name = (f"frozen towers' encode stage (roco_cpu, 224 px, {r['precision']}{on}), Ray stage "
            "vs one process")
    what = {"first rows": f"first {r['rows']} rows", "whole split": "whole split",
            "2 actors x 1 thread": f"2 actors x 1 thread (the scoring jobs' pool), {r['rows']} rows",
            "train + validation": "train + validation splits in one stage, as training runs it"}
    target, rows = r["target_ratio"], []
    for arm, a in r["arms"].items():
        lo, hi = a["ratio_range"]
        rows.append((f"{name}, {what[arm]}",
                     f"{a['ray_stage_rows_per_s']:.1f} vs {a['in_process_rows_per_s']:.1f} rows/s: "
                     f"{a['ratio']:.2f}x [{lo:.2f}, {hi:.2f}] ({a['rows']} real figures; median "
                     f"of {len(a['pairs'])} alternated pairs [range])", f">= {target:.1f}x",
                     "met" if a["ratio"] >= target else "missed"))
    stage, local = r["arms"]["whole split"]["ray_stage"], r["arms"]["whole split"]
    rows.append((f"the whole-split stage's wall time in parts{on}, by the actor's own clock "
                 "(medians)",
                 f"{stage['wall_s']:.1f} s: {stage['start_up_s']:.1f} s before its first call "
                 f"(Ray Data, the actor's process, imports, model: {stage['actor_init_s']:.1f} s "
                 f"of it in the actor's constructor), {stage['in_calls_s']:.1f} s in its calls at "
                 f"{stage['in_calls_rows_per_s']:.1f} rows/s "
                 f"({stage['in_calls_rows_per_s'] / local['in_process_rows_per_s']:.2f}x the "
                 f"in-process rate), {stage['between_calls_s']:.1f} s between calls, "
                 f"{stage['after_last_call_s']:.1f} s after the last", "no target",
                 "what the ratio above is made of"))
    f = r["folding"]
    rows.append((f"the same encode in one process{on}, image BatchNorms folded into the "
                 "convolutions vs as they are", f"{f['folded_rows_per_s']:.1f} vs "
                 f"{f['unfolded_rows_per_s']:.1f} rows/s: {f['speedup']:.2f}x ({r['rows']} real "
                 f"figures, median of {len(f['pairs'])})", "> 1x",
                 "met" if f["speedup"] > 1 else "missed"))
    if "streams" in r:  # measured since the stage's calls run side by side
        f, (calls, threads) = r["streams"], r["streams_in_process"]
        rows.append((f"the same encode in one process{on}, {calls} batches at once x {threads} "
                     f"torch thread(s) (as the stage's calls) vs one batch at a time on "
                     f"{calls * threads} threads", f"{f['side_by_side_rows_per_s']:.1f} vs "
                     f"{f['one_batch_rows_per_s']:.1f} rows/s: {f['speedup']:.2f}x ({r['rows']} "
                     f"real figures, median of {len(f['pairs'])})", "> 1x",
                     "met" if f["speedup"] > 1 else "missed"))
    return rows


if __name__ == "__main__":
    main()
