"""Explanations (attention, Grad-CAM, Integrated Gradients) and how they are scored against
the synthetic lesion boxes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from core.explain.attribution import explain, localisation, localisation_study
from tests.helpers import explained_pair as pair, tiny_explained_model as tiny


@pytest.mark.parametrize("kind", ["two_tower", "fusion"])
def test_every_map_is_a_distribution_over_the_patch_grid(kind):
    model = tiny(kind)
    px, ids, mask = pair()
    maps = explain(model, px, ids, mask, steps=8)
    expected = {"gradcam", "ig", "token_ig"} | ({"attention"} if kind == "fusion" else set())
    assert set(maps) == expected
    for name in expected - {"token_ig"}:
        assert maps[name].shape == model.image_encoder.grid
        assert (maps[name] >= 0).all() and maps[name].sum() == pytest.approx(1.0, abs=1e-5)
    assert maps["token_ig"].shape == (9,)  # one attribution per real token, padding left out
    assert np.isfinite(maps["token_ig"]).all()
    assert not any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_fusion_attention_is_the_model_s_own_attention():
    model = tiny("fusion")
    px, ids, mask = pair()
    from core.explain.attribution import fusion_attention

    found = fusion_attention(model, px, ids, mask)
    with torch.no_grad():
        logit, maps = model(px, ids, mask, return_attention=True)
    expected = maps[-1][0].mean(0)[:9].mean(0)
    np.testing.assert_allclose(found["attention"].ravel(), (expected / expected.sum()).numpy(),
                               rtol=1e-5, atol=1e-6)
    assert found["logit"] == pytest.approx(float(logit), abs=1e-5)
    assert found["attention_tokens"].shape == (9, *model.image_encoder.grid)


def test_localisation_scores_peak_and_energy_against_the_box():
    heat = np.zeros((4, 4))
    heat[0, 3] = 0.7  # top-right cell: patient's left, upper
    heat[3, 0] = 0.3
    assert localisation(heat, [0.75, 0.0, 1.0, 0.25]) == {"pointing": True, "energy": pytest.approx(0.7)}
    assert localisation(heat, [0.0, 0.75, 0.25, 1.0]) == {"pointing": False, "energy": pytest.approx(0.3)}
    part = localisation(heat, [0.9, 0.0, 1.0, 0.25])  # 40 % of the peak cell, not its centre
    assert part["energy"] == pytest.approx(0.28, abs=0.03) and part["pointing"] is False
    whole = localisation(np.full((4, 4), 1 / 16), [0, 0, 1, 1])
    assert whole["energy"] == pytest.approx(1.0)


def test_study_scores_every_method_and_a_random_map():
    px, ids, mask = pair()
    cases = [{"box": [0.5, 0.0, 1.0, 0.5],
              "inputs": {k: (tiny(k), px, ids, mask) for k in ("two_tower", "fusion")}}]
    study = localisation_study(cases, steps=4)
    assert set(study["scores"]) == {"fusion cross-attention", "fusion Grad-CAM (ITM)",
                                    "fusion Integrated Gradients", "two-tower Grad-CAM",
                                    "two-tower Integrated Gradients", "random map"}
    assert all(len(v["energy"]) == 1 for v in study["scores"].values())


def test_lesion_boxes_sit_where_the_stated_attributes_say_and_pixels_are_unchanged():
    from core.synthetic.attributes import sample_case
    from core.synthetic.render import render_case, render_image

    digest = hashlib.sha256()
    for i in range(6):  # the same images as before the box was added (generator version 2)
        case = sample_case(np.random.default_rng([3, i]), 0.0)
        digest.update(render_image(case, np.random.default_rng([3, i, 1]), 96).tobytes())
    assert digest.hexdigest() == "5f9573e7e5a71839d9017ccca37d37d0423ec28484c539e11a3e9a644565313a"
    for i in range(40):
        case = sample_case(np.random.default_rng([5, i]), 0.0)
        pixels, box = render_case(case, np.random.default_rng([5, i, 1]), 128)
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        # patient's left is image right, as radiographs are read
        assert (cx > 0.5) == (case.laterality == "left"), (case, box)
        assert (cy < 0.5) == (case.position == "upper") or case.region == "head", (case, box)
    normal = sample_case(np.random.default_rng(0), 1.0)
    assert render_case(normal, np.random.default_rng(1), 64)[1] is None


@pytest.mark.parametrize("kind", ["two_tower", "fusion"])
def test_every_method_explains_a_model_whose_parameters_are_all_frozen(kind):
    """roco_cpu freezes both towers (and a model loaded for inference may freeze all): the
    maps are gradients with respect to activations, never to parameters, so they must not
    depend on any parameter's requires_grad. Frozen Grad-CAM crashed the real demo."""
    model = tiny(kind)
    px, ids, mask = pair()
    expected = explain(model, px, ids, mask, steps=8)
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = explain(model, px, ids, mask, steps=8)
    assert set(frozen) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(frozen[name], value, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_explanation_study_explains_in_the_scoring_precision(monkeypatch, precision):
    """The report's explanations run in the precision the models are scored in (bf16 on
    roco_cpu, bench.explain_precision): every score explained is computed under it."""
    from types import SimpleNamespace

    from core.explain import study

    seen = {}

    def record(*_args):
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        seen["dtype"] = torch.get_autocast_dtype("cpu")
        return {"available": True}

    monkeypatch.setattr(study, "_explanation_study", record)
    loaded = {"fusion": SimpleNamespace(model=tiny("fusion"))}
    assert study.explanation_study("data", "test", loaded, 2, None, [], precision)["available"]
    assert seen["autocast"] == (precision == "bf16")
    if precision == "bf16":
        assert seen["dtype"] == torch.bfloat16


def test_bf16_maps_agree_with_fp32_maps():
    from core.explain.agreement import map_agreement

    model = tiny("fusion")
    px, ids, mask = pair()
    exact = explain(model, px, ids, mask, steps=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = explain(model, px, ids, mask, steps=8)
    for name in ("attention", "gradcam", "ig"):
        assert low[name].dtype == np.float32 and low[name].sum() == pytest.approx(1.0, abs=1e-4)
        assert map_agreement(exact[name], low[name])["pearson"] > 0.9, name
