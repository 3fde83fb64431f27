"""Multi-label concept loss: BCE with per-concept positive weights (capped, for rare
concepts) and an optional focal term (Lin et al., 2017), averaged over images and concepts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConceptLoss(nn.Module):
    def __init__(self, pos_weight: torch.Tensor | None = None, gamma: float = 0.0):
        super().__init__()
        self.gamma = float(gamma)
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight,
                                                  reduction="none")
        if self.gamma:
            p = torch.sigmoid(logits)
            p_t = p * targets + (1 - p) * (1 - targets)
            loss = loss * (1 - p_t) ** self.gamma
        return loss.mean()
