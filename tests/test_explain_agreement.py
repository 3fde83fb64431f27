"""Explanations scored without lesion boxes: agreement between maps, deletion / insertion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.explain.agreement import deletion_insertion, map_agreement


def test_agreement_of_identical_and_opposite_maps():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    same = map_agreement(a, a.copy())
    assert same["pearson"] == pytest.approx(1.0) and same["iou@5%"] == same["iou@20%"] == 1.0
    opposite = map_agreement(a, -a)
    assert opposite["pearson"] < -0.99 and opposite["iou@5%"] == 0.0 and opposite["iou@20%"] == 0.0
    unrelated = map_agreement(a, rng.random((32, 32)))
    assert abs(unrelated["pearson"]) < 0.1 and unrelated["iou@20%"] < 0.25


class CornerModel(nn.Module):
    """A two-tower stand-in whose score is the mean brightness of the top-left quarter."""

    kind = "two_tower"

    def __init__(self):
        super().__init__()
        self.image_encoder = nn.Module()
        self.image_encoder.normalize = lambda px: px.float() / 255.0

    def embed_image(self, x):
        return x[:, :, :16, :16].mean((1, 2, 3))[:, None]

    def embed_text(self, ids, mask):
        return torch.ones(len(ids), 1)


def test_deletion_and_insertion_reward_the_map_that_points_at_what_the_score_reads():
    model = CornerModel()
    pixels = torch.full((1, 3, 32, 32), 200, dtype=torch.uint8)
    ids, mask = torch.ones(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long)
    right = np.zeros((4, 4))
    right[:2, :2] = 1.0  # the quarter the score reads
    wrong = 1.0 - right
    good = deletion_insertion(model, pixels, ids, mask, right)
    bad = deletion_insertion(model, pixels, ids, mask, wrong)
    assert good["deletion_auc"] < 0.25 < 0.75 < bad["deletion_auc"]
    assert good["insertion_auc"] > 0.75 > 0.25 > bad["insertion_auc"]


def test_a_pair_whose_image_barely_moves_its_score_cannot_dominate_the_areas():
    """Curves are scaled by the model's median |score(full) - score(mean image)|, not each
    pair's own: a real ROCO fusion pair with a difference of 0.009 (median 4) had swung the
    mean deletion area from 0.3 to -14.7."""
    from core.explain.agreement import curve_areas, faithfulness_areas

    falls = np.linspace(4.0, 0.0, 11)  # full image 4 above the mean image, falling linearly
    rises = falls[::-1]
    tiny = np.array([1.419, 1.2, 0.9, 0.5, 0.0, -0.5, -0.9, -0.5, 0.0, 1.0, 1.41])  # span 0.009
    flipped = -falls  # the full image scores 4 BELOW the mean image
    curves = {"map": ("fusion", [(falls, rises), (tiny, tiny[::-1]), (falls, rises),
                                 (flipped, -rises)])}
    areas = faithfulness_areas(curves)["map"]
    assert areas["deletion_auc"][0] == pytest.approx(0.5)
    assert areas["insertion_auc"][0] == pytest.approx(0.5)
    assert abs(areas["deletion_auc"][1]) < 1 and abs(areas["insertion_auc"][1]) < 1
    assert curve_areas(tiny, tiny[::-1], tiny[0] - tiny[-1])["deletion_auc"] < -30  # own span
    assert areas["deletion_auc"][3] == pytest.approx(0.5)  # oriented by the pair's sign


def test_deletion_and_insertion_curves_are_scored_in_fp32_under_bf16_maps():
    """The report's maps may be made under bf16 autocast (the scoring precision); the curves
    that score them stay fp32: a two-tower cosine's curve spans little more than bf16 rounds."""
    from core.explain.agreement import score_curves
    from tests.helpers import explained_pair as pair, tiny_explained_model as tiny

    model = tiny("two_tower")
    px, ids, mask = pair()
    heat = np.random.default_rng(0).random(model.image_encoder.grid)
    exact = score_curves(model, px, ids, mask, heat)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_bf16 = score_curves(model, px, ids, mask, heat)
    for a, b in zip(exact, under_bf16):
        np.testing.assert_array_equal(a, b)
