"""Encoders, the fusion model's split API, the two-tower model, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.config import load_config
from core.evaluation.reference import encode_batches, stream_retrieval
from core.models import build_model
from core.models.encoders import ImageEncoder, TextEncoder
from core.training.loop import LossModule


def tiny(kind, vocab=500):
    cfg = load_config("tiny")
    cfg.model.kind = kind
    cfg.model.text.vocab_size = vocab
    return cfg


def inputs(n, seed=0, size=64, length=48, vocab=500):
    g = torch.Generator().manual_seed(seed)
    px = torch.randn(n, 3, size, size, generator=g)
    ids = torch.randint(5, vocab, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    for i in range(n):
        mask[i, 10 + (i * 7) % (length - 10):] = 0
    ids[mask == 0] = 0
    return px, ids, mask


def test_resnet50_patch_grid_and_pooled():
    cfg = load_config("base").model.image
    cfg.pretrained = False
    enc = ImageEncoder(cfg).eval()
    patches, pooled = enc(torch.randn(1, 3, 224, 224))
    assert patches.shape == (1, 49, 2048) and pooled.shape == (1, 2048)
    assert enc.grid == (7, 7)


@pytest.mark.parametrize("preset", ["tiny", "roco_cpu"])
def test_image_encoder_runs_its_convolutions_channels_last_with_the_nchw_result(preset):
    """Every image-encoder call feeds the backbone NHWC (oneDNN's fast kernels on a CPU,
    bench/channels_last.py): from uint8 pixels, from standardised floats (explanations) and
    from a frozen prefix; the features equal NCHW's up to float rounding."""
    cfg = load_config(preset).model.image
    if preset == "roco_cpu":
        cfg.freeze_stages = 5  # a frozen prefix, then trainable stages that read it
    enc = ImageEncoder(cfg, load_weights=False).eval()
    seen = []
    hooks = [enc.backbone[i].register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
        for i in (0, len(enc.frozen) if enc.frozen else 0)]
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (2, 3, cfg.image_size, cfg.image_size), generator=g,
                           dtype=torch.uint8)
    with torch.no_grad():
        patches, pooled = enc(pixels)
        _, from_float = enc(enc.normalize(pixels).contiguous())
        if enc.frozen:
            _, from_prefix = enc(None, prefix=enc.frozen_prefix(pixels).contiguous())
            torch.testing.assert_close(from_prefix, pooled, rtol=1e-4, atol=1e-4)
        for h in hooks:
            h.remove()
        nchw = enc.backbone(enc.normalize(pixels).contiguous()).flatten(2).mean(-1)
    assert seen and all(seen)
    torch.testing.assert_close(from_float, pooled)
    torch.testing.assert_close(pooled, nchw, rtol=1e-4, atol=1e-4)
    assert patches.shape == (2, enc.num_patches, enc.out_dim)


