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
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import storage
from core.checkpoint import load_checkpoint, read_checkpoint_config
from core import concept_evaluation, fine_grained
from core.explain_study import explanation_study
from core.caption_quality import caption_quality
from core.comparison import LABELS, METHODS, compare
from core.metrics import ranks_from_scores
from core.scoring.rerank_selection import select_rerank
from core.significance import bootstrap_ci, per_query
from core.config import to_dict
from core.data.rocov2 import image_bytes_column, read_split
from core.evaluation import rerank_retrieval, stream_retrieval
from core.feature_store import FeatureStore
from core.models import MODELS, count_parameters
from core.report import fit_exponent, headline_table, write_report
from core.scoring import outputs, tile_shape
from ray_jobs import score
from ray_jobs.options import UserError, opt, parse, run_cli
from ray_jobs.runtime import init_ray, setup_logging

log = logging.getLogger("rocoray.evaluate")



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
    rerank_ks: list = opt([16, 32, 64], "rerank k values tried on --val-split", item_type=int,
                          metavar="K")
    gallery_split: str | None = opt(None, "also judge concept-aware retrieval with test queries "
                                    "against this split's items (e.g. train)")
    gallery_max_items: int | None = opt(None, "rows of --gallery-split used (default: all)")
    ablation: str | None = opt(None, "a `rocoray ablation` output directory whose table the "
                               "report includes")
    explain_cases: int = opt(24, "test pairs with a lesion box explained and scored for "
                             "localisation (0: none)")
    alphas: list = opt([0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0], "rerank alpha values tried on --val-split",
                       item_type=float, metavar="ALPHA")


def score_configs(cfg: EvaluateConfig) -> dict[str, score.ScoreConfig]:
    """The three scoring jobs, derived from this config, over one shared cache."""
    out = storage.absolute(cfg.out)
    options = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(score.ScoringOptions)}
    options["cache"] = cfg.cache or storage.join(out, "cache")
    made = {}
    for m in METHODS:
        made[m] = score.ScoreConfig(**options, model=m, data=cfg.data,
                                    checkpoint=cfg.two_tower if m == "two_tower" else cfg.fusion,
                                    retriever=cfg.two_tower if m == "rerank" else None,
                                    out=storage.join(out, m))
    return made


def load_features(summary: dict, kind: str):
    store = FeatureStore(summary["features"][kind], MODELS[kind].feature_types)
    blocks = store.read_meta()["blocks"]
    return store.read_all("text", blocks), store.read_all("image", blocks)


@dataclass
class Scored:
    """The finished scoring jobs, with each checkpoint and each encoded test gallery loaded
    at most once for the in-process analyses (scaling, fine-grained, concepts, explanations,
    modality gap)."""

    jobs: dict
    _loaded: dict = field(default_factory=dict)
    _features: dict = field(default_factory=dict)

    def loaded(self, kind: str):
        if kind not in self._loaded:
            self._loaded[kind] = load_checkpoint(self.jobs[kind].checkpoints[kind])
        return self._loaded[kind]

    def model(self, kind: str):
        return self.loaded(kind).model

    def features(self, kind: str):
        """(text features, image features) of the test gallery ``kind`` encoded."""
        if kind not in self._features:
            self._features[kind] = load_features(score.load_summary(self.jobs[kind].out), kind)
        return self._features[kind]


