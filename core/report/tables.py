"""The report's tables as (header, rows) of strings, from ``metrics.json``: retrieval with
intervals, paired differences, cost, training, rerank selection, fine-grained accuracy, NLG@K,
the modality gap and the alignment / MCR ablation; and the fine-grained verdict sentence."""

from __future__ import annotations

from pathlib import Path

from core.evaluation.comparison import DIRECTIONS, FUSION_ITC, LABELS
from core.report.common import cost_seconds, encoder_epochs, fmt as _f, ks_of, methods_of
from core.scoring.settings import Method


def metrics_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    est = metrics["comparison"]["estimates"]
    ks = ks_of(metrics)
    header = ["method"] + [f"{d} R@{k}" for d in DIRECTIONS for k in ks] + ["t2i MRR", "i2t MRR",
                                                                            "t2i med. rank", "i2t med. rank"]
    rows = []
    for m in methods_of(metrics):
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
    for m in methods_of(metrics):
        info = metrics["methods"][m]
        t = info["timings"]
        pairs = t.get("pairs")
        if m == Method.FUSION:
            evals = f"{pairs:,} fusion-head pairs (N² = {n * n:,})"
            growth = "O(N) encode + O(N²) head"
        elif m == Method.TWO_TOWER:
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
                if m == Method.FUSION else
                f"{model['two_tower']['embed_dim']}-d, T={model['two_tower']['temperature']}"
                if model else "")
        hist = t.get("history") or []
        encoder = text.get("name_or_path") or "BERT from config"
        init = (model.get("fusion", {}).get("init_from") if m == Method.FUSION else None)
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
        if {x["a"], x["b"]} == {Method.FUSION, Method.TWO_TOWER}:
            sign = 1 if x["a"] == Method.FUSION else -1
            lo, hi = sorted((sign * x["low"], sign * x["high"]))
            text += (f" Fusion minus two-tower: {sign * x['value']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                     f"{'' if x['significant'] else ' (within noise)'}.")
        if {x["a"], x["b"]} == {Method.FUSION, FUSION_ITC} and not x["significant"]:
            text += (" The fusion model's own ITC heads, on the same encoders without "
                     "cross-attention, do as well on siblings (within noise): the gain here comes "
                     "from the encoders, trained jointly with the match head, rather than from "
                     "the cross-attention readout.")
    epochs = encoder_epochs(training or {})
    if epochs.get("fusion") and epochs.get("two_tower") and epochs["fusion"] != epochs["two_tower"]:
        text += (f" Budgets differ: the fusion model's encoders trained {epochs['fusion']} epochs "
                 f"(from the two-tower checkpoint), the two-tower's {epochs['two_tower']}.")
    return text


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
