"""Symmetric InfoNCE (CLIP's loss), with negatives spanning the global batch.

Under torch.distributed each rank's queries are scored against every rank's embeddings,
all-gathered WITH gradient (open_clip's gather_with_grad + local_loss). DDP's gradient
averaging then yields exactly the gradient of the full-batch loss.

Several rows of a batch can be correct for each other (identical captions, several images
of one case): pass ``groups`` and the target spreads uniformly over every same-group row
instead of pushing true matches apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.distributed import gather_no_grad, gather_with_grad


def group_targets(query_groups: torch.Tensor, gallery_groups: torch.Tensor) -> torch.Tensor:
    """Row-normalised (Nq, Ng) target distribution: uniform over same-group gallery items."""
    same = (query_groups[:, None] == gallery_groups[None, :]).float()
    return same / same.sum(1, keepdim=True)


class InfoNCELoss(nn.Module):
    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor,
                logit_scale: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        all_image, offset = gather_with_grad(image_emb)
        all_text, _ = gather_with_grad(text_emb)
        logits_i2t = logit_scale * image_emb @ all_text.T  # local queries x global gallery
        logits_t2i = logit_scale * text_emb @ all_image.T
        n = image_emb.shape[0]
        if groups is None:
            labels = torch.arange(offset, offset + n, device=image_emb.device)
            return 0.5 * (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits_t2i, labels))
        all_groups = gather_no_grad(groups)
        targets = group_targets(groups, all_groups)
        return 0.5 * (F.cross_entropy(logits_i2t, targets) + F.cross_entropy(logits_t2i, targets))
