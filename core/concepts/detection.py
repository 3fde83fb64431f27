"""Concept detection metrics, as ImageCLEFmedical scores its concept-detection task, plus the
macro-averaged per-concept view, all computed by scikit-learn.

- ImageCLEF's primary score: the F1 of each image's predicted concept set against its true
  set, averaged over images (an image with no true and no predicted concept scores 1).
- Macro precision / recall / F1 over the concepts that occur in the evaluated split, and
  macro AUROC / average precision over the concepts with both classes present there.
- The decision threshold is chosen on the validation split (``choose_threshold``), never on
  the split being reported.
- The chance row scores every image with the concepts' training priors: "always predict the
  frequent concepts", the floor any image model has to clear.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.metrics import (average_precision_score, f1_score, precision_recall_fscore_support,
                             roc_auc_score)

THRESHOLDS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))


def per_image_f1(targets: np.ndarray, predicted: np.ndarray) -> float:
    """ImageCLEF's concept-detection F1: per image, averaged (both empty = 1)."""
    return float(f1_score(np.asarray(targets, bool), np.asarray(predicted, bool),
                          average="samples", zero_division=1.0))


def choose_threshold(targets: np.ndarray, probs: np.ndarray,
                     thresholds=THRESHOLDS) -> tuple[float, float]:
    """(threshold, per-image F1 there): the grid value with the best per-image F1."""
    scores = [per_image_f1(targets, probs >= t) for t in thresholds]
    best = int(np.argmax(scores))
    return float(thresholds[best]), float(scores[best])


def detection_metrics(targets: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """Every detection metric of ``probs`` (N, C) against multi-hot ``targets`` at
    ``threshold``."""
    targets = np.asarray(targets, bool)
    probs = np.asarray(probs, np.float64)
    predicted = probs >= threshold
    present = targets.any(0)
    both = present & ~targets.all(0)
    out = {"threshold": float(threshold), "images": int(len(targets)),
           "concepts_present": int(present.sum()), "per_image_f1": per_image_f1(targets, predicted),
           "mean_true_per_image": float(targets.sum(1).mean()) if len(targets) else 0.0,
           "mean_predicted_per_image": float(predicted.sum(1).mean()) if len(targets) else 0.0}
    if present.any():
        p, r, f, _ = precision_recall_fscore_support(targets[:, present], predicted[:, present],
                                                     average="macro", zero_division=0.0)
        out.update(macro_precision=float(p), macro_recall=float(r), macro_f1=float(f))
    if both.any():
        out["macro_auroc"] = float(roc_auc_score(targets[:, both], probs[:, both], average="macro"))
        out["macro_ap"] = float(average_precision_score(targets[:, both], probs[:, both],
                                                        average="macro"))
    return out


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Concept probabilities from a head's logits (scipy's expit: the logistic sigmoid)."""
    return expit(np.asarray(logits, np.float64))


def prior_scores(priors: np.ndarray, n: int) -> np.ndarray:
    """The chance detector: every image scored with the training priors."""
    return np.broadcast_to(np.asarray(priors, np.float64), (n, len(priors)))

