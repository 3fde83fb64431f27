"""The image-only concept head: multi-label UMLS concept detection from the image encoder's
pooled features (ImageCLEFmedical's concept-detection task on ROCOv2's ``cui`` column).

Image-only on purpose: ROCOv2's concepts are extracted from the captions, so a head that
also saw the caption would read the answer off it. Both models carry the same head on
their image encoder, trained as an auxiliary loss (``core.losses.ConceptLoss``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.models.dropout import Dropout


@dataclass
class ConceptConfig:
    # Weight of the auxiliary concept-detection loss (ROCOv2's UMLS ``cui`` column): an
    # image-only multi-label head on the image encoder's pooled features. 0: no head.
    weight: float = 0.0
    # Concepts on fewer training images than this are left out of the vocabulary.
    min_count: int = 1
    # Focal term (Lin et al.) on top of BCE; 0 = plain BCE.
    focal_gamma: float = 0.0
    # Positive weight per concept = negatives / positives, capped here for rare concepts.
    max_pos_weight: float = 10.0
    dropout: float = 0.1
    # Head size: set from the concept vocabulary when a run starts (0: no head).
    num_concepts: int = 0




class ConceptHead(nn.Module):
    def __init__(self, in_dim: int, config: ConceptConfig):
        super().__init__()
        self.dropout = Dropout(config.dropout)
        self.linear = nn.Linear(in_dim, config.num_concepts)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, C) logits from (N, in_dim) pooled image features."""
        return self.linear(self.dropout(pooled))


def build_concept_head(in_dim: int, config: ConceptConfig) -> ConceptHead | None:
    """The head when the run predicts concepts (a vocabulary and a loss weight), else None."""
    return ConceptHead(in_dim, config) if config.num_concepts > 0 else None
