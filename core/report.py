"""The comparison report: metrics table, Recall@K chart, time vs gallery size, architecture
comparison, and the top-3 retrieved items for sample queries, as Markdown and HTML.

Input is ``metrics.json`` as ``rocoray evaluate`` writes it plus the per-method top-K
tables; everything here is plain matplotlib / pyarrow, so a report can be re-rendered from
saved results without Ray.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

METHODS = ("two_tower", "fusion", "rerank")
LABELS = {"two_tower": "two-tower", "fusion": "fusion (all pairs)", "rerank": "rerank"}
COLORS = {"two_tower": "#1f77b4", "fusion": "#d62728", "rerank": "#2ca02c"}
KS = (1, 5, 10)


def fit_exponent(sizes, seconds) -> float:
    """Slope of log(time) vs log(N): ~1 linear, ~2 quadratic."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.maximum(np.asarray(seconds, float), 1e-9))
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else float("nan")


def recall_chart(metrics: dict, path: Path) -> Path:
    methods = [m for m in METHODS if m in metrics["methods"]]
    labels = [f"{d} R@{k}" for d in ("t2i", "i2t") for k in KS]
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, m in enumerate(methods):
        vals = [metrics["methods"][m]["metrics"][d][f"R@{k}"] for d in ("t2i", "i2t") for k in KS]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, label=LABELS[m],
               color=COLORS[m])
    chance = [min(1.0, k / metrics["gallery_size"]) for _ in ("t2i", "i2t") for k in KS]
    ax.plot(x, chance, "k_", markersize=18, label="chance")
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("recall")
    ax.set_title(f"Recall@K on {metrics['split']} ({metrics['gallery_size']} pairs)")
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
        ax.loglog(sizes, secs, "o-", color=COLORS[m],
                  label=f"{LABELS[m]} (slope {fit_exponent(sizes, secs):.2f})")
    ax.set_xlabel("gallery size N (captions = images)")
    ax.set_ylabel("scoring time (s)")
    ax.set_title("Scoring time vs gallery size (one process, encoders excluded)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def thumbnail(data: bytes, size: int = 96, hit: bool | None = None) -> Image.Image:
    from core.data.images import decode_image

    img = ImageOps.fit(decode_image(data), (size, size))
    if hit is not None:
        img = ImageOps.expand(img, border=4, fill=(40, 170, 60) if hit else (200, 40, 40))
    return img


def png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def examples_figure(examples: dict, images: dict, path: Path) -> Path:
    """Caption -> top-3 images for each sample query and method; green = correct."""
    methods = [m for m in METHODS if m in examples]
    queries = examples[methods[0]]["t2i"]
    fig, axes = plt.subplots(len(queries), 1 + 3 * len(methods),
                             figsize=(1.6 * (1 + 3 * len(methods)), 1.9 * len(queries)),
                             squeeze=False)
    for r, q in enumerate(queries):
        ax = axes[r][0]
        ax.axis("off")
        ax.text(0, 0.5, _wrap(q["query_caption"], 28), fontsize=6, va="center")
        for mi, m in enumerate(methods):
            row = examples[m]["t2i"][r]
            for j, (gid, hit) in enumerate(zip(row["top_ids"], row["hits"])):
                ax = axes[r][1 + 3 * mi + j]
                ax.imshow(thumbnail(images[gid], 96, hit))
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0 and j == 1:
                    ax.set_title(LABELS[m], fontsize=8)
    fig.suptitle("text -> image: top-3 per method (green border = correct)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _wrap(text: str, width: int, lines: int = 7) -> str:
    words, out, cur = text.split(), [], ""
    for w in words:
        if len(cur) + len(w) + 1 > width:
            out.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    out.append(cur)
    return "\n".join(out[:lines]) + ("..." if len(out) > lines else "")


def _fmt(v, digits=3):
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def metrics_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    header = ["method"] + [f"{d} R@{k}" for d in ("t2i", "i2t") for k in KS] + \
        ["t2i MRR", "i2t MRR", "t2i med. rank", "i2t med. rank"]
    rows = []
    for m in METHODS:
        if m not in metrics["methods"]:
            continue
        r = metrics["methods"][m]["metrics"]
        rows.append([LABELS[m]] + [_fmt(r[d][f"R@{k}"]) for d in ("t2i", "i2t") for k in KS]
                    + [_fmt(r["t2i"]["MRR"]), _fmt(r["i2t"]["MRR"]),
                       _fmt(r["t2i"]["median_rank"], 1), _fmt(r["i2t"]["median_rank"], 1)])
    return header, rows


def cost_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    header = ["method", "parameters", "encoder passes", "head/score evaluations",
              "cost growth", "encode s", "score s", "total s", "pairs/s", "peak RSS MB"]
    n = metrics["gallery_size"]
    rows = []
    for m in METHODS:
        if m not in metrics["methods"]:
            continue
        info = metrics["methods"][m]
        t = info["timings"]
        if m == "fusion":
            evals, growth = f"N^2 = {n * n} fusion-head pairs", "O(N) encode + O(N^2) head"
        elif m == "two_tower":
            evals, growth = f"N^2 = {n * n} dot products (one matmul)", "O(N) encode + O(N^2 d) matmul"
        else:
            k = info.get("rerank_k")
            evals, growth = f"2Nk = {2 * n * k} fusion pairs (k={k}) + a matmul", "O(N) encode + O(Nk) head"
        peak = max(t.get("driver_peak_rss_mb", 0.0), t.get("actor_peak_rss_mb", 0.0))
        rows.append([LABELS[m], f"{info['parameters'] / 1e6:.2f}M", f"2N = {2 * n}", evals, growth,
                     _fmt(t.get("encode_s", 0.0), 1), _fmt(t["score_s"], 2), _fmt(t["total_s"], 1),
                     f"{t['pairs_per_s']:.0f}", f"{peak:.0f}"])
    return header, rows


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def html_table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(metrics: dict, examples: dict, images: dict, out_dir: Path) -> dict:
    """Write report.md, report.html and figures/ into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    figs = out_dir / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    recall_png = recall_chart(metrics, figs / "recall_at_k.png")
    timing_png = timing_chart(metrics["scaling"], figs / "time_vs_gallery.png")
    examples_png = examples_figure(examples, images, figs / "examples_t2i.png")
    mh, mr = metrics_rows(metrics)
    ch, cr = cost_rows(metrics)
    skipped = metrics.get("skipped") or {}
    skipped_text = (", ".join(f"{k}: {v}" for k, v in skipped.items()) if skipped
                    else "none")
    slopes = {m: fit_exponent(metrics["scaling"]["sizes"], s)
              for m, s in metrics["scaling"]["seconds"].items()}
    n = metrics["gallery_size"]
    intro = (f"Data: `{metrics['data']}`, split `{metrics['split']}`: {n} image-caption pairs "
             f"scored in both directions (rows skipped by the reader: {skipped_text}). "
             f"Chance Recall@10 = {min(1, 10 / n):.3f}.")
    md = [f"# rocoray retrieval report\n\n{intro}\n",
          "## Retrieval quality\n", markdown_table(mh, mr), "",
          f"![Recall@K]({recall_png.relative_to(out_dir)})\n",
          "## Speed and cost\n", markdown_table(ch, cr), "",
          "Scoring time grows with slope " + ", ".join(
              f"{m} {s:.2f}" for m, s in slopes.items()) + " on a log-log scale "
          "(2 = quadratic). The fusion model scores every (caption, image) pair; the "
          "two-tower model scores with one matrix product; rerank spends the fusion head on "
          "the two-tower model's top-k only.\n",
          f"![time vs gallery size]({timing_png.relative_to(out_dir)})\n",
          "## Examples\n", f"![examples]({examples_png.relative_to(out_dir)})\n"]
    for m in METHODS:
        if m not in examples:
            continue
        md.append(f"### {LABELS[m]}: image -> text, top-3\n")
        for q in examples[m]["i2t"]:
            md.append(f"- query `{q['query_id']}` (its caption: *{q['query_caption'][:120]}*)")
            for rank, (cap, hit) in enumerate(zip(q["top_captions"], q["hits"]), 1):
                md.append(f"  {rank}. {'✔' if hit else '✘'} {cap[:140]}")
        md.append("")
    (out_dir / "report.md").write_text("\n".join(md))

    def img_tag(path_or_img, width=None):
        img = Image.open(path_or_img) if isinstance(path_or_img, Path) else path_or_img
        w = f' width="{width}"' if width else ""
        return f'<img src="data:image/png;base64,{png_b64(img)}"{w}>'

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>rocoray report</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "font-size:13px}th{background:#f3f3f3}.hit{color:#282}.miss{color:#c22}"
             ".q{display:flex;gap:8px;align-items:flex-start;margin:8px 0}</style></head><body>",
             "<h1>rocoray retrieval report</h1>", f"<p>{html.escape(intro)}</p>",
             "<h2>Retrieval quality</h2>", html_table(mh, mr), img_tag(recall_png),
             "<h2>Speed and cost</h2>", html_table(ch, cr), img_tag(timing_png),
             "<h2>Examples: text → image</h2>", img_tag(examples_png, 1100),
             "<h2>Examples: image → text</h2>"]
    for m in METHODS:
        if m not in examples:
            continue
        parts.append(f"<h3>{html.escape(LABELS[m])}</h3>")
        for q in examples[m]["i2t"]:
            items = "".join(
                f"<li class='{'hit' if hit else 'miss'}'>{'✔' if hit else '✘'} {html.escape(cap)}</li>"
                for cap, hit in zip(q["top_captions"], q["hits"]))
            parts.append(f"<div class='q'>{img_tag(thumbnail(images[q['query_id']], 128))}"
                         f"<ol>{items}</ol></div>")
    parts.append("</body></html>")
    (out_dir / "report.html").write_text("\n".join(parts))
    return {"markdown": str(out_dir / "report.md"), "html": str(out_dir / "report.html"),
            "figures": [str(recall_png), str(timing_png), str(examples_png)]}


def headline_table(metrics: dict) -> str:
    """A compact plain-text table for the end of the demo."""
    lines = [f"{'method':<20}{'t2i R@1':>9}{'R@5':>7}{'R@10':>7}{'i2t R@1':>9}{'R@5':>7}"
             f"{'R@10':>7}{'score s':>9}{'pairs/s':>10}"]
    for m in METHODS:
        if m not in metrics["methods"]:
            continue
        r, t = metrics["methods"][m]["metrics"], metrics["methods"][m]["timings"]
        lines.append(f"{LABELS[m]:<20}" + "".join(
            f"{r[d][f'R@{k}']:>{9 if k == 1 else 7}.3f}" for d in ("t2i", "i2t") for k in KS)
            + f"{t['score_s']:>9.2f}{t['pairs_per_s']:>10.0f}")
    return "\n".join(lines)
