"""What an evaluation computes beyond the scoring jobs' Recall@K, in one process, on what
those jobs left behind (``Scored``): scoring time vs gallery size, sibling accuracy,
concept detection and concept-aware retrieval, the modality gap, report quality of the
retrieved captions, the example queries, and each model's training record. Every function
takes what it needs as arguments; ``ray_jobs.evaluate`` calls them in order."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from core.concepts import evaluation as concept_evaluation
from core.evaluation import fine_grained
from core.checkpoint import read_checkpoint_config
from core.evaluation.comparison import DIRECTIONS, FUSION_ITC, METHODS
from core.config import to_dict
from core.data.rocov2 import image_bytes_column, read_split
from core.evaluation.reference import rerank_retrieval, stream_retrieval
from core.scoring.pairs import pair_scores
from core.analyses.scored import Scored
from core.metrics import ranks_from_scores
from core.report.common import SLOPE_MIN_SPAN, fit_exponent
from core.scoring import outputs, tile_shape
from core.evaluation.significance import bootstrap_ci, per_query
from core.models.kind import ModelKind

log = logging.getLogger("rocoray.evaluate")


def unavailable(reason: str) -> dict:
    """What an analysis that cannot run on this data returns; the report prints ``reason``."""
    return {"available": False, "reason": reason if reason.startswith("n/a") else f"n/a: {reason}"}


def is_unavailable(value) -> bool:
    return isinstance(value, dict) and value.get("available") is False


def guarded(label: str, analysis: Callable, *args, **kwargs):
    """Run one analysis of the report; if it fails on this data, the report says so ("n/a:
    <label> failed: <error>") and the evaluation goes on: a late analysis never throws away
    the scoring the run already did. The traceback goes to the log."""
    try:
        return analysis(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported in the report and the log, not dropped
        log.warning("%s failed; the report says n/a: %s: %s", label, type(exc).__name__, exc,
                    exc_info=True)
        return unavailable(f"{label} failed on this data ({type(exc).__name__}: {exc})")


def scaling_sizes(n: int, rerank_k: int, points: int, full_known: bool) -> list[int]:
    """The gallery sizes the scaling curve measures (each at least ``rerank_k``, so rerank
    re-scores k candidates at every size). Without the full gallery's time: ``points`` sizes,
    geometric up to ``n``. With it (the scoring jobs scored all ``n`` already): ``points`` - 1
    smaller sizes, geometric from ``low`` (at least ``rerank_k``) up to the larger of n/4 and
    the ``SLOPE_MIN_SPAN`` x ``low`` a slope needs, below ``n``. On a gallery large enough
    that n/4 is the larger (n = 857, k = 32: up to 214), each size scores at most a 16th of
    the full gallery's pairs; on smaller ones the span wins and the largest size can score
    much more (n = 416, k = 32: 128 items, 9 % of the pairs; n = 100: 99 items, 98 %)."""
    if not full_known:
        low = max(rerank_k, min(64, n))
        return sorted({int(s) for s in np.geomspace(low, n, points)}) if n > low else [n]
    low = max(rerank_k, min(64, int(n // 4 / SLOPE_MIN_SPAN)))
    top = min(n - 1, max(n // 4, int(SLOPE_MIN_SPAN * low)))
    if top < low:
        return []
    return sorted({int(round(s)) for s in np.geomspace(low, top, max(points - 1, 1))})


def scaling_curve(scored: Scored, points: int, rerank_k: int,
                  full_seconds: dict[str, float] | None = None, precision: str = "fp32") -> dict:
    """Scoring time of each method at growing gallery sizes, one process, on the features the
    scoring jobs encoded (encoders excluded: they are linear in N), fusion in the scoring
    jobs' ``precision``. The full gallery was scored already: with ``full_seconds`` (each
    method's scoring time there) it is not scored again; only the smaller sizes are
    measured (``scaling_sizes``), and the slopes are fit on them."""
    fusion, two_tower = scored.model("fusion"), scored.model("two_tower")
    f_text, f_image = scored.features("fusion")
    t_text, t_image = scored.features("two_tower")
    groups = scored.groups()
    n = len(groups)
    sizes = scaling_sizes(n, rerank_k, points, full_known=full_seconds is not None)
    seconds = {m: [] for m in METHODS}
    for size in sizes:
        head, g = slice(0, size), groups[:size]
        t0 = time.perf_counter()
        stream_retrieval(fusion, f_text.index(head), f_image.index(head), g, g,
                         k=min(10, size), block=tile_shape("fusion", "cpu")[0],
                         precision=precision)
        seconds["fusion"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        kc = min(rerank_k, size)
        acc = stream_retrieval(two_tower, t_text.index(head), t_image.index(head), g, g, k=kc,
                               block=tile_shape("two_tower", "cpu")[0])
        seconds["two_tower"].append(time.perf_counter() - t0)
        first = {d: (*acc.topk(d), r) for d, r in zip(DIRECTIONS, acc.ranks())}
        t0 = time.perf_counter()
        rerank_retrieval(fusion, f_text.index(head), f_image.index(head), g, first,
                         k=min(10, kc), block=tile_shape("fusion", "cpu")[0],
                         precision=precision)
        seconds["rerank"].append(seconds["two_tower"][-1] + time.perf_counter() - t0)
        log.info("scaling N=%d: %s", size, {m: round(s[-1], 3) for m, s in seconds.items()})
    out = {"sizes": sizes, "seconds": seconds, "precision": precision,
           "exponents": {m: fit_exponent(sizes, s) for m, s in seconds.items()}}
    if full_seconds is not None:
        out["full"] = {"size": n, "seconds": {m: full_seconds[m] for m in METHODS},
                       "source": "the scoring jobs (not scored again)"}
    return out


def sibling_accuracy(scored: Scored, data, split: str, alpha: float) -> dict | None:
    """Sibling accuracy of each method (and of the fusion model's own ITC heads, an
    ablation: the same encoders without cross-attention) on the split's one-attribute
    siblings, from the generator's stated attributes. None without families in the data."""
    ids = scored.gallery().column("image_id").to_pylist()
    wanted = ["image_id", *fine_grained.COLUMNS]
    table = read_split(data, split, columns=wanted)
    if not set(wanted) <= set(table.column_names):
        return None
    pairs = fine_grained.sibling_pairs({c: table.column(c).to_pylist() for c in wanted}, ids)
    if pairs is None or not len(pairs["query"]):
        return None
    fusion, two_tower = scored.model("fusion"), scored.model("two_tower")
    f_text, f_image = scored.features("fusion")
    t_text, t_image = scored.features("two_tower")

    def tt(ti, ii):
        return pair_scores(two_tower, t_text, t_image, ti, ii)

    def itc(ti, ii):
        return (f_text.embed[ti] * f_image.embed[ii]).sum(-1).numpy()

    wins = {"two_tower": fine_grained.score_wins(tt, pairs),
            "fusion": fine_grained.score_wins(
                lambda ti, ii: pair_scores(fusion, f_text, f_image, ti, ii), pairs),
            "rerank": fine_grained.rerank_wins(scored.rescored(), alpha, pairs, tt),
            FUSION_ITC: fine_grained.score_wins(itc, pairs)}
    result = fine_grained.compare_methods(wins, pairs)
    groups = scored.groups()
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


def _random_topk(rng, gallery: int, queries: int, k: int) -> dict:
    return {d: np.stack([rng.permutation(gallery)[:k] for _ in range(queries)])
            for d in DIRECTIONS}


def concept_sections(scored: Scored, data, split: str, val_split: str,
                     val_features: dict | None,
                     cross_split: tuple[str, Callable[[], tuple[dict, list]]] | None = None) -> dict:
    """Concept detection by each model's concept head (threshold chosen on the validation
    galleries ``val_features`` names) and concept-aware retrieval of the three methods' top-K
    lists; with ``cross_split`` = (gallery split, a function returning each method's top-K
    against it and its image ids), also retrieval against that split. "n/a" when the data
    has no concept ids (and the other split is then never encoded)."""
    cuis = CuiLookup(data)
    ids = scored.gallery().column("image_id").to_pylist()
    test_cuis = cuis(split, ids)
    if not concept_evaluation.has_concepts(test_cuis):
        return {"available": False, "reason": concept_evaluation.NO_CONCEPTS}
    topk = {m: {d: scored.topk(m, d)[0] for d in DIRECTIONS} for m in METHODS}
    rng = np.random.default_rng(0)
    k = topk["fusion"]["t2i"].shape[1]
    topk["random"] = _random_topk(rng, len(ids), len(ids), k)
    out = {"available": True, "retrieval": {"test": concept_evaluation.retrieval(
        test_cuis, test_cuis, topk)}, "detection": None}
    if cross_split:
        gallery_split, topk_against = cross_split
        across, gallery_ids = topk_against()
        across["random"] = _random_topk(rng, len(gallery_ids), len(ids), k)
        out["retrieval"][gallery_split] = concept_evaluation.retrieval(
            test_cuis, cuis(gallery_split, gallery_ids), across)
    for kind in ModelKind:
        vocab = scored.loaded(kind).concepts
        own = scored.gallery(kind)  # this model's gallery, in its own order
        logits = outputs.concept_logits(own)
        if vocab is None or logits is None:
            continue
        own_cuis = cuis(split, own.column("image_id").to_pylist())
        val_cuis, val_logits = None, None
        if val_features and kind in val_features:
            val_gallery = outputs.read_gallery(val_features[kind])
            val_cuis = cuis(val_split, val_gallery.column("image_id").to_pylist())
            val_logits = {kind: outputs.concept_logits(val_gallery)}
        found = concept_evaluation.detection(vocab, own_cuis, {kind: logits}, val_cuis, val_logits)
        if out["detection"] is None:
            out["detection"] = found
        else:
            out["detection"]["methods"][kind] = found["methods"][kind]
    if out["detection"] is None:
        out["detection_reason"] = "no concept head in these checkpoints (model.concepts.weight 0)"
    return out


ALIGNMENT_LABELS = {"abm": "AbM", "mba": "MbA"}


def modality_gaps(scored: Scored, figures_dir: Path) -> dict:
    """The modality gap of the two-tower model and of the fusion model's ITC heads on the test
    embeddings the scoring jobs encoded, with their PCA / t-SNE figure."""
    from core.evaluation.modality_gap import gap_figure, modality_gap

    alignment = scored.loaded("two_tower").config.model.two_tower.alignment
    t_text, t_image = scored.features("two_tower")
    f_text, f_image = scored.features("fusion")
    gaps = {f"two-tower ({ALIGNMENT_LABELS[alignment]})":
            modality_gap(t_image.embed.numpy(), t_text.embed.numpy()),
            "fusion ITC heads (AbM)": modality_gap(f_image.embed.numpy(), f_text.embed.numpy())}
    figure = gap_figure(gaps, Path(figures_dir) / "modality_gap.png")
    return {"models": {k: {m: v for m, v in g.items() if m not in ("pca", "tsne")}
                       for k, g in gaps.items()}, "figure": str(figure)}


def retrieved_caption_quality(scored: Scored) -> dict:
    """NLG@K (BLEU-4, METEOR, ROUGE-L, CIDEr) of each method's retrieved captions."""
    from core.evaluation.caption_quality import caption_quality

    captions = scored.gallery().column("caption").to_pylist()
    log.info("report quality of the retrieved captions (BLEU-4, METEOR, ROUGE-L, CIDEr @K)")
    return caption_quality(captions, {m: {d: scored.topk(m, d)[0] for d in DIRECTIONS}
                                      for m in METHODS})


def pick_examples(scored: Scored, count: int, seed: int = 0) -> dict:
    """Top-3 of the same sample queries for each method, with each query's exact rank (the
    report shows the correct item when it was missed)."""
    gallery = scored.gallery()
    ids = gallery.column("image_id").to_pylist()
    captions = gallery.column("caption").to_pylist()
    groups = gallery.column("group").to_numpy()
    n = len(ids)
    queries = np.random.default_rng(seed).choice(n, size=min(count, n), replace=False)
    examples = {}
    for m in METHODS:
        runs = {d: scored.topk(m, d) for d in DIRECTIONS}
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


def example_images(data, split: str, examples: dict) -> dict[str, bytes]:
    """The encoded bytes of every image the examples show, by image id."""
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


def training_record(checkpoint: str) -> dict:
    """How a checkpoint was trained: its resolved config and its per-epoch history (saved with
    every checkpoint), for the report's training section and curves."""
    history = Path(checkpoint) / "history.json"
    return {"config": to_dict(read_checkpoint_config(checkpoint)),
            "history": json.loads(history.read_text()) if history.exists() else []}
