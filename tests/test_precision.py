"""Precision: bf16 where the device computes it natively (GPUs, CPUs with AVX512-BF16 / AMX),
fp32 elsewhere; and every fusion scoring path of an evaluation runs in the scoring job's
precision (the cross-split retrieval too, not only the scoring actors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core import precision
from core.config import load_config
from core.evaluation.cross_split import across
from core.models import build_model
from core.scoring.settings import ScoringSettings
from tests.helpers import tiny_models_and_features


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_bf16_is_honoured_on_cpus_that_compute_it_natively(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.training_precision("bf16", "cpu") == expected
    assert precision.training_precision("bf16", "cuda") == "bf16"
    assert precision.training_precision("fp32", "cpu") == "fp32"
    # scoring: the flag wins; else the checkpoint's training precision where it runs
    assert precision.scoring_precision(None, "cpu", "bf16") == expected
    assert precision.scoring_precision("fp32", "cpu", "bf16") == "fp32"
    assert precision.scoring_precision(None, "cpu", "fp32") == "fp32"


@pytest.mark.parametrize("wanted", ["bf16", "fp32", None])
def test_cross_split_retrieval_scores_fusion_pairs_in_the_settings_precision(wanted):
    models, feats = tiny_models_and_features(5, 9)
    seen = []
    hooks = [m.register_forward_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
             for m in models["fusion"].modules() if isinstance(m, torch.nn.Linear)]
    got = across(models["fusion"], feats["q"], feats["g"],
                 ScoringSettings(k=3, rerank_k=4, precision=wanted))
    for h in hooks:
        h.remove()
    assert seen and set(seen) == {wanted == "bf16"}
    assert np.asarray(got["fusion"]["t2i"]).shape == (5, 3)


@pytest.mark.parametrize("wanted", ["bf16", "fp32"])
def test_the_frozen_layers_run_in_the_requested_precision(wanted):
    from core.training.frozen_features import encode_frozen

    cfg = load_config("tiny", ["model.kind=two_tower", "model.image.freeze_stages=-1",
                               "model.text.freeze_layers=-1"])
    cfg.model.text.vocab_size = 100
    model = build_model(cfg.model).eval()
    seen = []
    hooks = [m.register_forward_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
             for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    rng = np.random.default_rng(0)
    rows = {"pixel_values": rng.integers(0, 255, (3, 3, 64, 64), dtype=np.uint8),
            "input_ids": rng.integers(5, 100, (3, 8)), "attention_mask": np.ones((3, 8), np.int64),
            "group": np.arange(3), "skip": np.zeros(3, np.int8), "image_id": np.array(["a", "b", "c"], dtype=object),
            "caption": np.array(["x", "y", "z"], dtype=object)}
    out = encode_frozen(model, rows, precision=wanted)
    for h in hooks:
        h.remove()
    assert seen and set(seen) == {wanted == "bf16"}
    assert out["image_prefix"].shape[0] == 3 and out["text_prefix"].shape[0] == 3
