"""Ray Tune search over a space from tune_spaces/ (temperatures, projection sizes, fusion
settings), each trial a full Ray Train run, with ASHA early stopping.

    rocoray tune --space tune_spaces/two_tower.yaml --data data/synthetic --name tt-search
    tensorboard --logdir runs/tune/tt-search            # live curves of every trial

Re-running with the same --name restores the experiment (Tuner.restore): finished trials
are not run again. At the end it prints and saves a summary of all trials (trials.csv,
summary.md) and writes best_config.yaml, which `rocoray train --config` accepts as is.

Ray Train V2 pattern: each trial is a small driver function (0.25 CPU) that builds and fits
a TorchTrainer whose RunConfig forwards every report to Tune (TuneReportCallback).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from core import storage
from ray_jobs import faults
from core.config import ExperimentConfig, save_config, to_dict
from core.search_space import SearchSpace, load_search_space
from ray_jobs.options import opt, parse, run_cli
from ray_jobs.runtime import init_ray, setup_logging

log = logging.getLogger("rocoray.tune")

SEARCH_SPACE_FILE = "search_space.json"


@dataclass
class TuneArgs:
    space: str = opt(None, "a search space YAML, e.g. tune_spaces/two_tower.yaml", required=True)
    data: str | None = opt(None, "ROCOv2 data (default: the preset's data.path)")
    name: str | None = opt(None, "experiment name; the same name resumes (default: <model>-<time>)")
    storage_path: str = opt("runs/tune", "local dir or s3:// for experiments")
    num_samples: int | None = opt(None, "override the space's num_samples")
    epochs: int | None = opt(None, "override the space's epochs")
    search: str | None = opt(None, "override the space's search", choices=["random", "grid", "optuna"])
    max_concurrent_trials: int | None = opt(None, "override the space's max_concurrent_trials")
    set: list = opt([], "fixed config overrides for every trial", metavar="KEY=VALUE")
    experiment: ExperimentConfig | None = opt(None, "a job that calls this one (the demo) hands its "
                                              "experiment config over whole, in place of "
                                              "--config / --set", cli=False)
    address: str | None = opt(None, "Ray cluster address (default: RAY_ADDRESS, else a local Ray)")


def param_space(space: SearchSpace) -> dict:
    from ray import tune

    out = {}
    for p in space.params:
        if space.search == "grid" or p.sampler == "grid":
            out[p.key] = tune.grid_search(p.values)
        elif p.sampler == "choice":
            out[p.key] = tune.choice(p.values)
        elif p.sampler == "uniform":
            out[p.key] = tune.uniform(*p.values)
        elif p.sampler == "loguniform":
            out[p.key] = tune.loguniform(*p.values)
        elif p.sampler == "randint":
            out[p.key] = tune.randint(*p.values)
    return out


def trial_driver(config: dict) -> None:
    """One trial: the sampled values on top of the space's config, trained by a TorchTrainer
    that reports every epoch to Tune."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from ray_jobs.ray_logs import configure_data_context
    from ray_jobs.train import fit, prepare_run

    configure_data_context()  # a trial driver builds its own datasets; its logs are no terminal
    ctx = ray.tune.get_context()
    space = SearchSpace(**config["__space__"])
    values = {k: v for k, v in config.items() if not k.startswith("__")}
    cfg = space.trial_config(values, config["__overrides__"], config.get("__base__"))
    cfg.train.name = f"train_{ctx.get_trial_id()}"
    cfg.train.storage_path = config["__train_storage__"]
    faults.maybe_fail("tune.trial", 1)  # tests: the first trial to get here fails, once
    cfg, tokenizer, _, concepts = prepare_run(cfg)
    result = fit(cfg, tokenizer, callbacks=[TuneReportCallback()], concepts=concepts)
    if result.error:
        raise result.error


