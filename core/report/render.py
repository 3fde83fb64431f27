"""The two renderers: one list of ``Section`` -> Markdown (figures linked relative to the
report) and -> one self-contained HTML page (figures embedded)."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

from PIL import Image

from core.report.document import Callout, Figure, Markup, Paragraph, Section, Table

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


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def html_table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _markdown_block(block, out_dir: Path) -> str:
    if isinstance(block, Paragraph):
        return f"> **{block.text}**" if block.style == "warn" else block.text
    if isinstance(block, Callout):
        return "\n\n".join(block.paragraphs)
    if isinstance(block, Table):
        return markdown_table(block.header, block.rows)
    if isinstance(block, Figure):
        return f"![{block.title or block.key}]({Path(os.path.relpath(block.path, out_dir))})"
    if isinstance(block, Markup):
        return block.markdown
    raise TypeError(f"not a report block: {block!r}")


def _html_block(block) -> str:
    if isinstance(block, Paragraph):
        cls = f" class='{block.style}'" if block.style else ""
        return f"<p{cls}>{html.escape(block.text)}</p>"
    if isinstance(block, Callout):
        return (f"<div class='{block.style}'>"
                + "".join(f"<p>{html.escape(p)}</p>" for p in block.paragraphs) + "</div>")
    if isinstance(block, Table):
        return html_table(block.header, block.rows)
    if isinstance(block, Figure):
        return (f"<img src='data:image/png;base64,{png_b64(Image.open(block.path))}' "
                f"alt='{block.key}' class='fig-{block.key}'>")
    if isinstance(block, Markup):
        return block.html
    raise TypeError(f"not a report block: {block!r}")


def to_markdown(sections: list[Section], out_dir: Path) -> str:
    parts = []
    for s in sections:
        parts.append(f"{'#' * s.level} {s.title}\n")
        parts += [text + "\n" for text in (_markdown_block(b, out_dir) for b in s.blocks) if text]
    return "\n".join(parts)


def to_html(sections: list[Section], title: str) -> str:
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"]
    for s in sections:
        anchor = f" id='{s.anchor}'" if s.anchor else ""
        parts.append(f"<h{s.level}{anchor}>{html.escape(s.title)}</h{s.level}>")
        parts += [text for text in (_html_block(b) for b in s.blocks) if text]
    parts.append("</body></html>")
    return "\n".join(parts)
