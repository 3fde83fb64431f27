"""The frozen towers' encode stage through Ray against the same work in one process, side by
side in one run: rows/s of EfficientNet-Lite0 + MiniLM (roco_cpu, 224 px) over the same
real figures (the embedded datasets/roco-ccby training split), decode and preprocessing
included in both, both in the precision roco_cpu's training runs in (bf16 on CPUs with
native bf16: ``core.precision``).

  in process   one process, torch on all the machine's cores: read, preprocess, run the
               frozen layers (``core.training.frozen_features.encode_frozen``), 64 rows a batch;
               every in-process rate is measured before Ray starts
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

    python -m bench.encode_rate [--rows 640]
    python -m bench.encode_rate --data ../shared/data/roco-sample \
        --out bench/results/encode_rate_roco_sample.json     # the ROCO sample's larger splits

Target: the Ray stage at >= 80 % of the in-process rate. Writes bench/results/encode_rate.json.
"""

from __future__ import annotations

import argparse
import os
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
               splits=("train",), data: Path = DATA) -> float:
    from unittest import mock

    from bench._frozen_inputs import encode_split

    torch.set_num_threads(os.cpu_count() or 1)
    model = build(config)
    if not fold:  # the stages as they are: what folding is measured against
        with mock.patch("core.models.encoders.fold_batchnorm", lambda *a: None):
            model.image_encoder.frozen_prefix(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    t0 = time.perf_counter()
    n = sum(len(out["skip"]) for split in splits
            for out in encode_split(model, str(data), split, tokenizer, None, precision,
                                    max_rows=rows))
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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=640)
    p.add_argument("--data", type=Path, default=DATA, help="real figures in the ROCOv2 layout")
    p.add_argument("--out", default=None, help="results file (default: "
                   "bench/results/encode_rate.json)")
    args = p.parse_args(argv)
    data = args.data
    from core.config import load_config
    from core.data.tokenizer import resolve_tokenizer

    config = load_config("roco_cpu")
    tokenizer, _ = resolve_tokenizer(config.model.text, str(data))
    cpus = config.train.num_workers * config.train.cpus_per_worker  # what training reserves
    from core.precision import training_precision

    precision = training_precision(config.train.precision, "cpu")  # as roco_cpu's training runs
    # every in-process rate first, before Ray starts: the one process a user would run
    # instead, with no Ray processes beside it
    both = ("train", "validation")
    local = in_process(config, tokenizer, args.rows, precision, data=data)
    unfolded = in_process(config, tokenizer, args.rows, precision, fold=False, data=data)
    split_local = in_process(config, tokenizer, None, precision, data=data)
    both_local = in_process(config, tokenizer, None, precision, splits=both, data=data)
    staged, info = ray_stage(config, tokenizer, args.rows, cpus, precision, data=data)
    split_staged, split_info = ray_stage(config, tokenizer, None, cpus, precision, data=data)
    two, two_info = ray_stage(config, tokenizer, args.rows, cpus, precision, actors=2, data=data)
    both_staged, both_info = ray_stage(config, tokenizer, None, cpus, precision, splits=both,
                                       data=data)
    result = {"bench": "encode_rate", "data": str(data), "rows": args.rows,
              "in_process_rows_per_s": local, "ray_stage_rows_per_s": staged,
              "ratio": staged / local, "ray_stage": info, "ray_stage_cpus": cpus,
              "whole_split": {"rows": split_info["rows"], "in_process_rows_per_s": split_local,
                              "ray_stage_rows_per_s": split_staged,
                              "ratio": split_staged / split_local, "ray_stage": split_info},
              "two_actors_one_thread": {"rows_per_s": two, "ratio": two / local, **two_info},
              "train_and_validation": {"rows": both_info["rows"],
                                       "in_process_rows_per_s": both_local,
                                       "ray_stage_rows_per_s": both_staged,
                                       "ratio": both_staged / both_local,
                                       "ray_stage": both_info},
              "unfolded_in_process_rows_per_s": unfolded, "folding_speedup": local / unfolded,
              "precision": precision,
              "threads_in_process": torch.get_num_threads(), "target_ratio": 0.8}
    print(f"{args.rows} rows: in process {local:.1f} rows/s; Ray stage {staged:.1f} rows/s "
          f"({staged / local:.2f}x); 2 actors x 1 thread {two:.1f} rows/s ({two / local:.2f}x)")
    print(f"in process, BatchNorm folded {local:.1f} vs not {unfolded:.1f} rows/s "
          f"({local / unfolded:.2f}x)")
    print(f"whole split ({split_info['rows']} rows): in process {split_local:.1f} rows/s; "
          f"Ray stage {split_staged:.1f} rows/s ({split_staged / split_local:.2f}x)")
    print(f"whole split through Ray: {split_info['start_up_s']:.1f} s before the actor's "
          f"first call, {split_info['in_calls_s']:.1f} s in its calls at "
          f"{split_info['in_calls_rows_per_s']:.1f} rows/s "
          f"({split_info['in_calls_rows_per_s'] / split_local:.2f}x the in-process rate), "
          f"{split_info['between_calls_s']:.1f} s between them, "
          f"{split_info['after_last_call_s']:.1f} s after the last")
    print(f"train + validation ({both_info['rows']} rows) in one stage, as training runs it: "
          f"in process {both_local:.1f} rows/s; Ray stage {both_staged:.1f} rows/s "
          f"({both_staged / both_local:.2f}x)")
    write_result(result, out=args.out)
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    on = "" if r["data"].endswith("roco-ccby") else f", on {r['data']}"
    name = (f"frozen towers' encode stage (roco_cpu, 224 px, {r.get('precision', 'fp32')}{on}), "
            "Ray stage vs one process")
    rows = [(name, f"{r['ray_stage_rows_per_s']:.1f} vs {r['in_process_rows_per_s']:.1f} rows/s: "
             f"{r['ratio']:.2f}x ({r['rows']} real figures; the stage's wall includes "
             "starting its actor)", f">= {r['target_ratio']:.1f}x",
             "met" if r["ratio"] >= r["target_ratio"] else "missed")]
    whole = r.get("whole_split")
    if whole:
        rows.append((name + ", whole split",
                     f"{whole['ray_stage_rows_per_s']:.1f} vs {whole['in_process_rows_per_s']:.1f} "
                     f"rows/s: {whole['ratio']:.2f}x ({whole['rows']} real figures)",
                     f">= {r['target_ratio']:.1f}x",
                     "met" if whole["ratio"] >= r["target_ratio"] else "missed"))
        both = r.get("train_and_validation")
        if both:
            rows.append((name + ", train + validation splits in one stage (as training runs "
                         "it)", f"{both['ray_stage_rows_per_s']:.1f} vs "
                         f"{both['in_process_rows_per_s']:.1f} rows/s: {both['ratio']:.2f}x "
                         f"({both['rows']} real figures, one actor start-up)",
                         f">= {r['target_ratio']:.1f}x",
                         "met" if both["ratio"] >= r["target_ratio"] else "missed"))
        stage = whole["ray_stage"]
        if "in_calls_rows_per_s" in stage:
            local = whole["in_process_rows_per_s"]
            rows.append(("the whole-split stage's wall time in parts, by the actor's own clock",
                         f"{stage['wall_s']:.1f} s: {stage['start_up_s']:.1f} s before its first "
                         f"call (Ray Data, the actor's process, imports, model: "
                         f"{stage['actor_init_s']:.1f} s of it in the actor's constructor), "
                         f"{stage['in_calls_s']:.1f} s in its {stage['calls']} calls at "
                         f"{stage['in_calls_rows_per_s']:.1f} rows/s "
                         f"({stage['in_calls_rows_per_s'] / local:.2f}x the in-process rate), "
                         f"{stage['between_calls_s']:.1f} s between calls, "
                         f"{stage['after_last_call_s']:.1f} s after the last",
                         "no target", "what the ratio above is made of"))
        two = r["two_actors_one_thread"]
        rows.append(("the same stage as 2 actors x 1 thread (the scoring jobs' pool), vs one "
                     "process", f"{two['rows_per_s']:.1f} rows/s: {two['ratio']:.2f}x "
                     f"({r['rows']} real figures)", f">= {r['target_ratio']:.1f}x",
                     "met" if two["ratio"] >= r["target_ratio"] else "missed"))
    if "folding_speedup" in r:
        rows.append(("the same encode in one process, image BatchNorms folded into the "
                     "convolutions vs as they are", f"{r['in_process_rows_per_s']:.1f} vs "
                     f"{r['unfolded_in_process_rows_per_s']:.1f} rows/s: "
                     f"{r['folding_speedup']:.2f}x ({r['rows']} real figures)", "> 1x",
                     "met" if r["folding_speedup"] > 1.0 else "missed"))
    return rows


if __name__ == "__main__":
    main()
