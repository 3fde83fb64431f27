"""The main job: the whole pipeline, end to end, on the embedded default data.

    rocoray demo                       # synthetic ROCOv2, tiny preset, ~10 minutes on 2 CPUs
    rocoray demo --data ../shared/data/chest-xray-sample --epochs 2

Stages: 1 prepare the data (generate the synthetic ROCOv2 unless --data is given) ->
2 train the two-tower model -> 3 train the fusion model (both on Ray Train) -> 4 score the
test split three ways on Ray Data (fusion all pairs, two-tower, rerank) and evaluate ->
5 write the report. Ends by printing the headline table and where the report is.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from ray_jobs.runtime import init_ray, setup_logging

log = logging.getLogger("rocoray.demo")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="rocoray demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None,
                   help="existing ROCOv2-layout data; default: generate the synthetic set")
    p.add_argument("--synthetic-dir", default="data/synthetic")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-val", type=int, default=300)
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--out", default="runs/demo", help="everything the demo writes goes here")
    p.add_argument("--config", default="tiny")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for both trainings")
    p.add_argument("--rerank-k", type=int, default=32)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--tune", action="store_true", help="also run a small Ray Tune search")
    p.add_argument("--address", default=None)
    return p.parse_args(argv)


def synthetic_ready(path: Path, sizes: dict) -> bool:
    stats = path / "stats.json"
    if not stats.exists() or not (path / "tokenizer" / "tokenizer.json").exists():
        return False
    rows = {s["split"]: s["rows"] for s in json.loads(stats.read_text())["splits"]}
    return rows == sizes


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging()
    init_ray(args.address)
    from ray_jobs import evaluate, prepare, train

    t0 = time.perf_counter()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)  # a demo is a fresh run end to end
    out.mkdir(parents=True)
    stages = 5 + int(args.tune)

    data = args.data
    overrides = list(args.set)
    if data is None:
        data = args.synthetic_dir
        sizes = {"train": args.n_train, "validation": args.n_val, "test": args.n_test}
        if synthetic_ready(Path(data), sizes):
            log.info("stage 1/%d: synthetic ROCOv2 already in %s", stages, data)
        else:
            log.info("stage 1/%d: generate the synthetic ROCOv2 in %s", stages, data)
            prepare.main(["--synthetic", "--out", data, "--n-train", str(args.n_train),
                          "--n-val", str(args.n_val), "--n-test", str(args.n_test)])
    else:
        log.info("stage 1/%d: statistics and tokenizer of %s", stages, data)
        prepare.main(["--data", str(data), "--out", str(out / "data")])
        overrides.append(f"model.text.tokenizer={out / 'data' / 'tokenizer'}")

    common = ["--config", args.config, "--data", str(data),
              "--storage-path", str(out / "train")]
    if args.epochs is not None:
        common += ["--epochs", str(args.epochs)]
    runs = {}
    for i, kind in enumerate(("two_tower", "fusion")):
        log.info("stage %d/%d: train the %s model", 2 + i, stages, kind)
        runs[kind] = train.main(["--model", kind, "--name", kind, *common, "--set", *overrides])

    if args.tune:
        from ray_jobs import tune

        log.info("stage 4/%d: a small Ray Tune search", stages)
        space = Path(__file__).resolve().parents[1] / "tune_spaces" / "two_tower.yaml"
        summary_tune = tune.main(["--space", str(space), "--data", str(data), "--name", "demo",
                                  "--storage-path", str(out / "tune"), "--num-samples", "2",
                                  "--epochs", "1", "--set", *overrides])

    log.info("stage %d/%d: score the test split (fusion, two-tower, rerank) and evaluate",
             stages - 1, stages)
    metrics = evaluate.main(["--two-tower", runs["two_tower"]["path"],
                             "--fusion", runs["fusion"]["path"], "--data", str(data),
                             "--out", str(out / "eval"), "--rerank-k", str(args.rerank_k),
                             "--block", str(args.block)])
    log.info("stage %d/%d: report written", stages, stages)
    val_size = {k: r["final"].get("val/gallery_size") for k, r in runs.items()}
    summary = {
        "data": str(data), "minutes": (time.perf_counter() - t0) / 60,
        "training": {k: {"final": r["final"], "path": r["path"],
                         "chance_R@10": min(1.0, 10 / val_size[k]) if val_size[k] else None}
                     for k, r in runs.items()},
        "evaluation": str(out / "eval" / "metrics.json"),
        "report": metrics["report"],
    }
    if args.tune:
        summary["tune"] = {k: summary_tune[k] for k in ("experiment", "best", "wall_s")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    tt, fu = runs["two_tower"]["final"], runs["fusion"]["final"]
    print(f"\ntraining (validation): two-tower R@10 t2i {tt.get('val/t2i/R@10', 0):.3f} "
          f"(chance {summary['training']['two_tower']['chance_R@10']:.3f}); fusion match "
          f"accuracy {fu.get('val/match_acc', 0):.3f} (chance 0.5)")
    print(f"demo finished in {summary['minutes']:.1f} min; summary: {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
