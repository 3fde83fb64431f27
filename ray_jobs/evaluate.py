"""Evaluate and compare fusion, two-tower and retrieve-and-rerank on one split, and write
the report.

    rocoray evaluate --two-tower runs/demo/train/two_tower --fusion runs/demo/train/fusion \\
        --data data/synthetic --split test --out runs/eval

Runs the three scoring jobs (``ray_jobs.score``) over one shared cache, so each gallery is
encoded once (rerank reuses the fusion and two-tower encodings), measures scoring time
against gallery size in one process, and writes metrics.json, report.md, report.html and
figures/ to --out.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from core import storage
from core.evaluation.comparison import LABELS, METHODS, compare
from core import analyses
from core.analyses import guarded
from core.analyses.scored import Scored
from core.explain.study import explanation_study
from core.models import count_parameters
from core.models.fusion import FUSED_SCORE_ALPHAS
from core.models.kind import ModelKind
from core.provenance import provenance
from core.report import headline_table, write_report
from core.scoring import outputs
from core.evaluation.rerank_selection import select_rerank
from core.scoring.settings import RERANK_KS, Method
from ray_jobs import score
from ray_jobs.score_methods import tile_side
from ray_jobs.options import UserError, opt, parse, run_cli
from ray_jobs.runtime import StageClock, init_ray, setup_logging

log = logging.getLogger("rocoray.evaluate")



# Test pairs explained by every method (about 7 s each at 224 px on 2 CPUs: Integrated
# Gradients dominates); the one default of `rocoray evaluate` and `rocoray demo`.
EXPLAIN_CASES = 16


@dataclass
class EvaluateConfig(score.ScoringOptions):
    two_tower: str = opt(None, "two-tower checkpoint or training run dir", required=True)
    fusion: str = opt(None, "fusion checkpoint or training run dir", required=True)
    data: str | None = opt(None, "ROCOv2 data (default: the fusion checkpoint's data.path)")
    out: str = opt("runs/eval", "output directory: metrics.json, report.md/html, figures/")
    examples: int = opt(3, "sample queries shown in the report")
    scaling_points: int = opt(4, "gallery sizes for the time-vs-size chart")
    select_rerank: bool = opt(True, "choose rerank's k and alpha on --val-split (never on the "
                              "test split) instead of taking --rerank-k / --alpha")
    val_split: str = opt("validation", "the split rerank's k and alpha are chosen on")
    rerank_ks: list = opt(list(RERANK_KS), "rerank k values tried on --val-split", item_type=int,
                          metavar="K")
    gallery_split: str | None = opt(None, "also judge concept-aware retrieval with test queries "
                                    "against this split's items (e.g. train)")
    gallery_max_items: int | None = opt(None, "rows of --gallery-split used (default: all)")
    ablation: str | None = opt(None, "a `rocoray ablation` output directory whose table the "
                               "report includes")
    explain_cases: int = opt(EXPLAIN_CASES, "test pairs with a lesion box explained and scored for "
                             "localisation (0: none)")
    alphas: list = opt(list(FUSED_SCORE_ALPHAS), "rerank alpha values tried on --val-split",
                       item_type=float, metavar="ALPHA")


def score_configs(cfg: EvaluateConfig) -> dict[str, score.ScoreConfig]:
    """The three scoring jobs, derived from this config, over one shared cache."""
    out = storage.absolute(cfg.out)
    options = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(score.ScoringOptions)}
    options["cache"] = cfg.cache or storage.join(out, "cache")
    made = {}
    for m in METHODS:
        made[m] = score.ScoreConfig(**options, model=m, data=cfg.data,
                                    checkpoint=cfg.two_tower if m is Method.TWO_TOWER else cfg.fusion,
                                    retriever=cfg.two_tower if m is Method.RERANK else None,
                                    out=storage.join(out, m))
    return made


def conclude(metrics: dict) -> None:
    """Say in the log what the report says: the verdict, any result at chance level, the
    sibling accuracy."""
    comparison = metrics["comparison"]
    for d in ("t2i", "i2t"):
        for sentence in comparison["verdict"][d].split(". "):
            log.info("verdict %s: %s", d, sentence.rstrip("."))
    log.info("verdict: %s", comparison["verdict"]["summary"])
    flat = [f"{LABELS[m]} {d}" for m, by_direction in comparison["at_chance"].items()
            for d, at_chance in by_direction.items() if at_chance]
    if flat:
        log.warning("indistinguishable from chance (Recall@10 interval includes %.3f): %s; "
                    "these models have not learnt this data", comparison["chance"].get("R@10", 0.0),
                    ", ".join(flat))
    if metrics["fine_grained"] and not analyses.is_unavailable(metrics["fine_grained"]):
        acc = metrics["fine_grained"]["methods"]
        log.info("sibling accuracy (true item above its one-attribute sibling; chance 0.5): %s",
                 ", ".join(f"{LABELS.get(m, m)} {a['overall']['value']:.3f}"
                           for m, a in acc.items()))


def select_on_validation(cfg: EvaluateConfig, job) -> tuple[dict, dict]:
    """Rerank's k and alpha, chosen on the validation split: the candidates are scored once
    at the largest k, every (k, alpha) is a re-ordering of them. Also returns where the
    validation galleries were encoded (their concept logits choose detection thresholds)."""
    summary = score.execute(job)
    groups = outputs.read_gallery(job.out).column("group").to_numpy()
    ks = [min(k, job.settings.rerank_k) for k in cfg.rerank_ks]
    selection = select_rerank(outputs.read_rescored(job.out), groups, ks, cfg.alphas)
    selection.update(split=cfg.val_split, gallery_size=summary["n"])
    log.info("rerank chosen on %s (%d queries): k=%d, alpha=%g (%s)", cfg.val_split,
             summary["n"], selection["k"], selection["alpha"], selection["criterion"])
    return selection, summary["features"]


def cross_split_topk(cfg: EvaluateConfig, jobs: dict, scored: Scored,
                     gallery_jobs: dict) -> tuple[dict, list]:
    """Each method's top-K for the test queries against the --gallery-split items (encoded
    by the Ray Data stage, like any gallery), and those items' image ids."""
    from core.evaluation.cross_split import across
    from ray_jobs.gallery import encode

    queries, gallery, ids = {}, {}, {}
    for kind in ModelKind:
        queries[kind] = scored.features(kind)
        g = encode(gallery_jobs[kind], kind, tile_side(gallery_jobs[kind], kind)[0])
        gallery[kind] = (g.features("text"), g.features("image"))
        ids[kind] = g.table.column("image_id").to_pylist()
    query_ids = [scored.gallery(k).column("image_id").to_pylist() for k in ModelKind]
    if ids[ModelKind.TWO_TOWER] != ids[ModelKind.FUSION] or query_ids[0] != query_ids[1]:
        raise UserError("the two models' galleries hold other rows; their top-K cannot be "
                        "compared")
    log.info("concept-aware retrieval against the %s split (%d items)", cfg.gallery_split,
             len(ids[ModelKind.FUSION]))
    rerank = jobs[Method.RERANK]  # as chosen on validation, in the scoring jobs' precision
    return (across(scored.model(ModelKind.FUSION), queries, gallery,
                   rerank.settings.replace(precision=rerank.precision)), ids[ModelKind.FUSION])


