"""Both tiny models can learn: each overfits 32 synthetic pairs to Recall@1 = 1.0."""

from __future__ import annotations

import pytest
import torch

from core.config import load_config
from core.batch import collate
from core.data.preprocess import build_preprocessor
from core.data.rocov2 import read_split
from core.evaluation.reference import encode_batches, validate
from core.models import build_model
from core.training.loop import LossModule, build_optimizer


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["two_tower", "fusion"])
def test_tiny_model_overfits_32_pairs(kind, synthetic_dir, tiny_tokenizer):
    torch.manual_seed(0)
    cfg = load_config("tiny", [f"model.kind={kind}", "train.lr=1e-3", "train.weight_decay=0"])
    cfg.model.text.vocab_size = len(tiny_tokenizer)
    batch = collate(build_preprocessor(cfg.model, tiny_tokenizer)(
        read_split(synthetic_dir, "train").slice(0, 32)))
    assert batch.skipped == {} and len(batch) == 32
    model = build_model(cfg.model)
    loss_module = LossModule(model, cfg.model)
    opt = build_optimizer(loss_module, cfg.train)
    inputs = batch.to("cpu").inputs
    result = None

    def learned(result):
        ranks = result["t2i"]["R@1"] == 1.0 and result["i2t"]["R@1"] == 1.0
        # The fusion match head must also separate positives from in-batch negatives.
        return ranks and (kind != "fusion" or result["match_acc"] > 0.95)

    for step in range(400):
        model.train()
        loss, _ = loss_module(**inputs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 24:
            model.eval()
            result = validate(model, encode_batches(model, [batch]))
            if learned(result):
                break
    assert learned(result), result
