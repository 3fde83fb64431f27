"""Dropout with the same distribution as ``nn.Dropout``, drawn faster on a CPU.

PyTorch's CPU dropout draws one random float per element (``bernoulli_``), and in the
fusion model's training step that was a quarter of the step: its activations are
(pairs x tokens x width), 448 x 64 x 256 per batch on roco_cpu. This one draws 64 random
bits at a time and keeps an element where its 16 of them clear the threshold, so each
element is dropped with probability round(p x 2^16) / 2^16 (p to within 8e-6), from the same
global generator (``torch.manual_seed`` repeats it). Elsewhere (CUDA) it is ``F.dropout``.
``bench/fusion_step.py`` measures the step with each."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LOW, _HIGH = -(2 ** 63), 2 ** 63 - 1


def dropout_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """1 / (1 - p) where an element is kept, 0 where dropped (probability p)."""
    n = shape.numel()
    bits = torch.randint(_LOW, _HIGH, ((n + 3) // 4,), dtype=torch.int64)
    bits = bits.view(torch.int16)[:n].view(shape)
    keep = bits >= -(2 ** 15) + round(p * 2 ** 16)
    return keep.to(dtype).mul_(1.0 / (1.0 - p))


class Dropout(nn.Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        return x * dropout_mask(x.shape, self.p, x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"
