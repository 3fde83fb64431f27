"""Does the fusion model earn its place on real ROCO? Fusion training recipes side by side, in
one run, on the ROCO sample (train 2,574 / validation 416 / test 857), chosen on validation,
reported on test with paired intervals against the two-tower model.

Every variant is the `roco_cpu` fusion model (the two-tower checkpoint's frozen towers and
ITC heads, as `rocoray demo` trains it) with overrides, trained single-process with core's
own step (``LossModule``, ``train_one_epoch``) on the frozen towers' outputs that the demo
stored once (``core.frozen_store``: exactly what `rocoray train` trains on). A variant whose
frozen layers end elsewhere (the image tower's last blocks fine-tuned for fusion only), or that
reads the images at another size (a finer grid for fusion only), has its own frozen prefix
encoded here, once per boundary and size, by the same ``encode_frozen``. Each variant is
scored on the validation split three ways:

  ITM       fusion over all pairs by its match logit alone
  fused     fusion over all pairs by match logit + a x its ITC cosine (a chosen on validation)
  rerank    the two-tower top-k re-ordered by match logit + a x two-tower cosine (k, a chosen
            on validation, as `rocoray evaluate` chooses them)

The variant kept is chosen on validation by the one-standard-error rule
(``core.evaluation.selection``): the best variant by validation mean recall (R@1/5/10, both
directions) of its best scoring rule, then the cheapest variant (seconds to encode its own
frozen prefix if it needs one, to train, and to score the validation split over all pairs)
whose paired 95 % interval against the best does not lie below 0. One training run per
variant leaves the seed (weight initialisation, data order, sampled negatives) in every
score, so the rule runs twice: over all variants with one seed each, then over its
finalists (that round's best and kept, and the preset) retrained with ``--seeds`` seeds in
all, their per-query validation scores averaged over the seeds; the second round's choice is
the one kept. The test split is read once, at the end, for the kept variant and the preset
(the variant equal to roco_cpu as it stands when the bench runs), each trained with the
first seed, as the demo trains it.

    python -m bench.fusion_variants --run runs/demo-roco-sample [--epochs-scale 1] [--seeds 3]

``--run``: a finished `rocoray demo --data <roco-sample> --config roco_cpu` (its frozen store
and its two-tower checkpoint). Writes bench/results/fusion_variants.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench._common import shuffled_batches, write_result
from bench._frozen_inputs import encode_split
from core.models.fusion import FUSED_SCORE_ALPHAS as ALPHAS  # the grid training and evaluate use
from core.evaluation.selection import (cheapest_within_noise, cheapest_within_noise_over_seeds,
                                       per_query_mean_recall)
from core.scoring.settings import RERANK_KS  # the k `rocoray evaluate` tries

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")
FUSION_ONLY_IMAGE_BLOCKS = ["model.fusion.freeze_encoders=false", "model.image.freeze_stages=7"]
# The recipe every variant starts from, stated in full (roco_cpu's when this bench was
# written), so that a variant names the same model whatever the preset says later; which
# variant is the preset is worked out when the bench runs (its "preset" field).
RECIPE = ["model.fusion.width=256", "model.fusion.negative_mode=random",
          "model.fusion.negatives_per_positive=3", "train.fusion_epochs=4",
          "model.fusion.token_proj_from_itc=false", "model.fusion.concept_soft_labels=0.0",
          "model.fusion.freeze_encoders=true", "model.image.freeze_stages=-1"]
# (name, overrides of RECIPE on the roco_cpu fusion model)
VARIANTS = [
    ("random negatives (3 per positive), 4 epochs", []),
    ("hard negatives by ITC (warm: the two-tower's heads), 1 per positive each way (ALBEF), "
     "12 epochs",
     ["model.fusion.negative_mode=hard", "model.fusion.negatives_per_positive=1",
      "train.fusion_epochs=12"]),
    ("random negatives, token projections from the ITC heads, 4 epochs",
     ["model.fusion.token_proj_from_itc=true"]),
    ("width 128, MLP x2, random negatives (3 per positive), 12 epochs",
     ["model.fusion.width=128", "train.fusion_epochs=12"]),
    ("width 128, random negatives, 1 per positive each way, 12 epochs",
     ["model.fusion.width=128", "model.fusion.negatives_per_positive=1", "train.fusion_epochs=12"]),
    ("width 128, random negatives (3 per positive), 24 epochs",
     ["model.fusion.width=128", "train.fusion_epochs=24"]),
    ("random negatives (3 per positive), 8 epochs", ["train.fusion_epochs=8"]),
    ("random negatives (3 per positive), concept soft labels (1 x Jaccard of the UMLS "
     "concepts), 4 epochs", ["model.fusion.concept_soft_labels=1.0"]),
    ("random negatives, token projections from the ITC heads, concept soft labels, 4 epochs",
     ["model.fusion.token_proj_from_itc=true", "model.fusion.concept_soft_labels=1.0"]),
    # fusion's own image tower: blocks 5-6, conv_head and its BatchNorm trained (encoder lr)
    # on the 14x14x112 map encoded once; the two-tower model and its towers stay as they are
    ("image blocks 5-6 fine-tuned for fusion only, random negatives (3 per positive), 4 epochs",
     FUSION_ONLY_IMAGE_BLOCKS),
    ("image blocks 5-6 fine-tuned for fusion only, token projections from the ITC heads, "
     "4 epochs", [*FUSION_ONLY_IMAGE_BLOCKS, "model.fusion.token_proj_from_itc=true"]),
    # a finer image grid for fusion only: the same frozen image tower read at 448 px gives a
    # 14x14x1280 grid (4x the keys the text attends to); the two-tower model stays at 224 px
    ("finer image grid for fusion only (448 px: 14x14), width 128, random negatives, 1 per "
     "positive each way, 12 epochs",
     ["model.image.image_size=448", "model.fusion.width=128",
      "model.fusion.negatives_per_positive=1", "train.fusion_epochs=12"]),
]


def stored_split(run: Path, tt, data: str, split: str, precision: str):
    """The demo run's frozen store of ``split`` for its two-tower checkpoint ``tt`` (the key
    its training used), or exit saying to run the demo first."""
    from core.data.rocov2 import resolve_split, split_identity
    from core.frozen_store import FrozenStore, store_key

    key = store_key(tt.model, tt.config.model, tt.tokenizer,
                    split_identity(resolve_split(data, split)), None, precision)
    store = FrozenStore.find(str(run / "cache"), key)
    if store is None:
        raise SystemExit(f"{run}/cache holds no frozen store of the {split} split for "
                         f"this two-tower checkpoint: run the demo first")
    return store


def load_split(store, concepts) -> dict:
    """Every stored block of a split as one dict of numpy columns (prefixes, not pixels)."""
    from core.frozen_store import model_batch

    return concatenated([model_batch(store.read_block(b), concepts)
                         for b in range(store.meta()["blocks"])])


def batches(rows: dict, batch_size: int, seed: int | None):
    return shuffled_batches(rows, batch_size, seed)


@torch.no_grad()
def features(model, rows: dict) -> dict:
    from core.evaluation.reference import encode_batches

    model.eval()
    return encode_batches(model, batches(rows, 256, None))


@torch.no_grad()
def matrices(fusion, two_tower_features: dict, rows: dict, precision: str) -> dict:
    """ITM, fusion ITC and two-tower cosine (caption x image), and the groups; the fusion
    model run in ``precision`` (as the scoring jobs run it by default)."""
    from core.evaluation.reference import score_matrix
    from core.precision import autocast

    with autocast("cpu", precision):
        enc = features(fusion, rows)
        itm = score_matrix(fusion, enc["text"], enc["image"])
    tt = two_tower_features
    assert list(enc["image_id"]) == list(tt["image_id"])
    return {"itm": np.asarray(itm, np.float32),
            "itc": (enc["text"].embed @ enc["image"].embed.T).float().numpy(),
            "tt": (tt["text"].embed @ tt["image"].embed.T).float().numpy(),
            "group": np.asarray(enc["group"])}


def ranks_all_pairs(scores: np.ndarray, groups: np.ndarray) -> dict:
    from core.metrics import ranks_from_scores

    return {"t2i": ranks_from_scores(scores, groups, groups),
            "i2t": ranks_from_scores(scores.T, groups, groups)}


def ranks_rerank(m: dict, k: int, alpha: float) -> dict:
    """Two-tower top-k re-ordered by ITM + alpha x two-tower cosine (core's rerank rule)."""
    from core.metrics import keys_to_index, order_keys, ranks_from_scores
    from core.retrieval import fused_scores, rerank, topk_keys

    g, out = m["group"], {}
    for d, (itm, tt) in (("t2i", (m["itm"], m["tt"])), ("i2t", (m["itm"].T, m["tt"].T))):
        candidates = keys_to_index(topk_keys(order_keys(tt, np.arange(tt.shape[1])[None, :]), k))
        fused = fused_scores(np.take_along_axis(itm, candidates, 1),
                             np.take_along_axis(tt, candidates, 1), alpha)
        out[d] = rerank(candidates, fused, ranks_from_scores(tt, g, g), g, g, k)[2]
    return out


def mean_recall(ranks: dict) -> float:
    return float(per_query_mean_recall(ranks).mean())


def rules(m: dict) -> dict:
    """Each scoring rule's best setting on these matrices: {rule: (setting, ranks)}."""
    out = {"itm": ({}, ranks_all_pairs(m["itm"], m["group"]))}
    fused = [(a, ranks_all_pairs(m["itm"] + a * m["itc"], m["group"])) for a in ALPHAS]
    a, r = max(fused, key=lambda x: (round(mean_recall(x[1]), 9), -x[0]))
    out["fused"] = ({"alpha": a}, r)
    reranked = [((k, a), ranks_rerank(m, min(k, len(m["group"])), a))
                for k in RERANK_KS for a in ALPHAS]
    (k, a), r = max(reranked, key=lambda x: (round(mean_recall(x[1]), 9), -x[0][0], -x[0][1]))
    out["rerank"] = ({"k": k, "alpha": a}, r)
    return out


def apply_rule(m: dict, rule: str, setting: dict) -> dict:
    if rule == "itm":
        return ranks_all_pairs(m["itm"], m["group"])
    if rule == "fused":
        return ranks_all_pairs(m["itm"] + setting["alpha"] * m["itc"], m["group"])
    return ranks_rerank(m, min(setting["k"], len(m["group"])), setting["alpha"])


def variant_config(overrides: list | None, base_cfg, scale: float = 1.0):
    """The roco_cpu fusion run's config with ``RECIPE`` and ``overrides`` (None: the preset
    as it stands), ``scale`` x its epochs."""
    from core.config import load_config, resolve_fusion_run

    recipe = [] if overrides is None else [*RECIPE, *overrides]
    cfg = resolve_fusion_run(load_config("roco_cpu", ["model.kind=fusion", *recipe]))
    cfg.model.concepts.num_concepts = base_cfg.model.concepts.num_concepts
    cfg.train.epochs = max(1, round(cfg.train.epochs * scale))
    return cfg


def variant(overrides: list, two_tower: str, base_cfg, scale: float) -> tuple:
    """(config, model) of a variant: the roco_cpu fusion run with ``overrides``, its encoders
    and ITC heads copied from the two-tower checkpoint."""
    from core.checkpoint import init_fusion_from_two_tower
    from core.models import build_model

    cfg = variant_config(overrides, base_cfg, scale)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    init_fusion_from_two_tower(model, two_tower)
    return cfg, model


def frozen_boundary(cfg) -> tuple:
    """What a config's stored inputs depend on: where its frozen encoder layers end, and the
    image size they read."""
    return cfg.model.image.freeze_stages, cfg.model.text.freeze_layers, cfg.model.image.image_size


def concatenated(batches_: list) -> dict:
    """Numpy batches as one dict of columns (what ``load_split`` gives for the demo's store)."""
    return {k: np.concatenate([b[k] for b in batches_]) for k in batches_[0]}


def train_variant(cfg, model, rows: dict, pos_weight, log, precision: str,
                  validate=None) -> tuple:
    """Train ``model`` on ``rows`` for ``cfg``'s epochs with core's step: (model, info). With
    ``validate`` (model -> a validation score, after each epoch) the best epoch's weights are
    kept, as the Ray Train run keeps its best checkpoint (``train.keep: best``); without it,
    the last epoch's."""
    import copy

    from core.training.loop import LossModule, build_optimizer, build_scheduler, train_one_epoch

    module = LossModule(model, cfg.model, concept_pos_weight=pos_weight)
    steps = int(np.ceil(len(rows["group"]) / cfg.train.batch_size)) * cfg.train.epochs
    optimizer = build_optimizer(module, cfg.train)
    scheduler = build_scheduler(optimizer, steps, cfg.train.warmup_fraction)
    best, t0 = None, time.perf_counter()
    for epoch in range(cfg.train.epochs):
        stats = train_one_epoch(module, optimizer, scheduler,
                                batches(rows, cfg.train.batch_size, cfg.train.seed + epoch), "cpu",
                                precision)
        summary = stats.summary()
        score = None if validate is None else validate(model.eval())
        if score is not None and (best is None or score > best[0]):
            best = (score, epoch + 1, copy.deepcopy(model.state_dict()))
        log(f"    epoch {epoch + 1}/{cfg.train.epochs}: loss {summary.get('loss', float('nan')):.4f} "
            f"match acc {summary.get('match_acc', float('nan')):.3f} "
            f"({summary['samples_per_s']:.0f} samples/s)"
            + ("" if score is None else f" validation {score:.4f}"))
    seconds = time.perf_counter() - t0
    info = {"epochs": cfg.train.epochs, "train_seconds": seconds,
            "samples_per_s": len(rows["group"]) * cfg.train.epochs / seconds}
    if best is not None:
        model.load_state_dict(best[2])
        info.update(best_epoch=best[1], best_validation=best[0])
    return model.eval(), info


def cost_seconds(row: dict) -> float:
    """What a variant costs: seconds to encode its own frozen prefix (when the demo's store is
    not it), to train, and to score the validation split over all pairs (as the demo scores
    fusion)."""
    return row["own_encode_seconds"] + row["train_seconds"] + row["validation_all_pairs_seconds"]


def keep(results: list, per_query: dict) -> dict:
    """The first round, one seed per variant, by
    ``core.evaluation.selection.cheapest_within_noise``: the cheapest variant (``cost_seconds``)
    whose validation mean recall is within the paired 95 % interval of the best's. Each row
    gets its paired difference from the best ("val_minus_best"); the round's choice
    {"best", "kept"}."""
    choice = cheapest_within_noise(per_query, {r["variant"]: cost_seconds(r) for r in results})
    for row in results:
        row["val_minus_best"] = choice["minus_best"][row["variant"]]
        row["best"] = row["variant"] == choice["best"]
    return {"best": choice["best"], "kept": choice["kept"]}


def seed_check(results: list, first: dict, per_query: dict, seeds: int, retrain) -> dict:
    """The second round: the first round's finalists (its best and kept, and the preset)
    retrained with seeds 1 .. ``seeds`` - 1 past the first (``retrain(row, seed)`` -> that
    run's per-query validation scores, by its best rule), each variant's per-query scores
    averaged over its seeds, and the same rule over these finalists. The second round's kept
    is the bench's; each finalist's seeds, scores and paired difference are recorded."""
    finalists = [r for r in results if r["variant"] in (first["best"], first["kept"])
                 or r["preset"]]
    by_seed = {r["variant"]: [(r["seed"], per_query[r["variant"]])] for r in finalists}
    for row in finalists:
        for k in range(1, seeds):
            scores = retrain(row, row["seed"] + k)
            by_seed[row["variant"]].append((row["seed"] + k, scores))
    choice = cheapest_within_noise_over_seeds(
        {name: [scores for _, scores in runs] for name, runs in by_seed.items()},
        {r["variant"]: cost_seconds(r) for r in finalists})
    return {"seeds": seeds, "best": choice["best"], "kept": choice["kept"], "variants": {
        name: {"seeds": [seed for seed, _ in runs],
               "val_mean_recall_by_seed": choice["seeds"][name]["by_seed"],
               "val_mean_recall": choice["seeds"][name]["mean"],
               "sd_over_seeds": choice["seeds"][name]["sd"],
               "minus_best": choice["minus_best"][name]} for name, runs in by_seed.items()}}


def ci_row(ranks: dict, reference: dict | None = None) -> dict:
    from core.evaluation.significance import bootstrap_ci, paired_difference, per_query

    row = {}
    for d in ("t2i", "i2t"):
        for k in (1, 5, 10):
            mine = per_query(ranks[d], f"R@{k}")
            row[f"{d}/R@{k}"] = bootstrap_ci(mine).as_dict()
            if reference is not None:
                diff = paired_difference(mine, per_query(reference[d], f"R@{k}"))
                row[f"{d}/R@{k}/minus_two_tower"] = diff.as_dict()
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a finished roco_cpu `rocoray demo` directory")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="x every variant's epochs "
                   "(a smoke run: 0.25)")
    p.add_argument("--seeds", type=int, default=3, help="seeds in all for the finalists' "
                   "second round (1: one round, one seed per variant)")
    p.add_argument("--out", default=None, help="results file (default: bench/results/)")
    args = p.parse_args(argv)
    from core.checkpoint import load_checkpoint, resolve_checkpoint
    from core.precision import training_precision

    def log(line):
        print(line, flush=True)

    run = Path(args.run)
    summary = __import__("json").loads((run / "summary.json").read_text())
    data = summary["data"]
    tt_path = resolve_checkpoint(run / "train" / "two_tower")
    tt = load_checkpoint(tt_path)
    precision = training_precision(tt.config.train.precision, "cpu")  # as the demo trained
    rows, tt_features = {}, {}
    for split in SPLITS:
        store = stored_split(run, tt, data, split, precision)
        rows[split] = load_split(store, tt.concepts)
        if split != "train":
            tt_features[split] = features(tt.model, rows[split])
        log(f"{split}: {len(rows[split]['group'])} rows from {store.root}")
    pos_weight = (torch.from_numpy(tt.concepts.pos_weight(tt.config.model.concepts.max_pos_weight))
                  if tt.concepts is not None and tt.config.model.concepts.num_concepts else None)
    # the splits' frozen-layer outputs by frozen boundary (the demo's: its store), and the
    # seconds each boundary's own encoding took (a cost of the variants that need it)
    preset = variant_config(None, tt.config, args.epochs_scale)
    inputs, encode_seconds = {frozen_boundary(preset): rows}, {}
    variant_rows = {}

    def train_and_score(name: str, overrides: list, seed: int | None = None) -> tuple:
        """Train a variant (``seed``: its ``train.seed``, default the preset's) and score
        validation every way: (its row, model, the per-query scores of its best rule)."""
        extra = [] if seed is None else [f"train.seed={seed}"]
        cfg, model = variant([*overrides, *extra], tt_path, tt.config, args.epochs_scale)
        boundary = frozen_boundary(cfg)
        if boundary not in inputs:
            t0 = time.perf_counter()
            inputs[boundary] = {split: concatenated(encode_split(
                model, data, split, tt.tokenizer, tt.concepts, precision)) for split in SPLITS}
            encode_seconds[boundary] = time.perf_counter() - t0
            log(f"  frozen layers to {boundary} encoded in {encode_seconds[boundary]:.0f} s")
        variant_rows[name] = inputs[boundary]
        if pos_weight is None:
            variant_rows[name] = {s: {k: v for k, v in r.items() if k != "concepts"}
                                  for s, r in variant_rows[name].items()}
        model, info = train_variant(cfg, model, variant_rows[name]["train"], pos_weight, log,
                                    precision)
        t0 = time.perf_counter()
        val = matrices(model, tt_features["validation"], variant_rows[name]["validation"],
                       precision)
        info["validation_all_pairs_seconds"] = time.perf_counter() - t0
        info["own_encode_seconds"] = encode_seconds.get(boundary, 0.0)
        chosen = rules(val)
        row = {"variant": name, "overrides": overrides, "preset": cfg == preset,
               "seed": cfg.train.seed, **info, "validation": {
                   rule: {"setting": setting, "mean_recall": mean_recall(r),
                          **{f"{d}/R@{k}": float((r[d] < k).mean()) for d in ("t2i", "i2t")
                             for k in (1, 5, 10)}} for rule, (setting, r) in chosen.items()}}
        row["best_rule"] = max(row["validation"], key=lambda x: row["validation"][x]["mean_recall"])
        row["val_mean_recall"] = row["validation"][row["best_rule"]]["mean_recall"]
        log(f"  validation mean recall (seed {cfg.train.seed}): " + ", ".join(
            f"{rule} {v['mean_recall']:.4f} {v['setting']}" for rule, v in row["validation"].items()))
        return row, model, per_query_mean_recall(chosen[row["best_rule"]][1])

    results, models, per_query = [], {}, {}
    for name, overrides in VARIANTS:
        log(f"{name}")
        row, models[name], per_query[name] = train_and_score(name, overrides)
        results.append(row)
    first = keep(results, per_query)
    log(f"one seed each: best {first['best']}; kept {first['kept']}")

    def retrain(row: dict, seed: int):
        log(f"{row['variant']}, seed {seed}")
        return train_and_score(row["variant"], row["overrides"], seed)[2]

    second = (seed_check(results, first, per_query, args.seeds, retrain) if args.seeds > 1
              else dict(first, seeds=1))
    kept = next(r for r in results if r["variant"] == second["kept"])
    kept["kept"] = True
    v = tt_features["validation"]
    val_tt = ranks_all_pairs((v["text"].embed @ v["image"].embed.T).float().numpy(),
                             np.asarray(v["group"]))
    # the test split, read once: the kept variant and the preset, every rule at its
    # validation setting, against the two-tower model on the same queries
    test = {}
    for row in [r for r in results if r["preset"]] + [kept]:
        if row["variant"] in test:
            continue
        m = matrices(models[row["variant"]], tt_features["test"], variant_rows[row["variant"]]["test"],
                     precision)
        two_tower = ranks_all_pairs(m["tt"], m["group"])
        test[row["variant"]] = {"two_tower": ci_row(two_tower)} | {
            rule: ci_row(apply_rule(m, rule, v["setting"]), two_tower)
            for rule, v in row["validation"].items()}
        row["test"] = test[row["variant"]]
        log(f"test ({row['variant']}): " + ", ".join(
            f"{rule} R@10 t2i {r['t2i/R@10']['value']:.3f} i2t {r['i2t/R@10']['value']:.3f}"
            for rule, r in row["test"].items()))
    from core.provenance import portable_path

    result = {"bench": "fusion_variants", "data": data, "run": portable_path(run),
              "precision": precision,
              "two_tower_validation_mean_recall": mean_recall(val_tt),
              "test_items": int(len(rows["test"]["group"])), "epochs_scale": args.epochs_scale,
              "criterion": "the cheapest variant (seconds to encode its own frozen prefix, "
                           "if any, train, and score the validation split over all pairs) "
                           "whose validation mean recall (R@1/5/10, both directions, of its "
                           "best scoring rule) is within the paired 95 % interval of the best "
                           "variant's (the one-standard-error rule), first over all variants "
                           "with one seed each" + (
                               ", then over that round's best and kept and the preset with "
                               f"{args.seeds} seeds each, per-query scores averaged over the "
                               "seeds" if args.seeds > 1 else "")
                           + "; the test split read once, for the kept variant and the preset "
                           "(first seed)",
              "variants": results, "one_seed": first, "seed_check": second,
              "kept": kept["variant"]}
    write_result(result, out=args.out)
    return result


if __name__ == "__main__":
    main()
