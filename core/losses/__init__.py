"""Training losses: symmetric InfoNCE (two-tower, and fusion's auxiliary ITC) and the fusion
model's binary match loss with in-batch negatives."""

from core.losses.infonce import InfoNCELoss, group_targets
from core.losses.match import MatchLoss, sample_negatives

__all__ = ["InfoNCELoss", "MatchLoss", "group_targets", "sample_negatives"]
