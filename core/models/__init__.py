"""The two retrieval models and the one way to build them from a config."""

from __future__ import annotations

from core.models.config import ModelConfig
from core.models.fusion import FusionModel
from core.models.two_tower import TwoTowerModel
from core.models.kind import ModelKind

MODELS = {ModelKind.FUSION: FusionModel, ModelKind.TWO_TOWER: TwoTowerModel}


def build_model(config: ModelConfig, load_weights: bool = True):
    """``load_weights=False``: the architecture only, without reading pretrained weights (a
    checkpoint's own weights are loaded next)."""
    if config.kind not in MODELS:
        raise ValueError(f"unknown model kind {config.kind!r}; choose one of {[str(k) for k in MODELS]}")
    return MODELS[config.kind](config, load_weights)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
