"""Image and text encoders shared by both models.

ImageEncoder returns the spatial patch grid (B, P, C) for fusion and a pooled vector (B, C)
for the two-tower model: a torchvision ResNet (7x7x2048 at 224 px for ResNet-50), ImageNet
EfficientNet-Lite0 from a pinned package (7x7x1280 at 224 px, works offline), or a small
CNN for CPU presets. TextEncoder returns token features (B, T, H), their mask, and a pooled
vector: a Hugging Face BERT-family model by name or path (all-MiniLM-L6-v2 from a pinned
package), or a BertModel built from config.

``pretrained: true`` that cannot be honoured raises ``PretrainedUnavailable`` naming what is
missing: a random init is never passed off as a pretrained one. ``freeze_stages`` /
``freeze_layers`` freeze the leading backbone stages / the embeddings and first transformer
layers (kept in eval mode, so frozen BatchNorm statistics never move).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from core.models import pretrained as packaged
from core.models.bn_folding import fold_batchnorm
from core.models.dropout import Dropout


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageEncoderConfig:
    # torchvision "resnet18" / "resnet34" / "resnet50", "efficientnet_lite0" (ImageNet
    # weights from a pinned package: works offline), or "small_cnn" for CPU presets.
    arch: str = "resnet50"
    # ImageNet weights (torchvision's download for ResNets, the packaged file for
    # efficientnet_lite0). When they cannot be loaded the model does not build (an error
    # naming what is missing): never a silent random init.
    pretrained: bool = False
    image_size: int = 224
    # Channel widths of the small_cnn stages (each stage halves the resolution).
    cnn_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    # Input normalisation on [0, 1] pixels; None: what the architecture's weights were
    # trained with (ImageNet's for ResNets and small_cnn, 0.498 / 0.502 for EfficientNet-Lite).
    mean: list[float] | None = None
    std: list[float] | None = None
    # Leading backbone stages frozen (weights fixed, BatchNorm statistics kept); -1: all.
    freeze_stages: int = 0


@dataclass
class TextEncoderConfig:
    # A Hugging Face model name or local path (BERT family); sentence-transformers/
    # all-MiniLM-L6-v2 loads from its pinned package, offline. None: a BertModel built from
    # the sizes below, randomly initialised.
    name_or_path: str | None = None
    # A Hugging Face tokenizer name or path. None: the pretrained model's own tokenizer when
    # name_or_path is set; else <data>/tokenizer if present, else a WordPiece vocabulary
    # trained on the training captions.
    tokenizer: str | None = None
    # The embeddings and this many leading transformer layers frozen; -1: the whole encoder.
    freeze_layers: int = 0
    vocab_size: int = 30522  # overwritten by the tokenizer's size when built from config
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_length: int = 64
    pooling: Literal["cls", "mean"] = "cls"  # [CLS], or the masked mean over tokens
    # Size of the WordPiece vocabulary trained offline.
    trained_vocab_size: int = 8000


log = logging.getLogger(__name__)

RESNETS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}
EFFICIENTNETS = {"efficientnet_lite0": 1280}


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
    if not pretrained:
        return builder(weights=None)
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        model = builder(weights=weights)
    except Exception as exc:  # offline, or the download failed
        raise packaged.PretrainedUnavailable(
            f"{arch}: ImageNet weights {weights} could not be loaded ({exc}); offline, use "
            "model.image.arch=efficientnet_lite0 (packaged weights) or pretrained: false") from exc
    log.info("%s: ImageNet weights %s loaded", arch, weights)
    return model


def _stages(config: ImageEncoderConfig, load_weights: bool) -> tuple[list[nn.Module], int]:
    """The backbone as a list of stages (input side first), up to the last spatial map."""
    pretrained = config.pretrained and load_weights
    if config.arch == "small_cnn":
        cnn = SmallCNN(list(config.cnn_channels))
        return list(cnn.body), cnn.out_dim
    if config.arch in RESNETS:
        net = _resnet(config.arch, pretrained)
        # Everything up to layer4: the spatial grid, before avgpool and fc.
        return [net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                net.layer4], RESNETS[config.arch]
    if config.arch in EFFICIENTNETS:
        net = packaged.efficientnet_lite0(pretrained)
        if pretrained:
            log.info("%s: ImageNet weights from %s", config.arch,
                     packaged.EFFICIENTNET_LITE0.distribution)
        return [net.conv_stem, net.bn1, *net.blocks, net.conv_head, net.bn2], EFFICIENTNETS[config.arch]
    raise ValueError(f"unknown image encoder arch {config.arch!r} "
                     f"(small_cnn, {', '.join([*RESNETS, *EFFICIENTNETS])})")


def normalization(config: ImageEncoderConfig) -> tuple[list[float], list[float]]:
    """The config's mean / std, else those the architecture's weights were trained with."""
    weights = packaged.IMAGE_WEIGHTS.get(config.arch)
    mean = config.mean or (weights.mean if weights else IMAGENET_MEAN)
    std = config.std or (weights.std if weights else IMAGENET_STD)
    return list(mean), list(std)


def freeze(modules: list[nn.Module]) -> None:
    for module in modules:
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-d image batch in channels-last (NHWC) memory order: every convolution after it
    runs on oneDNN's NHWC kernels, 1.2-2x faster on a CPU than NCHW, forward and backward
    (``bench/channels_last.py``; the values are the same up to float rounding). The weights
    stay NCHW, so checkpoints and digests are unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class ImageEncoder(nn.Module):
    def __init__(self, config: ImageEncoderConfig, load_weights: bool = True):
        """``load_weights=False`` builds the architecture only (a checkpoint's weights follow)."""
        super().__init__()
        self.config = config
        stages, self.out_dim = _stages(config, load_weights)
        self.backbone = nn.Sequential(*stages)
        n = len(stages) if config.freeze_stages < 0 else min(config.freeze_stages, len(stages))
        self.frozen = list(self.backbone)[:n]
        freeze(self.frozen)
        with torch.no_grad():
            was_training = self.backbone.training
            self.backbone.eval()
            grid = self.backbone(torch.zeros(1, 3, config.image_size, config.image_size))
            self.train(was_training)
        self.grid = tuple(grid.shape[-2:])
        self.num_patches = grid.shape[-2] * grid.shape[-1]
        # uint8 pixels travel host -> device (4x less than float32) and are normalised here,
        # on the device. Not saved with the weights: they come from the config.
        mean, std = normalization(config)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0,
                             persistent=False)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(std).view(1, 3, 1, 1) * 255.0),
                             persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        for module in getattr(self, "frozen", ()):
            module.eval()  # frozen BatchNorm keeps its ImageNet statistics
        return self

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> standardised float; float input is taken as standardised.
        Either way in channels-last memory order (``channels_last``)."""
        if pixels.dtype != torch.uint8:
            return channels_last(pixels)
        return channels_last((pixels.to(self.mean.dtype) - self.mean) * self.inv_std)

    def frozen_prefix(self, pixels: torch.Tensor) -> torch.Tensor:
        """The frozen stages' output map: what a run with frozen stages encodes once and
        trains on (``forward(prefix=...)``), run with their BatchNorms folded into the
        convolutions (``core.models.bn_folding``) unless the input needs gradients or a
        hook watches the stages (explanations see the original layers)."""
        x = self.normalize(pixels)
        prefix = self.backbone[:len(self.frozen)]
        if x.requires_grad or any(m._forward_hooks or m._forward_pre_hooks
                                  for m in prefix.modules()):
            return prefix(x)
        return (self._folded_prefix(prefix, x) or prefix)(x)

    def _folded_prefix(self, prefix: nn.Sequential, x: torch.Tensor) -> nn.Module | None:
        """The folded copy of the frozen stages, made again whenever their weights change
        (loaded, moved): kept outside the module tree, so never in a checkpoint."""
        state = tuple((id(t), t._version, t.device, t.dtype)
                      for t in [*prefix.parameters(), *prefix.buffers()])
        cached = self.__dict__.get("_folded")
        if cached is None or cached[0] != state:
            self.__dict__["_folded"] = cached = (state, fold_batchnorm(prefix, x[:1]))
        return cached[1]

    def forward(self, pixels: torch.Tensor | None,
                prefix: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(patches (B, h*w, C), pooled (B, C)) of ``pixels``, or of ``prefix``, the frozen
        stages' output computed earlier (``frozen_prefix``)."""
        if prefix is None:
            fmap = self.backbone(self.normalize(pixels))  # (B, C, h, w)
        else:
            param = next(self.backbone[len(self.frozen):].parameters(), None)
            fmap = self.backbone[len(self.frozen):](
                channels_last(prefix.to(param.dtype if param is not None else torch.float32)))
        patches = fmap.flatten(2).transpose(1, 2)  # (B, h*w, C)
        return patches, patches.mean(dim=1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the token axis (-2) of ``x`` where ``mask`` (broadcastable to x[..., 0]) is 1."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(-2) / m.sum(-2).clamp_min(1.0)


class TextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig, load_weights: bool = True):
        """``load_weights=False`` builds a named model's architecture only (from its
        config.json; a checkpoint's weights follow)."""
        super().__init__()
        from transformers import AutoConfig, AutoModel, BertConfig, BertModel

        self.config = config
        if config.name_or_path:
            path = packaged.text_model_path(config.name_or_path)
            if load_weights:
                from transformers.utils import logging as hf_logging

                # Its load report lists the checkpoint's unused pooler (add_pooling_layer is
                # off on purpose) on every worker: keep warnings about anything else.
                level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
                hf_logging.set_verbosity_error()
                hf_logging.disable_progress_bar()
                try:
                    self.model = AutoModel.from_pretrained(path, add_pooling_layer=False)
                finally:
                    hf_logging.set_verbosity(level)
                    if bars:
                        hf_logging.enable_progress_bar()
            else:
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(path),
                                                   add_pooling_layer=False)
        else:
            self.model = BertModel(BertConfig(
                vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
                intermediate_size=config.intermediate_size,
                max_position_embeddings=max(512, config.max_length)), add_pooling_layer=False)
        self.out_dim = self.model.config.hidden_size
        layers = list(self.model.encoder.layer)
        n = len(layers) if config.freeze_layers < 0 else min(config.freeze_layers, len(layers))
        self.frozen = [self.model.embeddings, *layers[:n]] if config.freeze_layers else []
        freeze(self.frozen)

    def train(self, mode: bool = True):
        super().train(mode)
        for module in getattr(self, "frozen", ()):
            module.eval()  # no dropout in frozen layers: their outputs stay fixed
        return self

    def frozen_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states (B, T, H) after the frozen embeddings and layers (``freeze_layers``):
        what a run with a frozen text encoder encodes once (``forward(prefix=...)``)."""
        if not self.frozen:
            raise ValueError("the text encoder has no frozen layers to encode in advance")
        hidden = self.model.embeddings(input_ids=input_ids)
        return self._layers(hidden, attention_mask, self.frozen[1:])

    def _layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, layers) -> torch.Tensor:
        # BERT's additive mask over keys: 0 where attended, the dtype's minimum on padding.
        additive = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(
            hidden.dtype).min
        for layer in layers:
            out = layer(hidden, attention_mask=additive)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                prefix: torch.Tensor | None = None):
        """(token states (B, T, H), mask, pooled (B, H)); ``prefix``: the frozen layers'
        output (``frozen_prefix``) of these ids, computed earlier."""
        if prefix is None:
            tokens = self.model(input_ids=input_ids,
                                attention_mask=attention_mask).last_hidden_state
        else:
            trainable = list(self.model.encoder.layer)[len(self.frozen) - 1:]
            tokens = self._layers(prefix.to(self.model.embeddings.word_embeddings.weight.dtype),
                                  attention_mask, trainable)
        if self.config.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            pooled = masked_mean(tokens, attention_mask)
        return tokens, attention_mask, pooled


class ProjectionMLP(nn.Module):
    """``layers`` linear maps with GELU between them (1 = a linear projection), after a
    dropout on the input features (``dropout`` > 0; a regulariser when the towers are frozen
    and only the heads learn from a few thousand pairs)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
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
        return self.net(self.dropout(x))


def contrastive_heads(image_dim: int, text_dim: int, tc) -> tuple[ProjectionMLP, ProjectionMLP]:
    """CLIP's projection MLPs of the image and the text side, sized by ``model.two_tower``
    (the two-tower model's, and the fusion model's ITC heads)."""
    return (ProjectionMLP(image_dim, tc.proj_hidden, tc.embed_dim, tc.proj_layers, tc.proj_dropout),
            ProjectionMLP(text_dim, tc.proj_hidden, tc.embed_dim, tc.proj_layers, tc.proj_dropout))


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
