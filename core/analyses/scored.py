"""Finished scoring runs read back for the in-process analyses: each run's checkpoint and
encoded gallery loaded at most once, its gallery table, top-K lists and rerank candidates."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.checkpoint import load_checkpoint
from core.feature_store import FeatureStore
from core.models import MODELS
from core.scoring import outputs


def load_features(summary: dict, kind: str):
    """(text features, image features) a scoring run's ``summary`` says ``kind`` encoded."""
    store = FeatureStore(summary["features"][kind], MODELS[kind].feature_types)
    blocks = store.read_meta()["blocks"]
    return store.read_all("text", blocks), store.read_all("image", blocks)


@dataclass
class Scored:
    """The scoring runs of one evaluation: ``runs`` maps a method to its output directory,
    ``checkpoints`` a model kind to its checkpoint."""

    runs: dict[str, str]
    checkpoints: dict[str, str]
    _loaded: dict = field(default_factory=dict)
    _features: dict = field(default_factory=dict)

    def loaded(self, kind: str):
        if kind not in self._loaded:
            self._loaded[kind] = load_checkpoint(self.checkpoints[kind])
        return self._loaded[kind]

    def model(self, kind: str):
        return self.loaded(kind).model

    def features(self, kind: str):
        """(text features, image features) of the gallery ``kind``'s run encoded."""
        if kind not in self._features:
            self._features[kind] = load_features(outputs.read_summary(self.runs[kind]), kind)
        return self._features[kind]

    def gallery(self, method: str = "fusion"):
        return outputs.read_gallery(self.runs[method])

    def groups(self) -> np.ndarray:
        return self.gallery().column("group").to_numpy()

    def topk(self, method: str, direction: str):
        """(top-K rows, scores, exact ranks) of a method's run in one direction."""
        return outputs.read_topk(self.runs[method], direction)

    def rescored(self) -> dict:
        return outputs.read_rescored(self.runs["rerank"])
