"""The report's charts (matplotlib, Agg): Recall@K with intervals, training curves, scoring
time vs gallery size, NLG@K of the retrieved captions; and the example thumbnails."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from core.evaluation.comparison import COLORS, DIRECTIONS, LABELS, METHODS  # noqa: E402
from core.report.common import fit_exponent, ks_of, methods_of, slope_text  # noqa: E402


def recall_chart(metrics: dict, path: Path) -> Path:
    est = metrics["comparison"]["estimates"]
    methods, ks = methods_of(metrics), ks_of(metrics)
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
        for key, style, label in (("val/mean_recall", "o-", LABELS[m]),
                                  ("val/rerank/mean_recall", "x--", "fusion: ITC top-k re-ranked")):
            points = [(h["epoch"], h[key]) for h in t["history"] if h.get(key) is not None]
            if points:  # a fusion run that keeps its last epoch scores all pairs only there
                axes[1].plot(*zip(*points), style, color=COLORS[m], label=label)
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
        if sizes:
            ax.loglog(sizes, secs, "o-", color=COLORS[m],
                      label=f"{LABELS[m]} ({slope_text(sizes, secs)})"
                      if fit_exponent(sizes, secs) is not None else f"{LABELS[m]} (slope not measured)")
        full = scaling.get("full")
        if full:  # the full gallery, as the scoring job scored it (not scored again)
            ax.loglog([full["size"]], [full["seconds"][m]], "s", color=COLORS[m], mfc="none",
                      label=f"{LABELS[m]}, full gallery (scoring job)")
    ax.set_xlabel("gallery size N (captions = images)")
    ax.set_ylabel("scoring time (s)")
    ax.set_title("Scoring time vs gallery size (circles: one process; squares: the scoring "
                 "job; encoders excluded)", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def thumbnail(data: bytes, size: int = 128) -> Image.Image:
    from core.data.images import decode_image

    return ImageOps.fit(decode_image(data), (size, size))



def nlg_chart(cq: dict, path: Path) -> Path:
    """NLG@K of the retrieved captions: one panel per metric; text -> image solid, image ->
    text dashed; the oracle (the correct caption) and a random ranking as grey lines."""
    metrics, ks = cq["metrics"], cq["ks"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for m, by_d in cq["curves"].items():
            for d, curve in by_d.items():
                if m in ("oracle", "random"):
                    ax.plot(ks, curve[metric], color="grey", linestyle=":" if m == "random" else "-.",
                            label=m if metric == metrics[0] else None)
                    continue
                ax.plot(ks, curve[metric], color=COLORS.get(m), linestyle="-" if d == "t2i" else "--",
                        label=f"{LABELS.get(m, m)} {d}" if metric == metrics[0] else None)
        ax.set_title(f"{metric}@K", fontsize=9)
        ax.set_xlabel("K (top-K retrieved captions)", fontsize=8)
        ax.set_xticks(ks[::max(1, len(ks) // 5)])
    fig.legend(loc="lower center", ncol=4, fontsize=7)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

