"""The case index: an encoded gallery and the models that query it.

text -> images   the query caption embedded by the two-tower text tower, scored against
                 every gallery image embedding (one matrix-vector product); with rerank,
                 the first ``rerank_k`` candidates re-scored by the fusion match head and
                 re-ordered by ``core.retrieval.fused_scores`` (the one rerank rule).
image -> cases   the same the other way: the upload embedded by the image tower, scored
                 against every gallery caption; rerank re-scores (candidate caption, upload).
explain          Grad-CAM (and, for fusion, its last-layer cross-attention) of one
                 (caption, gallery image) pair, drawn over the image as a PNG.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from core.data.images import decode_image, resize_center_crop, to_uint8_chw
from core.data.tokenizer import tokenize
from core.retrieval import fused_scores
from core.search.cases import Cases
from core.search.limits import LIMITS, Limits, SearchError, check_k, check_query
from core.models.kind import ModelKind
from core.scoring.settings import ScoringSettings


@dataclass
class Hit:
    rank: int
    image_id: str
    score: float  # the score the hits are ordered by (fused with rerank, cosine without)
    first_stage_score: float  # the two-tower cosine
    caption: str
    concepts: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def _pixels(image: Image.Image, size: int) -> torch.Tensor:
    return torch.from_numpy(to_uint8_chw(resize_center_crop(image, size)))[None]


def _order(scores: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` positions by score, ties in gallery order (deterministic)."""
    return np.argsort(-np.asarray(scores, np.float32), kind="stable")[:k]