def read_ablation(cfg: EvaluateConfig) -> dict | None:
    if not cfg.ablation:
        return None
    if not storage.exists(storage.absolute(cfg.ablation), "ablation.json"):
        raise UserError(f"--ablation {cfg.ablation}: no ablation.json there (run "
                        "`rocoray ablation --out DIR` first)")
    ablation = storage.read_json(storage.absolute(cfg.ablation), "ablation.json")
    # relocatable: the figure is looked up next to ablation.json, wherever it now is
    ablation["figure"] = storage.join(storage.absolute(cfg.ablation), "figures", "modality_gap.png")
    return ablation


def prepare_jobs(cfg: EvaluateConfig) -> tuple[dict, dict, object, dict | None]:
    """Every scoring job this evaluation runs, validated before Ray starts: (configs, the
    three test jobs, the validation selection job or None, the --gallery-split jobs or None)."""
    score.check_checkpoint(cfg.two_tower, ModelKind.TWO_TOWER, "--two-tower")  # its own flags
    score.check_checkpoint(cfg.fusion, ModelKind.FUSION, "--fusion")
    configs = score_configs(cfg)
    jobs = {m: score.prepare(c) for m, c in configs.items()}  # every user error, before Ray
    selection_job = None
    if cfg.select_rerank:  # the k tried are capped at the validation split's rows
        rerank = configs[Method.RERANK]
        val = dataclasses.replace(rerank, split=cfg.val_split,
                                  scoring=rerank.scoring.replace(alpha=0.0),
                                  out=storage.join(storage.absolute(cfg.out), "validation", "rerank"))
        rows = score.prepare(dataclasses.replace(val, scoring=val.scoring.capped(1))).rows
        k_max = min(max(cfg.rerank_ks), rows)
        selection_job = score.prepare(dataclasses.replace(val, scoring=val.scoring.replace(
            k=min(val.scoring.k, k_max), rerank_k=k_max)))
    gallery_jobs = None
    if cfg.gallery_split:  # its rows are only encoded: k=1 passes prepare's size check
        gallery_jobs = {kind: score.prepare(dataclasses.replace(
            configs[Method(kind)], split=cfg.gallery_split, max_items=cfg.gallery_max_items,
            scoring=configs[Method(kind)].scoring.capped(1))) for kind in ModelKind}
    return configs, jobs, selection_job, gallery_jobs


