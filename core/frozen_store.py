"""Frozen encoders' outputs, encoded once per (weights, split, preprocessing) and reused.

A model whose encoders are frozen whole or in part (``model.image.freeze_stages``,
``model.text.freeze_layers``, ``model.fusion.freeze_encoders``) computes the same frozen
outputs for a row whatever it is used for: the two-tower model's training and validation,
the fusion model's (trained on the two-tower's frozen encoders: the same weights), every
scoring job, cross-split retrieval and case search. This store holds those outputs once:

    <root>/frozen-<digest>/key.json              what produced them (``store_key``)
    <root>/frozen-<digest>/block-00000.safetensors  image_prefix (n, C, h, w) fp16 (or the
        pixels when no image stage is frozen), text_prefix (n, T, H) fp16 (when text layers
        are frozen), input_ids, attention_mask, group, skip
        (``core.training.frozen_features.encode_frozen`` computes them)
    <root>/frozen-<digest>/block-00000.parquet      image_id, caption, cui (host rows)
    <root>/frozen-<digest>/meta.json             rows, blocks, skipped, seconds; complete

The key is the frozen modules' own tensors (a digest of their bytes: a fusion model
initialised from a two-tower checkpoint finds the two-tower's entries), the preprocessing
(image size, normalisation, tokenizer, max length), the split's shards and the rows read.
Another key gets another directory (``core.work_cache``): nothing is overwritten; an
incomplete store (a crash mid-way) is encoded again. Blocks are safetensors (no pickle),
written atomically.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from core import storage
from core.work_cache import digest, keyed_dir

# Bump when what a block holds, or how it is computed, changes (2: the image stages run
# channels-last, ``core.models.encoders.channels_last``; 3: with their BatchNorms folded into
# the convolutions, ``core.models.bn_folding``: bf16 outputs differ by rounding).
FORMAT = 3
META = "meta.json"
# What a block may hold: the image side is the frozen stages' output, or the pixels when
# no image stage is frozen; the text side the frozen layers' token states when there are.
ARRAYS = ("image_prefix", "pixel_values", "text_prefix", "input_ids", "attention_mask",
          "group", "skip")
ROWS = ("image_id", "caption", "cui")


def _digest_modules(modules) -> str:
    h = hashlib.blake2b(digest_size=16)
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                     if tensor.numel() else b"")
    return h.hexdigest()


def frozen_identity(model) -> dict | None:
    """What the model's frozen encoder layers compute with: their number and a digest of
    their tensors (weights and BatchNorm statistics). None when nothing is frozen."""
    image, text = model.image_encoder, model.text_encoder
    if not image.frozen and not text.frozen:
        return None
    return {"image": {"stages": len(image.frozen), "of": len(image.backbone),
                      "weights": _digest_modules(image.frozen) if image.frozen else None},
            "text": {"modules": len(text.frozen),
                     "weights": _digest_modules(text.frozen) if text.frozen else None}}


# A fast tokenizer's serialisation also holds the truncation and padding of its LAST call,
# which is call state, not definition: keyed on it, the same tokenizer had one key before its
# first call and another after (the length that matters is the key's own max_length).
CALL_STATE = ("truncation", "padding")


def tokenizer_identity(tokenizer) -> str:
    """A digest of the tokenizer's definition (vocabulary, normaliser, template), the same
    before and after it is called."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = {k: v for k, v in json.loads(backend.to_str()).items() if k not in CALL_STATE}
        text = json.dumps(definition, sort_keys=True)
    else:
        text = repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def store_key(model, model_config, tokenizer, split: dict, max_rows: int | None,
              precision: str = "fp32") -> dict | None:
    """Everything a frozen store's content depends on (``precision``: what the frozen layers
    ran in); None when the model has no frozen layers (nothing to store)."""
    frozen = frozen_identity(model)
    if frozen is None:
        return None
    from core.models.encoders import normalization

    ic = model_config.image
    return {"format": FORMAT, "frozen": frozen, "arch": ic.arch, "image_size": ic.image_size,
            "normalization": normalization(ic), "max_length": model_config.text.max_length,
            "tokenizer": tokenizer_identity(tokenizer), "data": split, "max_rows": max_rows,
            "precision": precision}


