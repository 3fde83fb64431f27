"""The fusion model's match loss: binary cross-entropy on matched pairs and in-batch negatives.

Per positive pair (caption i, image i), ``k`` negative images for the caption and ``k``
negative captions for the image are drawn from the batch, by the model's own pooled-feature
similarity:
  random   uniformly;
  hard     sampled with probability softmax(similarity / temperature), as ALBEF does: near
           uniform while the features are untrained, then concentrated on the most similar
           items (for synthetic siblings: the same case with left and right swapped);
  hardest  the k most similar, deterministically. From scratch this starves the match head
           of learnable pairs (measured: no progress in 3 epochs of the tiny preset). Rows of the same group
(identical captions) are never used as each other's negatives. Positives and negatives are
weighted equally (each side's BCE is averaged separately), so k does not tilt the balance.

Soft match labels from concepts (``model.fusion.concept_soft_labels``): a sampled negative's
target is ``scale`` x the Jaccard overlap of the two items' UMLS concept sets instead of 0,
so a CT of another chest is partly a match for a chest-CT caption (the semantic matching of
MedCLIP, Wang et al. 2022, applied to the match head's BCE).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sample_negatives(similarity: torch.Tensor, groups: torch.Tensor, k: int, mode: str,
                     generator: torch.Generator | None = None,
                     temperature: float = 0.07) -> torch.Tensor:
    """(B, k') indices of negatives per row of ``similarity`` (rows: queries, columns: batch
    items); k' = min(k, fewest non-same-group items of any row).
    ``mode``: random | hard | hardest."""
    allowed = groups[:, None] != groups[None, :]
    k = int(min(k, allowed.sum(1).min().item()))
    if k <= 0:
        return similarity.new_zeros((similarity.shape[0], 0), dtype=torch.long)
    sim = similarity.detach().float()
    if mode == "hardest":
        return sim.masked_fill(~allowed, float("-inf")).topk(k, dim=1).indices
    if mode == "hard":
        logits = (sim / temperature).masked_fill(~allowed, float("-inf"))
        weights = (logits - logits.max(1, keepdim=True).values).exp()
        return torch.multinomial(weights, k, replacement=False, generator=generator)
    if mode == "random":
        return torch.multinomial(allowed.float(), k, replacement=False, generator=generator)
    raise ValueError(f"negative_mode must be 'random', 'hard' or 'hardest', got {mode!r}")


def concept_overlap(concepts: torch.Tensor, text_index: torch.Tensor,
                    image_index: torch.Tensor) -> torch.Tensor:
    """Jaccard overlap of the multi-hot concept rows ``concepts`` (B, C) of each pair
    (caption's item, image's item); 0 where both items have no concept."""
    a = concepts[text_index].float()
    b = concepts[image_index].float()
    both = (a * b).sum(-1)
    either = a.sum(-1) + b.sum(-1) - both
    return torch.where(either > 0, both / either.clamp_min(1), torch.zeros_like(both))


class MatchLoss(nn.Module):
    def __init__(self, negatives_per_positive: int = 3, mode: str = "hard",
                 temperature: float = 0.07):
        super().__init__()
        self.k, self.mode, self.temperature = negatives_per_positive, mode, temperature

    def pairs(self, text_embed: torch.Tensor, image_embed: torch.Tensor,
              groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(text_index, image_index, label) for positives and sampled negatives."""
        b = text_embed.shape[0]
        sim = text_embed @ image_embed.T
        idx = torch.arange(b, device=sim.device)
        neg_img = sample_negatives(sim, groups, self.k, self.mode,
                                   temperature=self.temperature)  # per caption
        neg_txt = sample_negatives(sim.T, groups, self.k, self.mode,
                                   temperature=self.temperature)  # per image
        kk = neg_img.shape[1]
        text_index = torch.cat([idx, idx.repeat_interleave(kk), neg_txt.reshape(-1)])
        image_index = torch.cat([idx, neg_img.reshape(-1), idx.repeat_interleave(kk)])
        labels = torch.cat([torch.ones(b, device=sim.device),
                            torch.zeros(2 * b * kk, device=sim.device)])
        return text_index, image_index, labels

    def forward(self, logits: torch.Tensor, labels: torch.Tensor,
                extra_negatives: torch.Tensor | None = None,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Positives weigh half, negatives the other half (so their number does not tilt the
        head towards "no match"); ``extra_negatives`` (e.g. swapped captions) share the
        negatives' half equally with the sampled ones. ``targets``: the BCE targets where
        they are not the 0 / 1 ``labels`` (soft labels; ``labels`` still says which pairs
        are the positives)."""
        pos, neg = labels > 0.5, labels < 0.5
        targets = labels if targets is None else targets
        loss = F.binary_cross_entropy_with_logits(logits[pos], targets[pos])
        negatives = []
        if neg.any():
            negatives.append(F.binary_cross_entropy_with_logits(logits[neg], targets[neg]))
        if extra_negatives is not None and len(extra_negatives):
            negatives.append(F.binary_cross_entropy_with_logits(
                extra_negatives, torch.zeros_like(extra_negatives)))
        if negatives:
            loss = 0.5 * (loss + sum(negatives) / len(negatives))
        return loss