class CaseIndex:
    """``retriever``/``reranker``: ``core.checkpoint.Loaded`` two-tower / fusion models;
    ``gallery``: the two-tower ``Embeddings`` of each side (``{"text", "image"}``), and
    ``fusion_gallery`` the fusion model's features, both in ``cases`` order."""

    def __init__(self, retriever, gallery: dict, cases: Cases, reranker=None,
                 fusion_gallery: dict | None = None, scoring: ScoringSettings = ScoringSettings(),
                 limits: Limits = LIMITS):
        for side in ("text", "image"):
            if len(gallery[side]) != len(cases):
                raise ValueError(f"the {side} embeddings hold {len(gallery[side])} items, the "
                                 f"cases {len(cases)}")
            if reranker is not None and len(fusion_gallery[side]) != len(cases):
                raise ValueError(f"the fusion {side} features hold {len(fusion_gallery[side])} "
                                 f"items, the cases {len(cases)}")
        if retriever.tokenizer is None or (reranker is not None and reranker.tokenizer is None):
            raise ValueError("a checkpoint without its tokenizer cannot encode queries")
        self.retriever, self.reranker = retriever, reranker
        self.image_embed = gallery["image"].embed.float()
        self.text_embed = gallery["text"].embed.float()
        self.fusion_gallery = fusion_gallery
        self.cases = cases
        self.rerank_k, self.alpha = scoring.rerank_k, scoring.alpha  # rerank's, as chosen
        self.limits = limits

    def __len__(self) -> int:
        return len(self.cases)

    def info(self) -> dict:
        return {"gallery_size": len(self), "rerank_available": self.reranker is not None,
                "rerank_k": self.rerank_k, "alpha": self.alpha,
                "retriever": str(self.retriever.path),
                "reranker": str(self.reranker.path) if self.reranker is not None else None,
                "limits": self.limits.as_dict()}

    # --- encoding one query ----------------------------------------------------------------
    def _tokens(self, loaded, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        t = tokenize(loaded.tokenizer, [text], loaded.config.model.text.max_length)
        return torch.from_numpy(t["input_ids"]), torch.from_numpy(t["attention_mask"])

    def _check(self, k, rerank: bool) -> int:
        k = check_k(k, len(self), self.limits)
        if rerank and self.reranker is None:
            raise SearchError(422, "rerank asked for, but the service runs without a fusion "
                                   "model (start it with --fusion)")
        return k

    # --- queries ---------------------------------------------------------------------------
    @torch.inference_mode()
    def search_text(self, query, k: int = 10, rerank: bool = False) -> dict:
        """Gallery images for a caption-like query."""
        t0 = time.perf_counter()
        query = check_query(query, self.limits)
        k = self._check(k, rerank)
        ids, mask = self._tokens(self.retriever, query)
        q = self.retriever.model.encode_text(ids, mask).embed.float()[0]
        first = (self.image_embed @ q).numpy()

        def rescore(candidates):
            model = self.reranker.model
            text = model.encode_text(*self._tokens(self.reranker, query))
            image = self.fusion_gallery["image"].index(candidates)
            return model.score(text, image)[0].float().numpy()

        return self._hits(first, k, rerank, rescore, t0)

    @torch.inference_mode()
    def search_image(self, image: Image.Image, k: int = 10, rerank: bool = False) -> dict:
        """Gallery cases (caption and image) for an uploaded image (``check_image``'d)."""
        t0 = time.perf_counter()
        k = self._check(k, rerank)
        size = self.retriever.config.model.image.image_size
        q = self.retriever.model.encode_image(_pixels(image, size)).embed.float()[0]
        first = (self.text_embed @ q).numpy()

        def rescore(candidates):
            model = self.reranker.model
            upload = model.encode_image(_pixels(image, self.reranker.config.model.image.image_size))
            text = self.fusion_gallery["text"].index(candidates)
            return model.score(text, upload)[:, 0].float().numpy()

        return self._hits(first, k, rerank, rescore, t0)

    def _hits(self, first: np.ndarray, k: int, rerank: bool, rescore, t0: float) -> dict:
        if rerank:
            candidates = _order(first, min(max(k, self.rerank_k), len(first)))
            fused = fused_scores(rescore(torch.as_tensor(candidates)), first[candidates],
                                 self.alpha)
            order = _order(fused, k)
            rows, scores = candidates[order], fused[order]
        else:
            rows = _order(first, k)
            scores = first[rows]
        hits = [Hit(rank, self.cases.image_id[r], float(s), float(first[r]),
                    self.cases.caption[r], self.cases.cuis[r]).as_dict()
                for rank, (r, s) in enumerate(zip(rows, scores), start=1)]
        return {"hits": hits, "reranked": bool(rerank),
                "rerank_k": self.rerank_k if rerank else None,
                "alpha": self.alpha if rerank else None,
                "took_ms": (time.perf_counter() - t0) * 1000}

    # --- cases by id -----------------------------------------------------------------------
    def _position(self, image_id) -> int:
        pos = self.cases.position(str(image_id)) if image_id is not None else None
        if pos is None:
            raise SearchError(404, f"no case with image_id {image_id!r} in the gallery")
        return pos

    def thumbnail(self, image_id) -> bytes:
        return self.cases.thumbnail[self._position(image_id)]

    def explain(self, image_id, caption=None) -> dict:
        """Grad-CAM of the score of (``caption`` or the case's own caption, the gallery image
        ``image_id``), with the fusion model when the service has one: {"png", "score",
        "model", "caption"}."""
        from core.explain import attribution
        from core.explain.figure import overlay_png

        pos = self._position(image_id)
        caption = self.cases.caption[pos] if caption in (None, "") else check_query(caption,
                                                                                  self.limits)
        loaded = self.reranker if self.reranker is not None else self.retriever
        model = loaded.model
        image = decode_image(self.cases.image[pos])
        pixels = _pixels(image, loaded.config.model.image.image_size)
        ids, mask = self._tokens(loaded, caption)
        if model.kind == ModelKind.FUSION:
            maps = attribution.fusion_attention(model, pixels, ids, mask)
            panels = {"Grad-CAM (cross-attention)": maps["gradcam"],
                      "attention": maps["attention"]}
            score = maps["logit"]
        else:
            panels = {"Grad-CAM": attribution.grid_gradcam(model, pixels, ids, mask)}
            with torch.inference_mode():
                score = float(attribution.pair_score(model, model.image_encoder.normalize(pixels),
                                                     ids, mask))
        png = overlay_png(pixels[0].numpy().transpose(1, 2, 0).mean(-1), panels)
        return {"png": png, "score": score, "model": model.kind, "caption": caption}

