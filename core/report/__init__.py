"""The comparison report: a verdict with 95 % intervals, the metrics, training curves, speed
and cost, the concept, caption-quality, modality-gap and explanation analyses, and retrieved
examples, as Markdown and one self-contained HTML file.

Input is ``metrics.json`` as ``rocoray evaluate`` writes it, the examples and their images;
everything here is matplotlib, html and PIL, so a report can be re-rendered from saved
results without Ray. The layout:

- ``sections``: one function per section and ``SECTIONS``, their order;
- ``document``: the blocks a section is made of (paragraphs, tables, figures, ...);
- ``render``: the one Markdown and the one HTML renderer of a list of sections;
- ``tables``, ``concepts``, ``explanations``, ``examples``, ``figures``: each section's content.
"""

from __future__ import annotations

from pathlib import Path

from core import storage
from core.report.common import cost_seconds, encoder_epochs, fit_exponent, slope_text
from core.report.headline import headline_table
from core.report.render import markdown_table, to_html, to_markdown
from core.report.sections import TITLE, Inputs, build

__all__ = ["write_report", "headline_table", "markdown_table", "fit_exponent", "slope_text",
           "cost_seconds", "encoder_epochs"]


def write_report(metrics: dict, examples: dict, images: dict, out_dir: str | Path) -> dict:
    """Write report.md, report.html and figures/ into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    sections = build(Inputs(metrics, examples, images, figures_dir))
    storage.write_text(out_dir, "report.md", to_markdown(sections, out_dir))
    storage.write_text(out_dir, "report.html", to_html(sections, TITLE))
    return {"markdown": str(out_dir / "report.md"), "html": str(out_dir / "report.html"),
            "figures": [str(p) for s in sections for p in s.figures()]}
