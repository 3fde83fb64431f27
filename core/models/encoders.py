"""Image and text encoders shared by both models.

ImageEncoder returns the spatial patch grid (B, P, C) for fusion and a pooled vector (B, C)
for the two-tower model: a torchvision ResNet (7x7x2048 at 224 px for ResNet-50), or a small
CNN for CPU presets. TextEncoder returns token features (B, T, H), their mask, and a pooled
vector: a Hugging Face BERT-family model by name or path, or a BertModel built from config.
"""

from __future__ import annotations

import math

import logging

import torch
import torch.nn.functional as F
from torch import nn

from core.config import ImageEncoderConfig, TextEncoderConfig

log = logging.getLogger(__name__)

RESNETS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stages, each halving the resolution: 64 px -> a 4x4 grid with 4 stages."""

    def __init__(self, channels: list[int]):
        super().__init__()
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c),
                       nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, padding=1, bias=False),
                       nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.out_dim = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _resnet(arch: str, pretrained: bool) -> nn.Module:
    import torchvision

    builder = getattr(torchvision.models, arch)
    weights = None
    if pretrained:
        weights_enum = torchvision.models.get_model_weights(arch)
        try:
            model = builder(weights=weights_enum.DEFAULT)
            log.info("%s: ImageNet weights %s loaded", arch, weights_enum.DEFAULT)
            return model
        except Exception as exc:  # offline, or the download failed
            log.warning("%s: ImageNet weights could not be loaded (%s); using random init",
                        arch, exc)
    return builder(weights=weights)


class ImageEncoder(nn.Module):
    def __init__(self, config: ImageEncoderConfig):
        super().__init__()
        self.config = config
        if config.arch == "small_cnn":
            self.backbone = SmallCNN(list(config.cnn_channels))
            self.out_dim = self.backbone.out_dim
        elif config.arch in RESNETS:
            net = _resnet(config.arch, config.pretrained)
            # Everything up to layer4: the spatial grid, before avgpool and fc.
            self.backbone = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                                          net.layer1, net.layer2, net.layer3, net.layer4)
            self.out_dim = RESNETS[config.arch]
        else:
            raise ValueError(f"unknown image encoder arch {config.arch!r} "
                             f"(small_cnn, {', '.join(RESNETS)})")
        with torch.no_grad():
            was_training = self.backbone.training
            self.backbone.eval()
            grid = self.backbone(torch.zeros(1, 3, config.image_size, config.image_size))
            self.backbone.train(was_training)
        self.grid = tuple(grid.shape[-2:])
        self.num_patches = grid.shape[-2] * grid.shape[-1]
        # uint8 pixels travel host -> device (4x less than float32) and are normalised here,
        # on the device. Not saved with the weights: they come from the config.
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1) * 255.0,
                             persistent=False)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(config.std).view(1, 3, 1, 1) * 255.0),
                             persistent=False)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> standardised float; float input is taken as standardised."""
        if pixels.dtype != torch.uint8:
            return pixels
        return (pixels.to(self.mean.dtype) - self.mean) * self.inv_std

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.backbone(self.normalize(pixels))  # (B, C, h, w)
        patches = fmap.flatten(2).transpose(1, 2)  # (B, h*w, C)
        return patches, patches.mean(dim=1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the token axis (-2) of ``x`` where ``mask`` (broadcastable to x[..., 0]) is 1."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(-2) / m.sum(-2).clamp_min(1.0)


class TextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        from transformers import AutoModel, BertConfig, BertModel

        self.config = config
        if config.name_or_path:
            self.model = AutoModel.from_pretrained(config.name_or_path, add_pooling_layer=False)
        else:
            self.model = BertModel(BertConfig(
                vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
                intermediate_size=config.intermediate_size,
                max_position_embeddings=max(512, config.max_length)), add_pooling_layer=False)
        self.out_dim = self.model.config.hidden_size
        if config.pooling not in ("cls", "mean"):
            raise ValueError(f"text pooling must be 'cls' or 'mean', got {config.pooling!r}")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        tokens = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.config.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            pooled = masked_mean(tokens, attention_mask)
        return tokens, attention_mask, pooled


class ProjectionMLP(nn.Module):
    """``layers`` linear maps with GELU between them (1 = a linear projection)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int):
        super().__init__()
        if layers < 1:
            raise ValueError(f"projection needs at least 1 layer, got {layers}")
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(nn.Linear(dims[i], dims[i + 1]))
            if i < layers - 1:
                mods.append(nn.GELU())
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def contrastive_heads(image_dim: int, text_dim: int, tc) -> tuple[ProjectionMLP, ProjectionMLP]:
    """CLIP's projection MLPs of the image and the text side, sized by ``model.two_tower``
    (the two-tower model's, and the fusion model's ITC heads)."""
    return (ProjectionMLP(image_dim, tc.proj_hidden, tc.embed_dim, tc.proj_layers),
            ProjectionMLP(text_dim, tc.proj_hidden, tc.embed_dim, tc.proj_layers))


def register_logit_scale(module: nn.Module, name: str, tc) -> None:
    """log(1 / temperature) on ``module`` as ``name``: a learnable parameter, or a fixed
    buffer when ``model.two_tower.learnable_temperature`` is off."""
    init = torch.tensor(math.log(1.0 / tc.temperature))
    if tc.learnable_temperature:
        setattr(module, name, nn.Parameter(init))
    else:
        module.register_buffer(name, init)


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Cut the columns that are padding in every row (tokenizers pad on the right): the
    encoder's output for the kept tokens is unchanged, and it costs less."""
    used = attention_mask.bool().any(0).nonzero()
    length = int(used.max()) + 1 if len(used) else 1
    return input_ids[:, :length], attention_mask[:, :length]


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)
