"""Retrieval across splits: queries from one split (the test split), the gallery from another
(the training split), as disease-aware retrieval work searches a case database. No query's
own pair is in the gallery, so only concept-aware relevance can judge the lists
(``core.concepts.retrieval``). Each method's top-K, for both directions, in this process:

    t2i: query captions  x gallery images        i2t: query images x gallery captions

The same methods as on one split: the two-tower cosine, the fusion logit over all pairs, and
rerank (two-tower top-``first_k`` re-scored by fusion logit + alpha x cosine). Ties go to the
lower gallery index, as everywhere in rocoray (``core.metrics.order_keys``)."""

from __future__ import annotations

import numpy as np
import torch

from core.evaluation.reference import score_matrix
from core.scoring.pairs import pair_scores
from core.features import Features
from core.models.kind import ModelKind
from core.precision import autocast
from core.retrieval import fused_scores, topk_rows
from core.scoring.settings import Method, ScoringSettings


@torch.no_grad()
def fusion_topk(model, text: Features, image: Features, k: int, by_text: bool,
                block: int = 64) -> np.ndarray:
    """Fusion top-k over all pairs: per caption among the images (``by_text``), or per image
    among the captions; blocks of ``block`` queries keep memory at block x gallery."""
    queries = text if by_text else image
    out = []
    for start in range(0, len(queries), block):
        part = queries.index(slice(start, start + block))
        scores = (score_matrix(model, part, image) if by_text
                  else score_matrix(model, text, part).T)
        out.append(topk_rows(scores, k))
    return np.concatenate(out)


@torch.no_grad()
def rerank_topk(model, text: Features, image: Features, first_scores: np.ndarray,
                first_k: int, k: int, alpha: float, by_text: bool) -> np.ndarray:
    """Rerank: each query's ``first_k`` best by ``first_scores`` (queries x gallery),
    re-ordered by the fusion logit + ``alpha`` x the first-stage score; top k of them."""
    candidates = topk_rows(first_scores, first_k)
    q = np.repeat(np.arange(len(candidates)), first_k)
    g = candidates.ravel()
    ti, ii = (q, g) if by_text else (g, q)
    logits = pair_scores(model, text, image, ti, ii)
    fused = fused_scores(logits.reshape(candidates.shape),
                         np.take_along_axis(first_scores, candidates, 1), alpha)
    return topk_rows(fused, k, candidates)


def across(fusion, queries: dict, gallery: dict, settings: ScoringSettings) -> dict:
    """{method: {"t2i": (Nq, k), "i2t": (Nq, k)}} gallery rows for the three methods, with
    the rerank ``settings`` as chosen on validation (k, rerank k, alpha; fusion pairs in
    ``settings.precision``, fp32 when None). ``fusion``: the
    fusion model; ``queries[kind]`` / ``gallery[kind]``: (text features, image features) of
    each model."""
    k = settings.k
    tt_q, tt_g = queries[ModelKind.TWO_TOWER], gallery[ModelKind.TWO_TOWER]
    cos = {"t2i": (tt_q[0].embed @ tt_g[1].embed.T).float().numpy(),
           "i2t": (tt_q[1].embed @ tt_g[0].embed.T).float().numpy()}
    f_q, f_g = queries[ModelKind.FUSION], gallery[ModelKind.FUSION]
    pairs = {"t2i": (f_q[0], f_g[1], True), "i2t": (f_g[0], f_q[1], False)}
    out = {Method.TWO_TOWER: {d: topk_rows(s, k) for d, s in cos.items()},
           Method.FUSION: {}, Method.RERANK: {}}
    device = next(fusion.parameters()).device
    for d, (text, image, by_text) in pairs.items():
        with autocast(device, settings.precision or "fp32"):
            out[Method.FUSION][d] = fusion_topk(fusion, text, image, k, by_text)
            out[Method.RERANK][d] = rerank_topk(fusion, text, image, cos[d],
                                                min(settings.rerank_k, cos[d].shape[1]), k,
                                                settings.alpha, by_text)
    return out
