"""The report's sections from the masked-contrastive-reconstruction line of work: NLG@K of the
retrieved captions (a chart and a table), the modality gap table, and the alignment / MCR
ablation table (``rocoray ablation``). ``core.report`` renders them."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from core.comparison import COLORS, LABELS  # noqa: E402


def _f(v, digits=3):
    return "n/a" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


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


def nlg_rows(cq: dict) -> tuple[list[str], list[list[str]]]:
    """The NLG@1 / NLG@K table (K = the largest)."""
    k = cq["ks"][-1]
    header = ["method", "direction", *[f"{m}@1" for m in cq["metrics"]],
              *[f"{m}@{k}" for m in cq["metrics"]]]
    rows = []
    for m, by_d in cq["curves"].items():
        for d, curve in by_d.items():
            rows.append([LABELS.get(m, m), "both" if m in ("oracle", "random") else d,
                         *[_f(curve[x][0]) for x in cq["metrics"]],
                         *[_f(curve[x][-1]) for x in cq["metrics"]]])
    return header, rows


def gap_rows(gap: dict) -> tuple[list[str], list[list[str]]]:
    header = ["embeddings", "centroid distance", "linear-probe accuracy", "mean pair cosine", "pairs"]
    return header, [[k, _f(g["centroid_distance"]), _f(g["linear_probe_accuracy"]),
                     _f(g["mean_pair_cosine"]), str(g["n"])] for k, g in gap["models"].items()]


def ablation_rows(ablation: dict) -> tuple[list[str], list[list[str]]]:
    """One row per trained two-tower variant (``ray_jobs.ablation``)."""
    rows = []
    for v in ablation["variants"]:
        r, cq, g = v["metrics"], v["caption_quality"], v["modality_gap"]
        rows.append([v["name"], v["alignment"], v["mcr"], _f(r["t2i"]["R@1"]), _f(r["t2i"]["R@10"]),
                     _f(r["i2t"]["R@1"]), _f(r["i2t"]["R@10"]), _f(cq["i2t"]["BLEU-4"][-1]),
                     _f(cq["i2t"]["CIDEr"][-1]), _f(g["centroid_distance"]),
                     _f(g["linear_probe_accuracy"]), f"{v['s_per_step'] * 1000:.0f}"])
    header = ["variant", "alignment", "MCR", "t2i R@1", "t2i R@10", "i2t R@1", "i2t R@10",
              f"i2t BLEU-4@{ablation['k']}", f"i2t CIDEr@{ablation['k']}", "centroid dist.",
              "probe acc.", "ms/step"]
    return header, rows
