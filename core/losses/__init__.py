"""Training losses: symmetric InfoNCE (two-tower, and fusion's auxiliary ITC) and the fusion
model's binary match loss with in-batch negatives; the multi-label concept loss of the
image-only concept head."""

from core.losses.concepts import ConceptLoss
from core.losses.infonce import InfoNCELoss, group_targets
from core.losses.match import MatchLoss, concept_overlap, sample_negatives

__all__ = ["ConceptLoss", "InfoNCELoss", "MatchLoss", "concept_overlap", "group_targets", "sample_negatives"]
