"""Captions as rows and as answers: cleaning (why a row is skipped), the reasons a row is
skipped and their counts, and caption groups (rows with the same caption are all correct
answers for each other). Used by the preprocessing and by the tokenizer's training, with
no import of either (it is what both stand on)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from enum import IntEnum
from typing import Any

import numpy as np

_WS = re.compile(r"\s+")


class SkipReason(IntEnum):
    OK = 0
    IMAGE_MISSING = 1
    IMAGE_UNDECODABLE = 2
    CAPTION_MISSING = 3
    CAPTION_EMPTY = 4
    IMAGE_ID_MISSING = 5

    @property
    def label(self) -> str:
        return self.name.lower()


def clean_caption(text: Any) -> tuple[str | None, SkipReason]:
    if text is None:
        return None, SkipReason.CAPTION_MISSING
    text = _WS.sub(" ", str(text)).strip()
    if not text:
        return None, SkipReason.CAPTION_EMPTY
    return text, SkipReason.OK


def group_key(text: str) -> int:
    """A stable int64 id for "the same caption": rows with equal keys are all correct answers
    for each other (several images of one case often share one caption)."""
    norm = _WS.sub(" ", text.lower()).strip()
    digest = hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def count_skips(skip: np.ndarray | list) -> dict[str, int]:
    """{reason label: rows} for the non-OK codes in ``skip``."""
    counts = Counter(int(s) for s in np.asarray(skip).ravel() if int(s) != 0)
    return {SkipReason(code).label: n for code, n in sorted(counts.items())}


def merge_counts(*counts: dict[str, int]) -> dict[str, int]:
    total: Counter = Counter()
    for c in counts:
        total.update(c)
    return dict(sorted(total.items()))
