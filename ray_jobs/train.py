"""Train either model with Ray Train: Ray Data streams the preprocessed shards into
TorchTrainer workers; each epoch reports loss, learning rate, throughput and validation
Recall@K with a safetensors checkpoint.

    rocoray train --model two_tower --config tiny --data data/synthetic --name tt
    ray job submit --working-dir . -- python -m ray_jobs.train --model fusion --config base \\
        --data hf://datasets/eltorio/ROCOv2-radiology --storage-path s3://bucket/runs

Re-launching with the same --name (and storage path) resumes from the latest checkpoint;
``train.max_failures`` restarts a crashed worker group from it. An error before the first
optimizer step (a bad setting, a bug) is deterministic: it ends the run at once with its
message instead of being retried.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path


from core import storage
from core.concepts.vocabulary import resolve_vocabulary
from core.checkpoint import RUN_RESULT, read_checkpoint_config, resolve_checkpoint
from core.config import ExperimentConfig, load_config, resolve_fusion_run, save_config, to_dict
from core.data.preprocess import build_preprocessor
from core.data.rocov2 import resolve_split
from core.data.tokenizer import resolve_tokenizer
from core.training.loop import steps_per_epoch
from core.precision import training_precision
from core.models.kind import ModelKind
from ray_jobs.options import UserError, opt, parse, run_cli
from ray_jobs.runtime import format_epoch, init_ray, setup_logging, storage_reach
from ray_jobs.train_worker import HISTORY, fatal_name, initial_model, train_loop_per_worker

log = logging.getLogger("rocoray.train")

TRAIN_COLUMNS = ["pixel_values", "input_ids", "attention_mask", "group", "skip"]


# --- the worker: plain PyTorch plus get_dataset_shard / prepare_model / report ---------------
@dataclass
class TrainArgs:
    model: str | None = opt(None, "model kind (overrides model.kind)", choices=["two_tower", "fusion"])
    config: str = opt("tiny", "preset name (tiny, base) or a YAML file")
    data: str | None = opt(None, "ROCOv2 data: a directory, a Parquet file, or a URL "
                           "(default: the config's data.path)")
    name: str | None = opt(None, "run name; the same name resumes (default: <model>-<time>)")
    storage_path: str | None = opt(None, "local dir or s3:// for runs (default: train.storage_path)")
    epochs: int | None = opt(None, "override train.epochs")
    num_workers: int | None = opt(None, "override train.num_workers")
    init_from: str | None = opt(None, "fusion: a two-tower checkpoint or run that initialises "
                                "the encoders and ITC heads (model.fusion.init_from)")
    set: list = opt([], "config overrides, e.g. train.lr=3e-4 model.two_tower.embed_dim=256",
                    metavar="KEY=VALUE")
    address: str | None = opt(None, "Ray cluster address (default: RAY_ADDRESS, else a local Ray)")

    def experiment(self) -> ExperimentConfig:
        """The preset and --set (checked at load), then this command's own flags, set as
        typed fields."""
        cfg = load_config(self.config, self.set)
        for value, section, key in ((self.data, cfg.data, "path"), (self.name, cfg.train, "name"),
                                    (self.storage_path, cfg.train, "storage_path"),
                                    (self.epochs, cfg.train, "epochs"),
                                    (self.num_workers, cfg.train, "num_workers"),
                                    (self.init_from, cfg.model.fusion, "init_from")):
            if value is not None:
                setattr(section, key, value)
        if self.model is not None:  # argparse's choices checked the name
            cfg.model.kind = ModelKind(self.model)
        return cfg


def run_dir(cfg: ExperimentConfig) -> str:
    return storage.join(storage.absolute(cfg.train.storage_path), cfg.train.name)


def build_datasets(cfg: ExperimentConfig, tokenizer, concepts=None) -> tuple[dict, int]:
    """Preprocessed train/validation Ray Datasets, and the number of training rows."""
    from ray_jobs.data import read_split_dataset, split_rows

    pre = build_preprocessor(cfg.model, tokenizer, concepts)
    if (cfg.train.encode_frozen_once and cfg.model.mcr.mode == "off"
            and (cfg.model.image.freeze_stages or cfg.model.text.freeze_layers)):
        return frozen_datasets(cfg, tokenizer, pre.concepts)
    keep = TRAIN_COLUMNS + (["concepts"] if pre.concepts is not None else [])
    datasets, rows = {}, 0
    for name, split in (("train", cfg.data.train_split), ("validation", cfg.data.val_split)):
        # Read + preprocess in one stage of fractional-CPU tasks (a 1-CPU default deadlocks
        # concurrent Tune trials on small machines); only the training columns leave it.
        datasets[name], files = read_split_dataset(
            cfg.data.path, split, cfg.data.storage_options, cfg.data.max_rows,
            num_cpus=cfg.train.preprocess_num_cpus, preprocessor=pre,
            batch_size=cfg.train.preprocess_batch_size, keep=keep,
            shuffle_seed=cfg.train.seed if name == "train" else None)
        if name == "train":
            rows = split_rows(files, cfg.data.max_rows)  # from the Parquet footers
    return datasets, rows


def frozen_datasets(cfg: ExperimentConfig, tokenizer, concepts=None) -> tuple[dict, int]:
    """The training and validation splits as the frozen encoder layers' outputs (with the
    token ids and targets), from the frozen store under ``train.cache``: encoded once per
    (weights, split, preprocessing) by a Ray Data stage, and reused by every later run and
    job with the same frozen layers (the fusion model trained on the two-tower's frozen
    encoders finds the two-tower's). Returns {split: {"store", "limit"}} (each worker
    holds its splits in memory: ``core.frozen_store.StoredSplit``) and the training rows."""
    from functools import partial

    from ray_jobs.frozen import ensure_stores

    model = initial_model(cfg)  # the frozen layers' weights key the store
    t = cfg.train
    cache = storage.absolute(t.cache or storage.join(t.storage_path, "cache"))
    names = ("train", "validation")
    splits = [resolve_split(cfg.data.path, split, cfg.data.storage_options)
              for split in (cfg.data.train_split, cfg.data.val_split)]
    stores = ensure_stores(  # one encode stage for both splits: one actor start-up
        cache, model, cfg.model, tokenizer, splits, cfg.data.max_rows,
        build_model=partial(initial_model, cfg),
        preprocessor=build_preprocessor(cfg.model, tokenizer),
        actors=t.num_workers, cpus=t.num_workers * t.cpus_per_worker,  # training's CPUs
        gpus_per_actor=t.gpus_per_worker if t.use_gpu else 0,
        precision=training_precision(t.precision, "cuda" if t.use_gpu else "cpu"))
    datasets = {name: {"store": store.root, "limit": meta["limit"]}
                for name, (store, meta) in zip(names, stores)}
    meta = stores[0][1]
    rows = meta["rows"] if meta["limit"] is None else min(meta["rows"], meta["limit"])
    return datasets, rows


def prepare_run(cfg: ExperimentConfig) -> tuple[ExperimentConfig, object, str, object]:
    """Check the data and fill in what the run needs before it starts: a name, the tokenizer
    and its vocabulary size, the concept vocabulary and the concept head's size. Raises user
    errors (a wrong path, a missing split) before Ray."""
    t = cfg.train
    if t.min_workers is not None and not 1 <= t.min_workers <= t.num_workers:
        raise UserError(f"train.min_workers must be between 1 and train.num_workers "
                        f"({t.num_workers}), got {t.min_workers}")
    if t.elastic_resize_interval_s < 0:
        raise UserError("train.elastic_resize_interval_s must be >= 0, got "
                        f"{t.elastic_resize_interval_s}")
    if not 0 <= cfg.model.fusion.concept_soft_labels <= 1:
        raise UserError("model.fusion.concept_soft_labels must be in [0, 1], got "
                        f"{cfg.model.fusion.concept_soft_labels}")
    for split in (cfg.data.train_split, cfg.data.val_split):
        resolve_split(cfg.data.path, split, cfg.data.storage_options)
    if cfg.model.kind == ModelKind.FUSION and cfg.model.fusion.init_from:
        source = resolve_checkpoint(cfg.model.fusion.init_from)
        if read_checkpoint_config(source).model.kind != ModelKind.TWO_TOWER:
            raise UserError(f"model.fusion.init_from {cfg.model.fusion.init_from} is not a "
                            "two-tower checkpoint or run")
        cfg.model.fusion.init_from = str(Path(source).resolve())  # workers run elsewhere
    resolve_fusion_run(cfg)
    if not cfg.train.name:
        cfg.train.name = f"{cfg.model.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    tokenizer, source = resolve_tokenizer(cfg.model.text, cfg.data.path, cfg.data.train_split,
                                          cfg.data.storage_options)
    if not cfg.model.text.name_or_path:
        cfg.model.text.vocab_size = len(tokenizer)
    if training_precision(cfg.train.precision, "cuda" if cfg.train.use_gpu else "cpu") != \
            cfg.train.precision:
        log.info("train.precision bf16 applies on GPUs and CPUs with native bf16; this CPU "
                 "run trains in fp32")
    return cfg, tokenizer, source, concept_vocabulary(cfg)


def concept_vocabulary(cfg: ExperimentConfig):
    """The concept vocabulary when the run trains a concept head (``model.concepts.weight``
    > 0 and concept ids in the data), with ``model.concepts.num_concepts`` set; else None."""
    cc = cfg.model.concepts
    cc.num_concepts = 0
    soft = cfg.model.kind == ModelKind.FUSION and cfg.model.fusion.concept_soft_labels
    if cc.weight <= 0:
        if soft:
            raise UserError("model.fusion.concept_soft_labels needs model.concepts.weight > 0 "
                            "(the concept vocabulary it reads)")
        return None
    vocab, where = resolve_vocabulary(cfg.data.path, cfg.data.train_split, cc.min_count,
                                      cfg.data.storage_options)
    if not len(vocab):
        if soft:
            raise UserError(f"model.fusion.concept_soft_labels needs concept ids in the data; "
                            f"{where} has none")
        log.info("no concept ids in this data (%s): no concept head", where)
        return None
    cc.num_concepts = len(vocab)
    log.info("concept head: %d concepts (%s; %d of %d training images without any)",
             len(vocab), where, vocab.empty_images, vocab.images)
    return vocab


def fit(cfg: ExperimentConfig, tokenizer, callbacks=None, datasets=None, concepts=None):
    """Build and fit the TorchTrainer; returns the ray.train.Result. ``datasets`` (train,
    validation, and the number of training rows) replaces the config's data, for benchmarks."""
    from ray.train import (DataConfig, FailureConfig, LoggingConfig,
                           RunConfig, ScalingConfig)
    from ray.train.torch import TorchTrainer

    datasets, rows = datasets or build_datasets(cfg, tokenizer, concepts)
    # the frozen store's splits go to the workers by name; Ray Data streams the others
    stored = {k: v for k, v in datasets.items() if isinstance(v, dict)}
    datasets = {k: v for k, v in datasets.items() if not isinstance(v, dict)}
    t = cfg.train
    steps = steps_per_epoch(rows, t.batch_size, t.num_workers)
    workers = (t.min_workers, t.num_workers) if t.min_workers is not None else t.num_workers
    elastic = {"elastic_resize_monitor_interval_s": t.elastic_resize_interval_s} \
        if t.min_workers is not None else {}
    resources = {"CPU": t.cpus_per_worker}
    if t.use_gpu:
        resources["GPU"] = t.gpus_per_worker
    # Train's ingest options, with the rows in the seeded row-group order rather than in the
    # order the read tasks happen to finish: the same seed trains on the same batches.
    with warnings.catch_warnings():  # Ray's own defaults carry a deprecated field over
        warnings.filterwarnings("ignore", message=".*exclude_resources.*")
        ingest = DataConfig.default_ingest_options()
    ingest.preserve_order = True
    trainer = TorchTrainer(
        train_loop_per_worker=train_loop_per_worker,
        train_loop_config={"config": to_dict(cfg), "tokenizer": tokenizer, "concepts": concepts,
                           "rows": rows, "run_dir": run_dir(cfg), "stored": stored},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=t.use_gpu,
                                     resources_per_worker=resources,
                                     placement_strategy=t.placement_strategy, **elastic),
        run_config=RunConfig(
            name=t.name, storage_path=storage.absolute(t.storage_path), callbacks=callbacks,
            failure_config=FailureConfig(max_failures=t.max_failures),
            # Ray Train's own INFO lines (worker group start, every report) repeat what the
            # epoch line says; its warnings and errors still show.
            logging_config=LoggingConfig(log_level="WARNING"),
            checkpoint_config=checkpoint_config(t)),
        datasets=datasets or None, dataset_config=DataConfig(execution_options=ingest))
    log.info("training %s on %d rows: %d worker(s)%s x batch %d, %d steps/epoch, %d epochs",
             cfg.model.kind, rows, t.num_workers,
             f" (elastic: down to {t.min_workers})" if t.min_workers is not None else "",
             t.batch_size, steps, t.epochs)
    started = time.time()
    result = trainer.fit()
    out = run_dir(cfg)
    errors = fatal_errors(out, started, t.num_workers)
    if errors:
        raise RuntimeError(f"training run {t.name} failed before its first step (not "
                           f"retried): {errors[0]['error']}"
                           + (f" (and {len(errors) - 1} more rank(s))" if len(errors) > 1 else ""))
    return result


