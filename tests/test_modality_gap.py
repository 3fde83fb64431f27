"""The modality gap: centroid distance and linear-probe separability of image vs caption
embeddings, with PCA / t-SNE views."""

from __future__ import annotations

import numpy as np
import pytest

from core.evaluation.modality_gap import gap_figure, modality_gap


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_gapped_pair_of_clouds_is_separable_and_a_mixed_one_is_not(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(80, 16))
    shift = np.zeros(16)
    shift[0] = 3.0
    gapped = modality_gap(unit(base + shift), unit(base + rng.normal(scale=0.3, size=base.shape) - shift))
    mixed = modality_gap(unit(base), unit(base + rng.normal(scale=0.3, size=base.shape)))
    assert gapped["centroid_distance"] > 1.0 > mixed["centroid_distance"]
    assert gapped["linear_probe_accuracy"] > 0.95
    assert mixed["linear_probe_accuracy"] < 0.75
    assert np.asarray(gapped["tsne"]).shape == (160, 2) and np.asarray(gapped["pca"]).shape == (160, 2)
    path = gap_figure({"AbM": gapped, "MbA": mixed}, tmp_path / "gap.png")
    assert path.stat().st_size > 10_000


def test_centroid_distance_is_the_distance_of_the_means():
    image = np.array([[1.0, 0.0], [0.0, 1.0]])
    text = np.array([[-1.0, 0.0], [0.0, -1.0]])
    gap = modality_gap(image, text, views=False)
    assert gap["centroid_distance"] == pytest.approx(np.sqrt(2.0))
    assert gap["mean_pair_cosine"] == pytest.approx(-1.0)
