"""Prepare a dataset: generate the synthetic ROCOv2 (optional), fit the caption tokenizer,
build the concept vocabulary (UMLS ids of the training split's ``cui`` column), and compute
per-split statistics (rows kept / skipped by reason, caption length, concepts, ...).

    rocoray prepare --synthetic --out data/synthetic            # the embedded default
    rocoray prepare --data ../shared/data/chest-xray-sample --out runs/xray/data
    rocoray prepare --data hf://datasets/eltorio/ROCOv2-radiology --out s3-or-local-dir

Writes ``<out>/tokenizer/``, ``<out>/concepts.json`` and ``<out>/stats.json`` and prints the
statistics table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from core import storage
from core.concepts.vocabulary import ConceptVocabulary
from core.config import ExperimentConfig, load_config
from core.data.preprocess import build_preprocessor
from core.data.rocov2 import read_split, resolve_split
from core.data.stats import attribute_distribution, format_statistics
from core.data.tokenizer import TOKENIZER_DIRNAME, check_vocabulary, resolve_tokenizer
from core.synthetic.generate import SPLITS, SyntheticSpec, existing_synthetic, write_synthetic
from ray_jobs.options import UserError, opt, parse, run_cli
from ray_jobs.runtime import Progress, init_ray, setup_logging

log = logging.getLogger("rocoray.prepare")


@dataclass
class PrepareConfig:
    synthetic: bool = opt(False, "generate the synthetic ROCOv2-layout dataset into --out")
    data: str | None = opt(None, "existing ROCOv2-layout data (a directory or a URL)")
    out: str = opt("data/synthetic", "output directory (tokenizer/, stats.json; the shards "
                   "with --synthetic)")
    n_train: int = opt(2000, "synthetic training pairs")
    n_val: int = opt(300, "synthetic validation pairs")
    n_test: int = opt(300, "synthetic test pairs")
    seed: int = opt(0, "synthetic data seed (same seed, same bytes)")
    image_size: int = opt(224, "synthetic image size (px)")
    rows_per_shard: int = opt(1000, "synthetic rows per Parquet shard")
    config: str = opt("tiny", "preset or YAML: image size / max length for the statistics pass, "
                      "its tokenizer (a pretrained text model's own) and concept min_count")
    set: list = opt([], "config overrides, e.g. model.concepts.min_count=5", metavar="KEY=VALUE")
    tokenizer: str | None = opt(None, "use this HF tokenizer (name or path) instead of "
                                "training a WordPiece vocabulary")
    splits: list = opt(list(SPLITS), "splits to describe", metavar="SPLIT")
    experiment: ExperimentConfig | None = opt(None, "a job that calls this one (the demo) hands its "
                                              "experiment config over whole, in place of "
                                              "--config / --set", cli=False)
    address: str | None = opt(None, "Ray cluster address (default: RAY_ADDRESS, else a local Ray)")


META_COLUMNS = ["modality", "body_region", "finding", "laterality", "position", "lesion_count",
                "view", "image_id"]


def concept_statistics(vocab: ConceptVocabulary, table) -> dict:
    """Per split: rows without any concept id, and listed ids outside the vocabulary."""
    targets, unknown = vocab.multi_hot(table.column("cui").to_pylist())
    return {"rows": int(len(targets)), "rows_without_concepts": int((targets.sum(1) == 0).sum()),
            "unknown_ids": int(unknown.sum()),
            "mean_concepts_per_row": float(targets.sum(1).mean()) if len(targets) else 0.0}


def ray_map(fn, tasks) -> list:
    """``map`` over Ray tasks, logging progress as shards land."""
    import ray

    remote = ray.remote(num_cpus=1)(fn)
    pending = [remote.remote(t) for t in tasks]
    progress = Progress("synthetic shards", total=len(pending), every=2.0)
    done_all = []
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        done_all.extend(ray.get(done))
        progress.update(len(done))
    return done_all


def run(cfg: PrepareConfig) -> dict:
    if cfg.synthetic == (cfg.data is not None):
        raise UserError("give exactly one of --synthetic (generate) or --data PATH (describe)")
    out = Path(cfg.out)
    if cfg.data is not None:
        for split in cfg.splits:  # a wrong path or a missing split fails before Ray starts
            resolve_split(cfg.data, split)
    config = cfg.experiment if cfg.experiment is not None else load_config(cfg.config, cfg.set)
    spec = SyntheticSpec(sizes={"train": cfg.n_train, "validation": cfg.n_val, "test": cfg.n_test},
                         seed=cfg.seed, image_size=cfg.image_size, rows_per_shard=cfg.rows_per_shard)
    reuse = cfg.synthetic and existing_synthetic(out, spec)  # other data there: an error now
    init_ray(cfg.address)
    from ray_jobs.data import read_split_dataset, split_statistics

    data = cfg.data
    if cfg.synthetic:
        log.info("%s synthetic ROCOv2: %s pairs at %d px, seed %d",
                 "reusing the" if reuse else "generating", spec.sizes, spec.image_size, spec.seed)
        write_synthetic(spec, out, map_fn=ray_map)
        data = str(out)

    text_cfg = replace(config.model.text, tokenizer=cfg.tokenizer)
    tokenizer, source = resolve_tokenizer(text_cfg, data, train_split=cfg.splits[0])
    check_vocabulary(tokenizer)
    tok_dir = out / TOKENIZER_DIRNAME
    tokenizer.save_pretrained(str(tok_dir))
    log.info("tokenizer (%s, %d tokens) saved to %s", source, len(tokenizer), tok_dir)

    # Each split's metadata (attributes, concept ids), read once.
    meta = {split: read_split(data, split, columns=[*META_COLUMNS, "cui"]) for split in cfg.splits}
    vocab = ConceptVocabulary.build(meta[cfg.splits[0]].column("cui").to_pylist(),
                                    config.model.concepts.min_count)
    vocab.save(out)
    log.info("concept vocabulary: %d concepts from %d %s images (%d without any concept id; "
             "%d concepts under min_count %d left out) saved to %s", len(vocab), vocab.images,
             cfg.splits[0], vocab.empty_images, len(vocab.dropped),
             config.model.concepts.min_count, out / "concepts.json")

    preprocessor = build_preprocessor(config.model, tokenizer)
    stats = []
    for split in cfg.splits:
        ds, files = read_split_dataset(data, split)
        s = split_statistics(ds, preprocessor, split)
        s["files"] = len(files.paths)
        s["attributes"] = attribute_distribution(meta[split])
        s["concepts"] = concept_statistics(vocab, meta[split])
        stats.append(s)
        if s["skipped"]:
            log.warning("%s: skipped %s", split, s["skipped"])
    result = {"data": str(data), "tokenizer": str(tok_dir), "splits": stats,
              "concept_vocabulary": {"path": str(out / "concepts.json"), "size": len(vocab),
                                     "images": vocab.images, "empty_images": vocab.empty_images,
                                     "dropped_under_min_count": len(vocab.dropped)}}
    storage.write_json(out, "stats.json", result)
    print(format_statistics(stats))
    print(f"\nstatistics: {out / 'stats.json'}")
    return result


def main(argv=None) -> dict:
    cfg = parse(PrepareConfig, argv, "rocoray prepare", __doc__)
    setup_logging()
    return run_cli("rocoray prepare", lambda: run(cfg))


if __name__ == "__main__":
    main()
