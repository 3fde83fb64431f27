"""The one feature type protocol of both models.

What ``encode_text`` / ``encode_image`` return is a dataclass of tensors whose first dimension
is the item: the two-tower model's ``Embeddings`` (one vector per item) or the fusion model's
``FusionText`` / ``FusionImage`` (token states, keys and values). Every consumer (scoring
tiles, the feature store, validation, rerank) handles them through these methods only, so
none of them needs to know which model produced them.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import numpy as np
import torch

F = TypeVar("F", bound="Features")


@dataclasses.dataclass
class Features:
    """Base of every feature dataclass: all fields are tensors with the items on dim 0."""

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __len__(self) -> int:
        return next(iter(self.tensors().values())).shape[0]

    def index(self: F, idx) -> F:
        """Rows ``idx`` (a slice, an index tensor or array) of every field."""
        if isinstance(idx, np.ndarray):
            idx = torch.as_tensor(idx)
        return type(self)(**{k: v[idx] for k, v in self.tensors().items()})

    def to(self: F, device=None, dtype: torch.dtype | None = None, non_blocking: bool = False) -> F:
        """Move every field; ``dtype`` applies to floating-point fields only (masks keep theirs)."""
        out = {}
        for k, v in self.tensors().items():
            v = v.to(device, non_blocking=non_blocking) if device is not None else v
            out[k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
        return type(self)(**out)

    @classmethod
    def cat(cls: type[F], parts: list[F]) -> F:
        if not parts:
            raise ValueError("nothing to concatenate")
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                      for f in dataclasses.fields(cls)})

    def numpy(self) -> dict[str, np.ndarray]:
        """Host copies of every field (bf16 becomes fp32: numpy has no bfloat16)."""
        out = {}
        for k, v in self.tensors().items():
            v = v.detach()
            if v.dtype == torch.bfloat16:
                v = v.float()
            out[k] = v.cpu().numpy()
        return out

    @classmethod
    def from_numpy(cls: type[F], arrays: dict[str, np.ndarray], device="cpu") -> F:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in arrays]
        if missing:
            raise KeyError(f"{cls.__name__}: arrays lack field(s) {missing}")
        return cls(**{f.name: torch.from_numpy(np.array(arrays[f.name], copy=True)).to(device)
                      for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class Embeddings(Features):
    """The two-tower model's features: one L2-normalised vector per item."""

    embed: torch.Tensor  # (N, d)