class FrozenStore:
    """One keyed store directory: blocks of encoded rows, in the split's order."""

    def __init__(self, root: str):
        self.root = str(root)

    @classmethod
    def open(cls, cache: str, key: dict) -> tuple[FrozenStore, bool]:
        """(the store for ``key`` under ``cache``, created if new; whether it is complete)."""
        root, _ = keyed_dir(cache, "frozen", key)
        store = cls(root)
        meta = store.meta()
        return store, bool(meta and meta.get("complete"))

    @classmethod
    def find(cls, cache: str, key: dict) -> FrozenStore | None:
        """The complete store for ``key`` under ``cache``, or None (nothing is created)."""
        store = cls(storage.join(cache, f"frozen-{digest(key)}"))
        meta = store.meta()
        return store if meta and meta.get("complete") else None

    def meta(self) -> dict | None:
        return storage.read_json(self.root, META) if storage.exists(self.root, META) else None

    def write_block(self, block: int, arrays: dict) -> None:
        tensors = {k: np.ascontiguousarray(arrays[k]) for k in ARRAYS if k in arrays}
        storage.write_bytes(self.root, f"block-{block:05d}.safetensors", st_save(tensors))
        rows = pa.table({"image_id": [str(v) for v in arrays["image_id"]],
                         "caption": [str(v) for v in arrays["caption"]],
                         "cui": pa.array([list(v) if v is not None else [] for v in arrays["cui"]],
                                         type=pa.list_(pa.string()))})
        storage.write_parquet(self.root, f"block-{block:05d}.parquet", rows)

    def finish(self, blocks: int, rows: int, skipped: dict, seconds: float,
               stage: dict | None = None) -> dict:
        """Mark the store complete. ``stage``: the encode stage that wrote it ({"splits": the
        splits it encoded together, "seconds": its wall time}); ``seconds``: this split's
        share of that time, by rows."""
        meta = {"complete": True, "blocks": blocks, "rows": rows, "skipped": skipped,
                "encode_s": seconds, "format": FORMAT, **({"stage": stage} if stage else {})}
        storage.write_json(self.root, META, meta)
        return meta

    def read_block(self, block: int, columns=None) -> dict:
        """Block ``block`` as numpy columns (the arrays and the host rows)."""
        arrays = st_load(storage.read_bytes(self.root, f"block-{block:05d}.safetensors"))
        rows = storage.read_parquet(self.root, f"block-{block:05d}.parquet")
        out = dict(arrays)
        out["image_id"] = np.asarray(rows.column("image_id").to_pylist(), dtype=object)
        out["caption"] = np.asarray(rows.column("caption").to_pylist(), dtype=object)
        out["cui"] = rows.column("cui").to_pylist()
        if columns is not None:
            out = {k: v for k, v in out.items() if k in columns}
        return out


def model_batch(block: dict, concepts=None) -> dict:
    """A stored block as a model batch (``core.batch.collate`` takes it): the frozen
    prefixes in place of pixels, and with a concept vocabulary the multi-hot targets of
    each row's ``cui`` (computed here: the store does not depend on the vocabulary)."""
    out = {k: v for k, v in block.items() if k != "cui"}
    if concepts is not None:
        out["concepts"] = concepts.multi_hot(block["cui"])[0]
    return out


class StoredSplit:
    """A stored split held in memory, for a training worker: every epoch's batches drawn
    from it with no data pipeline in between (the frozen layers' outputs are all a step
    needs; re-reading and re-shuffling them through a streaming pipeline cost a 2-CPU
    machine two thirds of its fusion training speed). ``limit``: only the first rows."""

    def __init__(self, root: str, limit: int | None = None, concepts=None):
        store = FrozenStore(root)
        meta = store.meta()
        if not meta or not meta.get("complete"):
            raise FileNotFoundError(f"{root}: not a complete frozen store")
        parts, rows = [], 0
        for b in range(meta["blocks"]):
            if limit is not None and rows >= limit:
                break
            part = model_batch(store.read_block(b), concepts)
            if limit is not None:
                part = {k: v[:limit - rows] for k, v in part.items()}
            rows += len(part["skip"])
            parts.append(part)
        self.arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        self.rows = rows

    def batches(self, batch_size: int, rank: int = 0, world: int = 1, seed: int | None = None):
        """Numpy batches of this rank's rows. With ``seed`` (training): one permutation of
        every row, the same on every rank, split into ``world`` equal parts (the remainder
        dropped, as an equal streaming split drops it); without (validation): rows
        ``rank::world`` in order."""
        if seed is None:
            index = np.arange(rank, self.rows, world)
        else:
            per_rank = self.rows // world
            index = np.random.default_rng(seed).permutation(self.rows)[rank * per_rank:
                                                                       (rank + 1) * per_rank]
        for start in range(0, len(index), batch_size):
            rows = index[start:start + batch_size]
            yield {k: v[rows] for k, v in self.arrays.items()}
