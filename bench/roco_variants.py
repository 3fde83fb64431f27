"""What moves two-tower recall on real ROCO: recipe variants side by side, in one run, on the
ROCO sample (../shared/data/roco-sample: train 2,574 / validation 416 / test 857).

Every variant is the `roco_cpu` preset with overrides, trained single-process with core's
own step (``LossModule``, ``build_optimizer``, ``train_one_epoch``) on the frozen layers'
outputs encoded once (``core.training.frozen_features``: exactly what `rocoray train` trains on),
for the preset's epochs; the epoch with the best validation mean recall is kept (as the
Ray Train run keeps its best checkpoint) and scored on the test split: Recall@1/5/10 both
ways with 95 % bootstrap intervals, group-aware chance beside them. The variant kept is
chosen on validation by the one-standard-error rule (``core.evaluation.selection``): among
the pretrained variants with the concept head (the report's concept detection reads it),
the cheapest to train whose validation mean recall is within the paired 95 % interval of
the best one's.

    python -m bench.roco_variants [--data ../shared/data/roco-sample] [--epochs N]

Writes bench/results/roco_variants.json.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

from bench._common import shuffled_batches, write_result
from bench._frozen_inputs import encode_split
from core.evaluation.selection import cheapest_within_noise, per_query_mean_recall

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [
    # (name, overrides of the roco_cpu preset, random init); the preset itself is the row
    # with no overrides. The variant kept is chosen on validation (``keep``), never typed.
    ("random-init towers (contrast), frozen, linear heads",
     ["model.two_tower.proj_dropout=0", "model.concepts.weight=0"], True),
    ("pretrained towers frozen, linear heads (the issue's baseline)",
     ["model.two_tower.proj_dropout=0", "model.concepts.weight=0"], False),
    ("pretrained towers frozen, linear heads, feature dropout 0.2",
     ["model.concepts.weight=0"], False),
    ("roco_cpu: frozen, feature dropout 0.2, concept head", [], False),
    ("image blocks 5-6 fine-tuned, feature dropout 0.2, concept head",
     ["model.image.freeze_stages=7"], False),
    ("image blocks 5-6 fine-tuned, no dropout, concept head (the previous roco_cpu)",
     ["model.image.freeze_stages=7", "model.two_tower.proj_dropout=0"], False),
]


def rows_for(cached: list, freeze_stages: int, model) -> list:
    """Cached batches whose image prefix ends where this variant's frozen stages end (the
    stages between the cache's boundary and the variant's are run here, once)."""
    enc = model.image_encoder
    out = []
    with torch.no_grad():
        for rows in cached:
            rows = dict(rows)
            prefix = torch.from_numpy(rows["image_prefix"]).float()
            extra = enc.backbone[7:len(enc.frozen)] if freeze_stages != 7 else None
            if extra is not None and len(extra):
                rows["image_prefix"] = extra(prefix).half().numpy()
            out.append(rows)
    return out


def batches(rows: list, batch_size: int, seed: int | None):
    return shuffled_batches({k: np.concatenate([r[k] for r in rows]) for k in rows[0]},
                            batch_size, seed)


@torch.no_grad()
def retrieval(model, rows: list) -> dict:
    from core.features import Embeddings
    from core.metrics import ranks_from_scores

    model.eval()
    zi, zt, groups = [], [], []
    for batch in batches(rows, 256, None):
        inp = batch.inputs
        zi.append(model.image_features(None, inp["image_prefix"])[0])
        zt.append(model.text_features(inp["input_ids"], inp["attention_mask"], inp["text_prefix"])[0])
        groups.append(batch.group)
    text, image, g = Embeddings(torch.cat(zt)), Embeddings(torch.cat(zi)), np.concatenate(groups)
    scores = model.score(text, image).float().numpy()
    return {"t2i": ranks_from_scores(scores, g, g), "i2t": ranks_from_scores(scores.T, g, g),
            "groups": g}


def mean_recall(ranks: dict) -> float:
    return float(per_query_mean_recall(ranks).mean())


def run_variant(name, overrides, random_init, cfg_base, cached, epochs, log):
    from core.config import load_config
    from core.models import build_model
    from core.training.loop import LossModule, build_optimizer, build_scheduler, train_one_epoch

    cfg = load_config("roco_cpu", ["model.kind=two_tower", *overrides])
    cfg.model.concepts.num_concepts = cfg_base.model.concepts.num_concepts
    if not cfg.model.concepts.weight:
        cfg.model.concepts.num_concepts = 0
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, load_weights=not random_init)
    if random_init:  # the cache was encoded by this very random model's frozen layers
        model.load_state_dict(cached["random_state"], strict=False)
    key = "random" if random_init else "pretrained"
    train_rows = rows_for(cached[key]["train"], cfg.model.image.freeze_stages, model)
    val_rows = rows_for(cached[key]["validation"], cfg.model.image.freeze_stages, model)
    test_rows = rows_for(cached[key]["test"], cfg.model.image.freeze_stages, model)
    if not cfg.model.concepts.weight:
        for rows in (train_rows, val_rows, test_rows):
            for r in rows:
                r.pop("concepts", None)
    module = LossModule(model, cfg.model, concept_pos_weight=cached["pos_weight"]
                        if cfg.model.concepts.weight else None)
    epochs = epochs or cfg.train.epochs
    steps = int(np.ceil(sum(len(r["group"]) for r in train_rows) / cfg.train.batch_size)) * epochs
    optimizer = build_optimizer(module, cfg.train)
    scheduler = build_scheduler(optimizer, steps, cfg.train.warmup_fraction)
    best, t0 = (-1.0, None, 0, None), time.perf_counter()
    for epoch in range(epochs):
        train_one_epoch(module, optimizer, scheduler, batches(train_rows, cfg.train.batch_size,
                                                              cfg.train.seed + epoch), "cpu")
        val = retrieval(model, val_rows)
        score = mean_recall(val)
        log(f"  {name}: epoch {epoch + 1} val mean recall {score:.3f}")
        if score > best[0]:
            best = (score, copy.deepcopy(model.state_dict()), epoch + 1, val)
    model.load_state_dict(best[1])
    ranks = retrieval(model, test_rows)
    return ranks, best[3], {"epochs": epochs, "best_epoch": best[2], "val_mean_recall": best[0],
                            "concept_head": bool(cfg.model.concepts.weight),
                            "train_seconds": time.perf_counter() - t0}


def keep(rows: list, per_query: dict) -> dict:
    """The variant kept, by ``core.evaluation.selection.cheapest_within_noise``: among the
    candidates (pretrained, with the concept head: the report's concept detection reads
    it), the cheapest to train whose validation mean recall is within the paired 95 %
    interval of the best candidate's. Each row gets its paired difference from that best
    ("val_minus_best") and whether it is a candidate; the kept row "kept"."""
    candidates = [r["variant"] for r in rows if r["concept_head"] and not r["random_init"]]
    choice = cheapest_within_noise(per_query, {r["variant"]: r["train_seconds"] for r in rows},
                                   candidates)
    for row in rows:
        row["candidate"] = row["variant"] in candidates
        row["val_minus_best"] = choice["minus_best"][row["variant"]]
        row["best"] = row["variant"] == choice["best"]
        row["kept"] = row["variant"] == choice["kept"]
    return next(r for r in rows if r["kept"])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "roco-sample"))
    p.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    p.add_argument("--max-rows", type=int, default=None, help="rows per split (a smoke run)")
    p.add_argument("--out", default=None, help="results file (default: bench/results/)")
    args = p.parse_args(argv)
    from core.evaluation.comparison import chance_level, positives_per_query
    from core.concepts.vocabulary import resolve_vocabulary
    from core.config import load_config
    from core.data.tokenizer import resolve_tokenizer
    from core.models import build_model
    from core.evaluation.significance import bootstrap_ci, per_query

    def log(line):
        print(line, flush=True)

    base = load_config("roco_cpu", ["model.kind=two_tower", "model.image.freeze_stages=7"])
    tokenizer, _ = resolve_tokenizer(base.model.text, args.data)
    vocab, _ = resolve_vocabulary(args.data, "train", base.model.concepts.min_count)
    base.model.concepts.num_concepts = len(vocab)
    cached = {"pos_weight": torch.from_numpy(vocab.pos_weight(base.model.concepts.max_pos_weight))}
    t0 = time.perf_counter()
    for key, random_init in (("pretrained", False), ("random", True)):
        torch.manual_seed(base.train.seed)
        encoder = build_model(base.model, load_weights=not random_init).eval()
        if random_init:
            cached["random_state"] = copy.deepcopy(encoder.state_dict())
        cached[key] = {split: encode_split(encoder, args.data, split, tokenizer, vocab,
                                           max_rows=args.max_rows)
                       for split in ("train", "validation", "test")}
        log(f"encoded the frozen layers ({key}) of every split: {time.perf_counter() - t0:.0f} s")
    encode_seconds = time.perf_counter() - t0
    rows, val_scores = [], {}
    chance = None
    for name, overrides, random_init in VARIANTS:
        ranks, val, info = run_variant(name, overrides, random_init, base, cached, args.epochs,
                                       log)
        val_scores[name] = per_query_mean_recall(val)
        if chance is None:
            positives = positives_per_query(ranks["groups"])
            chance = {f"R@{k}": chance_level(f"R@{k}", len(positives), positives) for k in (1, 5, 10)}
        row = {"variant": name, "overrides": overrides, "random_init": random_init, **info}
        for d in ("t2i", "i2t"):
            for k in (1, 5, 10):
                row[f"{d}/R@{k}"] = bootstrap_ci(per_query(ranks[d], f"R@{k}")).as_dict()
        rows.append(row)
        log(f"{name}: test R@10 t2i {row['t2i/R@10']['value']:.3f} i2t "
            f"{row['i2t/R@10']['value']:.3f} (best epoch {info['best_epoch']})")
    kept = keep(rows, val_scores)
    log(f"kept: {kept['variant']}")
    result = {"bench": "roco_variants", "data": args.data, "test_items": len(ranks["groups"]),
              "criterion": "among the pretrained variants with the concept head, the cheapest to "
                           "train whose validation mean recall (R@1/5/10, both directions, its "
                           "best epoch) is within the paired 95 % interval of the best one's "
                           "(the one-standard-error rule)", "kept": kept["variant"],
              "chance": chance, "encode_seconds": encode_seconds, "variants": rows,
              "epochs": args.epochs or base.train.epochs}
    write_result(result, out=args.out)
    return result


if __name__ == "__main__":
    main()
