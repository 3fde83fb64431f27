"""Scores of listed (caption, image) pairs: the one pairs path of every caller (rerank's
candidates in the scoring plan, validation's ITC candidates, cross-split rerank, sibling
accuracy)."""

from __future__ import annotations

import numpy as np
import torch

from core.models.kind import ModelKind


def pair_batch(device_type: str) -> int:
    """Pairs per ``score_pairs`` call. Each fusion pair carries its own copy of its image's
    keys and values (every layer's: 100 KB in bf16), so on CPUs a batch that stays in cache
    runs fastest (``python -m bench.pair_batching`` times 128 against 2048). GPUs want large
    batches: 4096 is a default, not a measurement (no GPU run has measured it)."""
    return 4096 if device_type == "cuda" else 128


@torch.no_grad()
def pair_scores(model, text, image, text_index, image_index,
                batch: int | None = None) -> np.ndarray:
    """The model's ranking scores of listed (caption, image) pairs, in the order listed
    (fusion: ``score_pairs`` with ``ranking``, the fused score when it has an alpha).

    Fusion pairs run in order of caption length, ``batch`` at a time (default
    ``pair_batch``): the attention pads each batch to its longest caption, so pairs of
    similar length pad least. The scores come back in the order listed."""
    text_index, image_index = np.asarray(text_index), np.asarray(image_index)
    device = next(model.parameters()).device
    batch = batch or pair_batch(device.type)
    kwargs, order = {}, np.arange(len(text_index))
    if model.kind == ModelKind.FUSION:
        kwargs["ranking"] = True
        lengths = text.mask.sum(1).cpu().numpy()
        order = np.argsort(lengths[text_index], kind="stable")
    out = np.empty(len(text_index), np.float32)
    for a in range(0, len(order), batch):
        rows = order[a:a + batch]
        out[rows] = model.score_pairs(text, image, torch.as_tensor(text_index[rows]),
                                      torch.as_tensor(image_index[rows]),
                                      **kwargs).float().cpu().numpy()
    return out
