"""The report, section by section. Each function takes the report's inputs and returns its
sections (none when the metrics hold nothing for it); ``SECTIONS`` is their order, which both
formats follow. A new section is one function here and one line in ``SECTIONS``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from core.evaluation.comparison import DIRECTIONS, LABELS
from core.report import concepts, explanations, figures, tables
from core.report.common import slope_text
from core.report.document import Callout, Figure, Markup, Paragraph, Section, Table
from core.report.examples import examples_html, examples_markdown

log = logging.getLogger("rocoray.report")

TITLE = "rocoray retrieval report"


@dataclass
class Inputs:
    metrics: dict  # metrics.json as rocoray evaluate writes it
    examples: dict  # core.analyses.pick_examples
    images: dict  # image id -> encoded bytes, for the example thumbnails
    figures_dir: Path  # where this report's own charts are drawn


def _why_not(value) -> str | None:
    """The reason an analysis gave for not running on this data (``analyses.unavailable``)."""
    if isinstance(value, dict) and value.get("available") is False:
        return value.get("reason") or "n/a"
    return None


def _available(value):
    return None if _why_not(value) else value


def overview(r: Inputs) -> list[Section]:
    m, cmp_ = r.metrics, r.metrics["comparison"]
    skipped = m.get("skipped") or {}
    skipped_text = ", ".join(f"{k}: {v}" for k, v in skipped.items()) if skipped else "none"
    n = m["gallery_size"]
    blocks = [Paragraph(
        f"Data {m['data']}, split {m['split']}: {n} image-caption pairs scored in both "
        f"directions (rows skipped by the reader: {skipped_text}). Chance Recall@10 = "
        f"{cmp_['chance'].get('R@10', min(1.0, 10 / n)):.3f}. Intervals are 95 % bootstrap "
        f"intervals over the {n} queries; differences between methods are paired.")]
    at_chance = [f"{LABELS[x]} ({d})" for x in cmp_["at_chance"] for d in DIRECTIONS
                 if cmp_["at_chance"][x][d]]
    if at_chance:
        blocks.append(Paragraph(
            f"Indistinguishable from chance (the Recall@10 interval includes the chance "
            f"level): {', '.join(at_chance)}. These models have not learnt this data; read "
            f"their numbers as chance.", style="warn"))
    return [Section(TITLE, None, blocks, level=1)]


def verdict(r: Inputs) -> list[Section]:
    v = r.metrics["comparison"]["verdict"]
    return [Section("Verdict", "verdict", [Callout([
        v["t2i"], v["i2t"], v["summary"],
        tables.fine_grained_verdict(_available(r.metrics.get("fine_grained")),
                                    r.metrics.get("training"))])])]


def retrieval_quality(r: Inputs) -> list[Section]:
    m = r.metrics
    selection = m.get("rerank_selection")
    rr = m["methods"].get("rerank", {})
    note = (f"Rerank re-scores the two-tower model's top-{rr.get('rerank_k')} with the fused "
            f"score fusion logit + {rr.get('alpha', 0):g} x two-tower cosine; k and alpha "
            + (f"were chosen on the {selection['split']} split ({selection['queries']} "
               f"queries; {selection['criterion']}), never on the test split."
               if selection else "were given (--rerank-k, --alpha)."))
    out = [Section("Retrieval quality", "retrieval", [
        Table(*tables.metrics_rows(m)), Paragraph(note),
        Figure("recall", figures.recall_chart(m, r.figures_dir / "recall_at_k.png"), "Recall@K")]),
        Section("Differences between methods", "differences",
                [Table(*tables.difference_rows(m))], level=3)]
    if selection:
        out.append(Section("Rerank settings tried on the validation split", "rerank-selection",
                           [Table(*tables.selection_rows(selection))], level=3))
    return out


NLG_NOTE = ("Report quality of the retrieved captions (pycocoevalcap): each of a query's "
            "top-K retrieved captions (image -> text), or the captions of its top-K retrieved "
            "images (text -> image), scored against the query's own caption; NLG@K averages "
            "ranks 1..K. The oracle is the correct caption, the random row a random ranking.")


def caption_quality(r: Inputs) -> list[Section]:
    cq = r.metrics.get("caption_quality")
    if _why_not(cq):
        return [Section("Report quality of the retrieved captions", "nlg",
                        [Paragraph(_why_not(cq))])]
    if not cq:
        return []
    note = NLG_NOTE
    missing = cq.get("missing") or {}
    if missing:
        note += " Missing: " + "; ".join(f"{k}: {v}" for k, v in missing.items()) + "."
    return [Section("Report quality of the retrieved captions", "nlg", [
        Table(*tables.nlg_rows(cq)), Paragraph(note),
        Figure("nlg", figures.nlg_chart(cq, r.figures_dir / "nlg_at_k.png"), "NLG@K")])]


GAP_NOTE = ("The modality gap on the test embeddings: the distance between the image and "
            "caption centroids, and how well a logistic regression tells the two apart "
            "(5-fold; 0.5 = mixed). AbM pools then projects (CLIP); MbA projects every patch "
            "and token, then pools.")


def modality_gap(r: Inputs) -> list[Section]:
    gap = r.metrics.get("modality_gap")
    if _why_not(gap):
        return [Section("Modality gap", "modality-gap", [Paragraph(_why_not(gap))])]
    if not gap:
        return []
    return [Section("Modality gap", "modality-gap", [
        Table(*tables.gap_rows(gap)), Paragraph(GAP_NOTE),
        Figure("gap", Path(gap["figure"]), "modality gap")])]


def ablation(r: Inputs) -> list[Section]:
    ab = r.metrics.get("ablation")
    if not ab:
        return []
    blocks = [Table(*tables.ablation_rows(ab)), Paragraph(ab["note"])]
    if ab.get("figure") and Path(ab["figure"]).exists():  # AbM vs MbA, MCR modes
        blocks.append(Figure("ablation_gap", Path(ab["figure"]),
                             "modality gap of the ablation variants"))
    return [Section("Ablation: alignment and masked contrastive reconstruction", "ablation",
                    blocks)]


def concept_sections(r: Inputs) -> list[Section]:
    return [Section(title, "concepts" if i == 0 else f"concepts-{i}",
                    ([Table(*table)] if table else []) + [Paragraph(note)])
            for i, (title, table, note) in enumerate(concepts.blocks(r.metrics.get("concepts")))]


TOP3_TITLE = ("Rerank's top-3 for the example queries: the fusion model's Grad-CAM of the "
              "query caption on each retrieved image")


def explanation_sections(r: Inputs) -> list[Section]:
    ex = r.metrics.get("explanations") or {}
    title, table, note, shaded = explanations.explanation_block(ex or None)
    blocks = ([Table(*table)] if table else []) + [Paragraph(note)]
    if ex.get("figure"):
        blocks.append(Figure("explanations", Path(ex["figure"]), "explanations"))
    blocks += [Markup(html=f"<p class='caption'>{c}</p>") for c in shaded]
    out = [Section(title, "explanations", blocks)]
    top3 = ex.get("top3")
    if top3:
        out.append(Section(TOP3_TITLE, "top3", [
            Figure("top3", Path(top3["figure"]), "top-3 Grad-CAM"),
            *[Markup(html=f"<p class='caption'>query {i}: {c['html']}</p>")
              for i, c in enumerate(top3["captions"], start=1)]], level=3))
    return out


FINE_GRAINED_NOTE = (
    "Each one-attribute sibling pair (two rows of one synthetic family that differ in exactly "
    "one stated attribute) asks, in both directions, whether the true item ranks above its "
    "sibling. The fusion model's ITC heads (its pooled, projected encoder outputs, no "
    "cross-attention) are an ablation on the same encoders.")


def fine_grained(r: Inputs) -> list[Section]:
    fg = r.metrics.get("fine_grained")
    blocks = ([Paragraph(_why_not(fg))] if _why_not(fg) else
              [Table(*tables.fine_grained_rows(fg)), Paragraph(FINE_GRAINED_NOTE)] if fg
              else [Paragraph(tables.fine_grained_verdict(fg))])
    return [Section("Fine-grained: the true item vs its one-attribute sibling", "fine-grained",
                    blocks)]


def training(r: Inputs) -> list[Section]:
    runs = r.metrics.get("training", {})
    blocks = [Table(*tables.training_rows(runs))]
    curves = figures.training_curves(runs, r.figures_dir / "training_curves.png")
    if curves:
        blocks.append(Figure("training", curves, "training curves"))
    return [Section("Training", "training", blocks)]


COST_NOTE = ("Encoder passes count images + captions through the encoders in this evaluation; "
             "rerank runs both models' encoders. With frozen towers their outputs are computed "
             "once per split and shared (0 passes for a model that reused them), but encode s "
             "is still each method's cost from scratch: the frozen towers' encoding, timed when "
             "it ran, plus the model's own layers. Head / score evaluations count what the "
             "quadratic part computes. ms per query = (encode s + score s) / 2N: the cost from "
             "scratch of answering the N caption and N image queries.")


def speed_and_cost(r: Inputs) -> list[Section]:
    scaling = r.metrics["scaling"]
    blocks = [Table(*tables.cost_rows(r.metrics)), Paragraph(COST_NOTE)]
    if _why_not(scaling):
        return [Section("Speed and cost", "cost", blocks + [Paragraph(_why_not(scaling))])]
    slopes = "; ".join(f"{LABELS[m]}: {slope_text(scaling['sizes'], s)}"
                       for m, s in scaling["seconds"].items())
    full = scaling.get("full")
    if full:
        slopes += (f" (fit on the sizes below the full gallery, timed in one process; the full "
                   f"gallery of {full['size']} is the scoring jobs' own time, not scored again)")
    return [Section("Speed and cost", "cost", blocks + [
        Paragraph(f"Scoring time vs gallery size: {slopes}."),
        Figure("timing", figures.timing_chart(scaling, r.figures_dir / "time_vs_gallery.png"),
               "time vs gallery size")])]


def examples(r: Inputs) -> list[Section]:
    return [Section("Examples", "examples", [
        Markup(markdown="(The HTML report shows the images.)"),
        Markup(html=examples_html(r.examples, r.images), markdown=examples_markdown(r.examples))])]


SECTIONS = [overview, verdict, retrieval_quality, caption_quality, modality_gap, ablation,
            concept_sections, explanation_sections, fine_grained, training, speed_and_cost,
            examples]


def build(r: Inputs) -> list[Section]:
    """Every section in order. A section that fails to render (a chart on odd data) becomes
    an "n/a" paragraph under its name: one section never costs the whole report."""
    out = []
    for section in SECTIONS:
        try:
            out += section(r)
        except Exception as exc:  # noqa: BLE001 - shown in the report, logged
            log.warning("report section %s failed: %s: %s", section.__name__, type(exc).__name__,
                        exc, exc_info=True)
            name = section.__name__.replace("_", " ").capitalize()
            out.append(Section(name, section.__name__.replace("_", "-"), [Paragraph(
                f"n/a: this section failed on this data ({type(exc).__name__}: {exc})")]))
    return out
