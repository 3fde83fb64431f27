"""Is fusion on real ROCO held back by how few pairs it learns from? Both models of the demo,
retrained on nested fractions of the ROCO sample's training split (train 2,574; validation
416), side by side in one run, scored on validation only.

``bench.fusion_variants`` tried what the vision-language literature tries (hard negatives,
more epochs, the ITC token projections, the fused score, a finer grid, concept soft labels,
fine-tuned image blocks); none put fusion ahead of the two-tower model beyond the paired
interval. What it cannot vary is the data: ALBEF and BLIP train their match heads on millions
of pairs, this split has 2,574. This bench asks how the gap moves with the number of pairs.

For each fraction (default 1/8, 1/4, 1/2, 1) and seed (default 0, 1, 2; each seed draws its own
nested subsets, so the 1/8 subset lies inside the 1/4 one):

  two-tower   the demo's two-tower recipe (its checkpoint's config: frozen towers, heads),
              trained on the subset's stored frozen outputs for its epochs, the best
              validation epoch kept, as ``rocoray train`` keeps it
  fusion      the roco_cpu fusion recipe, initialised from THAT two-tower model (encoders and
              ITC heads, as the demo does), trained on the same subset, its last epoch kept

both single-process with core's step (``bench.fusion_variants.train_variant``) on the frozen
towers' outputs the demo stored once (``core.frozen_store``). Fusion is scored on the
validation split three ways, as ``bench.fusion_variants`` scores it: ITM (match logit over all
pairs), fused (+ a x its ITC cosine), rerank (the two-tower top-k re-ordered); a and k are
chosen on the same validation queries for every fraction, so the curve compares like with
like, and its levels flatter the rules that have settings (ITM has none).

Per fraction: validation mean recall (R@1/5/10, both directions) of each, averaged over the
seeds, and each fusion rule minus the two-tower model on per-query scores averaged over the
seeds, with the paired 95 % bootstrap interval. The trend: the least-squares slope of that
margin against log2(training pairs), i.e. what each doubling of the data adds to it, with a
95 % interval from resampling the validation queries (the same resample at every fraction).
The test split is not read. Draws bench/results/fusion_learning_curve.png.

    python -m bench.fusion_learning_curve --run runs/demo-roco-sample [--seeds 3]

``--run``: a finished `rocoray demo --data <roco-sample> --config roco_cpu` (its frozen store
and its two-tower checkpoint). Writes bench/results/fusion_learning_curve.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench._common import RESULTS, write_result
from bench.fusion_variants import (features, load_split, matrices, mean_recall, ranks_all_pairs,
                                   rules, stored_split, train_variant, variant_config)
from core.evaluation.selection import per_query_mean_recall

FRACTIONS = (0.125, 0.25, 0.5, 1.0)
RULES = ("itm", "fused", "rerank")
RESAMPLES = 2000


def subsets(n: int, fractions, seed: int) -> dict:
    """Nested row indices per fraction: seed ``seed``'s permutation of the ``n`` training rows,
    its first round(f x n) for fraction f (sorted, so each subset keeps the split's order)."""
    order = np.random.default_rng(seed).permutation(n)
    return {f: np.sort(order[:max(2, round(f * n))]) for f in fractions}


def two_tower_ranks(model, rows: dict) -> tuple[dict, dict]:
    """(the model's features of ``rows``, its ranks over all pairs)."""
    f = features(model, rows)
    return f, ranks_all_pairs((f["text"].embed @ f["image"].embed.T).float().numpy(),
                              np.asarray(f["group"]))


def train_two_tower(tt, rows: dict, val: dict, seed: int, pos_weight, precision: str,
                    epochs_scale: float, log) -> tuple:
    """The demo's two-tower recipe (``tt.config``) trained on ``rows``: (config, model, info)."""
    from core.models import build_model

    cfg = copy.deepcopy(tt.config)
    cfg.train.seed = seed
    cfg.train.epochs = max(1, round(cfg.train.epochs * epochs_scale))
    torch.manual_seed(seed)
    model = build_model(cfg.model)

    def validate(m) -> float:
        return mean_recall(two_tower_ranks(m, val)[1])

    model, info = train_variant(cfg, model, rows, pos_weight, log, precision,
                                validate if cfg.train.keep == "best" else None)
    return cfg, model, info


def train_fusion(tt, two_tower_cfg, two_tower, rows: dict, seed: int, pos_weight,
                 precision: str, epochs_scale: float, log) -> tuple:
    """The roco_cpu fusion recipe, initialised from ``two_tower`` (saved to a temporary
    checkpoint and read back as the demo reads it), trained on ``rows``: (model, info)."""
    from core.checkpoint import init_fusion_from_two_tower, save_checkpoint
    from core.models import build_model

    cfg = variant_config(None, tt.config, epochs_scale)
    cfg.train.seed = seed
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    with tempfile.TemporaryDirectory() as tmp:
        init_fusion_from_two_tower(model, save_checkpoint(Path(tmp) / "two_tower", two_tower,
                                                          two_tower_cfg))
    return train_variant(cfg, model, rows, pos_weight, log, precision)


def one_run(tt, train: dict, val: dict, idx: np.ndarray, seed: int, pos_weight, precision,
            epochs_scale: float, log) -> tuple[dict, dict]:
    """Both models on the training rows ``idx``: (the run's row, per-query validation scores
    of the two-tower model and each fusion rule at its validation setting)."""
    rows = {k: v[idx] for k, v in train.items()}
    cfg, two_tower, tt_info = train_two_tower(tt, rows, val, seed, pos_weight, precision,
                                              epochs_scale, log)
    tt_features, tt_ranks = two_tower_ranks(two_tower, val)
    fusion, fusion_info = train_fusion(tt, cfg, two_tower, rows, seed, pos_weight, precision,
                                       epochs_scale, log)
    chosen = rules(matrices(fusion, tt_features, val, precision))
    scores = {"two_tower": per_query_mean_recall(tt_ranks)} | {
        rule: per_query_mean_recall(ranks) for rule, (_, ranks) in chosen.items()}
    row = {"seed": seed, "train_pairs": int(len(idx)),
           "two_tower": {"mean_recall": float(scores["two_tower"].mean()),
                         "best_epoch": tt_info.get("best_epoch"), "epochs": tt_info["epochs"],
                         "train_seconds": tt_info["train_seconds"]},
           "fusion": {"epochs": fusion_info["epochs"],
                      "train_seconds": fusion_info["train_seconds"],
                      **{rule: {"setting": setting, "mean_recall": float(scores[rule].mean())}
                         for rule, (setting, _) in chosen.items()}}}
    log(f"  {len(idx)} pairs, seed {seed}: two-tower {row['two_tower']['mean_recall']:.4f}; "
        + ", ".join(f"{r} {row['fusion'][r]['mean_recall']:.4f}" for r in RULES))
    return row, scores


def slope(x: np.ndarray, margins: np.ndarray, seed: int = 0) -> dict:
    """Least-squares slope of the mean of ``margins`` (fractions x queries) against ``x``,
    with a 95 % interval from resampling the queries (one resample for every fraction)."""
    value = float(np.polyfit(x, margins.mean(axis=1), 1)[0])
    idx = np.random.default_rng(seed).integers(0, margins.shape[1], (RESAMPLES, margins.shape[1]))
    draws = np.polyfit(x, margins[:, idx].mean(axis=2), 1)[0]
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"value": value, "low": float(low), "high": float(high),
            "significant": bool(low > 0 or high < 0)}


