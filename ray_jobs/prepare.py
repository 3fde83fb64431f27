"""Prepare a dataset: generate the synthetic ROCOv2 (optional), fit the caption tokenizer,
and compute per-split statistics (rows kept / skipped by reason, caption length, ...).

    rocoray prepare --synthetic --out data/synthetic            # the embedded default
    rocoray prepare --data ../shared/data/chest-xray-sample --out runs/xray/data
    rocoray prepare --data hf://datasets/eltorio/ROCOv2-radiology --out s3-or-local-dir

Writes ``<out>/tokenizer/`` and ``<out>/stats.json`` and prints the statistics table.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from core.config import TextEncoderConfig, load_config
from core.data.preprocess import build_preprocessor
from core.data.rocov2 import read_split
from core.data.stats import attribute_distribution, format_statistics
from core.data.tokenizer import TOKENIZER_DIRNAME, check_vocabulary, resolve_tokenizer
from core.synthetic.generate import SPLITS, SyntheticSpec, shard_tasks
from ray_jobs.runtime import Progress, init_ray, setup_logging

log = logging.getLogger("rocoray.prepare")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rocoray prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthetic", action="store_true",
                   help="generate the synthetic ROCOv2-layout dataset into --out")
    p.add_argument("--data", default=None, help="existing ROCOv2-layout data (dir or URL)")
    p.add_argument("--out", default="data/synthetic", help="output directory")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-val", type=int, default=300)
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=224, help="synthetic image size (px)")
    p.add_argument("--rows-per-shard", type=int, default=1000)
    p.add_argument("--config", default="tiny",
                   help="preset or YAML: image size / max length for the statistics pass")
    p.add_argument("--tokenizer", default=None,
                   help="use this HF tokenizer (name or path) instead of training WordPiece")
    p.add_argument("--splits", nargs="+", default=list(SPLITS))
    p.add_argument("--address", default=None, help="Ray cluster address")
    return p.parse_args(argv)


def generate(spec: SyntheticSpec, out: Path) -> list[str]:
    import ray

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*-of-*.parquet"):
        old.unlink()
    tasks = shard_tasks(spec, out)
    run = ray.remote(num_cpus=1)(lambda task: task.run())
    pending = [run.remote(t) for t in tasks]
    progress = Progress("synthetic shards", total=len(pending), every=2.0)
    paths = []
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        paths.extend(ray.get(done))
        progress.update(len(done))
    return sorted(paths)


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging()
    init_ray(args.address)
    from ray_jobs.data import read_split_dataset, split_statistics

    out = Path(args.out)
    data = args.data
    if args.synthetic:
        spec = SyntheticSpec(sizes={"train": args.n_train, "validation": args.n_val,
                                    "test": args.n_test},
                             seed=args.seed, image_size=args.image_size,
                             rows_per_shard=args.rows_per_shard)
        log.info("generating synthetic ROCOv2: %s pairs at %d px, seed %d", spec.sizes,
                 spec.image_size, spec.seed)
        generate(spec, out)
        data = str(out)
    if data is None:
        raise SystemExit("rocoray prepare: give --synthetic or --data PATH")

    config = load_config(args.config)
    text_cfg = TextEncoderConfig(**{**vars(config.model.text), "tokenizer": args.tokenizer})
    tokenizer, source = resolve_tokenizer(text_cfg, data, train_split=args.splits[0])
    check_vocabulary(tokenizer)
    tok_dir = out / TOKENIZER_DIRNAME
    tokenizer.save_pretrained(str(tok_dir))
    log.info("tokenizer (%s, %d tokens) saved to %s", source, len(tokenizer), tok_dir)

    preprocessor = build_preprocessor(config.model, tokenizer)
    stats = []
    for split in args.splits:
        ds, files = read_split_dataset(data, split)
        s = split_statistics(ds, preprocessor, split)
        s["files"] = len(files.paths)
        meta = read_split(data, split, columns=["modality", "body_region", "finding",
                                                 "laterality", "position", "lesion_count",
                                                 "view", "image_id"])
        s["attributes"] = attribute_distribution(meta)
        stats.append(s)
        if s["skipped"]:
            log.warning("%s: skipped %s", split, s["skipped"])
    result = {"data": str(data), "tokenizer": str(tok_dir), "splits": stats}
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats.json").write_text(json.dumps(result, indent=2))
    print(format_statistics(stats))
    print(f"\nstatistics: {out / 'stats.json'}")
    return result


if __name__ == "__main__":
    main()
