"""Frozen encoder layers, encoded once: with ``model.image.freeze_stages`` /
``model.text.freeze_layers`` set, the frozen part of each encoder computes the same output
every epoch (no augmentation, eval-mode BatchNorm, no dropout). ``encode_frozen`` computes
it once per row, before training; the training loop then runs only the trainable layers on
it (``LossModule(image_prefix=..., text_prefix=...)``): the same model, the same loss, a
fraction of the work per epoch. Validation and scoring still run the whole model on pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from core.precision import autocast

from core.batch import collate


def frozen_parts(model) -> dict[str, bool]:
    """Which encoders have a frozen prefix worth encoding in advance."""
    return {"image": bool(model.image_encoder.frozen), "text": bool(model.text_encoder.frozen)}


@torch.no_grad()
def encode_frozen(model, rows: dict, dtype=torch.float16, device="cpu",
                  precision: str = "fp32") -> dict:
    """A preprocessed numpy batch -> the same batch with ``image_prefix`` (B, C, h, w) in
    place of ``pixel_values`` and ``text_prefix`` (B, T, H) beside the token ids, both stored
    as ``dtype`` (half the bytes; the trainable layers compute in their own precision), run
    on ``device`` in ``precision`` (the run's training precision: ``core.precision``; the
    store's key records it). Skipped rows keep their place with zeros, as everywhere."""
    with autocast(device, precision):
        return _encode_frozen(model, rows, dtype, device)


def _encode_frozen(model, rows: dict, dtype, device) -> dict:
    parts = frozen_parts(model)
    out = dict(rows)
    keep = np.asarray(rows["skip"]) == 0
    batch = collate(rows)
    n = len(keep)
    if parts["image"]:
        prefix = model.image_encoder.frozen_prefix(
            batch.inputs["pixel_values"].to(device)).to(dtype).cpu()
        full = torch.zeros((n, *prefix.shape[1:]), dtype=dtype)
        full[torch.from_numpy(np.nonzero(keep)[0])] = prefix
        out["image_prefix"] = full.numpy()
        del out["pixel_values"]
    if parts["text"]:
        ids = torch.tensor(np.asarray(rows["input_ids"]), device=device)  # a copy: Ray's
        mask = torch.tensor(np.asarray(rows["attention_mask"]), device=device)  # blocks are read-only
        out["text_prefix"] = model.text_encoder.frozen_prefix(ids, mask).to(dtype).cpu().numpy()
    return out