def build_tuner(space: SearchSpace, experiment_path: str, overrides: list,
                max_failures: int = 0, base: dict | None = None):
    """The Tuner. ``max_failures`` (the trials' ``train.max_failures``): a trial whose driver
    is lost with its node is started again that many times, and its Ray Train run (the same
    name and storage) resumes from its last checkpoint; a lost training worker alone is
    Ray Train's to restart, inside the trial."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    trainable = tune.with_resources(trial_driver, {"CPU": 0.25})
    scheduler = FIFOScheduler()
    if space.scheduler.get("type") == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=space.epochs,
                                  grace_period=space.scheduler.get("grace_period", 1),
                                  reduction_factor=space.scheduler.get("reduction_factor", 2))
    search_alg = None
    if space.search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        search_alg = ConcurrencyLimiter(OptunaSearch(), max_concurrent=space.max_concurrent_trials)
    parent, name = os.path.split(experiment_path.rstrip("/"))
    fixed = {"__space__": {k: v for k, v in vars(space).items() if k != "params"},
             "__overrides__": overrides, "__base__": base,
             "__train_storage__": f"{experiment_path}/trainer_runs"}
    return tune.Tuner(
        trainable,
        param_space={**param_space(space), **fixed},
        tune_config=tune.TuneConfig(
            metric=space.metric, mode=space.mode, scheduler=scheduler, search_alg=search_alg,
            num_samples=1 if space.search == "grid" else space.num_samples,
            max_concurrent_trials=space.max_concurrent_trials),
        run_config=tune.RunConfig(name=name, storage_path=parent,
                                  failure_config=tune.FailureConfig(max_failures=max_failures)))


def short_trial_name(dirname: str) -> str:
    """``trial_driver_2bfe1_00002_2_model_two_tower_embed_dim=256,...`` -> ``trial_driver_2bfe1_00002``
    (Optuna's: ``trial_driver_423c85fa_1_...`` -> ``trial_driver_423c85fa_1``)."""
    m = re.match(r"(.*?_[0-9a-f]{5,}_\d+)(_|$)", dirname)  # basic-variant and Optuna ids
    return m.group(1) if m else dirname


def summarize(results, space: SearchSpace, experiment_path: Path, overrides: list,
              base: dict | None = None) -> dict:
    keys = [p.key for p in space.params]
    rows = []
    for r in results:
        m = r.metrics or {}
        rows.append({"trial": short_trial_name(Path(r.path).name if r.path else "?"),
                     "status": "ERROR" if r.error else "OK",
                     **{k: r.config.get(k) for k in keys},
                     space.metric: m.get(space.metric),
                     # the run's own epoch: Tune's training_iteration counts the reports of
                     # the trial's last start, not epochs resumed from a checkpoint
                     "epochs": m.get("epoch", m.get("training_iteration")),
                     "time_s": round(m.get("time_total_s", 0.0), 1)})
    ranked = [r for r in rows if r[space.metric] is not None]
    ranked.sort(key=lambda r: r[space.metric], reverse=space.mode == "max")
    ranked += [r for r in rows if r[space.metric] is None]
    header = list(ranked[0]) if ranked else ["trial"]
    import csv

    with open(experiment_path / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(ranked)
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(fmt(r[h]) for h in header) + " |" for r in ranked]
    best = None
    if ranked and ranked[0][space.metric] is not None:
        values = {k: ranked[0][k] for k in keys}
        best_cfg = space.trial_config(values, overrides, base)
        best_cfg.train.name = None  # a fresh run name when reused
        save_config(best_cfg, experiment_path / "best_config.yaml")
        best = {"trial": ranked[0]["trial"], "metric": ranked[0][space.metric], "values": values,
                "config": str(experiment_path / "best_config.yaml")}
    (experiment_path / "summary.md").write_text(
        f"# Tune: {experiment_path.name}\n\nmetric: {space.metric} ({space.mode})\n\n"
        + "\n".join(table) + "\n")
    return {"experiment": str(experiment_path), "trials": ranked, "best": best,
            "table": "\n".join(table)}


def run(args: TuneArgs) -> dict:
    space = load_search_space(args.space)
    for attr in ("num_samples", "epochs", "search", "max_concurrent_trials"):
        if getattr(args, attr) is not None:
            setattr(space, attr, getattr(args, attr))
    overrides = list(args.set) + ([f"data.path={args.data}"] if args.data else [])
    # Resolve the tokenizer once, before trials start (and fail fast on a bad data path).
    from core.data.rocov2 import resolve_split
    from core.data.tokenizer import resolve_tokenizer

    base = to_dict(args.experiment) if args.experiment is not None else None
    probe = space.trial_config({}, overrides, base)
    # Trials run in their own working directories: pin local paths down now.
    for key, value in (("data.path", probe.data.path), ("model.text.tokenizer", probe.model.text.tokenizer),
                       ("model.text.name_or_path", probe.model.text.name_or_path)):
        if isinstance(value, str) and not storage.is_url(value) and Path(value).exists():
            overrides.append(f"{key}={Path(value).resolve()}")
    probe = space.trial_config({}, overrides, base)
    for param in space.params:  # sampled local paths too (e.g. model.fusion.init_from)
        param.values = [str(Path(v).resolve()) if isinstance(v, str) and not storage.is_url(v)
                        and "/" in v and Path(v).exists() else v for v in param.values]
    for split in (probe.data.train_split, probe.data.val_split):
        resolve_split(probe.data.path, split)
    init_ray(args.address)
    resolve_tokenizer(probe.model.text, probe.data.path, probe.data.train_split)
    name = args.name or f"{space.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage_root = storage.absolute(args.storage_path)
    experiment_path = f"{storage_root.rstrip('/')}/{name}"
    from ray import tune

    if tune.Tuner.can_restore(experiment_path):
        log.info("restoring experiment %s: finished trials are kept", experiment_path)
        tuner = tune.Tuner.restore(experiment_path, trainable=tune.with_resources(
            trial_driver, {"CPU": 0.25}), resume_errored=True, restart_errored=False)
    else:
        tuner = build_tuner(space, experiment_path, overrides, probe.train.max_failures, base)
    t0 = time.perf_counter()
    results = tuner.fit()
    # Summaries go beside the trials; with remote storage, into a local folder of that name.
    local = Path(experiment_path) if not storage.is_url(storage_root) else Path("runs/tune") / name
    local.mkdir(parents=True, exist_ok=True)
    storage.write_json(local, SEARCH_SPACE_FILE,
                       {**{k: v for k, v in vars(space).items() if k != "params"},
                        "params": [vars(p) for p in space.params], "overrides": overrides})
    summary = summarize(results, space, local, overrides, base)
    summary["wall_s"] = time.perf_counter() - t0
    print(f"\n{summary['table']}\n")
    if summary["best"]:
        print(f"best trial {summary['best']['trial']}: {space.metric} = "
              f"{summary['best']['metric']:.4f}; config: {summary['best']['config']}")
    print(f"experiment: {experiment_path}   (tensorboard --logdir {experiment_path})")
    return summary


def main(argv=None) -> dict:
    args = parse(TuneArgs, argv, "rocoray tune", __doc__)
    setup_logging()
    return run_cli("rocoray tune", lambda: run(args))


if __name__ == "__main__":
    main()
