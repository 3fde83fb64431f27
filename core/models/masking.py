"""Masked inputs for masked contrastive reconstruction (MCR), seeded per step.

- Images: whole cells of the image encoder's output grid are zeroed in pixel space (the
  standardised pixels, so a masked cell reads as the dataset mean). A CNN has no tokens to
  drop; a cell of its output grid is exactly what one output feature sees most of, so the
  masked cells are the units the decoder reconstructs (as SparK / ConvNeXt-V2 mask CNNs).
- Captions: tokens replaced by [MASK], never [CLS] (the first position), [SEP] (the last
  real position) or padding; at least one token per caption when it has any to mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch


@dataclass
class McrConfig:
    """Masked contrastive reconstruction (two-tower): masked inputs for the contrastive loss
    and for reconstructing what was masked (image cells, caption tokens)."""

    # "off"; "masked_single": the masked inputs are the only inputs of both the contrastive
    # and the reconstruction losses (one forward per modality); "dual_stream": masked inputs
    # for reconstruction, unmasked ones for the contrastive loss (two forwards).
    mode: Literal["off", "masked_single", "dual_stream"] = "off"
    # Share of the image encoder's output grid cells zeroed (in pixel space, standardised).
    image_mask_ratio: float = 0.5
    # Share of caption tokens replaced by [MASK] (never [CLS], [SEP] or padding).
    text_mask_ratio: float = 0.25
    lambda_img: float = 1.0  # weight of the masked-cell pixel MSE
    lambda_txt: float = 1.0  # weight of the masked-token cross-entropy



def generator(seed: int, step: int, device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) * 1_000_003 + int(step))
    return g


def mask_cells(batch: int, grid: tuple[int, int], ratio: float, gen: torch.Generator,
               device) -> torch.Tensor:
    """(B, gh*gw) bool: exactly round(ratio * cells) masked cells per image."""
    cells = grid[0] * grid[1]
    n = min(cells - 1, max(1, round(ratio * cells)))
    noise = torch.rand(batch, cells, generator=gen, device=device)
    order = noise.argsort(1)
    mask = torch.zeros(batch, cells, dtype=torch.bool, device=device)
    mask.scatter_(1, order[:, :n], True)
    return mask


def apply_cells(pixels: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Standardised pixels (B,3,S,S) with the masked cells set to 0."""
    b, _, h, w = pixels.shape
    gh, gw = grid
    keep = (~mask).view(b, 1, gh, 1, gw, 1).to(pixels.dtype)
    cells = pixels.view(b, 3, gh, h // gh, gw, w // gw)
    return (cells * keep).view_as(pixels)


def cell_targets(pixels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, cells, 3*ch*cw) per-cell-normalised pixels (each cell to zero mean, unit variance,
    as MAE's normalised-pixel target)."""
    b, c, h, w = pixels.shape
    gh, gw = grid
    cells = (pixels.view(b, c, gh, h // gh, gw, w // gw).permute(0, 2, 4, 1, 3, 5)
             .reshape(b, gh * gw, -1))
    mean, var = cells.mean(-1, keepdim=True), cells.var(-1, keepdim=True)
    return (cells - mean) / (var + 1e-6).sqrt()


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, ratio: float,
                mask_id: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked ids, (B, T) bool of the masked positions)."""
    valid = attention_mask.bool()
    lengths = valid.sum(1)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
    maskable = valid & (positions > 0) & (positions < (lengths - 1)[:, None])
    noise = torch.rand(input_ids.shape, generator=gen, device=input_ids.device)
    noise = noise.masked_fill(~maskable, 2.0)
    count = (maskable.sum(1).float() * ratio).round().clamp(min=1).long()
    count = torch.minimum(count, maskable.sum(1))
    rank = noise.argsort(1).argsort(1)
    chosen = (rank < count[:, None]) & maskable
    return input_ids.masked_fill(chosen, mask_id), chosen