def checkpoint_config(t):
    """Ray Train keeps the best checkpoints by validation mean recall (``train.keep`` best)
    or the latest ones (last)."""
    from ray.train import CheckpointConfig

    if t.keep == "last":
        return CheckpointConfig(num_to_keep=t.checkpoints_to_keep)
    return CheckpointConfig(num_to_keep=t.checkpoints_to_keep,
                            checkpoint_score_attribute="val/mean_recall",
                            checkpoint_score_order="max")


def fatal_errors(out: str, since: float, ranks: int) -> list[dict]:
    """Every rank's recorded first-step error of this fit (written after ``since``)."""
    found = []
    for rank in range(ranks):
        if storage.exists(out, fatal_name(rank)):
            error = storage.read_json(out, fatal_name(rank))
            if error["time"] >= since:
                found.append(error)
    return found


def summarize(result, cfg: ExperimentConfig) -> dict:
    """The run's result.json: final metrics, every epoch, and checkpoints RELATIVE to the run
    directory (a run can be moved)."""
    best = None
    if cfg.train.keep == "last":
        best = result.checkpoint
    elif result.best_checkpoints:
        best = result.get_best_checkpoint("val/mean_recall", "max")
    history = []
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as ckpt_dir:
            path = Path(ckpt_dir) / HISTORY
            history = json.loads(path.read_text()) if path.exists() else []
    out = run_dir(cfg)
    return {"name": cfg.train.name, "model": cfg.model.kind,
            "final": result.metrics, "epochs": cfg.train.epochs, "keep": cfg.train.keep,
            "best_checkpoint": storage.relative_to(best.path, out) if best else None,
            "latest_checkpoint": (storage.relative_to(result.checkpoint.path, out)
                                  if result.checkpoint else None),
            "history": history}


