"""Attention pooling for Mapping-before-Aggregation: a small MLP scores every projected local
feature (patch or token); the softmax of the scores over the valid positions weights their
sum. A linear map followed by a mean would equal AbM; this pooling learns which patches and
tokens matter in the shared space."""

from __future__ import annotations

import torch
from torch import nn


class AttentionPool(nn.Module):
    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, d) local features (and (B, L) validity) -> (B, d)."""
        logits = self.score(x).squeeze(-1)
        if mask is not None:
            logits = logits.masked_fill(~mask.bool(), torch.finfo(logits.dtype).min)
        weights = logits.softmax(-1)
        return (weights.unsqueeze(-1) * x).sum(1)
