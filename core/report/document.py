"""What a report is made of, independent of its format: sections of blocks. Every section
function in ``core.report.sections`` returns these; ``core.report.render`` turns one list of
them into Markdown and into HTML, so both formats carry the same content in the same order."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Paragraph:
    text: str
    style: str = ""  # "" | "warn" (a highlighted warning) | "caption"


@dataclass
class Callout:
    """Paragraphs set apart in a box (the verdict)."""
    paragraphs: list[str]
    style: str = "verdict"


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    key: str  # names the figure: its alt text and the HTML class ``fig-<key>``
    path: Path
    title: str = ""  # the Markdown alt text (default: the key)


@dataclass
class Markup:
    """Content that each format writes its own way (image thumbnails and token-shaded
    captions in HTML, ids and plain text in Markdown); empty means "not in this format"."""
    html: str = ""
    markdown: str = ""


Block = Paragraph | Callout | Table | Figure | Markup


@dataclass
class Section:
    title: str
    anchor: str | None = None  # the HTML id
    blocks: list[Block] = field(default_factory=list)
    level: int = 2

    def figures(self) -> list[Path]:
        return [b.path for b in self.blocks if isinstance(b, Figure)]
