"""Helpers the tables, figures and sections share: the methods and K a metrics file holds,
number formatting, the time-vs-N slope, a method's cost from scratch, encoder budgets."""

from __future__ import annotations

import numpy as np

from core.evaluation.comparison import METHODS
from core.models.kind import ModelKind

KS = (1, 5, 10)

# A slope of log(time) on log(N) means something only over enough sizes, a wide enough
# range, and times well above timer and start-up noise.
SLOPE_MIN_SIZES, SLOPE_MIN_SPAN, SLOPE_MIN_SECONDS = 3, 4.0, 0.05


def fit_exponent(sizes, seconds) -> float | None:
    """Slope of log(time) vs log(N) (~1 linear, ~2 quadratic), or None when the sizes or the
    times cannot support one (see the SLOPE_* thresholds)."""
    sizes, seconds = np.asarray(sizes, float), np.asarray(seconds, float)
    if (len(sizes) < SLOPE_MIN_SIZES or sizes.max() < SLOPE_MIN_SPAN * sizes.min()
            or seconds.min() < SLOPE_MIN_SECONDS):
        return None
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def slope_text(sizes, seconds) -> str:
    e = fit_exponent(sizes, seconds)
    if e is not None:
        return f"slope {e:.2f}"
    return (f"slope not measured (needs >= {SLOPE_MIN_SIZES} sizes spanning >= "
            f"{SLOPE_MIN_SPAN:.0f}x and times >= {SLOPE_MIN_SECONDS} s)")


def ks_of(metrics: dict) -> list[int]:
    return [k for k in KS if k <= metrics["gallery_size"]]


def methods_of(metrics: dict) -> list[str]:
    return [m for m in METHODS if m in metrics["methods"]]


def fmt(v, digits=3):
    return "n/a" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def cost_seconds(timings: dict) -> float:
    """What a method costs from scratch: its encoders (timed when they ran, even if a later
    job reused their cached output) plus its scoring."""
    return timings.get("encode_s", 0.0) + timings["score_s"]


def encoder_epochs(training: dict) -> dict[str, int]:
    """Epochs each model's encoders were trained: the fusion model's include those of the
    two-tower checkpoint it started from."""
    epochs = {m: len(t.get("history") or []) for m, t in training.items()}
    init = (training.get(ModelKind.FUSION, {}).get("config") or {}).get("model", {}).get("fusion", {})
    if init.get("init_from") and ModelKind.TWO_TOWER in epochs:
        epochs[ModelKind.FUSION] += epochs[ModelKind.TWO_TOWER]
    return epochs


