"""The pieces that make fusion earn its cost: siblings from the generator's stated attributes,
sibling wins under each method's ordering (rerank's included), k and alpha chosen on
validation, fusion initialised from a two-tower checkpoint, and swapped-word negatives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.evaluation import fine_grained
from core.checkpoint import CheckpointError, init_fusion_from_two_tower, save_checkpoint
from core.config import load_config
from core.data.rocov2 import read_split
from core.losses.swap import swap_each_attribute, swap_pairs
from core.models import build_model
from core.scoring import ScoringPlan
from core.evaluation.rerank_selection import select_rerank


def test_siblings_come_from_the_generators_attributes(synthetic_dir):
    table = read_split(synthetic_dir, "train", columns=["image_id", *fine_grained.COLUMNS])
    attrs = {c: table.column(c).to_pylist() for c in table.column_names}
    ids = attrs["image_id"]
    pairs = fine_grained.sibling_pairs(attrs, ids)
    assert len(pairs["query"]) > 20
    assert set(pairs["attribute"]) == {"laterality", "position", "modality", "finding", "size",
                                       "count"}
    columns = {"laterality": "laterality", "position": "position", "modality": "modality",
               "finding": "finding", "size": "size_mm", "count": "lesion_count"}
    for q, s, a in zip(pairs["query"], pairs["sibling"], pairs["attribute"]):
        assert attrs["family_id"][q] == attrs["family_id"][s]
        differ = [c for c in columns.values() if attrs[c][q] != attrs[c][s]]
        assert differ == [columns[a]]  # exactly the named attribute, from the stated columns
    # the gallery order is what indices refer to: a reversed gallery gives mirrored rows
    reversed_pairs = fine_grained.sibling_pairs(attrs, ids[::-1])
    assert sorted(len(ids) - 1 - reversed_pairs["query"]) == sorted(pairs["query"])
    assert fine_grained.sibling_pairs({"image_id": ids, "caption": ids}, ids) is None


def test_wins_follow_the_tie_rule_and_each_direction():
    pairs = {"query": np.array([0, 1]), "sibling": np.array([1, 0]),
             "attribute": np.array(["laterality", "laterality"], dtype=object)}
    scores = np.array([[0.9, 0.5],   # caption 0: image 0 (true) above image 1
                       [0.5, 0.5]], dtype=np.float32)  # caption 1: a tie, image 0 wins it
    wins = fine_grained.wins_from_matrix(scores, pairs)
    assert wins["t2i"].tolist() == [True, False]
    # image -> text: image 0 compares caption 0 (0.9) with caption 1 (0.5); image 1 compares
    # caption 1 (0.5) with caption 0 (0.5): a tie, the lower index (caption 0) wins
    assert wins["i2t"].tolist() == [True, False]
    acc = fine_grained.accuracy(wins, pairs)
    assert acc["overall"]["value"] == 0.5 and acc["by_attribute"]["laterality"]["value"] == 0.5


def test_rerank_wins_use_candidates_then_the_first_stage():
    pairs = {"query": np.array([0, 0, 0]), "sibling": np.array([1, 2, 3]),
             "attribute": np.array(["position"] * 3, dtype=object)}
    r = {"candidates": np.array([[1, 0, 2]]), "scores": np.array([[5.0, 1.0, 9.0]], np.float32),
         "first": np.array([[0.3, 0.2, 0.1]], np.float32), "first_ranks": np.array([1])}
    rescored = {"t2i": r, "i2t": r}

    table = {(0, 0): 0.2, (0, 1): 0.3, (0, 2): 0.1, (0, 3): 0.9, (1, 0): 0.3, (2, 0): 0.1,
             (3, 0): 0.9}

    def first(ti, ii):  # arrays in, array out, as the first stage's scorer is called
        return np.array([table[(int(t), int(i))] for t, i in zip(ti, ii)])

    wins = fine_grained.rerank_wins(rescored, 0.0, pairs, first)
    # sibling 1: both candidates, fused 1.0 < 5.0: lost; alpha 100 flips it (0.2 vs 0.3 first)
    # sibling 2: both candidates, 1.0 < 9.0: lost; sibling 3: not a candidate: won
    assert wins["t2i"].tolist() == [False, False, True]
    # neither item a candidate: the first stage's order decides (0.2 vs 0.9: lost)
    outside = {d: {**r, "candidates": np.array([[1, 2, 4]])} for d in ("t2i", "i2t")}
    lone = {"query": np.array([0]), "sibling": np.array([3]),
            "attribute": np.array(["position"], dtype=object)}
    assert fine_grained.rerank_wins(outside, 0.0, lone, first)["t2i"].tolist() == [False]
    assert fine_grained.rerank_wins(rescored, 100.0, pairs, first)["t2i"].tolist() == \
        [False, True, True]


def test_rerank_k_and_alpha_are_chosen_by_validation_recall():
    # 4 queries, 3 candidates each; the correct item is candidate 2 everywhere. The fusion
    # scores get it right only with the first stage's help (alpha >= 2); k=1 misses it.
    groups = np.arange(4)
    cand = np.array([[1, 2, 0], [2, 3, 1], [3, 0, 2], [0, 1, 3]])
    scores = np.array([[0.5, 0.0, 0.4]] * 4, np.float32)
    first = np.array([[0.0, 0.0, 0.3]] * 4, np.float32)
    rescored = {d: {"candidates": cand, "scores": scores, "first": first,
                    "first_ranks": np.full(4, 2)} for d in ("t2i", "i2t")}
    choice = select_rerank(rescored, groups, ks=[1, 3], alphas=[0.0, 1.0, 4.0])
    assert (choice["k"], choice["alpha"]) == (3, 1.0)  # the smallest alpha that fixes it
    assert len(choice["table"]) == 6 and "validation" in choice["criterion"]
    fused = ScoringPlan(groups, groups, block=1, chunk=1, k=3).fuse(rescored, 1.0)
    assert (fused["t2i"][2] == 0).all()


def test_fusion_starts_from_a_two_tower_checkpoint(tmp_path, tiny_tokenizer):
    torch.manual_seed(0)
    cfg = load_config("tiny", ["model.kind=two_tower"])
    cfg.model.text.vocab_size = len(tiny_tokenizer)
    two_tower = build_model(cfg.model)
    save_checkpoint(tmp_path / "tt", two_tower, cfg, tiny_tokenizer)
    fcfg = load_config("tiny", ["model.kind=fusion"])
    fcfg.model.text.vocab_size = len(tiny_tokenizer)
    fusion = build_model(fcfg.model)
    assert init_fusion_from_two_tower(fusion, tmp_path / "tt") > 10
    for name, p in two_tower.image_encoder.state_dict().items():
        assert torch.equal(fusion.image_encoder.state_dict()[name], p)
    assert torch.equal(fusion.itc_text_proj.net[0].weight, two_tower.text_proj.net[0].weight)
    # the ITC similarity of the fusion model is the two-tower's from the first step
    px = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8)
    ids = torch.randint(5, len(tiny_tokenizer), (3, 12))
    mask = torch.ones_like(ids)
    fusion.eval(), two_tower.eval()
    with torch.no_grad():
        torch.testing.assert_close(fusion.encode_image(px).embed, two_tower.encode_image(px).embed)
        torch.testing.assert_close(fusion.encode_text(ids, mask).embed,
                                   two_tower.encode_text(ids, mask).embed)
    other = load_config("tiny", ["model.kind=fusion", "model.two_tower.embed_dim=64"])
    other.model.text.vocab_size = len(tiny_tokenizer)
    with pytest.raises(CheckpointError, match="does not fit"):
        init_fusion_from_two_tower(build_model(other.model), tmp_path / "tt")
    with pytest.raises(CheckpointError, match="initialises from a two-tower"):
        save_checkpoint(tmp_path / "fu", fusion, fcfg)
        init_fusion_from_two_tower(fusion, tmp_path / "fu")


def test_swapped_word_negatives(tiny_tokenizer):
    pairs = swap_pairs(tiny_tokenizer, ["left:right", "upper:lower", "nonexistentword:right"])
    assert pairs is not None and len(pairs) == 2  # a pair of non-single tokens is dropped
    enc = tiny_tokenizer(["nodule in the left upper lobe", "no finding", "right lower"],
                         padding="max_length", max_length=12, return_tensors="pt")
    ids = enc["input_ids"]
    swapped, rows = swap_each_attribute(ids, pairs)
    assert sorted(rows.tolist()) == [0, 0, 2, 2]  # one negative per attribute word present
    for negative, row in zip(swapped, rows):
        diff = (negative != ids[row]).nonzero()[:, 0]
        before = tiny_tokenizer.decode([int(ids[row, i]) for i in diff])
        after = tiny_tokenizer.decode([int(negative[i]) for i in diff])
        assert len(diff) == 1  # exactly ONE attribute word changed
        assert {before, after} in ({"left", "right"}, {"upper", "lower"})
    from core.training.loop import LossModule

    cfg = load_config("tiny", ["model.kind=fusion"])
    cfg.model.text.vocab_size = len(tiny_tokenizer)
    module = LossModule(build_model(cfg.model), cfg.model, swap=pairs)
    loss, stats = module(torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8), ids,
                         enc["attention_mask"], torch.arange(3))
    assert torch.isfinite(loss) and "swap_acc" in stats
    loss.backward()


def test_sibling_intervals_resample_sibling_pairs_not_comparisons():
    """Each sibling pair gives 4 comparisons that move together: the interval must be as
    wide as one value per pair gives, not half as wide (4x the units, falsely)."""
    from core.evaluation.fine_grained import accuracy
    from core.evaluation.significance import bootstrap_ci

    rng = np.random.default_rng(0)
    n = 200  # sibling pairs (a, b): both orderings as queries, both directions
    won = rng.random(n) < 0.6
    a, b = np.arange(n) * 2, np.arange(n) * 2 + 1
    pairs = {"query": np.concatenate([a, b]), "sibling": np.concatenate([b, a]),
             "attribute": np.asarray(["laterality"] * (2 * n), dtype=object)}
    wins = {"t2i": np.concatenate([won, won]), "i2t": np.concatenate([won, won])}
    overall = accuracy(wins, pairs)["overall"]
    per_pair = bootstrap_ci(won.astype(float))
    width = overall["high"] - overall["low"]
    assert width == pytest.approx(per_pair.high - per_pair.low, rel=0.2)
    naive = bootstrap_ci(np.concatenate([won, won, won, won]).astype(float))
    assert width > 1.6 * (naive.high - naive.low)
