"""What one optimisation step computes, for either model, in plain PyTorch.

``LossModule`` wraps a model with its objective so that the whole step is one ``forward``:
Ray Train's ``prepare_model`` (DDP) wraps it, and DDP's gradient synchronisation sees every
parameter. The Ray training loop, the overfit tests and the benchmarks all use it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from core.config import ModelConfig, TrainConfig
from core.losses import InfoNCELoss, MatchLoss
from core.models.encoders import trim_padding

BATCH_KEYS = ("pixel_values", "input_ids", "attention_mask", "group")


class LossModule(nn.Module):
    def __init__(self, model: nn.Module, config: ModelConfig):
        super().__init__()
        self.model = model
        self.kind = config.kind
        self.infonce = InfoNCELoss()
        self.match = MatchLoss(config.fusion.negatives_per_positive, config.fusion.negative_mode,
                               config.fusion.temperature)
        self.contrastive_weight = config.fusion.contrastive_weight

    def forward(self, pixel_values, input_ids, attention_mask, group):
        """(loss, {name: float tensor}) for one batch."""
        m = self.model
        if self.kind == "two_tower":
            image, text, scale = m(pixel_values, input_ids, attention_mask)
            loss = self.infonce(image, text, scale, group)
            return loss, {"logit_scale": scale.detach()}
        text = m.encode_text(*trim_padding(input_ids, attention_mask))
        image = m.encode_image(pixel_values)
        ti, ii, labels = self.match.pairs(text.embed, image.embed, group)
        logits = m.score_pairs(text, image, ti, ii)
        loss = self.match(logits, labels)
        stats = {"match_loss": loss.detach(),
                 "match_acc": ((logits > 0).float() == labels).float().mean().detach()}
        if self.contrastive_weight > 0:
            itc = self.infonce(image.embed, text.embed, m.logit_scale.exp(), group)
            loss = loss + self.contrastive_weight * itc
            stats["itc_loss"] = itc.detach()
        return loss, stats


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms, embeddings' positions and the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "logit_scale" in name or "image_pos" in name or "norm" in name.lower():
            no_decay.append(p)
        else:
            decay.append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)


def build_scheduler(optimizer, total_steps: int, warmup_fraction: float):
    """Linear warm-up then cosine decay to 0, stepped once per optimizer step."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def to_model_inputs(batch: dict, device) -> dict[str, torch.Tensor]:
    """The four model inputs of a (preprocessed, skip-filtered) batch, as tensors on device."""
    out = {}
    for key in BATCH_KEYS:
        value = batch[key]
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value)
        out[key] = value.to(device, non_blocking=True)
    return out
