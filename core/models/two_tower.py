"""Contrastive two-tower model (CLIP-style): image and text towers, projection MLPs,
L2-normalised embeddings, a fixed or learnable temperature. Retrieval is a matrix product.

Alignment (``model.two_tower.alignment``): ``abm`` pools each encoder's outputs, then
projects (CLIP); ``mba`` projects every patch and token into the shared space, then pools
them with learned attention (Mapping-before-Aggregation). With ``model.mcr.mode`` on, the
model also carries the masked-reconstruction heads (``core.training.loop`` uses them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from core.features import Embeddings
from core.models.concept_head import build_concept_head
from core.models.pooling import AttentionPool
from core.models.encoders import (ImageEncoder, TextEncoder, contrastive_heads, l2_normalize,
                                  register_logit_scale, trim_padding)
from core.models.kind import ModelKind

if TYPE_CHECKING:  # the model's config type, defined beside every model's part
    from core.models.config import ModelConfig


@dataclass
class TwoTowerConfig:
    embed_dim: int = 256
    proj_layers: int = 2  # 1 = linear projection
    proj_hidden: int = 1024
    proj_dropout: float = 0.0  # dropout on the pooled features the projections read
    temperature: float = 0.07
    learnable_temperature: bool = True
    max_logit_scale: float = 100.0  # CLIP clamps exp(logit_scale) at 100
    # "abm": Aggregation-before-Mapping (pool the encoder's patches / tokens, then project:
    # CLIP's way); "mba": Mapping-before-Aggregation (project every patch and token into the
    # shared space, then pool them with learned attention).
    alignment: Literal["abm", "mba"] = "abm"



class TwoTowerModel(nn.Module):
    kind = ModelKind.TWO_TOWER
    feature_types = {"text": Embeddings, "image": Embeddings}

    def __init__(self, config: ModelConfig, load_weights: bool = True):
        super().__init__()
        self.config = config
        tc = config.two_tower
        self.image_encoder = ImageEncoder(config.image, load_weights)
        self.text_encoder = TextEncoder(config.text, load_weights)
        self.image_proj, self.text_proj = contrastive_heads(
            self.image_encoder.out_dim, self.text_encoder.out_dim, tc)
        register_logit_scale(self, "logit_scale", tc)
        self.max_logit_scale = tc.max_logit_scale
        self.concept_head = build_concept_head(self.image_encoder.out_dim, config.concepts)
        self.alignment = tc.alignment
        if self.alignment == "mba":  # project every patch / token, then pool in the shared space
            self.image_pool = AttentionPool(tc.embed_dim)
            self.text_pool = AttentionPool(tc.embed_dim)
        if config.mcr.mode != "off":
            gh, gw = self.image_encoder.grid
            size = config.image.image_size
            if size % gh or size % gw:
                raise ValueError(f"image size {size} is not a multiple of the encoder grid "
                                 f"{gh}x{gw}: masked cells would not tile the image")
            # MCR reconstruction heads: a masked cell's normalised pixels from its feature;
            # masked tokens from the token states through a head tied to the word embeddings.
            self.pixel_decoder = nn.Linear(self.image_encoder.out_dim,
                                           3 * (size // gh) * (size // gw))
            width = self.text_encoder.out_dim
            self.mlm_transform = nn.Sequential(nn.Linear(width, width), nn.GELU(),
                                               nn.LayerNorm(width))
            self.mlm_bias = nn.Parameter(torch.zeros(
                self.text_encoder.model.get_input_embeddings().num_embeddings))

    def image_features(self, pixels: torch.Tensor | None, prefix: torch.Tensor | None = None):
        """(L2-normalised embedding, patch features (B, P, C), pooled features (B, C)); from
        the frozen stages' ``prefix`` when given."""
        patches, pooled = self.image_encoder(pixels, prefix=prefix)
        z = (self.image_pool(self.image_proj(patches)) if self.alignment == "mba"
             else self.image_proj(pooled))
        return l2_normalize(z), patches, pooled

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      prefix: torch.Tensor | None = None):
        """(L2-normalised embedding, token states (B, T', H), mask (B, T')), padding trimmed;
        ``prefix``: the frozen layers' token states (trimmed here too)."""
        input_ids, attention_mask = trim_padding(input_ids, attention_mask)
        if prefix is not None:
            prefix = prefix[:, :input_ids.shape[1]]
        tokens, mask, pooled = self.text_encoder(input_ids, attention_mask, prefix=prefix)
        z = (self.text_pool(self.text_proj(tokens), mask) if self.alignment == "mba"
             else self.text_proj(pooled))
        return l2_normalize(z), tokens, mask

    def mlm_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of token states, decoder tied to the word embeddings."""
        weight = self.text_encoder.model.get_input_embeddings().weight
        return F.linear(self.mlm_transform(tokens), weight, self.mlm_bias)

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_features(pixels)[0]

    def encode_image_with_concepts(self, pixels: torch.Tensor | None, prefix=None):
        """(Embeddings, concept logits (N, C) or None): one pass of the image encoder (from
        the frozen stages' ``prefix`` when given)."""
        embed, _, pooled = self.image_features(pixels, prefix)
        concepts = self.concept_head(pooled) if self.concept_head is not None else None
        return Embeddings(embed), concepts

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_features(input_ids, attention_mask)[0]

    def encode_image(self, pixels: torch.Tensor) -> Embeddings:
        return Embeddings(self.embed_image(pixels))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    prefix: torch.Tensor | None = None) -> Embeddings:
        return Embeddings(self.text_features(input_ids, attention_mask, prefix)[0])

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped as CLIP does (at 100 by default)."""
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def score(self, text: Embeddings, image: Embeddings) -> torch.Tensor:
        """Cosine similarities (Nt, Ni): the ranking score."""
        return text.embed @ image.embed.T

    def score_pairs(self, text: Embeddings, image: Embeddings, text_index=None,
                    image_index=None) -> torch.Tensor:
        t = text.embed if text_index is None else text.embed[text_index]
        i = image.embed if image_index is None else image.embed[image_index]
        return (t * i).sum(-1)

    def forward(self, pixels, input_ids, attention_mask):
        """(image embeddings, text embeddings, exp(logit_scale)) for the InfoNCE loss."""
        return self.embed_image(pixels), self.embed_text(input_ids, attention_mask), self.scale()
