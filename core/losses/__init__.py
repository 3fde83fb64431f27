"""Training losses: symmetric InfoNCE (two-tower, and fusion's auxiliary ITC) and the fusion
model's binary match loss with in-batch negatives; the multi-label concept loss of the
image-only concept head."""

from core.losses.concepts import ConceptLoss
from core.losses.infonce import InfoNCELoss, group_targets
from core.losses.match import MatchLoss, sample_negatives

__all__ = ["ConceptLoss", "InfoNCELoss", "MatchLoss", "group_targets", "sample_negatives"]