def score_methods(cfg: EvaluateConfig, configs: dict, jobs: dict, selection_job, clock):
    """Rerank's k and alpha chosen on validation, then the three scoring jobs on the test
    split: (summaries, selection, validation features)."""
    selection, val_features = None, None
    if selection_job is not None:
        with clock.stage("rerank selection on validation"):
            selection, val_features = select_on_validation(cfg, selection_job)
        k = min(selection["k"], jobs[Method.RERANK].rows)
        rerank = configs[Method.RERANK]
        jobs[Method.RERANK] = score.prepare(dataclasses.replace(rerank, scoring=rerank.scoring.replace(
            k=min(rerank.scoring.k, k), rerank_k=k, alpha=selection["alpha"])))
    summaries = {}
    for m in METHODS:
        with clock.stage(f"score {m}"):
            summaries[m] = score.execute(jobs[m])
    n = summaries[Method.FUSION]["n"]
    for m, s in summaries.items():
        if s["n"] != n:
            raise UserError(f"{m} scored {s['n']} items, fusion {n}: the galleries differ")
    return summaries, selection, val_features


def headline(cfg: EvaluateConfig, summaries: dict, scored: Scored, selection) -> dict:
    """metrics.json's scoring part: each method's recall, timings and size, the comparison."""
    n = summaries[Method.FUSION]["n"]
    params = {Method(kind): count_parameters(scored.model(kind)) for kind in ModelKind}
    params[Method.RERANK] = sum(params[Method(kind)] for kind in Method.RERANK.models)
    return {
        "data": summaries[Method.FUSION]["data"], "split": cfg.split, "gallery_size": n,
        "skipped": summaries[Method.FUSION]["skipped"],
        "methods": {m: {"metrics": s["metrics"], "timings": s["timings"],
                        "parameters": params[m], "checkpoints": s["checkpoints"],
                        **({"rerank_k": s["rerank_k"], "alpha": s["alpha"]} if m is Method.RERANK else {})}
                    for m, s in summaries.items()},
        "training": {kind: analyses.training_record(path)
                     for kind, path in scored.checkpoints.items()},
        "comparison": compare({m: {d: scored.topk(m, d)[2] for d in ("t2i", "i2t")}
                               for m in METHODS}, n, groups=scored.groups()),
        "rerank_selection": selection,
    }