def test_text_encoder_from_local_pretrained_dir(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(tmp_path)
    cfg = load_config("tiny").model.text
    cfg.name_or_path = str(tmp_path)
    enc = TextEncoder(cfg)
    _, ids, mask = inputs(2, vocab=300)
    tokens, m, pooled = enc(ids, mask)
    assert tokens.shape == (2, 48, 64) and pooled.shape == (2, 64)


def test_fusion_split_api_equals_plain_forward():
    torch.manual_seed(0)
    model = build_model(tiny("fusion").model).eval()
    px, ids, mask = inputs(7)
    with torch.no_grad():
        text, image = model.encode_text(ids, mask), model.encode_image(px)
        block = model.score(text, image)  # (7, 7)
        assert block.shape == (7, 7)
        for shift in range(7):  # every caption x image pairing, against the plain path
            perm = (torch.arange(7) + shift) % 7
            plain = model(px[perm], ids, mask)
            torch.testing.assert_close(block[torch.arange(7), perm], plain, atol=1e-5, rtol=0)
            torch.testing.assert_close(model.score_pairs(text, image, torch.arange(7), perm),
                                       plain, atol=1e-5, rtol=0)
        # a rectangular block is a sub-block of the square one
        torch.testing.assert_close(model.score(text.index(slice(2, 5)), image.index(slice(0, 3))),
                                   block[2:5, :3], atol=1e-5, rtol=0)


def test_pair_scores_and_rerank_candidates_match_the_block_scores():
    """The pairs path every rerank uses (batches ordered by caption length, scattered back)
    returns each listed pair's score in the order listed, whatever the batch: the block
    path's entry for that pair, in both query directions."""
    from core.scoring.pairs import pair_scores
    from core.scoring.worker import score_candidates

    torch.manual_seed(0)
    model = build_model(tiny("fusion").model).eval()
    model.score_alpha = 2.0  # the ranking score: the fused one
    px, ids, mask = inputs(9)
    with torch.no_grad():
        text, image = model.encode_text(ids, mask), model.encode_image(px)
        block = model.score(text, image).numpy()
    rng = np.random.default_rng(0)
    ti, ii = rng.integers(0, 9, 40), rng.integers(0, 9, 40)
    listed = pair_scores(model, text, image, ti, ii)
    np.testing.assert_allclose(listed, block[ti, ii], atol=1e-5, rtol=0)
    np.testing.assert_allclose(pair_scores(model, text, image, ti, ii, batch=3), listed,
                               atol=1e-6, rtol=0)
    cand = rng.integers(0, 9, (4, 5))  # 4 queries x 5 candidates (gallery rows)
    by_text = score_candidates(model, text.index(slice(0, 4)), image, cand, "text")
    np.testing.assert_allclose(by_text, np.take_along_axis(block[:4], cand, 1), atol=1e-5, rtol=0)
    by_image = score_candidates(model, image.index(slice(0, 4)), text, cand, "image")
    np.testing.assert_allclose(by_image, np.take_along_axis(block[:, :4].T, cand, 1),
                               atol=1e-5, rtol=0)


def test_block_scoring_runs_each_encoder_once_per_item():
    torch.manual_seed(0)
    model = build_model(tiny("fusion").model).eval()
    seen = {"image": 0, "text": 0}
    model.image_encoder.register_forward_hook(lambda m, i, o: seen.__setitem__("image", seen["image"] + i[0].shape[0]))
    model.text_encoder.register_forward_hook(lambda m, i, o: seen.__setitem__("text", seen["text"] + i[0].shape[0]))
    n_img, n_txt = 12, 9
    px, _, _ = inputs(n_img)
    _, ids, mask = inputs(n_txt, seed=1)
    with torch.no_grad():
        text, image = model.encode_text(ids, mask), model.encode_image(px)
        acc = stream_retrieval(model, text, image, np.arange(n_txt), np.arange(n_txt).tolist() + [0, 1, 2], k=3, block=4)
    assert seen == {"image": n_img, "text": n_txt}  # N + M encoder passes, not N x M
    assert acc.t2i.keys.shape == (n_txt, 3)


def test_cross_attention_weights():
    model = build_model(tiny("fusion").model).eval()
    px, ids, mask = inputs(3)
    with torch.no_grad():
        logits, maps = model(px, ids, mask, return_attention=True)
        plain = model(px, ids, mask)
    assert len(maps) == 2 and maps[0].shape == (3, 4, 48, model.image_encoder.num_patches)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(3, 4, 48))
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=0)


def test_two_tower_embeddings_and_temperature():
    cfg = tiny("two_tower")
    model = build_model(cfg.model).eval()
    px, ids, mask = inputs(4)
    with torch.no_grad():
        img, txt, scale = model(px, ids, mask)
    assert img.shape == (4, 128)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(4))
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert isinstance(model.logit_scale, torch.nn.Parameter)
    cfg.model.two_tower.learnable_temperature = False
    cfg.model.two_tower.temperature = 0.005  # 1/T = 200 is clamped at 100, as in CLIP
    fixed = build_model(cfg.model)
    assert not isinstance(fixed.logit_scale, torch.nn.Parameter)
    assert fixed.scale().item() == pytest.approx(100.0)
    cfg.model.two_tower.proj_layers = 3
    deep = build_model(cfg.model)
    assert sum(isinstance(m, torch.nn.Linear) for m in deep.image_proj.modules()) == 3


