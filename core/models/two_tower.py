"""Contrastive two-tower model (CLIP-style): image and text towers, projection MLPs,
L2-normalised embeddings, a fixed or learnable temperature. Retrieval is a matrix product."""

from __future__ import annotations

import math

import torch
from torch import nn

from core.config import ModelConfig
from core.features import Embeddings
from core.models.concept_head import build_concept_head
from core.models.encoders import (ImageEncoder, ProjectionMLP, TextEncoder, l2_normalize,
                                  trim_padding)


class TwoTowerModel(nn.Module):
    kind = "two_tower"
    feature_types = {"text": Embeddings, "image": Embeddings}

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        tc = config.two_tower
        self.image_encoder = ImageEncoder(config.image)
        self.text_encoder = TextEncoder(config.text)
        self.image_proj = ProjectionMLP(self.image_encoder.out_dim, tc.proj_hidden,
                                        tc.embed_dim, tc.proj_layers)
        self.text_proj = ProjectionMLP(self.text_encoder.out_dim, tc.proj_hidden,
                                       tc.embed_dim, tc.proj_layers)
        init = torch.tensor(math.log(1.0 / tc.temperature))
        if tc.learnable_temperature:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)
        self.max_logit_scale = tc.max_logit_scale
        self.concept_head = build_concept_head(self.image_encoder.out_dim, config.concepts)

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encode_image_with_concepts(pixels)[0].embed

    def encode_image_with_concepts(self, pixels: torch.Tensor):
        """(Embeddings, concept logits (N, C) or None): one pass of the image encoder."""
        _, pooled = self.image_encoder(pixels)
        concepts = self.concept_head(pooled) if self.concept_head is not None else None
        return Embeddings(l2_normalize(self.image_proj(pooled))), concepts

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        _, _, pooled = self.text_encoder(*trim_padding(input_ids, attention_mask))
        return l2_normalize(self.text_proj(pooled))

    def encode_image(self, pixels: torch.Tensor) -> Embeddings:
        return Embeddings(self.embed_image(pixels))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Embeddings:
        return Embeddings(self.embed_text(input_ids, attention_mask))

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
