"""Encoded gallery features on disk (or s3://), in fixed-size blocks of rows.

The scoring job encodes every caption and image ONCE; the driver writes the blocks here, so a
rerun (or another method over the same gallery: rerank reuses fusion's features) finds them.
Blocks are safetensors files (no pickle), written atomically, so a crashed job never leaves
a half-written block. The store knows nothing about models: the caller says which feature
types (``core.features``) the blocks hold.
"""

from __future__ import annotations

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from core import storage
from core.features import Features

META = "meta.json"


class FeatureStore:
    """Blocks ``{side}-{block:05d}.safetensors`` under ``root`` plus ``meta.json``."""

    def __init__(self, root: str, types: dict[str, type[Features]]):
        self.root, self.types = str(root), types

    def write_block(self, side: str, block: int, features: Features) -> None:
        tensors = {k: torch.as_tensor(v).contiguous() for k, v in features.numpy().items()}
        storage.write_bytes(self.root, f"{side}-{block:05d}.safetensors", st_save(tensors))

    def read_block(self, side: str, block: int) -> Features:
        tensors = st_load(storage.read_bytes(self.root, f"{side}-{block:05d}.safetensors"))
        return self.types[side].from_numpy({k: v.numpy() for k, v in tensors.items()})

    def read_all(self, side: str, blocks: int) -> Features:
        """Every block of one side, concatenated (single-process consumers: the report's
        timing sweep, two-tower scoring)."""
        return self.types[side].cat([self.read_block(side, b) for b in range(blocks)])

    def write_meta(self, meta: dict) -> None:
        storage.write_json(self.root, META, meta)

    def read_meta(self) -> dict | None:
        return storage.read_json(self.root, META) if storage.exists(self.root, META) else None