@pytest.mark.parametrize("kind", ["fusion", "two_tower"])
def test_gradients_reach_both_encoders(kind):
    torch.manual_seed(0)
    cfg = tiny(kind)
    model = build_model(cfg.model)
    loss_module = LossModule(model, cfg.model)
    px, ids, mask = inputs(6)
    loss, _ = loss_module(px, ids, mask, torch.arange(6))
    loss.backward()
    for name in ("image_encoder", "text_encoder"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum() for g in grads) > 0, name
    if kind == "two_tower":
        assert model.logit_scale.grad is not None


def test_encode_batches_concatenates_features():
    from core.batch import collate

    model = build_model(tiny("fusion").model).eval()
    batches = []
    for s in range(3):
        px, ids, mask = inputs(4, seed=s)
        batches.append(collate({"pixel_values": px.numpy(), "input_ids": ids.numpy(),
                                "attention_mask": mask.numpy(), "skip": np.zeros(4, np.int8),
                                "group": np.array([s * 4 + i for i in range(4)]),
                                "image_id": np.array([f"{s}-{i}" for i in range(4)], dtype=object)}))
    enc = encode_batches(model, batches)
    assert len(enc["text"]) == 12 and enc["image"].k.shape[0] == 12
    assert enc["image_id"][5] == "1-1"