def summarise(runs: list, scores: dict, fractions) -> tuple[list, dict]:
    """Per fraction: means over seeds, and each rule minus the two-tower model on per-query
    scores averaged over the seeds (paired interval); the trend of each margin per doubling."""
    from core.evaluation.significance import paired_difference

    table, margins = [], {rule: [] for rule in RULES}
    for f in fractions:
        mine = [r for r in runs if r["fraction"] == f]
        avg = {m: np.mean([s[m] for s in scores[f]], axis=0) for m in ("two_tower", *RULES)}
        row = {"fraction": f, "train_pairs": mine[0]["train_pairs"], "seeds": len(mine),
               "two_tower": float(avg["two_tower"].mean()),
               "two_tower_sd": float(np.std([r["two_tower"]["mean_recall"] for r in mine]))}
        for rule in RULES:
            row[rule] = float(avg[rule].mean())
            row[f"{rule}_sd"] = float(np.std([r["fusion"][rule]["mean_recall"] for r in mine]))
            row[f"{rule}_minus_two_tower"] = paired_difference(avg[rule], avg["two_tower"]).as_dict()
            margins[rule].append(avg[rule] - avg["two_tower"])
        table.append(row)
    x = np.log2([row["train_pairs"] for row in table])
    trend = {rule: slope(x, np.stack(margins[rule])) for rule in RULES} if len(table) > 1 else {}
    return table, trend