def run(cfg: ExperimentConfig, address: str | None = None) -> dict:
    """Validate, start (or join) Ray, train; returns the run summary (with its ``path``)."""
    cfg, tokenizer, source, concepts = prepare_run(cfg)
    init_ray(address)
    warning = storage_reach(cfg.train.storage_path)
    if warning:
        log.warning("train.storage_path: %s", warning)
    log.info("tokenizer: %s (%d tokens)", source, len(tokenizer))
    result = fit(cfg, tokenizer, concepts=concepts)
    if result.error:
        raise result.error
    summary = summarize(result, cfg)
    out = run_dir(cfg)
    if not storage.is_url(out):
        save_config(cfg, Path(out) / "config.yaml")
    storage.write_json(out, RUN_RESULT, summary)
    summary["path"] = out
    return summary


def main(argv=None) -> dict:
    args = parse(TrainArgs, argv, "rocoray train", __doc__)
    setup_logging()
    summary = run_cli("rocoray train", lambda: run(args.experiment(), args.address))
    final = summary["final"] or {}
    print(f"\n{summary['model']} run {summary['name']}: {format_epoch(final, summary['epochs'])}")
    print(f"results: {summary['path']}  kept checkpoint ({summary['keep']}): "
          f"{summary['best_checkpoint']}")
    return summary


if __name__ == "__main__":
    main()