def test_the_fused_score_adds_the_itc_cosine_and_its_alpha_is_chosen_on_validation():
    """Fusion's ranking score may be match logit + alpha x ITC cosine (ALBEF/BLIP combine
    ITM and ITC); with model.fusion.score_alpha None, validation picks alpha from the grid
    by mean recall, and every ranking path (score, score_pairs(ranking=True)) agrees."""
    from core.metrics import evaluate_scores
    from core.evaluation.reference import score_matrix, validate
    from core.models.fusion import FUSED_SCORE_ALPHAS

    torch.manual_seed(0)
    cfg = tiny("fusion")
    model = build_model(cfg.model).eval()
    px, ids, mask = inputs(12)
    with torch.no_grad():
        image, text = model.encode_image(px), model.encode_text(ids, mask)
    itm = score_matrix(model, text, image)
    itc = (text.embed @ image.embed.T).numpy()
    model.score_alpha = 3.0
    fused = score_matrix(model, text, image)
    np.testing.assert_allclose(fused, itm + 3.0 * itc, rtol=1e-4, atol=1e-4)
    idx = torch.arange(12)
    with torch.no_grad():
        diag = model.score_pairs(text, image, idx, idx, ranking=True).numpy()
        plain = model.score_pairs(text, image, idx, idx).numpy()
    np.testing.assert_allclose(diag, np.diag(fused), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(plain, np.diag(itm), rtol=1e-4, atol=1e-4)  # training's logit

    model.config.fusion.score_alpha = None
    groups = np.arange(12)
    found = validate(model, {"text": text, "image": image, "group": groups}, ks=(1, 5, 10))
    best = max(FUSED_SCORE_ALPHAS, key=lambda a: (round(evaluate_scores(
        itm + a * itc, groups, groups, ks=(1, 5, 10))["mean_recall"], 9), -a))
    assert found["score_alpha"] == model.score_alpha == best
    assert found["mean_recall"] == pytest.approx(evaluate_scores(
        itm + best * itc, groups, groups, ks=(1, 5, 10))["mean_recall"])


def test_fusion_validation_from_the_itc_candidates_scores_only_them_with_the_same_rerank(
        monkeypatch):
    """A fusion run that keeps its last epoch validates the earlier ones as ALBEF does: the
    match head scores only the ITC top-k candidates of both directions (at most 2 x k x N
    pairs, never the N x N matrix), and its ITC and rerank metrics equal those of the
    all-pairs validation; no alpha is chosen and no all-pairs metric is reported."""
    from core.evaluation.reference import itc_candidates, validate
    from core.models.fusion import FusionModel

    torch.manual_seed(0)
    model = build_model(tiny("fusion").model).eval()
    n, k = 24, 4
    px, ids, mask = inputs(n)
    with torch.no_grad():
        image, text = model.encode_image(px), model.encode_text(ids, mask)
    encoded = {"text": text, "image": image, "group": np.arange(n)}
    full = validate(model, encoded, rerank_k=k, ks=(1, 5, 10))
    scored, matrices = [], []
    pairs, score = FusionModel.score_pairs, FusionModel.score
    monkeypatch.setattr(FusionModel, "score_pairs", lambda self, t, i, ti=None, ii=None, **kw: (
        scored.append(n if ti is None else len(ti)) or pairs(self, t, i, ti, ii, **kw)))
    monkeypatch.setattr(FusionModel, "score", lambda self, t, i: (
        matrices.append((len(t), len(i))) or score(self, t, i)))
    model.config.fusion.score_alpha = None
    cheap = validate(model, encoded, rerank_k=k, ks=(1, 5, 10), all_pairs=False)
    assert not matrices  # no all-pairs score matrix, not even in blocks
    itc = (text.embed @ image.embed.T).numpy()
    top = np.argsort(-itc, 1, kind="stable")[:, :k], np.argsort(-itc.T, 1, kind="stable")[:, :k]
    wanted = ({(t, int(i)) for t in range(n) for i in top[0][t]}
              | {(int(t), i) for i in range(n) for t in top[1][i]})
    assert set(zip(*map(list, itc_candidates(itc, k)))) == wanted
    assert sum(scored) == len(wanted) + 2 * n <= 2 * k * n + 2 * n  # + match accuracy's
    assert "mean_recall" not in cheap and "score_alpha" not in cheap
    assert model.score_alpha == 0.0
    for name in ("itc", "rerank"):
        for d in ("t2i", "i2t"):
            assert cheap[name][d] == pytest.approx(full[name][d], abs=1e-6), (name, d)
        assert cheap[name]["mean_recall"] == pytest.approx(full[name]["mean_recall"])
    assert cheap["match_acc"] == full["match_acc"]


def test_fusion_attention_explicit_under_bf16_training_matches_the_fused_kernel(monkeypatch):
    """``attend`` runs the explicit product where autograd records bf16 on a CPU (SDPA's
    backward is 5-6x slower there: bench/fusion_step.py) and the fused kernel elsewhere;
    both give the same attention and the same gradients."""
    import core.models.fusion as fusion

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 4, n, 16, generator=g) for n in (9, 49, 49))
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(fusion.F, "scaled_dot_product_attention",
                        lambda *a: calls.append(1) or sdpa(*a))

    def run(dtype, grad):
        leaves = [t.to(dtype).clone().requires_grad_(grad) for t in (q, k, v)]
        with torch.set_grad_enabled(grad):
            out = fusion.attend(*leaves)
        grads = torch.autograd.grad(out.float().square().sum(), leaves) if grad else None
        return out.float().detach(), grads

    reference, ref_grads = run(torch.float32, True)
    assert len(calls) == 1  # fp32 with grad: the fused kernel
    out, grads = run(torch.bfloat16, True)
    assert len(calls) == 1  # bf16 training on a CPU: the explicit product
    torch.testing.assert_close(out, reference, atol=0.03, rtol=0.03)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.float(), want, atol=0.1, rtol=0.05)
    run(torch.bfloat16, False)
    assert len(calls) == 2  # bf16 inference (scoring): the fused kernel again
