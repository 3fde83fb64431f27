"""Encoded gallery features on disk (or s3://), in fixed-size blocks of rows.

The scoring job encodes every caption and image ONCE and writes them here; tile scorers
read back the two blocks a tile needs. Blocks are safetensors files (no pickle), written
atomically (temp file + rename), so a crashed job never leaves a half-written block and a
rerun can trust every block it finds. Small result arrays (tile top-K lists) go through
``write_arrays`` / ``read_arrays`` the same way, as .npz without pickle.
"""

from __future__ import annotations

import dataclasses
import io
import json
import posixpath
from collections import OrderedDict

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from core.models.fusion import FusionImage, FusionText

FEATURE_TYPES = {("fusion", "text"): FusionText, ("fusion", "image"): FusionImage}


def features_to_numpy(features) -> dict[str, np.ndarray]:
    if isinstance(features, torch.Tensor):
        return {"value": features.detach().float().cpu().numpy()}
    return {f.name: getattr(features, f.name).detach().cpu().numpy()
            for f in dataclasses.fields(features)}


def features_from_numpy(kind: str, side: str, arrays: dict, device="cpu"):
    cls = FEATURE_TYPES.get((kind, side))
    tensors = {k: torch.as_tensor(np.ascontiguousarray(v)).to(device) for k, v in arrays.items()}
    if cls is None:
        return tensors["value"]
    return cls(**{f.name: tensors[f.name] for f in dataclasses.fields(cls)})


def _fs(root: str):
    import fsspec

    return fsspec.core.url_to_fs(root)


def _atomic_write(fs, path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{np.random.default_rng().integers(1 << 62)}"
    fs.pipe(tmp, data)
    fs.mv(tmp, path)


def write_arrays(root: str, name: str, arrays: dict[str, np.ndarray]) -> None:
    fs, base = _fs(root)
    fs.makedirs(posixpath.dirname(posixpath.join(base, name)) or base, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _atomic_write(fs, posixpath.join(base, name), buf.getvalue())


def read_arrays(root: str, name: str) -> dict[str, np.ndarray]:
    fs, base = _fs(root)
    with np.load(io.BytesIO(fs.cat(posixpath.join(base, name))), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def arrays_exist(root: str, name: str) -> bool:
    fs, base = _fs(root)
    return fs.exists(posixpath.join(base, name))


class FeatureStore:
    """Blocks ``{side}-{block:05d}.safetensors`` under ``root`` plus ``meta.json``."""

    def __init__(self, root: str, kind: str, cache_blocks: int = 8):
        self.root, self.kind = str(root), kind
        self.fs, self.base = _fs(self.root)
        self._cache: OrderedDict = OrderedDict()
        self.cache_blocks = cache_blocks

    def _path(self, name: str) -> str:
        return posixpath.join(self.base, name)

    def write_block(self, side: str, block: int, features) -> None:
        self.fs.makedirs(self.base, exist_ok=True)
        tensors = {k: torch.as_tensor(v).contiguous() for k, v in features_to_numpy(features).items()}
        _atomic_write(self.fs, self._path(f"{side}-{block:05d}.safetensors"), st_save(tensors))

    def read_block(self, side: str, block: int, device="cpu"):
        key = (side, block)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        tensors = st_load(self.fs.cat(self._path(f"{side}-{block:05d}.safetensors")))
        features = features_from_numpy(self.kind, side, {k: v.numpy() for k, v in tensors.items()},
                                       device)
        self._cache[key] = features
        if len(self._cache) > self.cache_blocks:
            self._cache.popitem(last=False)
        return features

    def write_meta(self, meta: dict) -> None:
        self.fs.makedirs(self.base, exist_ok=True)
        _atomic_write(self.fs, self._path("meta.json"), json.dumps(meta).encode())

    def read_meta(self) -> dict | None:
        path = self._path("meta.json")
        if not self.fs.exists(path):
            return None
        return json.loads(self.fs.cat(path))

    def rows(self, side: str, index: np.ndarray, block_size: int, device="cpu"):
        """Features of arbitrary rows (any order), gathered from the blocks holding them."""
        from core.evaluation import concat, take

        index = np.asarray(index)
        parts, order = [], []
        for block in np.unique(index // block_size):
            sel = np.nonzero(index // block_size == block)[0]
            feats = self.read_block(side, int(block), device)
            parts.append(take(feats, torch.as_tensor(index[sel] - block * block_size)))
            order.append(sel)
        gathered = concat(parts)
        inverse = torch.as_tensor(np.argsort(np.concatenate(order), kind="stable"))
        return take(gathered, inverse)
