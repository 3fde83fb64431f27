"""Concepts: the vocabulary and its targets, the image-only head and its loss, detection
metrics as ImageCLEF scores them, and concept-aware retrieval from top-K lists."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.concepts.evaluation import detection, retrieval
from core.concepts.detection import choose_threshold, detection_metrics, per_image_f1, prior_scores
from core.concepts.retrieval import concept_retrieval, jaccard, per_query
from core.concepts.vocabulary import ConceptVocabulary, resolve_vocabulary
from core.config import load_config
from core.data.preprocess import build_preprocessor
from core.losses import ConceptLoss
from core.models import build_model
from core.training.loop import LossModule


def test_vocabulary_counts_orders_and_counts_what_it_leaves_out(tmp_path):
    lists = [["C1", "C2"], ["C2", "C2", " "], [], None, np.array(["C3", "C2"]), ["C4"]]
    vocab = ConceptVocabulary.build(lists, min_count=1)
    assert vocab.ids == ["C2", "C1", "C3", "C4"] and vocab.counts == [3, 1, 1, 1]
    assert vocab.images == 6 and vocab.empty_images == 2  # [] and None (and blanks) are empty
    rare = ConceptVocabulary.build(lists, min_count=2)
    assert rare.ids == ["C2"] and rare.dropped == {"C1": 1, "C3": 1, "C4": 1}
    targets, unknown = rare.multi_hot([["C2", "C9"], None, ["C1", "C2"]])
    assert targets.tolist() == [[1], [0], [1]] and unknown.tolist() == [1, 0, 1]
    assert ConceptVocabulary.load(vocab.save(tmp_path).parent).as_dict() == vocab.as_dict()
    # positive weights: negatives / positives, capped
    assert vocab.pos_weight(4.0).tolist() == [1.0, 4.0, 4.0, 4.0]


def test_synthetic_rows_carry_their_attributes_as_concept_targets(synthetic_dir, tiny_tokenizer):
    from core.data.rocov2 import read_split
    from core.synthetic.attributes import CUIS

    vocab, where = resolve_vocabulary(synthetic_dir)
    assert set(vocab.ids) <= set(CUIS.values()) and len(vocab) >= 20
    assert where == "built from the train split's cui column"
    table = read_split(synthetic_dir, "validation", max_rows=16)
    cfg = load_config("tiny", ["model.concepts.num_concepts=%d" % len(vocab)])
    tok = tiny_tokenizer
    out = build_preprocessor(cfg.model, tok, vocab)(table)
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        assert {vocab.ids[j] for j in np.nonzero(out["concepts"][i])[0]} == set(row["cui"])
        assert CUIS[("modality", row["modality"])] in row["cui"]
    # without a head in the config, no targets are built
    cfg.model.concepts.num_concepts = 0
    assert "concepts" not in build_preprocessor(cfg.model, tok, vocab)(table)


def test_concept_loss_is_weighted_bce_with_an_optional_focal_term():
    from torchvision.ops import sigmoid_focal_loss

    torch.manual_seed(0)
    logits, targets = torch.randn(8, 5), (torch.rand(8, 5) < 0.3).float()
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    torch.testing.assert_close(ConceptLoss(weight)(logits, targets),
                               F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight))
    torch.testing.assert_close(ConceptLoss(None, gamma=2.0)(logits, targets),
                               sigmoid_focal_loss(logits, targets, alpha=-1, gamma=2.0,
                                                  reduction="mean"))


@pytest.mark.parametrize("kind", ["two_tower", "fusion"])
def test_the_concept_head_sees_the_image_only(kind):
    torch.manual_seed(0)
    cfg = load_config("tiny", [f"model.kind={kind}", "model.concepts.num_concepts=6"])
    cfg.model.text.vocab_size = 200
    model = build_model(cfg.model).eval()
    px = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8)
    _, logits = model.encode_image_with_concepts(px)
    assert logits.shape == (3, 6)
    # the concept loss moves no text-side parameter: the head cannot read the caption
    grads = torch.autograd.grad(ConceptLoss()(logits, torch.ones_like(logits)),
                                list(model.text_encoder.parameters()), allow_unused=True)
    assert all(g is None for g in grads)
    module = LossModule(model.train(), cfg.model)
    ids, mask = torch.randint(5, 200, (3, 10)), torch.ones(3, 10, dtype=torch.long)
    _, stats = module(px, ids, mask, torch.arange(3), torch.zeros(3, 6, dtype=torch.uint8))
    assert stats["concept_loss"] > 0
    no_head = build_model(load_config("tiny", [f"model.kind={kind}"]).model)
    assert no_head.concept_head is None and no_head.encode_image_with_concepts(px)[1] is None


def test_per_image_f1_is_imageclef_s_score():
    truth = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1]])
    pred = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]])
    # per image: 2*1/(1+2), both empty = 1, no overlap = 0, exact = 1
    assert per_image_f1(truth, pred) == pytest.approx((2 / 3 + 1 + 0 + 1) / 4)


def test_threshold_is_chosen_where_per_image_f1_peaks_and_chance_is_chance():
    rng = np.random.default_rng(0)
    truth = (rng.random((200, 6)) < 0.3).astype(np.uint8)
    # negatives score below 0.4, positives from 0.5: only a threshold in [0.4, 0.5] is perfect
    probs = np.where(truth, 0.5 + 0.5 * rng.random(truth.shape), 0.4 * rng.random(truth.shape))
    threshold, f1 = choose_threshold(truth, probs)
    assert threshold in (0.4, 0.45, 0.5) and f1 == 1.0
    assert f1 > per_image_f1(truth, probs >= 0.9)
    chance = detection_metrics(truth, prior_scores(truth.mean(0), len(truth)), 0.25)
    assert chance["macro_auroc"] == pytest.approx(0.5)
    assert chance["macro_ap"] == pytest.approx(truth.mean(0).mean())


def test_detection_uses_the_validation_threshold_never_the_test_one():
    logit = lambda p: np.log(np.asarray(p) / (1 - np.asarray(p)))  # noqa: E731
    vocab = ConceptVocabulary(["A", "B"], [50, 50], 100)
    # validation separates at ~0.8 (present 0.85, absent 0.75); the test split at ~0.45
    # (present 0.6, absent 0.3): a threshold chosen on test would score F1 1.0 there
    val = [["A"], ["B"], ["A", "B"], []]
    val_probs = np.array([[0.85, 0.75], [0.75, 0.85], [0.85, 0.85], [0.75, 0.75]])
    test = [["A"], ["B"], ["A", "B"], ["A"]]
    test_probs = np.array([[0.6, 0.3], [0.3, 0.6], [0.6, 0.6], [0.6, 0.3]])
    t_val, _ = choose_threshold(vocab.multi_hot(val)[0], val_probs)
    t_test, f1_test = choose_threshold(vocab.multi_hot(test)[0], test_probs)
    assert 0.75 < t_val <= 0.85 and t_test <= 0.6 and f1_test == 1.0  # the two choices differ
    out = detection(vocab, test, {"fusion": logit(test_probs)}, val, {"fusion": logit(val_probs)})
    fusion = out["methods"]["fusion"]
    assert "chosen on validation" in fusion["threshold_source"]
    assert fusion["threshold"] == pytest.approx(t_val)
    assert fusion["per_image_f1"] == 0.0  # nothing reaches the validation threshold on test
    assert set(out["methods"]) == {"fusion", "chance"}
    unscored = detection(vocab, test, {"fusion": logit(test_probs)})
    assert unscored["methods"]["fusion"]["threshold"] == 0.5


def test_concept_retrieval_matches_a_brute_force_over_full_rankings():
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(1)
    n, c, k = 40, 8, 10
    concepts = (rng.random((n, c)) < 0.3).astype(np.uint8)
    concepts[concepts.sum(1) == 0, 0] = 1
    concepts[3] = 0  # a query without concepts is left out, and counted
    scores = rng.random((n, n))
    order = np.argsort(-scores, 1)
    topk = order[:, :k]
    got = concept_retrieval(concepts, concepts, topk)
    rel = jaccard(concepts, concepts)
    kept = [q for q in range(n) if concepts[q].any()]
    assert got["queries"] == len(kept) and got["queries_without_concepts"] == 1
    assert got["nDCG@5"] == pytest.approx(ndcg_score(rel[kept], scores[kept], k=5))
    binary = rel >= 0.5
    p5, ap, rr = [], [], []
    for q in kept:
        hits = binary[q, order[q]]
        p5.append(hits[:5].mean())
        precisions = np.cumsum(hits[:k]) / np.arange(1, k + 1)
        ap.append((precisions * hits[:k]).sum() / min(binary[q].sum(), k))
        rr.append(1 / (np.argmax(hits[:k]) + 1) if hits[:k].any() else 0.0)
    assert got["P@5"] == pytest.approx(np.mean(p5))
    assert got["mAP@10"] == pytest.approx(np.mean(ap))
    assert got["MRR@10"] == pytest.approx(np.mean(rr))
    # a perfect ranking (by relevance itself) scores nDCG 1
    ideal = np.argsort(-rel, 1, kind="stable")[:, :k]
    assert per_query(concepts, concepts, ideal)["ndcg"] == pytest.approx(1.0)


def test_retrieval_sections_have_intervals_per_method_and_direction():
    cuis = [["A", "B"], ["A"], ["C"], ["B", "C"], ["A", "C"]]
    topk = {"fusion": {"t2i": np.array([[0, 1], [1, 0], [2, 3], [3, 2], [4, 0]]),
                       "i2t": np.array([[1, 0], [0, 1], [3, 2], [2, 3], [0, 4]])}}
    out = retrieval(cuis, cuis, topk)
    assert out["fusion"]["t2i"]["MRR@2"]["value"] == 1.0  # every query's own item is first
    assert out["fusion"]["i2t"]["MRR@2"]["value"] < 1.0
    e = out["fusion"]["t2i"]["nDCG@5"]
    assert e["low"] <= e["value"] <= e["high"] and e["n"] == 5


def test_concept_soft_labels_reach_the_fusion_match_loss():
    """The batch's concepts reach the match loss: with shared concepts the negatives' targets
    are soft, and the loss differs from hard labels on the same pairs; without them, an error."""
    cfg = load_config("tiny", ["model.kind=fusion", "model.concepts.num_concepts=4",
                               "model.fusion.negative_mode=random",
                               "model.fusion.contrastive_weight=0", "model.concepts.weight=0"])
    cfg.model.text.vocab_size = 200
    px = torch.randint(0, 255, (4, 3, 64, 64), dtype=torch.uint8)
    ids, mask = torch.randint(5, 200, (4, 10)), torch.ones(4, 10, dtype=torch.long)
    concepts = torch.ones(4, 4, dtype=torch.uint8)  # every pair overlaps fully: targets 0.5
    losses = {}
    for soft in (0.0, 0.5):
        cfg.model.fusion.concept_soft_labels = soft
        torch.manual_seed(0)
        module = LossModule(build_model(cfg.model).eval(), cfg.model)
        torch.manual_seed(1)  # the same negatives drawn
        losses[soft] = module(px, ids, mask, torch.arange(4), concepts)[0].item()
    assert losses[0.5] != pytest.approx(losses[0.0], rel=1e-4)
    with pytest.raises(ValueError, match="concept_soft_labels needs concept ids"):
        module(px, ids, mask, torch.arange(4), None)
