"""Turn ROCOv2 rows into model inputs, and count the rows that cannot be used.

``Preprocessor`` is the one preprocessing function of the project: the Ray Data stage of the
training, scoring and statistics jobs all map it over Parquet batches. It never drops a row
silently: a row whose image cannot be decoded, or whose caption is null or blank, keeps its
place with ``skip`` set to a ``SkipReason`` (and zeroed tensors), so every consumer drops
it AND counts it (``core.batch.collate``, ``count_skips``). Rows are small, bad rows are
rare, and the count travels with the data instead of through a side channel.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from core.data.captions import (SkipReason, clean_caption, count_skips, group_key,  # noqa: F401
                                merge_counts)
from core.data.rocov2 import image_bytes_column
from core.data.images import ImageDecodeError, decode_image, resize_center_crop, to_uint8_chw
from core.data.tokenizer import tokenize

log = logging.getLogger(__name__)

def _column(batch: pa.Table | dict, name: str) -> list:
    if isinstance(batch, pa.Table):
        if name not in batch.column_names:
            return [None] * batch.num_rows
        if name == "image":
            return image_bytes_column(batch)
        return batch.column(name).to_pylist()
    if name not in batch:
        n = len(next(iter(batch.values()))) if batch else 0
        return [None] * n
    values = list(batch[name])
    if name == "image":
        values = [v.get("bytes") if isinstance(v, dict) else v for v in values]
    return values


def _num_rows(batch: pa.Table | dict) -> int:
    if isinstance(batch, pa.Table):
        return batch.num_rows
    return len(next(iter(batch.values()))) if batch else 0


class Preprocessor:
    """Decode, resize + center-crop and tokenize a batch of ROCOv2 rows.

    Output columns (numpy, one row per input row, order kept):
      image_id (str), caption (str), pixel_values uint8 (N,3,S,S) (the image encoder
      normalises on the device: 4x fewer bytes cross the host-device link),
      input_ids / attention_mask int64 (N,L), group int64, skip int8 (SkipReason);
      with a concept vocabulary, concepts uint8 (N,C) multi-hot targets from the ``cui``
      column (ids outside the vocabulary are counted by ``rocoray prepare``).
    """

    def __init__(self, tokenizer, image_size: int, max_length: int, max_logged: int = 20,
                 concepts=None):
        self.tokenizer = tokenizer
        self.concepts = concepts  # core.concepts.vocabulary.ConceptVocabulary or None
        self.image_size = int(image_size)
        self.max_length = int(max_length)
        self.max_logged = max_logged
        self._logged = 0

    def _log_skip(self, image_id, reason: SkipReason, detail: str = "") -> None:
        if self._logged < self.max_logged:
            log.warning("skipping row image_id=%s: %s %s", image_id, reason.label, detail)
            self._logged += 1

    def decode_rows(self, batch, draft: bool = True):
        """Yield (image_id, PIL image | None, caption | None, group, SkipReason) per row."""
        ids = _column(batch, "image_id")
        images = _column(batch, "image")
        captions = _column(batch, "caption")
        groups = _column(batch, "caption_group")
        for image_id, data, caption, group in zip(ids, images, captions, groups):
            text, reason = clean_caption(caption)
            img = None
            if image_id is None:
                reason = SkipReason.IMAGE_ID_MISSING
            elif data is None:
                reason = SkipReason.IMAGE_MISSING
            elif reason == SkipReason.OK:
                try:
                    img = decode_image(data, draft_size=self.image_size if draft else None)
                except ImageDecodeError as exc:
                    reason = SkipReason.IMAGE_UNDECODABLE
                    self._log_skip(image_id, reason, str(exc))
            if reason != SkipReason.OK and reason != SkipReason.IMAGE_UNDECODABLE:
                self._log_skip(image_id, reason)
            key = group_key(group if group is not None else (text or "")) if text else 0
            yield image_id, img, text, key, reason

    def __call__(self, batch: pa.Table | dict) -> dict[str, np.ndarray]:
        n = _num_rows(batch)
        size, length = self.image_size, self.max_length
        pixels = np.zeros((n, 3, size, size), dtype=np.uint8)
        skip = np.zeros(n, dtype=np.int8)
        group = np.zeros(n, dtype=np.int64)
        ids, texts = [], []
        for i, (image_id, img, text, key, reason) in enumerate(self.decode_rows(batch)):
            ids.append("" if image_id is None else str(image_id))
            texts.append(text or "")
            skip[i] = int(reason)
            group[i] = key
            if img is not None:
                pixels[i] = to_uint8_chw(resize_center_crop(img, size))
        tokens = (tokenize(self.tokenizer, texts, length) if n else
                  {"input_ids": np.zeros((0, length), np.int64),
                   "attention_mask": np.zeros((0, length), np.int64)})
        bad = skip != 0
        tokens["input_ids"][bad] = 0
        tokens["attention_mask"][bad] = 0
        out = {
            "image_id": np.asarray(ids, dtype=object),
            "caption": np.asarray(texts, dtype=object),
            "pixel_values": pixels,
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "group": group,
            "skip": skip,
        }
        if self.concepts is not None:
            out["concepts"] = self.concepts.multi_hot(_column(batch, "cui"))[0]
        return out

    def inspect(self, batch: pa.Table | dict) -> dict[str, np.ndarray]:
        """Per-row facts for dataset statistics, without resizing or tokenizing."""
        rows = list(self.decode_rows(batch, draft=False))
        return {
            "skip": np.asarray([int(r[4]) for r in rows], dtype=np.int8),
            "width": np.asarray([r[1].width if r[1] else 0 for r in rows], dtype=np.int32),
            "height": np.asarray([r[1].height if r[1] else 0 for r in rows], dtype=np.int32),
            "caption_words": np.asarray([len(r[2].split()) if r[2] else 0 for r in rows],
                                        dtype=np.int32),
            "group": np.asarray([r[3] for r in rows], dtype=np.int64),
        }


def build_preprocessor(model_config, tokenizer, concepts=None) -> Preprocessor:
    """The preprocessor of a model config; ``concepts`` (a ``ConceptVocabulary``) adds the
    multi-hot concept targets when the model has a concept head."""
    use = concepts if concepts is not None and model_config.concepts.num_concepts > 0 else None
    return Preprocessor(tokenizer, image_size=model_config.image.image_size,
                        max_length=model_config.text.max_length, concepts=use)
