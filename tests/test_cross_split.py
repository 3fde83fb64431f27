"""Retrieval across splits (test queries, training-split gallery): each method's top-K equals
a brute force over the full score matrix."""

from __future__ import annotations

import numpy as np
import torch

from core.scoring.settings import ScoringSettings

from core.evaluation.cross_split import across
from core.retrieval import topk_rows
from tests.helpers import tiny_models_and_features


def test_topk_rows_orders_by_score_then_lower_index():
    scores = np.array([[0.1, 0.5, 0.5, 0.9], [1.0, 0.0, 1.0, 0.2]], np.float32)
    assert topk_rows(scores, 3).tolist() == [[3, 1, 2], [0, 2, 3]]
    cols = np.array([[7, 5, 9, 8], [4, 3, 2, 1]])
    assert topk_rows(scores, 2, cols).tolist() == [[8, 5], [2, 4]]  # ties: lower id first


def test_every_method_matches_a_brute_force_across_splits():
    models, feats = tiny_models_and_features(5, 11)
    with torch.no_grad():
        got = across(models["fusion"], feats["q"], feats["g"],
                     ScoringSettings(k=4, rerank_k=6, alpha=2.0))
        f = models["fusion"]
        full_t2i = f.score(feats["q"]["fusion"][0], feats["g"]["fusion"][1]).numpy()
        full_i2t = f.score(feats["g"]["fusion"][0], feats["q"]["fusion"][1]).numpy().T
        cos_t2i = (feats["q"]["two_tower"][0].embed @ feats["g"]["two_tower"][1].embed.T).numpy()
        cos_i2t = (feats["q"]["two_tower"][1].embed @ feats["g"]["two_tower"][0].embed.T).numpy()
    assert got["fusion"]["t2i"].shape == (5, 4) and got["fusion"]["t2i"].max() < 11
    np.testing.assert_array_equal(got["fusion"]["t2i"], np.argsort(-full_t2i, 1, kind="stable")[:, :4])
    np.testing.assert_array_equal(got["fusion"]["i2t"], np.argsort(-full_i2t, 1, kind="stable")[:, :4])
    np.testing.assert_array_equal(got["two_tower"]["i2t"], np.argsort(-cos_i2t, 1, kind="stable")[:, :4])
    for d, (full, cos) in {"t2i": (full_t2i, cos_t2i), "i2t": (full_i2t, cos_i2t)}.items():
        first = np.argsort(-cos, 1, kind="stable")[:, :6]
        fused = np.take_along_axis(full + 2.0 * cos, first, 1)
        expected = np.take_along_axis(first, np.argsort(-fused, 1, kind="stable")[:, :4], 1)
        np.testing.assert_array_equal(got["rerank"][d], expected)
