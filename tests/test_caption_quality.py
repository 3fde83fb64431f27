"""Report quality of retrieved captions (pycocoevalcap): NLG@K from top-K lists, with the
oracle as the ceiling and a random ranking as the floor."""

from __future__ import annotations

import numpy as np
import pytest

from core.evaluation.caption_quality import caption_quality, meteor_unavailable, nlg_at_k, normalise

CAPTIONS = ["Small nodule in the left upper lung.", "Large mass in the right lower abdomen.",
            "Normal chest radiograph without any finding.", "Small cyst in the left lower kidney.",
            "Two calcifications in the right upper pelvis.", "Large abscess in the head, left."]


def test_normalise_lowercases_and_drops_punctuation():
    assert normalise("Left-sided  NODULE, 12 mm.") == "left sided nodule 12 mm"


def test_nlg_at_k_averages_sentence_scores_over_ranks():
    n = len(CAPTIONS)
    own_first = np.stack([np.roll(np.arange(n), -q)[:3] for q in range(n)])  # rank 1 = itself
    curves = nlg_at_k(CAPTIONS, own_first, 3)
    assert curves["BLEU-4"][0] == pytest.approx(1.0, abs=1e-6)  # its own caption at rank 1
    assert curves["ROUGE-L"][0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(curves["ROUGE-L"], curves["ROUGE-L"][1:]))  # others dilute
    # NLG@2 is the mean of the rank-1 and rank-2 scores
    second = nlg_at_k(CAPTIONS, own_first[:, 1:2], 1)["ROUGE-L"][0]
    assert curves["ROUGE-L"][1] == pytest.approx((1.0 + second) / 2)


def test_oracle_is_the_ceiling_and_methods_sit_between():
    n = len(CAPTIONS)
    good = np.stack([np.roll(np.arange(n), -q)[:3] for q in range(n)])
    out = caption_quality(CAPTIONS, {"fusion": {"t2i": good, "i2t": good}}, max_k=3)
    assert out["ks"] == [1, 2, 3]
    oracle = out["curves"]["oracle"]["t2i"]
    for metric in out["metrics"]:
        assert oracle[metric][-1] >= out["curves"]["fusion"]["t2i"][metric][-1]
        assert out["curves"]["fusion"]["t2i"][metric][0] >= out["curves"]["random"]["t2i"][metric][0] - 1e-9
    if meteor_unavailable() is None:
        assert "METEOR" in out["metrics"] and out["missing"] == {}
    else:
        assert "METEOR" not in out["metrics"] and "Java" in out["missing"]["METEOR"]
