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


def positive_tiles(text_groups, image_groups, tile: int) -> dict[tuple[int, int], tuple]:
    """The tiles (a, b) that hold correct (caption, image) pairs, with those pairs' indices."""
    ti, ii = correct_pairs(text_groups, image_groups)
    tiles: dict = {}
    for t, i in zip(ti.tolist(), ii.tolist()):
        tiles.setdefault((t // tile, i // tile), ([], []))
        tiles[(t // tile, i // tile)][0].append(t)
        tiles[(t // tile, i // tile)][1].append(i)
    return {k: (np.asarray(v[0]), np.asarray(v[1])) for k, v in tiles.items()}


@torch.no_grad()
def stream_retrieval(model, text, image, text_groups, image_groups, k: int = 10,
                     tile: int = 256, progress=None) -> StreamingRetrieval:
    """Top-K and exact ranks over tiles in one process, O(N*K) memory.

    The tiles holding correct pairs are scored first: their scores give the positives'
    keys (and are reused, not recomputed, in the pass over all tiles), so every score is
    computed once, by the same code path, and the ranks equal the full-matrix ones bit for
    bit. Those tiles are about N / tile of all, held until their turn."""
    text_groups, image_groups = np.asarray(text_groups), np.asarray(image_groups)
    nt, ni = num_items(text), num_items(image)

    def score(a: int, b: int) -> np.ndarray:
        block = model.score(take(text, slice(a * tile, (a + 1) * tile)),
                            take(image, slice(b * tile, (b + 1) * tile)))
        return block.float().cpu().numpy()

    cached, pos_t, pos_i, pos_s = {}, [], [], []
    for (a, b), (ti, ii) in sorted(positive_tiles(text_groups, image_groups, tile).items()):
        cached[(a, b)] = score(a, b)
        pos_t.append(ti)
        pos_i.append(ii)
        pos_s.append(cached[(a, b)][ti - a * tile, ii - b * tile])
    positives = positive_keys(np.concatenate(pos_t), np.concatenate(pos_i),
                              np.concatenate(pos_s), nt, ni)
    acc = StreamingRetrieval(text_groups, image_groups, k, positives)
    for a in range(-(-nt // tile)):
        text_ids = np.arange(a * tile, min((a + 1) * tile, nt))
        for b in range(-(-ni // tile)):
            scores = cached.pop((a, b)) if (a, b) in cached else score(a, b)
            acc.add_tile(text_ids, np.arange(b * tile, min((b + 1) * tile, ni)), scores)
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
    """Scores of each query with its own candidates: ``candidates_features`` holds the
    nq * n_candidates gallery items, query-major. Returns (nq, n_candidates).

    Each query with its candidates is a 1 x k block for ``model.score``: the block path
    (packed tokens, image-major matmuls) runs several times faster than scoring the nq * k
    pairs one by one through ``score_pairs``."""
    nq = num_items(queries)
    out = np.empty((nq, n_candidates), dtype=np.float32)
    for i in range(nq):
        query = take(queries, slice(i, i + 1))
        cands = take(candidates_features, slice(i * n_candidates, (i + 1) * n_candidates))
        block = model.score(query, cands) if query_side == "text" else model.score(cands, query).T
        out[i] = block[0].float().cpu().numpy()
    return out
