"""Masked contrastive reconstruction and Mapping-before-Aggregation (two-tower)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.config import load_config
from core.models import build_model, masking
from core.models.encoders import trim_padding
from core.training.loop import LossModule


def test_image_masking_zeroes_whole_grid_cells():
    gen = masking.generator(0, 7, "cpu")
    mask = masking.mask_cells(3, (4, 4), 0.5, gen, "cpu")
    assert mask.sum(1).tolist() == [8, 8, 8]
    x = torch.randn(3, 3, 64, 64)
    out = masking.apply_cells(x, mask, (4, 4))
    cells = out.view(3, 3, 4, 16, 4, 16).permute(0, 2, 4, 1, 3, 5).reshape(3, 16, -1)
    orig = x.view(3, 3, 4, 16, 4, 16).permute(0, 2, 4, 1, 3, 5).reshape(3, 16, -1)
    assert (cells[mask] == 0).all() and torch.equal(cells[~mask], orig[~mask])
    target = masking.cell_targets(x, (4, 4))
    assert target.shape == (3, 16, 3 * 16 * 16)
    torch.testing.assert_close(target.mean(-1), torch.zeros(3, 16), atol=1e-5, rtol=0)


def test_text_masking_never_touches_cls_sep_or_padding_and_is_seeded_per_step():
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 15, 16, 3, 0, 0], [2, 20, 21, 3, 0, 0, 0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    masked, chosen = masking.mask_tokens(ids, mask, 0.25, 4, masking.generator(1, 0, "cpu"))
    assert chosen.sum(1).tolist() == [2, 1]  # round(0.25 x 7) = 2; at least one of 2
    assert not chosen[:, 0].any() and not chosen[0, 8] and not chosen[1, 3]
    assert not chosen[mask == 0].any()
    assert (masked[chosen] == 4).all() and torch.equal(masked[~chosen], ids[~chosen])
    again = masking.mask_tokens(ids, mask, 0.25, 4, masking.generator(1, 0, "cpu"))[1]
    other = [masking.mask_tokens(ids, mask, 0.25, 4, masking.generator(1, s, "cpu"))[1]
             for s in range(1, 6)]
    assert torch.equal(again, chosen) and any(not torch.equal(o, chosen) for o in other)


def _model(alignment="abm", mode="off", layers=2):
    torch.manual_seed(0)
    cfg = load_config("tiny", [f"model.two_tower.alignment={alignment}", f"model.mcr.mode={mode}",
                               f"model.two_tower.proj_layers={layers}"])
    cfg.model.text.vocab_size = 300
    return build_model(cfg.model), cfg


def _batch(n=6):
    torch.manual_seed(1)
    px = torch.randint(0, 255, (n, 3, 64, 64), dtype=torch.uint8)
    ids = torch.randint(5, 300, (n, 14))
    ids[:, 0], ids[:, 11], ids[:, 12:] = 2, 3, 0
    return px, ids, (ids != 0).long(), torch.arange(n)


def test_mba_projects_then_pools_and_a_mean_of_a_linear_map_is_abm():
    mba, _ = _model("mba", layers=1)
    abm, _ = _model("abm", layers=1)
    mba.eval(), abm.eval()  # no dropout
    abm.load_state_dict({k: v for k, v in mba.state_dict().items() if "_pool." not in k})
    px, ids, mask, _ = _batch()
    with torch.no_grad():
        for pool in (mba.image_pool, mba.text_pool):  # constant scores: a plain mean
            torch.nn.init.zeros_(pool.score[-1].weight)
        torch.testing.assert_close(mba.embed_image(px), abm.embed_image(px), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(mba.embed_text(ids, mask), abm.embed_text(ids, mask),
                                   atol=1e-5, rtol=1e-4)
    # with learned scores the pool weights positions: not a mean, and padding gets nothing
    from core.models.pooling import AttentionPool

    torch.manual_seed(2)
    pool, x = AttentionPool(8), torch.randn(2, 5, 8) * 3
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        pooled = pool(x, valid)
        assert not torch.allclose(pooled[1], x[1].mean(0), atol=1e-3)
        x[0, 3:] = 1e4  # padding positions change nothing
        torch.testing.assert_close(pool(x, valid)[0], pooled[0])


@pytest.mark.parametrize("mode,forwards", [("off", 1), ("masked_single", 1), ("dual_stream", 2)])
def test_mcr_modes_forward_passes_and_losses(mode, forwards):
    model, cfg = _model("mba", mode)
    calls = {"image": 0, "text": 0}
    model.image_encoder.register_forward_hook(lambda *a: calls.__setitem__("image", calls["image"] + 1))
    model.text_encoder.register_forward_hook(lambda *a: calls.__setitem__("text", calls["text"] + 1))
    module = LossModule(model, cfg.model, mask_token_id=4).train()
    loss, stats = module(*_batch())
    assert calls == {"image": forwards, "text": forwards}
    if mode == "off":
        assert "image_recon_loss" not in stats
        return
    assert stats["image_recon_loss"] > 0 and stats["text_recon_loss"] > 0
    loss.backward()
    assert model.pixel_decoder.weight.grad.abs().sum() > 0
    embeddings = model.text_encoder.model.get_input_embeddings().weight
    assert embeddings.grad.abs().sum() > 0  # the tied MLM decoder reaches the embeddings
    model.eval()  # inference is never masked: embeddings equal the unmasked encoder path
    px, ids, mask, _ = _batch()
    with torch.no_grad():
        patches, _ = model.image_encoder(px)  # the encoder on the pixels as given
        unmasked = F.normalize(model.image_pool(model.image_proj(patches)), dim=-1)
        torch.testing.assert_close(model.embed_image(px), unmasked)
        t_ids, t_mask = trim_padding(ids, mask)
        tokens, _, _ = model.text_encoder(t_ids, t_mask)
        unmasked_text = F.normalize(model.text_pool(model.text_proj(tokens), t_mask), dim=-1)
        torch.testing.assert_close(model.embed_text(ids, mask), unmasked_text)


def test_mcr_needs_the_mask_token():
    model, cfg = _model("abm", "masked_single")
    with pytest.raises(ValueError, match="MASK"):
        LossModule(model, cfg.model)
