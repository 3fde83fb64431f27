"""The main job: the whole pipeline, end to end, on the embedded default data.

    rocoray demo                       # synthetic ROCOv2, tiny preset, on 2 CPUs
    rocoray demo --data ../shared/data/chest-xray-sample
    rocoray demo --data datasets/roco-ccby --config roco_cpu   # real ROCO, pretrained towers

Stages: 1 prepare the data (generate the synthetic ROCOv2 unless --data is given) ->
2 train the two-tower model -> 3 train the fusion model (both on Ray Train) -> 4 score the
test split three ways (fusion all pairs, two-tower, rerank) and evaluate -> 5 write the
report. Ends by printing the headline table and where the report is.

Everything goes to --out (default: runs/demo for the synthetic data, runs/demo-<name> for
--data <dir>/<name>). An existing demo there is never replaced unless --overwrite is given;
inputs are checked before anything is written.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from core import storage
from core.config import ExperimentConfig, load_config
from core.models.kind import ModelKind
from core.scoring.settings import ScoringSettings
from core.provenance import code_state, provenance
from core.data.rocov2 import resolve_split
from core.synthetic.generate import SyntheticSpec, existing_synthetic
from ray_jobs import evaluate, prepare, train
from ray_jobs.options import UserError, opt, parse, run_cli
from ray_jobs.runtime import StageClock, init_ray, machine, setup_logging

log = logging.getLogger("rocoray.demo")

TUNE_SPACE = Path(__file__).resolve().parents[1] / "tune_spaces" / "two_tower.yaml"


@dataclass
class DemoConfig:
    data: str | None = opt(None, "existing ROCOv2-layout data (default: generate the synthetic set)")
    synthetic_dir: str = opt("data/synthetic", "where the synthetic set is generated (or reused)")
    n_train: int = opt(2000, "synthetic training pairs")
    n_val: int = opt(300, "synthetic validation pairs")
    n_test: int = opt(300, "synthetic test pairs")
    out: str | None = opt(None, "everything the demo writes (default: runs/demo, or "
                          "runs/demo-<data name> with --data)")
    overwrite: bool = opt(False, "replace an existing demo in --out")
    config: str = opt("tiny", "preset (tiny, base) or YAML file for both models")
    epochs: int | None = opt(None, "override train.epochs")
    set: list = opt([], "config overrides for both trainings", metavar="KEY=VALUE")
    scoring: ScoringSettings = opt(ScoringSettings(), "k, rerank k, alpha, tiles, precision "
                                   "(rerank's k and alpha are then chosen on validation)")
    use_gpu: bool = opt(False, "train and score on GPUs (train.use_gpu, scoring actors)")
    tune: bool = opt(False, "also run a small Ray Tune search (2 trials, 1 epoch)")
    gallery_split: str | None = opt("train", "concept-aware retrieval also against this split's "
                                    "items (rocoray evaluate --gallery-split)")
    gallery_max_items: int | None = opt(200, "rows of --gallery-split used (fusion scores "
                                        "every test x gallery pair, both ways)")
    explain_cases: int = opt(evaluate.EXPLAIN_CASES, "test pairs explained (rocoray "
                             "evaluate --explain-cases)")
    ablation: bool = opt(False, "also run the two-tower ablation (AbM / MbA x MCR modes, 4 more "
                         "trainings; rocoray ablation) and put its table in the report")
    address: str | None = opt(None, "Ray cluster address (default: RAY_ADDRESS, else a local Ray)")

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return Path("runs/demo") if self.data is None else Path(f"runs/demo-{Path(self.data).name}")


def check(cfg: DemoConfig) -> tuple[Path, ExperimentConfig]:
    """Every input checked before anything is written: data, config, output directory.
    Returns the experiment config every stage starts from (the preset and the user's --set,
    loaded once; stages set their own fields on copies, never by override strings)."""
    out = cfg.out_dir()
    base = load_config(cfg.config, cfg.set)  # a bad preset or key fails here
    if cfg.use_gpu:
        base.train.use_gpu = True
    if cfg.data is not None:
        for split in ("train", "validation", "test"):
            resolve_split(cfg.data, split)
    else:
        existing_synthetic(cfg.synthetic_dir, synthetic_spec(cfg))  # other data there: error
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise UserError(f"{out} already holds a demo run; pass --overwrite to replace it, or "
                        f"--out DIR for a new one")
    return out, base


def synthetic_spec(cfg: DemoConfig) -> SyntheticSpec:
    return SyntheticSpec(sizes={"train": cfg.n_train, "validation": cfg.n_val,
                                "test": cfg.n_test})


def prepare_data(cfg: DemoConfig, out: Path, base: ExperimentConfig, clock, stages: int) -> str:
    """Stage 1: generate the synthetic set, or read the given data's statistics, tokenizer
    and concept vocabulary (``base.model.text.tokenizer`` is set to it). Returns the data
    path the trainings read."""
    if cfg.data is None:
        log.info("stage 1/%d: synthetic ROCOv2 in %s", stages, cfg.synthetic_dir)
        with clock.stage("prepare"):
            prepare.run(prepare.PrepareConfig(synthetic=True, out=cfg.synthetic_dir,
                                              n_train=cfg.n_train, n_val=cfg.n_val,
                                              n_test=cfg.n_test))
        return cfg.synthetic_dir
    log.info("stage 1/%d: statistics, tokenizer and concept vocabulary of %s", stages, cfg.data)
    # The preset's tokenizer (a pretrained text model's own) and concept min_count.
    with clock.stage("prepare"):
        prepare.run(prepare.PrepareConfig(data=str(cfg.data), out=str(out / "data"),
                                          config=cfg.config, experiment=base))
    base.model.text.tokenizer = str((out / "data" / "tokenizer").resolve())
    return str(cfg.data)


def train_models(cfg: DemoConfig, data: str, out: Path, base: ExperimentConfig, clock,
                 stages: int) -> dict:
    """Stages 2-3: the two-tower model, then the fusion model on its encoders."""
    runs = {}
    for i, kind in enumerate((ModelKind.TWO_TOWER, ModelKind.FUSION)):
        log.info("stage %d/%d: train the %s model%s", 2 + i, stages, kind,
                 " on the two-tower's encoders (ITC + ITM, as ALBEF)"
                 if kind is ModelKind.FUSION else "")
        exp = copy.deepcopy(base)
        exp.model.kind, exp.data.path = kind, str(data)
        exp.train.name, exp.train.storage_path = str(kind), str(out / "train")
        if kind is ModelKind.FUSION:
            exp.model.fusion.init_from = runs[ModelKind.TWO_TOWER]["path"]
        if cfg.epochs is not None:  # --epochs: both models
            exp.train.epochs, exp.train.fusion_epochs = cfg.epochs, None
        with clock.stage(f"train {kind}"):
            runs[kind] = train.run(exp)
    return runs


def optional_stages(cfg: DemoConfig, data: str, out: Path, base: ExperimentConfig,
                    stages: int) -> tuple[dict | None, str | None]:
    """--tune and --ablation: (the Tune summary, the ablation's output directory)."""
    tune_summary, ablation_out = None, None
    if cfg.tune:
        from ray_jobs import tune

        log.info("stage 4/%d: a small Ray Tune search", stages)
        tune_summary = tune.run(tune.TuneArgs(
            space=str(TUNE_SPACE), data=str(data), name="demo", storage_path=str(out / "tune"),
            num_samples=2, epochs=1, experiment=base))
    if cfg.ablation:
        from ray_jobs import ablation

        log.info("stage %d/%d: two-tower ablation (AbM / MbA x MCR modes)", stages - 2, stages)
        ablation_out = str(out / "ablation")
        ablation.run(ablation.AblationConfig(data=str(data), config=cfg.config,
                                             epochs=cfg.epochs, experiment=base, out=ablation_out,
                                             overwrite=True))
    return tune_summary, ablation_out


def evaluate_models(cfg: DemoConfig, data: str, out: Path, runs: dict, cache: str,
                    ablation_out: str | None, clock, stages: int) -> dict:
    log.info("stage %d/%d: score the test split (fusion, two-tower, rerank) and evaluate",
             stages - 1, stages)
    with clock.stage("score and evaluate"):
        metrics = evaluate.run(evaluate.EvaluateConfig(
            scoring=cfg.scoring, use_gpu=cfg.use_gpu, cache=cache,
            two_tower=runs[ModelKind.TWO_TOWER]["path"], fusion=runs[ModelKind.FUSION]["path"],
            data=str(data), out=str(out / "eval"),
            gallery_split=cfg.gallery_split, gallery_max_items=cfg.gallery_max_items,
            explain_cases=cfg.explain_cases, ablation=ablation_out))
    log.info("stage %d/%d: report written", stages, stages)
    return metrics


def run(cfg: DemoConfig) -> dict:
    code = code_state()  # the code this run measures: as it is when the run starts
    out, base = check(cfg)
    if out.exists() and cfg.overwrite:
        shutil.rmtree(out)  # asked for explicitly, and only after every input checked out
    out.mkdir(parents=True, exist_ok=True)
    # one cache for every stage: the frozen encoders' outputs of a split are computed once
    # and reused by both trainings, the scoring jobs and the analyses
    cache = str((out / "cache").resolve())
    base.train.cache = cache
    clock = StageClock()
    with clock.stage("ray start"):
        init_ray(cfg.address)
    t0 = time.perf_counter()
    stages = 5 + int(cfg.tune) + int(cfg.ablation)
    data = prepare_data(cfg, out, base, clock, stages)
    runs = train_models(cfg, data, out, base, clock, stages)
    tune_summary, ablation_out = optional_stages(cfg, data, out, base, stages)
    metrics = evaluate_models(cfg, data, out, runs, cache, ablation_out, clock, stages)
    val_size = {k: r["final"].get("val/gallery_size") for k, r in runs.items()}
    summary = {
        "data": str(data), "config": cfg.config, "overrides": list(cfg.set),
        "scoring": cfg.scoring.as_dict(), "cache": cache,
        "minutes": (time.perf_counter() - t0) / 60,
        # peak_rss_mb: resident memory summed over the job's processes (the driver, the local
        # Ray's raylet and workers; pages they share are counted in each)
        "stages": {**clock.stages, **{f"evaluate: {k}": v for k, v in metrics["stages"].items()}},
        "machine": machine(),
        "training": {k: {"final": r["final"], "path": r["path"], "epochs": r["epochs"],
                         "chance_R@10": min(1.0, 10 / val_size[k]) if val_size[k] else None}
                     for k, r in runs.items()},
        "evaluation": str(out / "eval" / "metrics.json"), "report": metrics["report"],
        "provenance": provenance(data, code=code)}
    if tune_summary:
        summary["tune"] = {k: tune_summary[k] for k in ("experiment", "best", "wall_s")}
    storage.write_json(out, "summary.json", summary)
    tt, fu = runs[ModelKind.TWO_TOWER]["final"], runs[ModelKind.FUSION]["final"]
    print(f"\ntraining (validation): two-tower R@10 t2i {tt.get('val/t2i/R@10', 0):.3f} "
          f"(chance {summary['training']['two_tower']['chance_R@10']:.3f}); fusion match "
          f"accuracy {fu.get('val/match_acc', 0):.3f} (chance 0.5)")
    print(f"demo finished in {summary['minutes']:.1f} min; summary: {out / 'summary.json'}")
    return summary


def main(argv=None) -> dict:
    cfg = parse(DemoConfig, argv, "rocoray demo", __doc__)
    setup_logging()
    summary = run_cli("rocoray demo", lambda: run(cfg))
    print("\n" + evaluate.headline_table(storage.read_json(Path(summary["evaluation"]).parent,
                                                           "metrics.json")))
    print(f"\nreport: {summary['report']['html']}")
    return summary


if __name__ == "__main__":
    main()
