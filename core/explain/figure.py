"""Drawing explanations: heat maps over the image with the lesion box, and a caption with
its tokens shaded by their attribution (HTML)."""

from __future__ import annotations

import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


def draw_overlay(ax, image: np.ndarray, heat: np.ndarray | None, box, title: str) -> None:
    """One panel: the greyscale image, the map over it (scaled to its peak), the lesion box."""
    size = image.shape[0]
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    if heat is not None:
        ax.imshow(heat / max(heat.max(), 1e-12), cmap="jet", alpha=0.45,
                  extent=(0, size, size, 0), interpolation="bilinear")
    if box:
        x0, y0, x1, y1 = (v * size for v in box)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime",
                               linewidth=1.5))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def overlay_figure(images: list[np.ndarray], boxes: list, maps: list[dict], path: Path) -> Path:
    """One row per case: the image with its lesion box, then each method's map over it."""
    methods = list(maps[0])
    rows, cols = len(images), len(methods) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.2 * rows), squeeze=False)
    first = "image + lesion box" if any(boxes) else "image"
    for r, (image, box, by_method) in enumerate(zip(images, boxes, maps)):
        for c, title in enumerate([first, *methods]):
            draw_overlay(axes[r][c], image, by_method[title] if c else None, box,
                         title if r == 0 else "")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def overlay_png(image: np.ndarray, maps: dict[str, np.ndarray]) -> bytes:
    """One row, as PNG bytes: the greyscale image, then each named map over it (the case
    search service's explanation)."""
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(2.6 * (len(maps) + 1), 2.8),
                             squeeze=False)
    for c, (title, heat) in enumerate([("image", None), *maps.items()]):
        draw_overlay(axes[0][c], image, heat, None, title)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110)
    plt.close(fig)
    return out.getvalue()


def shaded_caption(tokens: list[str], scores: np.ndarray) -> str:
    """HTML: each WordPiece token on a background whose strength is its attribution (red
    raises the score, blue lowers it); [CLS]/[SEP] left out."""
    scores = np.asarray(scores, np.float64)
    top = max(float(np.abs(scores).max()), 1e-12) if len(scores) else 1.0
    spans = []
    for token, s in zip(tokens, scores):
        if token in ("[CLS]", "[SEP]"):
            continue
        colour = "220,40,40" if s >= 0 else "40,90,220"
        text = html.escape(token[2:] if token.startswith("##") else " " + token)
        spans.append(f"<span style='background:rgba({colour},{abs(s) / top:.2f})' "
                     f"title='{s:+.3f}'>{text}</span>")
    return "<span class='tokens'>" + "".join(spans) + "</span>"


def retrieved_figure(grid: list[list[tuple]], path: Path) -> Path:
    """One row per query: its top-3 retrieved images, each with the map of the query caption
    over it and the image's lesion box (when it has one). ``grid[r][c]`` = (image, box or
    None, heat map, title)."""
    rows, cols = len(grid), max(len(r) for r in grid)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), squeeze=False)
    for r, cells in enumerate(grid):
        for c in range(cols):
            if c >= len(cells):
                axes[r][c].axis("off")
                continue
            image, box, heat, title = cells[c]
            draw_overlay(axes[r][c], image, heat, box, title)
        axes[r][0].set_ylabel(f"query {r + 1}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
