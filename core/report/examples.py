"""The examples section's content: each method's top 3 for the same sample queries, with the
correct item when it was missed; thumbnails in HTML, image ids in Markdown."""

from __future__ import annotations

import html

from core.evaluation.comparison import LABELS, METHODS
from core.report.figures import thumbnail
from core.report.render import png_b64


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