def draw(table: list, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [row["train_pairs"] for row in table]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, label in (("two_tower", "two-tower"), ("rerank", "fusion: rerank"),
                       ("fused", "fusion: fused score"), ("itm", "fusion: match logit")):
        ax.errorbar(x, [row[key] for row in table], yerr=[row[f"{key}_sd"] for row in table],
                    marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(n) for n in x])
    ax.set_xlabel("training pairs (ROCO sample, nested subsets)")
    ax.set_ylabel("validation mean recall (R@1/5/10, both ways)")
    ax.set_title("Fusion vs two-tower by training data (mean and sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a finished roco_cpu `rocoray demo` directory")
    p.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS),
                   help="fractions of the training split (each in (0, 1])")
    p.add_argument("--seeds", type=int, default=3, help="seeds per fraction (0 .. N-1)")
    p.add_argument("--epochs-scale", type=float, default=1.0,
                   help="x both recipes' epochs (a smoke run: 0.25)")
    p.add_argument("--out", default=None, help="results file (default: bench/results/)")
    args = p.parse_args(argv)
    if not all(0 < f <= 1 for f in args.fractions):
        p.error(f"--fractions: each must be in (0, 1], got {args.fractions}")
    args.fractions = sorted(set(args.fractions))
    return args


def stored_splits(run: Path, tt, data: str, precision: str) -> dict:
    """The demo's stored frozen outputs of the training and validation splits."""
    return {split: load_split(stored_split(run, tt, data, split, precision), tt.concepts)
            for split in ("train", "validation")}


def main(argv=None) -> dict:
    args = parse_args(argv)
    from core.checkpoint import load_checkpoint, resolve_checkpoint
    from core.precision import training_precision
    from core.provenance import portable_path

    def log(line):
        print(line, flush=True)

    run = Path(args.run)
    data = json.loads((run / "summary.json").read_text())["data"]
    tt = load_checkpoint(resolve_checkpoint(run / "train" / "two_tower"))
    precision = training_precision(tt.config.train.precision, "cpu")  # as the demo trained
    stored = stored_splits(run, tt, data, precision)
    pos_weight = (torch.from_numpy(tt.concepts.pos_weight(tt.config.model.concepts.max_pos_weight))
                  if tt.concepts is not None and tt.config.model.concepts.num_concepts else None)
    if pos_weight is None:  # no concept head: no concept targets (as bench.fusion_variants)
        stored = {s: {k: v for k, v in r.items() if k != "concepts"} for s, r in stored.items()}
    n = len(stored["train"]["group"])
    runs, scores, t0 = [], {f: [] for f in args.fractions}, time.perf_counter()
    for seed in range(args.seeds):
        for f, idx in subsets(n, args.fractions, seed).items():
            log(f"fraction {f:g} ({len(idx)} of {n} pairs), seed {seed} "
                f"[{time.perf_counter() - t0:.0f} s]")
            row, s = one_run(tt, stored["train"], stored["validation"], idx, seed, pos_weight,
                             precision, args.epochs_scale, log)
            runs.append({"fraction": f, **row})
            scores[f].append(s)
    table, trend = summarise(runs, scores, args.fractions)
    out = Path(args.out) if args.out else RESULTS / "fusion_learning_curve.json"
    figure = draw(table, out.with_suffix(".png"))
    log(f"drew {figure}")
    result = {"bench": "fusion_learning_curve", "data": data, "run": portable_path(run),
              "precision": precision, "validation_items": int(len(stored["validation"]["group"])),
              "train_items": n, "seeds": args.seeds, "epochs_scale": args.epochs_scale,
              "fractions": table, "trend_per_doubling": trend, "runs": runs,
              "figure": portable_path(figure), "seconds": time.perf_counter() - t0}
    write_result(result, out=args.out)
    return result


if __name__ == "__main__":
    main()
