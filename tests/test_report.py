"""The report is one list of sections rendered twice: Markdown and HTML carry the same
sections in the same order, a new section is one function plus one line in ``SECTIONS``, and
each block renders as its format needs (escaped HTML, relative Markdown links, embedded PNGs).
The demo tests check the full report of a real evaluation; these run in a second."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from core.evaluation.comparison import METHODS, compare
from core.metrics import bidirectional_metrics
from core.report import sections, write_report
from core.report.document import Figure, Markup, Paragraph, Section, Table
from core.report.render import to_html, to_markdown


def small_metrics(n: int = 24, seed: int = 0) -> dict:
    """A metrics.json as evaluate writes it, for three methods with random ranks (the parts
    the optional analyses fill are left out, as on data that has none of them)."""
    rng = np.random.default_rng(seed)
    ranks = {m: {d: rng.integers(0, n // (i + 1), n) for d in ("t2i", "i2t")}
             for i, m in enumerate(METHODS)}
    timings = {"encode_s": 1.0, "score_s": 0.25, "pairs": n * n}
    return {
        "data": "synthetic <test>", "split": "test", "gallery_size": n, "skipped": {},
        "methods": {m: {"metrics": bidirectional_metrics(r["t2i"], r["i2t"], n, n),
                        "timings": timings, "parameters": 1_000_000,
                        **({"rerank_k": 8, "alpha": 0.5} if m == "rerank" else {})}
                    for m, r in ranks.items()},
        "scaling": {"sizes": [8, 16, 24], "seconds": {m: [0.1, 0.2, 0.3] for m in METHODS}},
        "training": {}, "comparison": compare(ranks, n, groups=np.arange(n)),
        "rerank_selection": None,
    }


def headings(markdown: str, page: str) -> tuple[list[str], list[str]]:
    md = [h.strip() for h in re.findall(r"^#+ (.*)$", markdown, flags=re.M)]
    html = [re.sub("&amp;", "&", h) for h in re.findall(r"<h\d[^>]*>(.*?)</h\d>", page)]
    return md, html


def test_both_formats_carry_the_same_sections_in_the_same_order(tmp_path):
    paths = write_report(small_metrics(), {}, {}, tmp_path)
    md, html = headings((tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text())
    assert md == html
    expected = [s.title for s in sections.build(sections.Inputs(small_metrics(), {}, {}, tmp_path))]
    assert md == expected and md[0] == sections.TITLE
    assert md.index("Verdict") < md.index("Retrieval quality") < md.index("Speed and cost")
    # every figure a section drew is returned and embedded
    assert {p.rsplit("/", 1)[1] for p in paths["figures"]} == {"recall_at_k.png",
                                                                "time_vs_gallery.png"}
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64") == 2


def test_a_new_section_is_one_function_and_one_line(tmp_path, monkeypatch):
    def provenance(r):
        return [Section("Provenance", "provenance", [Paragraph(f"{r.metrics['gallery_size']} pairs")])]

    order = list(sections.SECTIONS)
    order.insert(order.index(sections.training), provenance)
    monkeypatch.setattr(sections, "SECTIONS", order)
    write_report(small_metrics(), {}, {}, tmp_path)
    md, html = headings((tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text())
    assert md == html and md[md.index("Provenance") + 1] == "Training"
    assert "<h2 id='provenance'>Provenance</h2>\n<p>24 pairs</p>" in (tmp_path / "report.html").read_text()


def test_blocks_render_per_format(tmp_path):
    png = tmp_path / "figures" / "chart.png"
    png.parent.mkdir()
    Image.new("RGB", (4, 4), "red").save(png)
    doc = [Section("A <b> & c", "a", [
        Paragraph("x < y", style="warn"), Table(["k", "v"], [["<1>", "2"]]),
        Figure("chart", png, "a chart"), Markup(html="<i>only html</i>", markdown="only *md*")])]
    md, page = to_markdown(doc, tmp_path), to_html(doc, "t")
    assert "## A <b> & c" in md and "> **x < y**" in md and "| <1> | 2 |" in md
    assert "![a chart](figures/chart.png)" in md and "only *md*" in md and "only html" not in md
    assert "<h2 id='a'>A &lt;b&gt; &amp; c</h2>" in page and "<p class='warn'>x &lt; y</p>" in page
    assert "<td>&lt;1&gt;</td>" in page and "class='fig-chart'" in page and "only *md*" not in page
    with pytest.raises(TypeError, match="not a report block"):
        to_markdown([Section("b", None, ["a bare string"])], tmp_path)


@pytest.mark.parametrize("n, rerank_k", [(857, 32), (483, 16), (300, 32), (2000, 32)])
def test_scaling_curve_measures_small_sizes_that_still_support_a_slope(n, rerank_k):
    """With the full gallery's time known from the scoring jobs, the curve measures only
    sizes up to n/4 (a 16th of the pairs each at most: the curve stays a fraction of the
    scoring it describes), each >= rerank k, and spanning the 4x a slope is fitted on."""
    from core.analyses import scaling_sizes
    from core.report.common import SLOPE_MIN_SPAN

    sizes = scaling_sizes(n, rerank_k, points=4, full_known=True)
    assert len(sizes) == 3 and sizes == sorted(set(sizes))
    assert min(sizes) >= rerank_k and max(sizes) < n
    assert max(sizes) <= max(n // 4, SLOPE_MIN_SPAN * min(sizes))
    assert max(sizes) >= SLOPE_MIN_SPAN * min(sizes)
    whole = scaling_sizes(n, rerank_k, points=4, full_known=False)
    assert whole[-1] == n and len(whole) == 4  # without the full time, n itself is measured
