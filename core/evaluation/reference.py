"""Encoding galleries and scoring them in one process: validation during training, the
reference the distributed scoring job is checked against, and the benchmarks. The scoring
itself is ``core.scoring``'s plan, run here with the local executor."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from core.batch import Batch
from core.features import Features
from core.metrics import bidirectional_metrics, evaluate_scores, ranks_from_scores
from core.retrieval import StreamingRetrieval, fused_scores, rerank, topk_rows
from core.precision import autocast
from core.scoring import ScoringPlan, TileWorker, fit_tile, local_executor, score_block
from core.scoring.pairs import pair_scores
from core.scoring.plan import default_tile
from core.scoring.settings import ScoringSettings
from core.models.kind import ModelKind

def default_chunk(model) -> int:
    """The sub-block side of ``model``'s tiles on CPUs (``core.scoring.plan.tile_shape``, the
    one source of tile sizes)."""
    return default_tile(model)[1]


def encode_inputs(model, inputs: dict, texts: list):
    """Both sides of one batch's model inputs, from the pixels or from the frozen layers'
    outputs encoded earlier (``image_prefix`` / ``text_prefix``, ``core.frozen_store``):
    appends the text features to ``texts``, returns (image features, concept logits)."""
    image = model.encode_image_with_concepts(inputs.get("pixel_values"),
                                             prefix=inputs.get("image_prefix"))
    texts.append(model.encode_text(inputs["input_ids"], inputs["attention_mask"],
                                   prefix=inputs.get("text_prefix")))
    return image


@torch.no_grad()
def encode_batches(model, batches: Iterable[Batch], device="cpu",
                   precision: str = "fp32") -> dict:
    """Encode both sides of every batch once (host bookkeeping stays numpy; from the frozen
    layers' outputs where the batches carry them instead of pixels): text / image
    features on ``device``, and the rows' groups, image ids and captions; with a concept
    head and concept targets, also ``concept_logits`` and ``concepts`` (host numpy)."""
    texts, images, groups, ids, captions = [], [], [], [], []
    logits, targets = [], []
    for batch in batches:
        if not len(batch):
            continue
        inputs = batch.to(device).inputs
        with autocast(device, precision):
            image, concepts = encode_inputs(model, inputs, texts)
            images.append(image)
        if concepts is not None and "concepts" in batch.inputs:
            logits.append(concepts.float().cpu().numpy())
            targets.append(batch.inputs["concepts"].numpy())  # the host copy, never the device's
        groups.append(batch.group)
        ids.extend(batch.image_id.tolist())
        captions.extend(batch.caption.tolist())
    if not texts:
        raise ValueError("the gallery is empty: no valid rows to encode")
    out = {"text": type(texts[0]).cat(texts), "image": type(images[0]).cat(images),
           "group": np.concatenate(groups), "image_id": ids, "caption": captions}
    if logits:
        out["concept_logits"] = np.concatenate(logits)
        out["concepts"] = np.concatenate(targets)
    return out


def in_memory_blocks(text: Features, image: Features, block: int):
    """A block source over features held in memory (see ``core.scoring.worker``)."""
    sides = {"text": text, "image": image}
    return lambda side, b: sides[side].index(slice(b * block, (b + 1) * block))


@torch.no_grad()
def score_matrix(model, text: Features, image: Features, chunk: int | None = None) -> np.ndarray:
    """The full (captions x images) score matrix. Reference and validation only: the
    scoring job never holds this matrix."""
    return score_block(model, text, image, chunk or default_chunk(model))


@torch.no_grad()
def stream_retrieval(model, text: Features, image: Features, text_groups, image_groups,
                     k: int = 10, block: int = 256, chunk: int | None = None,
                     precision: str = "fp32", on_tile=None) -> StreamingRetrieval:
    """Top-K and exact ranks in O(N*K) memory: the scoring plan, run in this process."""
    block, chunk = fit_tile(block, chunk or default_chunk(model))
    plan = ScoringPlan(text_groups, image_groups, block=block, chunk=chunk, k=k)
    device = next(model.parameters()).device
    worker = TileWorker(model, in_memory_blocks(text, image, block), plan, device, precision)
    return plan.run_retrieval(local_executor(worker), on_tile=on_tile)


@torch.no_grad()
def rerank_retrieval(model, text: Features, image: Features, groups, first_stage: dict,
                     k: int = 10, alpha: float = 0.0, block: int = 256,
                     chunk: int | None = None, precision: str = "fp32") -> dict:
    """Retrieve-and-rerank in this process: ``first_stage[d]`` = (candidate rows, scores,
    ranks) per direction, re-scored by ``model`` (see ``ScoringPlan.run_rerank``)."""
    block, chunk = fit_tile(block, chunk or default_chunk(model))
    plan = ScoringPlan(groups, groups, block=block, chunk=chunk, k=k)
    device = next(model.parameters()).device
    worker = TileWorker(model, in_memory_blocks(text, image, block), plan, device, precision)
    return plan.run_rerank(local_executor(worker), first_stage, alpha)


@torch.no_grad()
def match_accuracy(model, text: Features, image: Features, groups: np.ndarray) -> float:
    """Fusion: accuracy of logit > 0 on every positive pair and one negative per positive
    (the next item of a different group)."""
    n = len(text)
    groups = np.asarray(groups)
    shift = np.array([next((j % n for j in range(i + 1, i + n) if groups[j % n] != groups[i]), i)
                      for i in range(n)])
    idx = torch.arange(n)
    pos = model.score_pairs(text, image, idx, idx)
    neg = model.score_pairs(text, image, idx, torch.as_tensor(shift))
    valid = torch.as_tensor(shift != np.arange(n), device=neg.device)
    correct = torch.cat([(pos > 0).float(), (neg[valid] <= 0).float()])
    return float(correct.mean())


def choose_score_alpha(model, text: Features, image: Features, itc: np.ndarray, groups,
                       ks) -> tuple[float, np.ndarray]:
    """The fused score's alpha (match logit + alpha x ITC cosine) with the best mean recall
    on this (validation) gallery, ties to the smaller alpha; and the fused score matrix at
    that alpha (the match logits are computed once). ``itc``: the ITC cosine matrix of
    ``text`` x ``image``."""
    from core.models.fusion import FUSED_SCORE_ALPHAS

    model.score_alpha = 0.0
    itm = score_matrix(model, text, image)
    found = [(round(evaluate_scores(itm + a * itc, groups, groups, ks=ks)["mean_recall"], 9), -a)
             for a in FUSED_SCORE_ALPHAS]
    alpha = -max(found)[1]
    return alpha, (itm + np.float32(alpha) * itc).astype(np.float32)


def rerank_matrices(itm: np.ndarray, itc: np.ndarray, groups: np.ndarray, k: int,
                    alpha: float, ks=(1, 5, 10)) -> dict:
    """Retrieve-and-rerank from score matrices (validation): each query's top-k by ``itc``
    re-ordered by ``itm`` + ``alpha`` x ``itc``; metrics of both directions. Only the
    candidates' entries of ``itm`` are read (``itc_candidates``)."""
    ranks = {}
    for d, (a, b) in (("t2i", (itm, itc)), ("i2t", (itm.T, itc.T))):
        candidates = topk_rows(b, k)
        first = ranks_from_scores(b, groups, groups)
        fused = fused_scores(np.take_along_axis(a, candidates, 1),
                             np.take_along_axis(b, candidates, 1), alpha)
        ranks[d] = rerank(candidates, fused, first, groups, groups, k)[2]
    n = len(groups)
    return bidirectional_metrics(ranks["t2i"], ranks["i2t"], n_images=n, n_texts=n, ks=ks)


def itc_candidates(itc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(caption rows, image rows) of every pair that rerank over ``itc`` reads: each
    caption's top-k images and each image's top-k captions, once each."""
    t2i, i2t = topk_rows(itc, k), topk_rows(itc.T, k)
    rows = np.concatenate([np.repeat(np.arange(len(t2i)), k), i2t.ravel()])
    cols = np.concatenate([t2i.ravel(), np.repeat(np.arange(len(i2t)), k)])
    pairs = np.unique(rows * itc.shape[1] + cols)
    return pairs // itc.shape[1], pairs % itc.shape[1]


def candidate_scores(model, text: Features, image: Features, itc: np.ndarray,
                     k: int) -> np.ndarray:
    """The fusion model's ranking scores of the ITC top-k candidates of both directions (at
    most 2 x k x N pairs, as ALBEF validates: its ITC retrieves, its match head re-ranks),
    in a captions x images matrix that is -inf elsewhere."""
    ti, ii = itc_candidates(itc, k)
    out = np.full(itc.shape, -np.inf, dtype=np.float32)
    out[ti, ii] = pair_scores(model, text, image, ti, ii)
    return out


@torch.no_grad()
def validate(model, encoded: dict, max_items: int | None = None, ks=(1, 5, 10),
             rerank_k: int | None = None, rerank_alpha: float = 0.0,
             precision: str = "fp32", all_pairs: bool = True) -> dict:
    """Retrieval metrics on an encoded gallery (its first ``max_items`` items), scored in
    ``precision`` (training's: ``core.precision.training_precision``). For the fusion
    model also its match accuracy, its ITC retrieval (``itc``) and retrieve-and-rerank inside
    the model (``rerank``: ITC top-``rerank_k`` re-ordered by the fused score; None: the
    scoring jobs' default). ``all_pairs`` False (fusion): only those three, from the ITC
    top-k candidates' pairs instead of every pair (no top-level metrics, no alpha chosen)."""
    rerank_k = ScoringSettings().rerank_k if rerank_k is None else rerank_k
    device = next(model.parameters()).device
    with autocast(device, precision):
        return _validate(model, encoded, max_items, ks, rerank_k, rerank_alpha, all_pairs)


def _validate(model, encoded, max_items, ks, rerank_k, rerank_alpha, all_pairs) -> dict:
    text, image, groups = encoded["text"], encoded["image"], np.asarray(encoded["group"])
    n = len(text)
    if max_items is not None and n > max_items:
        head = slice(0, max_items)
        text, image, groups = text.index(head), image.index(head), groups[head]
        n = max_items
    ks = tuple(k for k in ks if k <= n)
    if model.kind != ModelKind.FUSION:
        return {**evaluate_scores(score_matrix(model, text, image), groups, groups, ks=ks),
                "gallery_size": n}
    itc = (text.embed @ image.embed.T).float().cpu().numpy()
    k = min(rerank_k, n)
    out = {"gallery_size": n, "match_acc": match_accuracy(model, text, image, groups),
           "itc": evaluate_scores(itc, groups, groups, ks=ks)}
    if not all_pairs:
        scores = candidate_scores(model, text, image, itc, k)
    elif model.config.fusion.score_alpha is None:
        model.score_alpha, scores = choose_score_alpha(model, text, image, itc, groups, ks)
    else:
        scores = score_matrix(model, text, image)
    if all_pairs:
        out.update(evaluate_scores(scores, groups, groups, ks=ks), score_alpha=model.score_alpha)
    out["rerank"] = rerank_matrices(scores, itc, groups, k, rerank_alpha, ks)
    return out
