"""Cross-modal attention fusion: text tokens attend to image patches; a head scores the match.

    image patches --proj + pos--> (P, d) --LN--> per-layer K, V       (image side, once)
    text tokens   --proj------->  (T, d) --LN--> layer-0 query Q0     (caption side, once)
    for each layer:  t = t + O(attn(Q(t), K, V));  t = t + FFN(LN(t))  (per pair)
    masked mean over tokens -> LN -> MLP -> one match logit

Retrieval scores every (caption, image) pair, which is quadratic. The split API keeps the
quadratic part as small as it can be:

    encode_image(pixels)  -> FusionImage   (runs the image encoder and the K/V projections)
    encode_text(ids, mask) -> FusionText   (runs BERT and the first layer's query projection)
    score(text, image)    -> (Nt, Ni) ranking scores for a block of captions x images: the
                             match logit (+ score_alpha x the ITC cosine: the fused score)
    score_pairs(text, image, ti, ii) -> logits for listed (caption, image) pairs

so an Nt x Ni block runs the encoders Nt + Ni times, not Nt x Ni. ``forward`` is the plain,
straightforward path (everything recomputed per pair); the tests check ``score`` against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from core.features import Features
from core.models.concept_head import build_concept_head
from core.models.dropout import Dropout
from core.models.encoders import (ImageEncoder, TextEncoder, contrastive_heads, l2_normalize,
                                  masked_mean, register_logit_scale)
from core.models.kind import ModelKind

if TYPE_CHECKING:  # the model's config type, defined beside every model's part
    from core.models.config import ModelConfig


@dataclass
class FusionConfig:
    width: int = 256
    num_layers: int = 2
    num_heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    # Negatives per positive pair, in each direction (k images per caption, k captions per image).
    negatives_per_positive: int = 3
    # "random", "hard" (sampled by pooled-feature similarity, ALBEF) or "hardest" (top-k).
    negative_mode: Literal["random", "hard", "hardest"] = "hard"
    # Weight of an auxiliary InfoNCE on the pooled features (ALBEF's ITC); it makes the
    # "hard" negatives meaningful. 0 disables it.
    contrastive_weight: float = 0.1
    # Temperature of the similarity that hard negatives are sampled by.
    temperature: float = 0.07
    # Caption negatives with one attribute word swapped (NegCLIP-style), for the match head:
    # "a:b" word pairs (single tokens of the vocabulary); empty: off.
    swap_negatives: list[str] = field(default_factory=lambda: [
        "left:right", "upper:lower", "superior:inferior"])
    # A two-tower checkpoint or training run whose encoders and projection heads initialise
    # this model's encoders and ITC heads (ALBEF / BLIP: the match head is trained on
    # contrastively trained encoders). None: from scratch.
    init_from: str | None = None
    # Train only the fusion layers and heads: both encoders (initialised from init_from)
    # frozen whole, and so encoded once (train.encode_frozen_once). Resolved at the start of
    # a run into model.image.freeze_stages = model.text.freeze_layers = -1.
    freeze_encoders: bool = False
    # With init_from: the fusion layers' token and patch projections start as the two-tower
    # model's (linear) ITC heads, so cross-attention begins in the space the two-tower
    # model aligned (needs model.two_tower.proj_layers 1 and embed_dim = width).
    token_proj_from_itc: bool = False
    # Soft match labels: a sampled negative pair's BCE target is this x the Jaccard overlap
    # of the two items' UMLS concepts (the concept vocabulary's) instead of 0
    # (core.losses.match). 0: hard labels. Needs concept ids in the data and
    # model.concepts.weight > 0 (the vocabulary the concept head trains on).
    concept_soft_labels: float = 0.0
    # The ranking score over all pairs: match logit + score_alpha x the ITC cosine (the
    # fused score, as ALBEF/BLIP combine ITM and ITC); 0: the match logit alone. None: chosen
    # on the validation split (from FUSED_SCORE_ALPHAS) in every epoch whose checkpoint the
    # run may keep (train.keep), and that checkpoint records the number it chose.
    score_alpha: float | None = 0.0
    # Retrieve-and-rerank inside the fusion model, in validation: the ITC top-k re-scored by
    # the match logit + rerank_alpha x the ITC cosine (the fused score). None: the one
    # default of every scoring job (core.scoring.settings.ScoringSettings.rerank_k).
    rerank_k: int | None = None
    rerank_alpha: float = 0.0



# The fused score's alphas tried on the validation split when model.fusion.score_alpha is
# None, and retrieve-and-rerank's (``rocoray evaluate --alphas``). ITC cosines are in [-1, 1]
# and match logits spread over a few units: at the top of the grid the cosine ranks almost
# alone, so a choice there says the match logit adds little on validation.
FUSED_SCORE_ALPHAS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)


@dataclass
class FusionImage(Features):
    k: torch.Tensor  # (N, L, h, P, dh): every layer's keys
    v: torch.Tensor  # (N, L, h, P, dh): every layer's values
    embed: torch.Tensor  # (N, e) L2-normalised ITC embedding (hard negatives, ITC, first stage)


@dataclass
class FusionText(Features):
    tokens: torch.Tensor  # (N, T, d) projected token features (the residual stream's start)
    q0: torch.Tensor  # (N, h, T, dh) the first layer's queries
    mask: torch.Tensor  # (N, T)
    embed: torch.Tensor  # (N, e) L2-normalised ITC embedding

    def trimmed(self) -> FusionText:
        """Drop the token positions that are padding in every row (right padding)."""
        used = self.mask.bool().any(0).nonzero()
        length = int(used.max()) + 1 if len(used) else 1
        if length == self.mask.shape[1]:
            return self
        return FusionText(self.tokens[:, :length], self.q0[:, :, :length],
                          self.mask[:, :length], self.embed)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(dh)) v, the one attention of the fusion layers. PyTorch's fused
    kernel (SDPA) everywhere but where autograd records it in bf16 on a CPU: there SDPA's
    backward is 5-6x slower than the explicit product's (``bench/fusion_step.py``), so the
    product runs, its softmax in fp32 as the fused kernel computes it."""
    if q.dtype == torch.bfloat16 and q.device.type == "cpu" and torch.is_grad_enabled() and (
            q.requires_grad or k.requires_grad or v.requires_grad):
        weights = ((q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5).softmax(-1)
        return weights.to(v.dtype) @ v
    return F.scaled_dot_product_attention(q, k, v)


def _unpack(packed: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Packed token rows (V, d) back into the padded layout (N, T, d), zeros at padding."""
    out = packed.new_zeros((*valid.shape, packed.shape[-1]))
    out[valid] = packed
    return out


class CrossAttentionLayer(nn.Module):
    """Pre-norm cross-attention (text queries, image keys/values) + feed-forward, residual."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"fusion width {width} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, width // heads
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.o = nn.Linear(width, width)
        self.norm_ff = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.ff = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), Dropout(dropout),
                                nn.Linear(hidden, width))
        self.dropout = Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (..., S, d) -> (..., h, S, dh)
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(-3, -2)

    def image_kv(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.norm_kv(image)
        return self._heads(self.k(x)), self._heads(self.v(x))

    def query(self, text: torch.Tensor) -> torch.Tensor:
        return self._heads(self.q(self.norm_q(text)))

    def packed_query(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Queries of packed token rows (V, d), in the padded layout (N, h, T, dh) that
        attention takes (``valid``: (N, T)); zero rows at padding."""
        return self._heads(_unpack(self.q(self.norm_q(tokens)), valid))

    def finish(self, text: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Residual update from the attended values, heads merged (..., d)."""
        text = text + self.dropout(self.o(attended))
        return text + self.dropout(self.ff(self.norm_ff(text)))

    @staticmethod
    def merge_heads(attended: torch.Tensor) -> torch.Tensor:  # (..., h, S, dh) -> (..., S, d)
        return attended.transpose(-3, -2).flatten(-2)

    def forward(self, text: torch.Tensor, image: torch.Tensor, need_weights: bool = False):
        """The plain path for aligned pairs: text (B, T, d), image (B, P, d)."""
        k, v = self.image_kv(image)
        q = self.query(text)
        if need_weights:
            weights = (q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)).softmax(-1)
            return self.finish(text, self.merge_heads(weights @ v)), weights
        attended = attend(q, k, v)
        return self.finish(text, self.merge_heads(attended)), None


class FusionModel(nn.Module):
    kind = ModelKind.FUSION
    feature_types = {"text": FusionText, "image": FusionImage}

    def __init__(self, config: ModelConfig, load_weights: bool = True):
        super().__init__()
        self.config = config
        fc = config.fusion
        self.image_encoder = ImageEncoder(config.image, load_weights)
        self.text_encoder = TextEncoder(config.text, load_weights)
        d = fc.width
        self.image_proj = nn.Linear(self.image_encoder.out_dim, d)
        # Patch positions matter: "left" and "upper" are places in the image.
        self.image_pos = nn.Parameter(torch.randn(1, self.image_encoder.num_patches, d) * 0.02)
        self.text_proj = nn.Linear(self.text_encoder.out_dim, d)
        self.layers = nn.ModuleList(
            CrossAttentionLayer(d, fc.num_heads, fc.mlp_ratio, fc.dropout)
            for _ in range(fc.num_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        self.scale = 1.0 / math.sqrt(d // fc.num_heads)
        # ITC, as ALBEF: the two-tower model's projection heads on the shared encoders'
        # pooled outputs. The match head is trained on these encoders, hard negatives are
        # sampled by this similarity, and a two-tower checkpoint initialises all of it
        # (``model.fusion.init_from``, ``core.checkpoint.init_fusion_from_two_tower``).
        tc = config.two_tower
        self.itc_image_proj, self.itc_text_proj = contrastive_heads(
            self.image_encoder.out_dim, self.text_encoder.out_dim, tc)
        register_logit_scale(self, "itc_logit_scale", tc)
        self.max_logit_scale = tc.max_logit_scale
        self.concept_head = build_concept_head(self.image_encoder.out_dim, config.concepts)
        # The ranking score: match logit + score_alpha x ITC cosine (the fused score; 0: the
        # match logit alone). None in a config means "chosen on validation" (training sets
        # it in each epoch it may keep, and that checkpoint records the number).
        self.score_alpha = float(fc.score_alpha or 0.0)

    def itc_scale(self) -> torch.Tensor:
        """exp(itc_logit_scale), clamped as CLIP does."""
        return self.itc_logit_scale.exp().clamp(max=self.max_logit_scale)

    # --- split API -------------------------------------------------------------------------
    def _image_tokens(self, pixels, prefix=None) -> tuple[torch.Tensor, torch.Tensor]:
        patches, pooled = self.image_encoder(pixels, prefix=prefix)
        return self.image_proj(patches) + self.image_pos, pooled

    def encode_image(self, pixels: torch.Tensor) -> FusionImage:
        return self.encode_image_with_concepts(pixels)[0]

    def encode_image_with_concepts(self, pixels: torch.Tensor | None, prefix=None):
        """(FusionImage, concept logits (N, C) or None): one pass of the image encoder (from
        the frozen stages' ``prefix`` when given)."""
        x, pooled = self._image_tokens(pixels, prefix)
        kv = [layer.image_kv(x) for layer in self.layers]
        concepts = self.concept_head(pooled) if self.concept_head is not None else None
        return FusionImage(k=torch.stack([k for k, _ in kv], 1),
                           v=torch.stack([v for _, v in kv], 1),
                           embed=l2_normalize(self.itc_image_proj(pooled))), concepts

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    prefix: torch.Tensor | None = None) -> FusionText:
        tokens, mask, pooled = self.text_encoder(input_ids, attention_mask, prefix=prefix)
        t = self.text_proj(tokens)
        return FusionText(tokens=t, q0=self.layers[0].query(t), mask=mask,
                          embed=l2_normalize(self.itc_text_proj(pooled)))

    def _match_logit(self, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(masked_mean(t, mask))).squeeze(-1)

    def _pooled_logit(self, t: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
        """The match logit from packed tokens: ``t`` (..., V, d), token v of caption (or
        pair) ``owner[v]`` of ``n``; the mean of each one's tokens -> (..., n)."""
        pooled = t.new_zeros((*t.shape[:-2], n, t.shape[-1])).index_add_(t.dim() - 2, owner, t)
        counts = torch.bincount(owner, minlength=n).clamp_min(1).to(t.dtype)
        return self.head(self.norm(pooled / counts[:, None])).squeeze(-1)

    def score(self, text: FusionText, image: FusionImage) -> torch.Tensor:
        """Logits for every caption x image of the block: (Nt, Ni). Its working set grows with
        Nt x Ni: callers cut big blocks into chunks (``core.scoring.score_block``).

        Text tokens never attend to each other inside the fusion layers, so each valid token
        is processed on its own: padding is dropped (tokens are packed) and the per-pair
        cost follows the captions' real lengths."""
        valid = text.mask.bool()
        owner = valid.nonzero()[:, 0]  # caption of each packed token
        first = self.layers[0]
        # Layer 0: the queries depend on the caption alone: one batched product against
        # every image's keys. From then on the residual stream is image-major, (Ni, V, d).
        q0 = text.q0.transpose(1, 2)[valid]  # (V, h, dh)
        att = torch.einsum("vhd,mhpd->mhvp", q0, image.k[:, 0]) * self.scale
        attended = torch.einsum("mhvp,mhpd->mhvd", att.softmax(-1), image.v[:, 0])
        t = first.finish(text.tokens[valid][None], first.merge_heads(attended))  # (Ni, V, d)
        for i, layer in enumerate(self.layers[1:], start=1):
            # each image's patches attended by all the block's tokens: one batched SDPA call
            attended = attend(layer.query(t), image.k[:, i], image.v[:, i])
            t = layer.finish(t, layer.merge_heads(attended))
        logits = self._pooled_logit(t, owner, len(text)).T
        if self.score_alpha:
            logits = logits + self.score_alpha * (text.embed @ image.embed.T).to(logits.dtype)
        return logits

    def score_pairs(self, text: FusionText, image: FusionImage,
                    text_index: torch.Tensor | None = None,
                    image_index: torch.Tensor | None = None, ranking: bool = False) -> torch.Tensor:
        """Match logits for aligned pairs (text[ti], image[ii]); indices default to 0..N-1.
        ``ranking``: the ranking score ``score`` computes (with the ITC term when
        ``score_alpha`` is set), for ranking pairs; the plain logit trains the match head.

        As in ``score``, tokens are packed (padding dropped) wherever they are processed one
        by one (projections, feed-forward, dropout, pooling); only the attention sees the
        (pairs, longest caption) layout, its padded queries' outputs dropped."""
        if text_index is not None:
            text = text.index(text_index)
        if image_index is not None:
            image = image.index(image_index)
        text = text.trimmed()
        valid = text.mask.bool()
        owner = valid.nonzero()[:, 0]  # pair of each packed token
        t = text.tokens[valid]  # (V, d)
        for i, layer in enumerate(self.layers):
            q = text.q0 if i == 0 else layer.packed_query(t, valid)
            attended = layer.merge_heads(attend(q, image.k[:, i], image.v[:, i]))[valid]
            t = layer.finish(t, attended)
        logits = self._pooled_logit(t, owner, len(valid))
        if ranking and self.score_alpha:
            logits = logits + self.score_alpha * (text.embed * image.embed).sum(-1).to(logits.dtype)
        return logits

    # --- the plain path ---------------------------------------------------------------------
    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, return_attention: bool = False):
        """Match logits for aligned (image, caption) pairs, everything computed per pair;
        a side of batch 1 is encoded once and broadcast over the other side's batch (one
        image against many captions, as explanations score it). With
        ``return_attention``, also each layer's text-token -> image-patch weights
        (B, h, T, P)."""
        x, _ = self._image_tokens(pixels)
        tokens, mask, _ = self.text_encoder(input_ids, attention_mask)
        t = self.text_proj(tokens)
        n = max(len(x), len(t))
        x, t, mask = x.expand(n, -1, -1), t.expand(n, -1, -1), mask.expand(n, -1)
        maps = []
        for layer in self.layers:
            t, weights = layer(t, x, need_weights=return_attention)
            maps.append(weights)
        logits = self._match_logit(t, mask)
        return (logits, maps) if return_attention else logits
