"""The comparison report: a verdict with 95 % intervals, the metrics, training curves,
speed and cost, and retrieved examples, as Markdown and one self-contained HTML file.

Input is ``metrics.json`` as ``rocoray evaluate`` writes it (with the ``comparison`` of
``core.comparison``), the examples and their images; everything here is matplotlib, html
and PIL, so a report can be re-rendered from saved results without Ray.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from core import concept_report, storage  # noqa: E402
from core.comparison import COLORS, DIRECTIONS, LABELS  # noqa: E402
from core.mcr_report import ablation_rows, gap_rows, nlg_chart, nlg_rows  # noqa: E402

METHODS = ("two_tower", "fusion", "rerank")
KS = (1, 5, 10)

# A slope of log(time) on log(N) means something only over enough sizes, a wide enough
# range, and times well above timer and start-up noise.
SLOPE_MIN_SIZES, SLOPE_MIN_SPAN, SLOPE_MIN_SECONDS = 3, 4.0, 0.05


def fit_exponent(sizes, seconds) -> float | None:
    """Slope of log(time) vs log(N) (~1 linear, ~2 quadratic), or None when the sizes or the
    times cannot support one (see the SLOPE_* thresholds)."""
    sizes, seconds = np.asarray(sizes, float), np.asarray(seconds, float)
    if (len(sizes) < SLOPE_MIN_SIZES or sizes.max() < SLOPE_MIN_SPAN * sizes.min()
            or seconds.min() < SLOPE_MIN_SECONDS):
        return None
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def slope_text(sizes, seconds) -> str:
    e = fit_exponent(sizes, seconds)
    if e is not None:
        return f"slope {e:.2f}"
    return (f"slope not measured (needs >= {SLOPE_MIN_SIZES} sizes spanning >= "
            f"{SLOPE_MIN_SPAN:.0f}x and times >= {SLOPE_MIN_SECONDS} s)")


def _ks(metrics: dict) -> list[int]:
    return [k for k in KS if k <= metrics["gallery_size"]]


def _methods(metrics: dict) -> list[str]:
    return [m for m in METHODS if m in metrics["methods"]]


# --- figures -----------------------------------------------------------------------------------

def recall_chart(metrics: dict, path: Path) -> Path:
    est = metrics["comparison"]["estimates"]
    methods, ks = _methods(metrics), _ks(metrics)
    labels = [f"{d} R@{k}" for d in DIRECTIONS for k in ks]
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for i, m in enumerate(methods):
        e = [est[m][d][f"R@{k}"] for d in DIRECTIONS for k in ks]
        vals = np.array([v["value"] for v in e])
        err = np.array([[v["value"] - v["low"] for v in e], [v["high"] - v["value"] for v in e]])
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, yerr=err, capsize=2,
               label=LABELS[m], color=COLORS[m])
    chance = [metrics["comparison"]["chance"][f"R@{k}"] for _ in DIRECTIONS for k in ks]
    ax.plot(x, chance, "k_", markersize=18, label="chance")
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("recall (95% CI)")
    ax.set_title(f"Recall@K on {metrics['split']} ({metrics['gallery_size']} pairs)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves(training: dict, path: Path) -> Path | None:
    """Loss and validation mean recall per epoch, for each trained model."""
    runs = {m: t for m, t in training.items() if t.get("history")}
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for m, t in runs.items():
        epochs = [h["epoch"] for h in t["history"]]
        axes[0].plot(epochs, [h.get("train/loss") for h in t["history"]], "o-", color=COLORS[m],
                     label=LABELS[m])
        axes[1].plot(epochs, [h.get("val/mean_recall") for h in t["history"]], "o-",
                     color=COLORS[m], label=LABELS[m])
    axes[0].set_title("training loss", fontsize=9)
    axes[1].set_title("validation mean recall (R@1/5/10, both directions)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def timing_chart(scaling: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for m in METHODS:
        if m not in scaling["seconds"]:
            continue
        sizes, secs = scaling["sizes"], scaling["seconds"][m]
        ax.loglog(sizes, secs, "o-", color=COLORS[m], label=f"{LABELS[m]} ({slope_text(sizes, secs)})"
                  if fit_exponent(sizes, secs) is not None else f"{LABELS[m]} (slope not measured)")
    ax.set_xlabel("gallery size N (captions = images)")
    ax.set_ylabel("scoring time (s)")
    ax.set_title("Scoring time vs gallery size (one process, encoders excluded)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def thumbnail(data: bytes, size: int = 128) -> Image.Image:
    from core.data.images import decode_image

    return ImageOps.fit(decode_image(data), (size, size))


def png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# --- tables ------------------------------------------------------------------------------------

def _f(v, digits=3):
    return "n/a" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def metrics_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    est = metrics["comparison"]["estimates"]
    ks = _ks(metrics)
    header = ["method"] + [f"{d} R@{k}" for d in DIRECTIONS for k in ks] + ["t2i MRR", "i2t MRR",
                                                                            "t2i med. rank", "i2t med. rank"]
    rows = []
    for m in _methods(metrics):
        r = metrics["methods"][m]["metrics"]
        cells = [f"{_f(e['value'])} [{_f(e['low'], 2)}, {_f(e['high'], 2)}]"
                 for e in (est[m][d][f"R@{k}"] for d in DIRECTIONS for k in ks)]
        rows.append([LABELS[m]] + cells + [_f(r["t2i"]["MRR"]), _f(r["i2t"]["MRR"]),
                                           _f(r["t2i"]["median_rank"], 1), _f(r["i2t"]["median_rank"], 1)])
    rows.append(["chance"] + [_f(metrics["comparison"]["chance"][f"R@{k}"]) for _ in DIRECTIONS
                              for k in ks] + ["", "", "", ""])
    return header, rows


def difference_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    header = ["comparison", "direction", "metric", "difference", "95% CI", "beyond noise"]
    rows = []
    for x in metrics["comparison"]["differences"]:
        rows.append([f"{LABELS[x['a']]} − {LABELS[x['b']]}", x["direction"], x["metric"],
                     f"{x['value']:+.3f}", f"[{x['low']:+.3f}, {x['high']:+.3f}]",
                     "yes" if x["significant"] else "no"])
    return header, rows


def cost_seconds(timings: dict) -> float:
    """What a method costs from scratch: its encoders (timed when they ran, even if a later
    job reused their cached output) plus its scoring."""
    return timings.get("encode_s", 0.0) + timings["score_s"]


def _passes(timings: dict) -> str:
    """Encoder passes the scoring job counted (captions + images through each model's towers)."""
    counted = timings.get("encoder_passes") or {}
    model = {"two_tower": "two-tower model", "fusion": "fusion model"}
    parts = [f"{sum(c.values()):,} ({model.get(m, m)})" for m, c in counted.items() if c]
    return " + ".join(parts) or "not recorded"


def cost_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """What each method computed and what it cost, comparable across methods: encoder passes
    and head evaluations as the scoring job counted them, seconds per query (both directions)."""
    header = ["method", "parameters", "encoder passes (counted)",
              "head / score evaluations (counted)", "cost growth", "encode s", "score s",
              "ms per query", "peak RSS MB"]
    n = metrics["gallery_size"]
    rows = []
    for m in _methods(metrics):
        info = metrics["methods"][m]
        t = info["timings"]
        pairs = t.get("pairs")
        if m == "fusion":
            evals = f"{pairs:,} fusion-head pairs (N² = {n * n:,})"
            growth = "O(N) encode + O(N²) head"
        elif m == "two_tower":
            evals = f"{pairs:,} dot products (N² = {n * n:,}, as matmuls)"
            growth = "O(N) encode + O(N² d) matmul"
        else:
            k = info.get("rerank_k")
            evals = (f"{pairs:,} fusion-head pairs (2Nk = {2 * n * k:,}, k={k}) + "
                     f"{t.get('first_stage_pairs', 0):,} dot products")
            growth = "O(N) encode + O(Nk) head"
        peak = max(t.get("driver_peak_rss_mb", 0.0), t.get("actor_peak_rss_mb", 0.0))
        rows.append([LABELS[m], f"{info['parameters'] / 1e6:.2f}M", _passes(t), evals, growth,
                     _f(t.get("encode_s", 0.0), 1), _f(t["score_s"], 2),
                     _f(1000 * cost_seconds(t) / (2 * n), 1), f"{peak:.0f}"])
    return header, rows


def training_rows(training: dict) -> tuple[list[str], list[list[str]]]:
    header = ["model", "epochs", "initialised from", "batch", "lr", "image", "text encoder", "head",
              "final val mean recall"]
    rows = []
    for m, t in training.items():
        c = t.get("config") or {}
        model, train = c.get("model", {}), c.get("train", {})
        image, text = model.get("image", {}), model.get("text", {})
        head = (f"fusion width {model['fusion']['width']} x {model['fusion']['num_layers']} layers, "
                f"{model['fusion']['negatives_per_positive']} {model['fusion']['negative_mode']} negatives"
                if m == "fusion" else
                f"{model['two_tower']['embed_dim']}-d, T={model['two_tower']['temperature']}"
                if model else "")
        hist = t.get("history") or []
        encoder = text.get("name_or_path") or "BERT from config"
        init = (model.get("fusion", {}).get("init_from") if m == "fusion" else None)
        rows.append([LABELS[m], f"{len(hist)} of {train.get('epochs', '?')}",
                     f"two-tower {Path(init).name}" if init else "scratch",
                     str(train.get("batch_size", "")), str(train.get("lr", "")),
                     f"{image.get('arch', '')} {image.get('image_size', '')} px",
                     f"{encoder} ({text.get('num_layers', '')} layers)", head,
                     _f(hist[-1].get("val/mean_recall")) if hist else "n/a"])
    return header, rows


def selection_rows(selection: dict) -> tuple[list[str], list[list[str]]]:
    header = ["k", "alpha", f"{selection['split']} mean recall", "t2i R@1", "i2t R@1", ""]
    rows = [[str(r["k"]), f"{r['alpha']:g}", _f(r["mean_recall"]), _f(r["t2i_R@1"]),
             _f(r["i2t_R@1"]), "chosen" if (r["k"], r["alpha"]) == (selection["k"],
                                                                   selection["alpha"]) else ""]
            for r in selection["table"]]
    return header, rows


def fine_grained_rows(fg: dict) -> tuple[list[str], list[list[str]]]:
    attrs = list(next(iter(fg["methods"].values()))["by_attribute"])
    header = ["method", "overall", "t2i", "i2t", *attrs]

    def cell(e):
        return f"{e['value']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"

    rows = []
    for m, acc in fg["methods"].items():
        rows.append([LABELS.get(m, m), cell(acc["overall"]), cell(acc["t2i"]), cell(acc["i2t"]),
                     *[cell(acc["by_attribute"][a]) if a in acc["by_attribute"] else "n/a"
                       for a in attrs]])
    rows.append(["chance", "0.50", "0.50", "0.50", *["0.50"] * len(attrs)])
    return header, rows


def encoder_epochs(training: dict) -> dict[str, int]:
    """Epochs each model's encoders were trained: the fusion model's include those of the
    two-tower checkpoint it started from."""
    epochs = {m: len(t.get("history") or []) for m, t in training.items()}
    init = (training.get("fusion", {}).get("config") or {}).get("model", {}).get("fusion", {})
    if init.get("init_from") and "two_tower" in epochs:
        epochs["fusion"] += epochs["two_tower"]
    return epochs


def fine_grained_verdict(fg: dict | None, training: dict | None = None) -> str:
    if not fg:
        return ("Fine-grained (sibling) accuracy: n/a: this data states no one-attribute "
                "siblings (the synthetic set's family_id and attribute columns).")
    acc = {m: a["overall"] for m, a in fg["methods"].items()}
    parts = [f"{LABELS.get(m, m)} {_f(e['value'])} [{_f(e['low'])}, {_f(e['high'])}]"
             for m, e in acc.items()]
    text = (f"Fine-grained: over {fg['pairs']} one-attribute sibling pairs (both directions, "
            f"chance 0.5), the true item is ranked above its sibling by " + "; ".join(parts) + ".")
    for x in fg["differences"]:
        if {x["a"], x["b"]} == {"fusion", "two_tower"}:
            sign = 1 if x["a"] == "fusion" else -1
            lo, hi = sorted((sign * x["low"], sign * x["high"]))
            text += (f" Fusion minus two-tower: {sign * x['value']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                     f"{'' if x['significant'] else ' (within noise)'}.")
        if {x["a"], x["b"]} == {"fusion", "fusion_itc"} and not x["significant"]:
            text += (" The fusion model's own ITC heads, on the same encoders without "
                     "cross-attention, do as well on siblings (within noise): the gain here comes "
                     "from the encoders, trained jointly with the match head, rather than from "
                     "the cross-attention readout.")
    epochs = encoder_epochs(training or {})
    if epochs.get("fusion") and epochs.get("two_tower") and epochs["fusion"] != epochs["two_tower"]:
        text += (f" Budgets differ: the fusion model's encoders trained {epochs['fusion']} epochs "
                 f"(from the two-tower checkpoint), the two-tower's {epochs['two_tower']}.")
    return text


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def html_table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- examples ----------------------------------------------------------------------------------

def _img(data: bytes | None, size: int, cls: str = "") -> str:
    if data is None:
        return "<span class='noimg'>(image not found)</span>"
    return (f"<img class='{cls}' src='data:image/png;base64,{png_b64(thumbnail(data, size))}' "
            f"width='{size}' height='{size}' alt=''>")


def examples_html(examples: dict, images: dict) -> str:
    parts = []
    for m in [m for m in METHODS if m in examples]:
        parts.append(f"<h3>{html.escape(LABELS[m])}: text → image, top 3</h3>")
        for q in examples[m]["t2i"]:
            cells = []
            for rank, (gid, hit) in enumerate(zip(q["top_ids"], q["hits"]), 1):
                cells.append(f"<figure class='{'hit' if hit else 'miss'}'>{_img(images.get(gid), 128)}"
                             f"<figcaption>#{rank} {'✔ correct' if hit else '✘'}</figcaption></figure>")
            if not any(q["hits"]):
                cells.append(f"<figure class='truth'>{_img(images.get(q['query_id']), 128)}"
                             f"<figcaption>correct image: rank {q['rank'] + 1}</figcaption></figure>")
            parts.append(f"<div class='ex'><p class='query'><b>query caption</b> "
                         f"<span class='rank'>(correct image at rank {q['rank'] + 1})</span><br>"
                         f"{html.escape(q['query_caption'])}</p>"
                         f"<div class='row'>{''.join(cells)}</div></div>")
        parts.append(f"<h3>{html.escape(LABELS[m])}: image → text, top 3</h3>")
        for q in examples[m]["i2t"]:
            items = "".join(
                f"<li class='{'hit' if hit else 'miss'}'><b>#{rank}</b> {'✔' if hit else '✘'} "
                f"{html.escape(cap)}</li>"
                for rank, (cap, hit) in enumerate(zip(q["top_captions"], q["hits"]), 1))
            truth = ("" if any(q["hits"]) else
                     f"<li class='truth'><b>correct caption, rank {q['rank'] + 1}:</b> "
                     f"{html.escape(q['query_caption'])}</li>")
            parts.append(f"<div class='ex row'>{_img(images.get(q['query_id']), 160)}<div>"
                         f"<p class='query'><b>query image</b> <code>{html.escape(q['query_id'])}</code>"
                         f" <span class='rank'>(correct caption at rank {q['rank'] + 1})</span><br>"
                         f"its own caption: <i>{html.escape(q['query_caption'])}</i></p>"
                         f"<ol class='caps'>{items}{truth}</ol></div></div>")
    return "\n".join(parts)


def examples_markdown(examples: dict) -> str:
    lines = []
    for m in [m for m in METHODS if m in examples]:
        lines.append(f"### {LABELS[m]}\n")
        for q in examples[m]["t2i"]:
            marks = " ".join(f"#{r} {'✔' if h else '✘'} `{i}`" for r, (i, h)
                             in enumerate(zip(q["top_ids"], q["hits"]), 1))
            lines.append(f"- text → image, query *{q['query_caption']}* (correct image "
                         f"`{q['query_id']}` at rank {q['rank'] + 1}): {marks}")
        for q in examples[m]["i2t"]:
            lines.append(f"- image → text, query `{q['query_id']}` (its caption: *{q['query_caption']}*; "
                         f"correct caption at rank {q['rank'] + 1}):")
            for r, (cap, hit) in enumerate(zip(q["top_captions"], q["hits"]), 1):
                lines.append(f"  {r}. {'✔' if hit else '✘'} {cap}")
        lines.append("")
    return "\n".join(lines)


# --- the report --------------------------------------------------------------------------------

CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;line-height:1.45;"
       "color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
       "padding:4px 8px;font-size:13px}th{background:#f3f3f3}.verdict{background:#f6f9ff;"
       "border-left:4px solid #36c;padding:.6em 1em}.warn{background:#fff4e5;border-left:4px solid "
       "#e69500;padding:.6em 1em}.row{display:flex;gap:10px;align-items:flex-start}"
       ".ex{margin:12px 0;padding:8px;border-bottom:1px solid #eee}.query{font-size:14px;margin:4px 0}"
       ".rank{color:#666}figure{margin:0;text-align:center;font-size:12px}figure img{border:4px solid #ccc}"
       "figure.hit img{border-color:#2a2}figure.miss img{border-color:#c33}figure.truth img"
       "{border-color:#36c;border-style:dashed}li.hit{color:#161}li.miss{color:#a22}li.truth{color:#235}"
       ".caps li{margin:3px 0;font-size:14px}code{background:#f2f2f2;padding:0 3px}"
       "img[class^='fig-']{max-width:100%;height:auto}p.caption{font-size:14px}")


def write_report(metrics: dict, examples: dict, images: dict, out_dir: str | Path) -> dict:
    """Write report.md, report.html and figures/ into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    figs = out_dir / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    cmp_ = metrics["comparison"]
    figures = {"recall": recall_chart(metrics, figs / "recall_at_k.png"),
               "timing": timing_chart(metrics["scaling"], figs / "time_vs_gallery.png")}
    explained = concept_report.explanation_block(metrics.get("explanations"))
    if (metrics.get("explanations") or {}).get("figure"):
        figures["explanations"] = Path(metrics["explanations"]["figure"])
    top3 = (metrics.get("explanations") or {}).get("top3")
    if top3:
        figures["top3"] = Path(top3["figure"])
    top3_title = ("Rerank's top-3 for the example queries: the fusion model's Grad-CAM of the "
                  "query caption on each retrieved image")
    gap = metrics.get("modality_gap")
    if gap:
        figures["gap"] = Path(gap["figure"])
    if (metrics.get("ablation") or {}).get("figure") and Path(metrics["ablation"]["figure"]).exists():
        figures["ablation_gap"] = Path(metrics["ablation"]["figure"])  # AbM vs MbA, MCR modes
    cq = metrics.get("caption_quality")
    if cq:
        figures["nlg"] = nlg_chart(cq, figs / "nlg_at_k.png")
    curves = training_curves(metrics.get("training", {}), figs / "training_curves.png")
    if curves:
        figures["training"] = curves
    skipped = metrics.get("skipped") or {}
    skipped_text = ", ".join(f"{k}: {v}" for k, v in skipped.items()) if skipped else "none"
    n = metrics["gallery_size"]
    intro = (f"Data {metrics['data']}, split {metrics['split']}: {n} image-caption pairs scored in "
             f"both directions (rows skipped by the reader: {skipped_text}). Chance Recall@10 = "
             f"{cmp_['chance'].get('R@10', min(1.0, 10 / n)):.3f}. Intervals are 95 % bootstrap "
             f"intervals over the {n} queries; differences between methods are paired.")
    at_chance = [f"{LABELS[m]} ({d})" for m in cmp_["at_chance"] for d in DIRECTIONS
                 if cmp_["at_chance"][m][d]]
    warning = (f"Indistinguishable from chance (the Recall@10 interval includes the chance "
               f"level): {', '.join(at_chance)}. These models have not learnt this data; read "
               f"their numbers as chance." if at_chance else "")
    fg = metrics.get("fine_grained")
    sections = {
        "Verdict": [cmp_["verdict"]["t2i"], cmp_["verdict"]["i2t"], cmp_["verdict"]["summary"],
                    fine_grained_verdict(fg, metrics.get("training"))],
        "scaling": [(f"{LABELS[m]}: {slope_text(metrics['scaling']['sizes'], s)}")
                    for m, s in metrics["scaling"]["seconds"].items()],
    }
    tables = {"metrics": metrics_rows(metrics), "differences": difference_rows(metrics),
              "cost": cost_rows(metrics), "training": training_rows(metrics.get("training", {}))}
    selection = metrics.get("rerank_selection")
    rr = metrics["methods"].get("rerank", {})
    rerank_note = (f"Rerank re-scores the two-tower model's top-{rr.get('rerank_k')} with the fused "
                   f"score fusion logit + {rr.get('alpha', 0):g} x two-tower cosine; k and alpha "
                   + (f"were chosen on the {selection['split']} split ({selection['queries']} "
                      f"queries; {selection['criterion']}), never on the test split."
                      if selection else "were given (--rerank-k, --alpha)."))
    fg_note = ("Each one-attribute sibling pair (two rows of one synthetic family that differ in "
               "exactly one stated attribute) asks, in both directions, whether the true item "
               "ranks above its sibling. The fusion model's ITC heads (its pooled, projected "
               "encoder outputs, no cross-attention) are an ablation on the same encoders.")
    cost_note = ("Encoder passes count images + captions through the encoders; rerank runs both "
                 "models' encoders. Head / score evaluations count what the quadratic part "
                 "computes. ms per query = (encode s + score s) / 2N: the cost from scratch of "
                 "answering the N caption and N image queries.")
    rel = {k: Path(os.path.relpath(v, out_dir)) for k, v in figures.items()}

    md = ["# rocoray retrieval report\n", intro + "\n"]
    if warning:
        md.append(f"> **{warning}**\n")
    md += ["## Verdict\n", *[p + "\n" for p in sections["Verdict"]],
           "## Retrieval quality\n", markdown_table(*tables["metrics"]), "", rerank_note + "\n",
           f"![Recall@K]({rel['recall']})\n", "### Differences between methods\n",
           markdown_table(*tables["differences"]), ""]
    if selection:
        md += ["### Rerank settings tried on the validation split\n",
               markdown_table(*selection_rows(selection)), ""]
    nlg_note = ("Report quality of the retrieved captions (pycocoevalcap): each of a query's "
                "top-K retrieved captions (image -> text), or the captions of its top-K "
                "retrieved images (text -> image), scored against the query's own caption; "
                "NLG@K averages ranks 1..K. The oracle is the correct caption, the random row "
                "a random ranking.")
    missing = (cq or {}).get("missing") or {}
    if missing:
        nlg_note += " Missing: " + "; ".join(f"{k}: {v}" for k, v in missing.items()) + "."
    if cq:
        md += ["## Report quality of the retrieved captions\n", markdown_table(*nlg_rows(cq)), "",
               nlg_note + "\n", f"![NLG@K]({rel['nlg']})\n"]
    gap_note = ("The modality gap on the test embeddings: the distance between the image and "
                "caption centroids, and how well a logistic regression tells the two apart "
                "(5-fold; 0.5 = mixed). AbM pools then projects (CLIP); MbA projects every "
                "patch and token, then pools.")
    if gap:
        md += ["## Modality gap\n", markdown_table(*gap_rows(gap)), "", gap_note + "\n",
               f"![modality gap]({rel['gap']})\n"]
    ablation = metrics.get("ablation")
    if ablation:
        md += ["## Ablation: alignment and masked contrastive reconstruction\n",
               markdown_table(*ablation_rows(ablation)), "", ablation["note"] + "\n"]
        if "ablation_gap" in rel:
            md.append(f"![modality gap of the ablation variants]({rel['ablation_gap']})\n")
    concept_blocks = concept_report.blocks(metrics.get("concepts"))
    for title, table, note in concept_blocks:
        md += [f"## {title}\n", *([markdown_table(*table), ""] if table else []), note + "\n"]
    md += [f"## {explained[0]}\n", *([markdown_table(*explained[1]), ""] if explained[1] else []),
           explained[2] + "\n"]
    if "explanations" in rel:
        md.append(f"![explanations]({rel['explanations']})\n")
    if top3:
        md += [f"### {top3_title}\n", f"![top-3 Grad-CAM]({rel['top3']})\n"]
    md += ["## Fine-grained: the true item vs its one-attribute sibling\n",
           (markdown_table(*fine_grained_rows(fg)) + "\n\n" + fg_note) if fg
           else fine_grained_verdict(fg), "", "## Training\n",
           markdown_table(*tables["training"]), ""]
    if "training" in rel:
        md.append(f"![training curves]({rel['training']})\n")
    md += ["## Speed and cost\n", markdown_table(*tables["cost"]), "", cost_note + "\n",
           "Scoring time vs gallery size: " + "; ".join(sections["scaling"]) + ".\n",
           f"![time vs gallery size]({rel['timing']})\n",
           "## Examples (the HTML report shows the images)\n", examples_markdown(examples)]
    storage.write_text(out_dir, "report.md", "\n".join(md))

    def fig(key):
        return (f"<img src='data:image/png;base64,{png_b64(Image.open(figures[key]))}' "
                f"alt='{key}' class='fig-{key}'>")

    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             "<title>rocoray retrieval report</title>", f"<style>{CSS}</style></head><body>",
             "<h1>rocoray retrieval report</h1>", f"<p>{html.escape(intro)}</p>"]
    if warning:
        parts.append(f"<p class='warn'>{html.escape(warning)}</p>")
    parts.append("<h2>Verdict</h2><div class='verdict' id='verdict'>"
                 + "".join(f"<p>{html.escape(p)}</p>" for p in sections["Verdict"]) + "</div>")
    parts += ["<h2>Retrieval quality</h2>", html_table(*tables["metrics"]),
              f"<p>{html.escape(rerank_note)}</p>", fig("recall"),
              "<h3>Differences between methods</h3>", html_table(*tables["differences"])]
    if selection:
        parts += ["<h3>Rerank settings tried on the validation split</h3>",
                  html_table(*selection_rows(selection))]
    if gap:
        parts += ["<h2 id='modality-gap'>Modality gap</h2>", html_table(*gap_rows(gap)),
                  f"<p>{html.escape(gap_note)}</p>", fig("gap")]
    if ablation:
        parts += ["<h2 id='ablation'>Ablation: alignment and masked contrastive reconstruction</h2>",
                  html_table(*ablation_rows(ablation)), f"<p>{html.escape(ablation['note'])}</p>"]
        if "ablation_gap" in figures:
            parts.append(fig("ablation_gap"))
    if cq:
        parts += ["<h2 id='nlg'>Report quality of the retrieved captions</h2>",
                  html_table(*nlg_rows(cq)), f"<p>{html.escape(nlg_note)}</p>", fig("nlg")]
    for title, table, note in concept_blocks:
        parts += [f"<h2>{html.escape(title)}</h2>", *([html_table(*table)] if table else []),
                  f"<p>{html.escape(note)}</p>"]
    parts += [f"<h2 id='explanations'>{explained[0]}</h2>",
              *([html_table(*explained[1])] if explained[1] else []),
              f"<p>{html.escape(explained[2])}</p>"]
    if "explanations" in figures:
        parts.append(fig("explanations"))
    parts += [f"<p class='caption'>{c}</p>" for c in explained[3]]
    if top3:
        parts += [f"<h3>{html.escape(top3_title)}</h3>", fig("top3")]
        parts += [f"<p class='caption'>query {i}: {c['html']}</p>"
                  for i, c in enumerate(top3["captions"], start=1)]
    parts.append("<h2 id='fine-grained'>Fine-grained: the true item vs its one-attribute sibling</h2>")
    parts += ([html_table(*fine_grained_rows(fg)), f"<p>{html.escape(fg_note)}</p>"] if fg
              else [f"<p>{html.escape(fine_grained_verdict(fg))}</p>"])
    parts += ["<h2 id='training'>Training</h2>", html_table(*tables["training"])]
    if "training" in figures:
        parts.append(fig("training"))
    parts += ["<h2>Speed and cost</h2>", html_table(*tables["cost"]), f"<p>{html.escape(cost_note)}</p>",
              "<p>Scoring time vs gallery size: " + html.escape("; ".join(sections["scaling"])) + ".</p>",
              fig("timing"), "<h2 id='examples'>Examples</h2>", examples_html(examples, images),
              "</body></html>"]
    storage.write_text(out_dir, "report.html", "\n".join(parts))
    return {"markdown": str(out_dir / "report.md"), "html": str(out_dir / "report.html"),
            "figures": [str(p) for p in figures.values()]}


def headline_table(metrics: dict) -> str:
    """A compact plain-text table for the end of the demo, and the verdict."""
    ks = _ks(metrics)
    lines = [f"{'method':<20}" + "".join(f"{d + ' R@' + str(k):>11}" for d in DIRECTIONS for k in ks)
             + f"{'ms/query':>10}"]
    n = metrics["gallery_size"]
    for m in _methods(metrics):
        r, t = metrics["methods"][m]["metrics"], metrics["methods"][m]["timings"]
        lines.append(f"{LABELS[m]:<20}" + "".join(f"{r[d][f'R@{k}']:>11.3f}" for d in DIRECTIONS
                                                  for k in ks)
                     + f"{1000 * cost_seconds(t) / (2 * n):>10.1f}")
    lines.append(f"{'chance':<20}" + "".join(f"{metrics['comparison']['chance'][f'R@{k}']:>11.3f}"
                                             for _ in DIRECTIONS for k in ks))
    lines += ["", metrics["comparison"]["verdict"]["summary"]]
    return "\n".join(lines)