def scaling_curve(scored: Scored, points: int, rerank_k: int) -> dict:
    """Scoring time of each method at growing gallery sizes, one process, on the features the
    scoring jobs encoded (encoders excluded: they are linear in N)."""
    fusion, two_tower = scored.model("fusion"), scored.model("two_tower")
    f_text, f_image = scored.features("fusion")
    t_text, t_image = scored.features("two_tower")
    groups = outputs.read_gallery(scored.jobs["fusion"].out).column("group").to_numpy()
    n = len(groups)
    low = max(rerank_k, min(64, n))
    sizes = sorted({int(s) for s in np.geomspace(low, n, points)}) if n > low else [n]
    seconds = {m: [] for m in METHODS}
    for size in sizes:
        head, g = slice(0, size), groups[:size]
        t0 = time.perf_counter()
        stream_retrieval(fusion, f_text.index(head), f_image.index(head), g, g,
                         k=min(10, size), block=tile_shape("fusion", "cpu")[0])
        seconds["fusion"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        kc = min(rerank_k, size)
        acc = stream_retrieval(two_tower, t_text.index(head), t_image.index(head), g, g, k=kc,
                               block=tile_shape("two_tower", "cpu")[0])
        seconds["two_tower"].append(time.perf_counter() - t0)
        first = {d: (*acc.topk(d), r) for d, r in zip(("t2i", "i2t"), acc.ranks())}
        t0 = time.perf_counter()
        rerank_retrieval(fusion, f_text.index(head), f_image.index(head), g, first,
                         k=min(10, kc), block=tile_shape("fusion", "cpu")[0])
        seconds["rerank"].append(seconds["two_tower"][-1] + time.perf_counter() - t0)
        log.info("scaling N=%d: %s", size, {m: round(s[-1], 3) for m, s in seconds.items()})
    return {"sizes": sizes, "seconds": seconds,
            "exponents": {m: fit_exponent(sizes, s) for m, s in seconds.items()}}


def pick_examples(out: str, n: int, count: int, seed: int = 0) -> dict:
    """Top-3 of the same sample queries for each method, with each query's exact rank (the
    report shows the correct item when it was missed)."""
    gallery = outputs.read_gallery(storage.join(out, "fusion"))
    ids = gallery.column("image_id").to_pylist()
    captions = gallery.column("caption").to_pylist()
    groups = gallery.column("group").to_numpy()
    queries = np.random.default_rng(seed).choice(n, size=min(count, n), replace=False)
    examples = {}
    for m in METHODS:
        runs = {d: outputs.read_topk(storage.join(out, m), d) for d in ("t2i", "i2t")}
        top, rank = {d: r[0] for d, r in runs.items()}, {d: r[2] for d, r in runs.items()}
        examples[m] = {
            "t2i": [{"query_id": ids[q], "query_caption": captions[q], "rank": int(rank["t2i"][q]),
                     "top_ids": [ids[j] for j in top["t2i"][q][:3]],
                     "hits": [bool(groups[j] == groups[q]) for j in top["t2i"][q][:3]]}
                    for q in queries],
            "i2t": [{"query_id": ids[q], "query_caption": captions[q], "rank": int(rank["i2t"][q]),
                     "top_captions": [captions[j] for j in top["i2t"][q][:3]],
                     "hits": [bool(groups[j] == groups[q]) for j in top["i2t"][q][:3]]}
                    for q in queries],
        }
    return examples


def training_record(checkpoint: str) -> dict:
    """How a checkpoint was trained: its resolved config and its per-epoch history (saved with
    every checkpoint), for the report's training section and curves."""
    import json

    history = Path(checkpoint) / "history.json"
    return {"config": to_dict(read_checkpoint_config(checkpoint)),
            "history": json.loads(history.read_text()) if history.exists() else []}


def conclude(comparison: dict) -> None:
    """Say in the log what the report says: the verdict, and any result at chance level."""
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


def example_images(data, split: str, examples: dict) -> dict[str, bytes]:
    wanted = set()
    for per_method in examples.values():
        for q in per_method["t2i"]:
            wanted.update(q["top_ids"])
        for q in per_method["i2t"]:
            wanted.add(q["query_id"])
    table = read_split(data, split, columns=["image_id", "image"])
    ids = table.column("image_id").to_pylist()
    blobs = image_bytes_column(table)
    return {i: b for i, b in zip(ids, blobs) if i in wanted}


def select_on_validation(cfg: EvaluateConfig, job) -> tuple[dict, dict]:
    """Rerank's k and alpha, chosen on the validation split: the candidates are scored once
    at the largest k, every (k, alpha) is a re-ordering of them. Also returns where the
    validation galleries were encoded (their concept logits choose detection thresholds)."""
    summary = score.execute(job)
    groups = outputs.read_gallery(job.out).column("group").to_numpy()
    ks = [min(k, job.cfg.rerank_k) for k in cfg.rerank_ks]
    selection = select_rerank(score.read_rescored(job.out), groups, ks, cfg.alphas)
    selection.update(split=cfg.val_split, gallery_size=summary["n"])
    log.info("rerank chosen on %s (%d queries): k=%d, alpha=%g (%s)", cfg.val_split,
             summary["n"], selection["k"], selection["alpha"], selection["criterion"])
    return selection, summary["features"]


def fine_grained_evaluation(cfg: EvaluateConfig, scored: Scored, alpha: float) -> dict | None:
    """Sibling accuracy of each method (and of the fusion model's own ITC heads, an
    ablation: the same encoders without cross-attention) on the split's one-attribute
    siblings, from the generator's stated attributes. None without families in the data."""
    jobs = scored.jobs
    ids = outputs.read_gallery(jobs["fusion"].out).column("image_id").to_pylist()
    wanted = ["image_id", *fine_grained.COLUMNS]
    table = read_split(jobs["fusion"].cfg.data, cfg.split, columns=wanted)
    if not set(wanted) <= set(table.column_names):
        return None
    pairs = fine_grained.sibling_pairs({c: table.column(c).to_pylist() for c in wanted}, ids)
    if pairs is None or not len(pairs["query"]):
        return None
    fusion, two_tower = scored.model("fusion"), scored.model("two_tower")
    f_text, f_image = scored.features("fusion")
    t_text, t_image = scored.features("two_tower")

    def tt(ti, ii):
        return fine_grained.pair_scores(two_tower, t_text, t_image, ti, ii)

    def itc(ti, ii):
        return (f_text.embed[ti] * f_image.embed[ii]).sum(-1).numpy()

    wins = {"two_tower": fine_grained.score_wins(tt, pairs),
            "fusion": fine_grained.score_wins(
                lambda ti, ii: fine_grained.pair_scores(fusion, f_text, f_image, ti, ii), pairs),
            "rerank": fine_grained.rerank_wins(score.read_rescored(jobs["rerank"].out), alpha,
                                               pairs, tt),
            "fusion_itc": fine_grained.score_wins(itc, pairs)}
    result = fine_grained.compare_methods(wins, pairs)
    groups = outputs.read_gallery(jobs["fusion"].out).column("group").to_numpy()
    scores = (f_text.embed @ f_image.embed.T).numpy()
    result["fusion_itc_retrieval"] = {
        d: {k: bootstrap_ci(per_query(ranks_from_scores(s, groups, groups), k)).as_dict()
            for k in ("R@1", "R@5", "R@10") if int(k[2:]) <= len(groups)}
        for d, s in (("t2i", scores), ("i2t", scores.T))}
    return result


class CuiLookup:
    """Each split's ``cui`` lists by image id, read once per split."""

    def __init__(self, data):
        self.data, self.splits = data, {}

    def __call__(self, split: str, ids: list) -> list:
        if split not in self.splits:
            table = read_split(self.data, split, columns=["image_id", "cui"])
            self.splits[split] = dict(zip(table.column("image_id").to_pylist(),
                                          table.column("cui").to_pylist()))
        return [self.splits[split].get(i) or [] for i in ids]


def cross_split_topk(cfg: EvaluateConfig, scored: Scored, gallery_jobs: dict) -> tuple[dict, list]:
    """Each method's top-K for the test queries against the --gallery-split items (encoded
    by the Ray Data stage, like any gallery), and those items' image ids."""
    from core.cross_split import across
    from ray_jobs.gallery import encode

    jobs = scored.jobs
    queries, gallery, ids = {}, {}, {}
    for kind in ("two_tower", "fusion"):
        queries[kind] = scored.features(kind)
        g = encode(gallery_jobs[kind], kind, score.tile_side(gallery_jobs[kind], kind)[0])
        gallery[kind] = (g.features("text"), g.features("image"))
        ids[kind] = g.table.column("image_id").to_pylist()
    query_ids = [outputs.read_gallery(jobs[k].out).column("image_id").to_pylist()
                 for k in ("two_tower", "fusion")]
    if ids["two_tower"] != ids["fusion"] or query_ids[0] != query_ids[1]:
        raise UserError("the two models' galleries hold other rows; their top-K cannot be "
                        "compared")
    models = {"fusion": scored.model("fusion")}
    rr = jobs["rerank"].cfg
    log.info("concept-aware retrieval against the %s split (%d items)", cfg.gallery_split,
             len(ids["fusion"]))
    return across(models, queries, gallery, cfg.k, rr.rerank_k, rr.alpha), ids["fusion"]


def concept_sections(cfg: EvaluateConfig, scored: Scored, val_features: dict | None,
                     gallery_jobs: dict | None = None) -> dict:
    """Concept detection by each model's concept head (threshold chosen on the validation
    galleries the rerank selection encoded) and concept-aware retrieval of the three
    methods' top-K lists; "n/a" when the data has no concept ids."""
    jobs = scored.jobs
    cuis = CuiLookup(jobs["fusion"].cfg.data)
    gallery = outputs.read_gallery(jobs["fusion"].out)
    ids = gallery.column("image_id").to_pylist()
    test_cuis = cuis(cfg.split, ids)
    if not concept_evaluation.has_concepts(test_cuis):
        return {"available": False, "reason": concept_evaluation.NO_CONCEPTS}
    topk = {m: {d: outputs.read_topk(jobs[m].out, d)[0] for d in ("t2i", "i2t")} for m in METHODS}
    rng = np.random.default_rng(0)
    k = topk["fusion"]["t2i"].shape[1]
    topk["random"] = {d: np.stack([rng.permutation(len(ids))[:k] for _ in ids])
                      for d in ("t2i", "i2t")}
    out = {"available": True, "retrieval": {"test": concept_evaluation.retrieval(
        test_cuis, test_cuis, topk)}, "detection": None}
    if gallery_jobs:
        across, gallery_ids = cross_split_topk(cfg, scored, gallery_jobs)
        across["random"] = {d: np.stack([rng.permutation(len(gallery_ids))[:k] for _ in ids])
                            for d in ("t2i", "i2t")}
        out["retrieval"][cfg.gallery_split] = concept_evaluation.retrieval(
            test_cuis, cuis(cfg.gallery_split, gallery_ids), across)
    for kind in ("two_tower", "fusion"):
        vocab = scored.loaded(kind).concepts
        own = outputs.read_gallery(jobs[kind].out)  # this model's gallery, in its own order
        logits = outputs.concept_logits(own)
        if vocab is None or logits is None:
            continue
        own_cuis = cuis(cfg.split, own.column("image_id").to_pylist())
        val_cuis, val_logits = None, None
        if val_features and kind in val_features:
            val_gallery = outputs.read_gallery(val_features[kind])
            val_cuis = cuis(cfg.val_split, val_gallery.column("image_id").to_pylist())
            val_logits = {kind: outputs.concept_logits(val_gallery)}
        found = concept_evaluation.detection(vocab, own_cuis, {kind: logits}, val_cuis, val_logits)
        if out["detection"] is None:
            out["detection"] = found
        else:
            out["detection"]["methods"][kind] = found["methods"][kind]
    if out["detection"] is None:
        out["detection_reason"] = "no concept head in these checkpoints (model.concepts.weight 0)"
    return out


def figures_dir(out: str) -> Path:
    path = Path(out) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


ALIGNMENT_LABELS = {"abm": "AbM", "mba": "MbA"}


def modality_gaps(scored: Scored, out: str) -> dict:
    """The modality gap of the two-tower model and of the fusion model's ITC heads on the test
    embeddings the scoring jobs encoded, with their PCA / t-SNE figure."""
    from core.modality_gap import gap_figure, modality_gap

    alignment = scored.loaded("two_tower").config.model.two_tower.alignment
    t_text, t_image = scored.features("two_tower")
    f_text, f_image = scored.features("fusion")
    gaps = {f"two-tower ({ALIGNMENT_LABELS[alignment]})":
            modality_gap(t_image.embed.numpy(), t_text.embed.numpy()),
            "fusion ITC heads (AbM)": modality_gap(f_image.embed.numpy(), f_text.embed.numpy())}
    figure = gap_figure(gaps, figures_dir(out) / "modality_gap.png")
    return {"models": {k: {m: v for m, v in g.items() if m not in ("pca", "tsne")}
                       for k, g in gaps.items()}, "figure": str(figure)}


def run(cfg: EvaluateConfig) -> dict:
    ablation = None
    if cfg.ablation:
        if not storage.exists(storage.absolute(cfg.ablation), "ablation.json"):
            raise UserError(f"--ablation {cfg.ablation}: no ablation.json there (run "
                            "`rocoray ablation --out DIR` first)")
        ablation = storage.read_json(storage.absolute(cfg.ablation), "ablation.json")
        # relocatable: the figure is looked up next to ablation.json, wherever it now is
        ablation["figure"] = storage.join(storage.absolute(cfg.ablation), "figures", "modality_gap.png")
    score.check_checkpoint(cfg.two_tower, "two_tower", "--two-tower")  # this job's own flags
    score.check_checkpoint(cfg.fusion, "fusion", "--fusion")
    configs = score_configs(cfg)
    jobs = {m: score.prepare(c) for m, c in configs.items()}  # every user error, before Ray
    selection_job = None
    if cfg.select_rerank:  # the k tried are capped at the validation split's rows
        val = dataclasses.replace(configs["rerank"], split=cfg.val_split, alpha=0.0,
                                  out=storage.join(storage.absolute(cfg.out), "validation", "rerank"))
        rows = score.prepare(dataclasses.replace(val, k=1, rerank_k=1)).rows
        k_max = min(max(cfg.rerank_ks), rows)
        selection_job = score.prepare(dataclasses.replace(val, k=min(val.k, k_max), rerank_k=k_max))
    gallery_jobs = None
    if cfg.gallery_split:  # its rows are only encoded: k=1 passes prepare's size check
        gallery_jobs = {kind: score.prepare(dataclasses.replace(
            configs[kind], split=cfg.gallery_split, max_items=cfg.gallery_max_items, k=1,
            rerank_k=1)) for kind in ("two_tower", "fusion")}
    init_ray(cfg.address)
    selection, val_features = None, None
    if selection_job is not None:
        selection, val_features = select_on_validation(cfg, selection_job)
        k = min(selection["k"], jobs["rerank"].rows)
        jobs["rerank"] = score.prepare(dataclasses.replace(
            configs["rerank"], k=min(cfg.k, k), rerank_k=k, alpha=selection["alpha"]))
    summaries = {m: score.execute(jobs[m]) for m in METHODS}
    n = summaries["fusion"]["n"]
    for m, s in summaries.items():
        if s["n"] != n:
            raise UserError(f"{m} scored {s['n']} items, fusion {n}: the galleries differ")
    out = storage.absolute(cfg.out)
    data = summaries["fusion"]["data"]
    scored = Scored(jobs)
    params = {kind: count_parameters(scored.model(kind)) for kind in ("two_tower", "fusion")}
    params["rerank"] = params["two_tower"] + params["fusion"]
    metrics = {
        "data": data, "split": cfg.split, "gallery_size": n,
        "skipped": summaries["fusion"]["skipped"],
        "methods": {m: {"metrics": s["metrics"], "timings": s["timings"],
                        "parameters": params[m], "checkpoints": s["checkpoints"],
                        **({"rerank_k": s["rerank_k"], "alpha": s["alpha"]} if m == "rerank" else {})}
                    for m, s in summaries.items()},
        "scaling": scaling_curve(scored, cfg.scaling_points, cfg.rerank_k),
        "training": {kind: training_record(jobs[kind].checkpoints[kind])
                     for kind in ("two_tower", "fusion")},
        "comparison": compare({m: dict(zip(("t2i", "i2t"), (outputs.read_topk(jobs[m].out, d)[2]
                                                             for d in ("t2i", "i2t"))))
                               for m in METHODS}, n,
                              groups=outputs.read_gallery(jobs["fusion"].out).column("group")
                              .to_numpy()),
    }
    metrics["rerank_selection"] = selection
    metrics["fine_grained"] = fine_grained_evaluation(cfg, scored, jobs["rerank"].cfg.alpha)
    captions = outputs.read_gallery(jobs["fusion"].out).column("caption").to_pylist()
    log.info("report quality of the retrieved captions (BLEU-4, METEOR, ROUGE-L, CIDEr @K)")
    metrics["caption_quality"] = caption_quality(
        captions, {m: {d: outputs.read_topk(jobs[m].out, d)[0] for d in ("t2i", "i2t")}
                   for m in METHODS})
    metrics["concepts"] = concept_sections(cfg, scored, val_features, gallery_jobs)
    examples = pick_examples(out, n, cfg.examples)
    log.info("explaining test pairs with lesion boxes (attention, Grad-CAM, Integrated Gradients)")
    metrics["explanations"] = explanation_study(
        data, cfg.split, {k: scored.loaded(k) for k in ("two_tower", "fusion")},
        cfg.explain_cases, figures_dir(out), examples["rerank"]["t2i"])
    metrics["modality_gap"] = modality_gaps(scored, out)
    metrics["ablation"] = ablation
    conclude(metrics["comparison"])
    if metrics["fine_grained"]:
        acc = metrics["fine_grained"]["methods"]
        log.info("sibling accuracy (true item above its one-attribute sibling; chance 0.5): %s",
                 ", ".join(f"{LABELS.get(m, m)} {a['overall']['value']:.3f}"
                           for m, a in acc.items()))
    storage.write_json(out, "metrics.json", metrics)
    paths = write_report(metrics, examples, example_images(data, cfg.split, examples), out)
    metrics["report"] = paths
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
