"""The model part of an experiment's config: the kind, and each part's own config, which
lives beside its model (encoders, fusion, two-tower, concept head, masking)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.models.concept_head import ConceptConfig
from core.models.encoders import ImageEncoderConfig, TextEncoderConfig
from core.models.fusion import FusionConfig
from core.models.kind import ModelKind
from core.models.masking import McrConfig
from core.models.two_tower import TwoTowerConfig


@dataclass
class ModelConfig:
    kind: ModelKind = ModelKind.TWO_TOWER
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    two_tower: TwoTowerConfig = field(default_factory=TwoTowerConfig)
    concepts: ConceptConfig = field(default_factory=ConceptConfig)
    mcr: McrConfig = field(default_factory=McrConfig)


