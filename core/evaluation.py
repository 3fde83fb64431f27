"""Encoding galleries and scoring them, single-process: validation during training, the
reference the distributed scoring job is checked against, and the benchmarks.

Features are whatever a model's ``encode_text`` / ``encode_image`` return: a tensor for the
two-tower model, a dataclass of tensors (with ``index``) for the fusion model. ``take`` and
``concat`` handle both.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np
import torch

from core.metrics import evaluate_scores
from core.retrieval import StreamingRetrieval, correct_pairs, positive_keys


def take(features, idx):
    if isinstance(features, torch.Tensor):
        return features[idx]
    return features.index(idx)


def concat(parts: list):
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    cls = type(parts[0])
    return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                  for f in dataclasses.fields(cls)})


def to_device(features, device):
    if isinstance(features, torch.Tensor):
        return features.to(device)
    cls = type(features)
    return cls(**{f.name: getattr(features, f.name).to(device)
                  for f in dataclasses.fields(cls)})


def num_items(features) -> int:
    return len(features)


@torch.no_grad()
def encode_batches(model, batches: Iterable[dict], device="cpu") -> dict:
    """Encode both sides of every (skip-filtered) batch once: text/image features, groups,
    image ids, captions."""
    texts, images, groups, ids, captions = [], [], [], [], []
    for batch in batches:
        pixels = torch.as_tensor(batch["pixel_values"]).to(device)
        input_ids = torch.as_tensor(batch["input_ids"]).to(device)
        mask = torch.as_tensor(batch["attention_mask"]).to(device)
        images.append(model.encode_image(pixels))
        texts.append(model.encode_text(input_ids, mask))
        groups.append(np.asarray(batch["group"]))
        ids.extend(batch.get("image_id", []))
        captions.extend(batch.get("caption", []))
    if not texts:
        raise ValueError("the gallery is empty: no valid rows to encode")
    return {"text": concat(texts), "image": concat(images), "group": np.concatenate(groups),
            "image_id": list(ids), "caption": list(captions)}


@torch.no_grad()
def score_matrix(model, text, image, tile: int = 1024) -> np.ndarray:
    """The full (captions x images) score matrix, tile by tile. Reference and validation
    only: the scoring job never holds this matrix."""
    nt, ni = num_items(text), num_items(image)
    out = np.empty((nt, ni), dtype=np.float32)
    for a in range(0, nt, tile):
        ta = take(text, slice(a, a + tile))
        for b in range(0, ni, tile):
            block = model.score(ta, take(image, slice(b, b + tile)))
            out[a:a + tile, b:b + tile] = block.float().cpu().numpy()
    return out


@torch.no_grad()
def score_correct_pairs(model, text, image, text_groups, image_groups, batch: int = 1024):
    """Scores of every (caption, image) pair sharing a group: the O(N) pass that gives the
    positives' keys for exact streaming ranks."""
    ti, ii = correct_pairs(text_groups, image_groups)
    scores = np.empty(len(ti), dtype=np.float32)
    for a in range(0, len(ti), batch):
        t = torch.as_tensor(ti[a:a + batch])
        i = torch.as_tensor(ii[a:a + batch])
        scores[a:a + batch] = model.score_pairs(text, image, t, i).float().cpu().numpy()
    return ti, ii, scores


@torch.no_grad()
def stream_retrieval(model, text, image, text_groups, image_groups, k: int = 10,
                     tile: int = 256, progress=None) -> StreamingRetrieval:
    """Top-K and exact ranks over tiles in one process, O(N*K) memory."""
    text_groups, image_groups = np.asarray(text_groups), np.asarray(image_groups)
    nt, ni = num_items(text), num_items(image)
    ti, ii, pos_scores = score_correct_pairs(model, text, image, text_groups, image_groups)
    acc = StreamingRetrieval(text_groups, image_groups, k,
                             positive_keys(ti, ii, pos_scores, nt, ni))
    for a in range(0, nt, tile):
        ta = take(text, slice(a, a + tile))
        text_ids = np.arange(a, min(a + tile, nt))
        for b in range(0, ni, tile):
            scores = model.score(ta, take(image, slice(b, b + tile))).float().cpu().numpy()
            acc.add_tile(text_ids, np.arange(b, min(b + tile, ni)), scores)
            if progress is not None:
                progress()
    return acc


@torch.no_grad()
def match_accuracy(model, text, image, groups: np.ndarray) -> float:
    """Fusion: accuracy of logit > 0 on every positive pair and one negative per positive
    (the next item of a different group)."""
    n = num_items(text)
    groups = np.asarray(groups)
    shift = np.array([next((j % n for j in range(i + 1, i + n) if groups[j % n] != groups[i]), i)
                      for i in range(n)])
    idx = torch.arange(n)
    pos = model.score_pairs(text, image, idx, idx)
    neg = model.score_pairs(text, image, idx, torch.as_tensor(shift))
    valid = torch.as_tensor(shift != np.arange(n))
    correct = torch.cat([(pos > 0).float(), (neg[valid] <= 0).float()])
    return float(correct.mean())


@torch.no_grad()
def validate(model, encoded: dict, max_items: int | None = None, ks=(1, 5, 10)) -> dict:
    """Retrieval metrics on an encoded gallery (its first ``max_items`` items), plus the
    match accuracy for the fusion model."""
    text, image, groups = encoded["text"], encoded["image"], encoded["group"]
    n = num_items(text)
    if max_items is not None and n > max_items:
        head = slice(0, max_items)
        text, image, groups = take(text, head), take(image, head), groups[head]
        n = max_items
    scores = score_matrix(model, text, image)
    ks = tuple(k for k in ks if k <= n)
    out = evaluate_scores(scores, groups, groups, ks=ks)
    out["gallery_size"] = n
    if getattr(model, "kind", None) == "fusion":
        out["match_acc"] = match_accuracy(model, text, image, groups)
    return out


@torch.no_grad()
def score_candidates(model, queries, candidates_features, n_candidates: int,
                     query_side: str) -> np.ndarray:
    """Fusion scores of each query with its candidates: ``candidates_features`` holds the
    nq * n_candidates gallery items, query-major. Returns (nq, n_candidates)."""
    nq = num_items(queries)
    q_index = torch.arange(nq).repeat_interleave(n_candidates)
    g_index = torch.arange(nq * n_candidates)
    if query_side == "text":
        scores = model.score_pairs(queries, candidates_features, q_index, g_index)
    else:
        scores = model.score_pairs(candidates_features, queries, g_index, q_index)
    return scores.float().cpu().numpy().reshape(nq, n_candidates)