def analyse(cfg: EvaluateConfig, metrics: dict, scored: Scored, jobs: dict, gallery_jobs,
            val_features, figures: Path, clock) -> dict:
    """Every analysis of the report, each timed and guarded (one that cannot run on this
    data says n/a and the others go on); returns the example queries."""
    data, rerank = metrics["data"], jobs[Method.RERANK].settings  # as chosen on validation

    def step(key, stage, label, fn, *args):
        with clock.stage(stage):
            metrics[key] = guarded(label, fn, *args)

    full = {m: metrics["methods"][m]["timings"]["score_s"] for m in METHODS}
    step("scaling", "scaling curve", "the scaling curve", analyses.scaling_curve, scored,
         cfg.scaling_points, rerank.rerank_k, full, jobs[Method.FUSION].precision)
    step("fine_grained", "sibling accuracy", "sibling accuracy", analyses.sibling_accuracy,
         scored, data, cfg.split, rerank.alpha)
    step("caption_quality", "caption quality", "report quality of the retrieved captions",
         analyses.retrieved_caption_quality, scored)
    cross = (cfg.gallery_split, lambda: cross_split_topk(cfg, jobs, scored, gallery_jobs)
             ) if gallery_jobs else None
    step("concepts", "concepts", "the concept analyses", analyses.concept_sections, scored,
         data, cfg.split, cfg.val_split, val_features, cross)
    examples = analyses.pick_examples(scored, cfg.examples)
    log.info("explaining %d test pairs (attention, Grad-CAM, Integrated Gradients; %s)",
             cfg.explain_cases, jobs[Method.FUSION].precision)
    step("explanations", "explanations", "the explanations", explanation_study, data,
         cfg.split, {k: scored.loaded(k) for k in ModelKind}, cfg.explain_cases,
         figures, examples[Method.RERANK]["t2i"], jobs[Method.FUSION].precision)
    step("modality_gap", "modality gap", "the modality gap", analyses.modality_gaps, scored,
         figures)
    return examples


def run(cfg: EvaluateConfig) -> dict:
    """Validate, score the three methods, analyse, write metrics.json and the report. The
    returned metrics carry each stage's seconds and peak memory (``stages``)."""
    ablation = read_ablation(cfg)
    configs, jobs, selection_job, gallery_jobs = prepare_jobs(cfg)
    init_ray(cfg.address)
    clock = StageClock()
    summaries, selection, val_features = score_methods(cfg, configs, jobs, selection_job, clock)
    out = storage.absolute(cfg.out)
    figures = Path(out) / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    scored = Scored({m: jobs[m].out for m in METHODS},
                    {kind: jobs[kind].checkpoints[kind] for kind in ModelKind})
    metrics = headline(cfg, summaries, scored, selection)
    examples = analyse(cfg, metrics, scored, jobs, gallery_jobs, val_features, figures, clock)
    metrics["ablation"] = ablation
    conclude(metrics)
    with clock.stage("report"):
        images = analyses.example_images(metrics["data"], cfg.split, examples)
        metrics["stages"] = clock.stages
        metrics["provenance"] = provenance(metrics["data"])
        storage.write_json(out, "metrics.json", metrics)
        metrics["report"] = write_report(metrics, examples, images, out)
    return metrics


def main(argv=None) -> dict:
    cfg = parse(EvaluateConfig, argv, "rocoray evaluate", __doc__)
    setup_logging()
    metrics = run_cli("rocoray evaluate", lambda: run(cfg))
    print("\n" + headline_table(metrics))
    print(f"\nreport: {metrics['report']['html']}  (and {metrics['report']['markdown']})")
    return metrics


if __name__ == "__main__":
    main()
