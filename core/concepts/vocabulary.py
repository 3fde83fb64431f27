"""The concept vocabulary: which UMLS concept ids (ROCOv2's ``cui`` column) a model predicts,
and the multi-hot targets built from it.

ImageCLEFmedical's concept-detection subtask runs on this column: each image carries a list
of concept ids (extracted from its caption), and a detector predicts that set from the image.
The vocabulary is built from the training split only (``rocoray prepare`` writes it as
``<data>/concepts.json``; a training run builds it when the data has none) and travels with
every checkpoint, so a model's head and its vocabulary never part.

    vocab = ConceptVocabulary.build(table.column("cui").to_pylist())
    targets = vocab.multi_hot(rows_cuis)        # (N, C) uint8; unknown ids counted, not kept
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

FILENAME = "concepts.json"


def _ids(cuis) -> set[str]:
    """The distinct, non-blank concept ids of one row (a list, a numpy array or None)."""
    if cuis is None:
        return set()
    return {str(c).strip() for c in cuis if c is not None and str(c).strip()}


@dataclass
class ConceptVocabulary:
    """Concept ids in head order, with how many training images carry each."""

    ids: list[str]
    counts: list[int]
    images: int  # training images the counts come from (rows with a usable cui list or not)
    empty_images: int = 0  # of those, images with no concept id at all
    dropped: dict = field(default_factory=dict)  # {concept id: count} under min_count
    index: dict = field(init=False, repr=False)

    def __post_init__(self):
        self.index = {c: i for i, c in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, lists: Iterable[Sequence[str] | None], min_count: int = 1) -> ConceptVocabulary:
        """From the training split's ``cui`` lists: concepts seen on >= ``min_count`` images,
        most frequent first (ties by id). A concept listed twice for one image counts once."""
        counts: Counter = Counter()
        images = empty = 0
        for cuis in lists:
            images += 1
            unique = _ids(cuis)
            if not unique:
                empty += 1
            counts.update(unique)
        kept = sorted((c for c, n in counts.items() if n >= min_count),
                      key=lambda c: (-counts[c], c))
        dropped = {c: n for c, n in sorted(counts.items()) if n < min_count}
        return cls(kept, [counts[c] for c in kept], images, empty, dropped)

    def multi_hot(self, lists: Iterable[Sequence[str] | None]) -> tuple[np.ndarray, np.ndarray]:
        """(N, C) uint8 targets, and per row how many listed ids are outside the vocabulary
        (rare or unseen in training: counted, never silently matched to something else)."""
        lists = list(lists)
        out = np.zeros((len(lists), len(self.ids)), dtype=np.uint8)
        unknown = np.zeros(len(lists), dtype=np.int32)
        for row, cuis in enumerate(lists):
            for c in _ids(cuis):
                j = self.index.get(c)
                if j is None:
                    unknown[row] += 1
                else:
                    out[row, j] = 1
        return out, unknown

    def priors(self) -> np.ndarray:
        """Each concept's share of training images: the chance detector's scores."""
        return np.asarray(self.counts, dtype=np.float64) / max(self.images, 1)

    def pos_weight(self, cap: float) -> np.ndarray:
        """BCE positive weights (negatives / positives per concept), capped at ``cap`` so the
        rarest concepts do not dominate the loss."""
        pos = np.maximum(np.asarray(self.counts, dtype=np.float64), 1.0)
        return np.minimum((self.images - pos) / pos, cap).clip(min=1.0).astype(np.float32)

    def as_dict(self) -> dict:
        return {"ids": self.ids, "counts": self.counts, "images": self.images,
                "empty_images": self.empty_images, "dropped": self.dropped}

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=1))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ConceptVocabulary:
        values = json.loads((Path(directory) / FILENAME).read_text())
        return cls(values["ids"], values["counts"], values["images"],
                   values.get("empty_images", 0), values.get("dropped", {}))

    @classmethod
    def find(cls, directory: str | Path) -> ConceptVocabulary | None:
        """The vocabulary saved in ``directory`` (a data dir or a checkpoint), if any."""
        return cls.load(directory) if (Path(directory) / FILENAME).exists() else None


def resolve_vocabulary(data_path, train_split: str = "train", min_count: int = 1,
                       storage_options: dict | None = None) -> tuple[ConceptVocabulary, str]:
    """The vocabulary a run uses: ``<data_path>/concepts.json`` (written by ``rocoray
    prepare``) when it exists, else one built now from the training split's ``cui`` column.
    Returns (vocabulary, where it came from)."""
    if isinstance(data_path, (str, Path)) and "://" not in str(data_path):
        saved = ConceptVocabulary.find(data_path)
        if saved is not None:
            return saved, str(Path(str(data_path)) / FILENAME)
    from core.data.rocov2 import read_split

    table = read_split(data_path, train_split, columns=["cui"], storage_options=storage_options)
    vocab = ConceptVocabulary.build(table.column("cui").to_pylist(), min_count)
    return vocab, f"built from the {train_split} split's cui column"
