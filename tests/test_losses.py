"""Losses against hand-computed references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.losses import InfoNCELoss, MatchLoss, concept_overlap, group_targets, sample_negatives


def _log_softmax(row):
    m = max(row)
    return [x - m - math.log(sum(math.exp(y - m) for y in row)) for y in [0] for x in row]


def test_infonce_matches_hand_computation():
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    txt = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    scale = torch.tensor(2.0)
    loss = InfoNCELoss()(img, txt, scale)
    sims = [[2.0 * sum(a * b for a, b in zip(i, t)) for t in txt.tolist()] for i in img.tolist()]
    i2t = -sum(_log_softmax(sims[r])[r] for r in range(3)) / 3
    cols = [[sims[r][c] for r in range(3)] for c in range(3)]
    t2i = -sum(_log_softmax(cols[r])[r] for r in range(3)) / 3
    assert loss.item() == pytest.approx((i2t + t2i) / 2, rel=1e-6)


def test_infonce_groups_spread_the_target():
    img = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    groups = torch.tensor([0, 0, 1, 2])
    t = group_targets(groups, groups)
    assert torch.allclose(t[0], torch.tensor([0.5, 0.5, 0, 0]))
    loss = InfoNCELoss()(img, txt, torch.tensor(10.0), groups)
    logits = 10.0 * img @ txt.T
    ref = 0.5 * (-(t * logits.log_softmax(1)).sum(1).mean() - (t * logits.T.log_softmax(1)).sum(1).mean())
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    # unique groups reduce to the plain loss
    plain = InfoNCELoss()(img, txt, torch.tensor(10.0))
    assert InfoNCELoss()(img, txt, torch.tensor(10.0), torch.arange(4)).item() == pytest.approx(plain.item())


def test_hard_negatives_are_the_most_similar_other_group():
    sim = torch.tensor([[9.0, 8.0, 1.0, 5.0],
                        [0.0, 9.0, 7.0, 3.0],
                        [2.0, 6.0, 9.0, 1.0],
                        [4.0, 3.0, 2.0, 9.0]])
    groups = torch.tensor([0, 0, 1, 2])  # rows 0 and 1 share a caption
    neg = sample_negatives(sim, groups, 2, "hardest")
    assert neg[0].tolist() == [3, 2]  # 1 is the same group, never a negative
    assert neg[1].tolist() == [2, 3]
    assert neg[2].tolist() == [1, 0]
    for mode in ("random", "hard"):
        sampled = sample_negatives(sim, groups, 2, mode, torch.Generator().manual_seed(0))
        for r in range(4):
            assert all(groups[j] != groups[r] for j in sampled[r].tolist())


def test_hard_sampling_prefers_similar_items():
    # one item (7) is very similar to every query: "hard" draws it almost always, "random"
    # about 1/(B-1) of the time
    b = 50
    sim = torch.zeros(b, b).fill_diagonal_(1.0)
    sim[:, 7] = 0.9
    groups = torch.arange(b)
    g = torch.Generator().manual_seed(0)
    rows = torch.arange(b) != 7
    hard = sample_negatives(sim, groups, 1, "hard", g)[rows, 0]
    rand = sample_negatives(sim, groups, 1, "random", g)[rows, 0]
    assert (hard == 7).float().mean() > 0.9
    assert (rand == 7).float().mean() < 0.2


def test_match_loss_pairs_and_balance():
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)
    loss_fn = MatchLoss(negatives_per_positive=2, mode="random")
    ti, ii, labels = loss_fn.pairs(emb, emb, torch.arange(5))
    assert len(labels) == 5 + 2 * 5 * 2
    assert labels[:5].tolist() == [1.0] * 5 and labels[5:].sum() == 0
    assert ((ti == ii) == (labels == 1)).all()  # negatives are always other rows
    logits = torch.linspace(-2, 2, len(labels))
    pos, neg = logits[labels == 1], logits[labels == 0]
    ref = 0.5 * (np.mean([math.log1p(math.exp(-x)) for x in pos.tolist()])
                 + np.mean([math.log1p(math.exp(x)) for x in neg.tolist()]))
    assert loss_fn(logits, labels).item() == pytest.approx(ref, rel=1e-5)


def test_concept_soft_labels_are_the_scaled_jaccard_overlap_of_negatives():
    concepts = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    ti, ii = torch.tensor([0, 0, 1, 2, 0]), torch.tensor([0, 1, 0, 3, 2])
    # {0,1} vs {0,2}: 1 shared of 3; two empty sets: 0, not 0/0
    assert concept_overlap(concepts, ti, ii).tolist() == pytest.approx([1.0, 1 / 3, 1 / 3, 0.0, 0.0])

    from core.models.config import ModelConfig
    from core.models.kind import ModelKind
    from core.training.loop import LossModule

    config = ModelConfig(kind=ModelKind.FUSION)
    config.fusion.concept_soft_labels = 0.5
    module = LossModule(torch.nn.Identity(), config)
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
    targets = module._soft_targets(labels, concepts, ti, ii)
    assert targets.tolist() == pytest.approx([1.0, 0.5 / 3, 0.5 / 3, 0.0, 0.0])  # positives stay 1
    with pytest.raises(ValueError, match="concept_soft_labels needs concept ids"):
        module._soft_targets(labels, None, ti, ii)
    # the BCE of the negatives is taken against the soft targets
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0, 1.0])
    bce = lambda x, y: -(y * math.log(1 / (1 + math.exp(-x)))  # noqa: E731
                         + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))
    ref = 0.5 * (bce(2.0, 1.0) + np.mean([bce(x, y) for x, y in
                                          zip(logits[1:].tolist(), targets[1:].tolist())]))
    assert MatchLoss()(logits, labels, targets=targets).item() == pytest.approx(ref, rel=1e-5)
    assert MatchLoss()(logits, labels).item() != pytest.approx(ref, rel=1e-3)
