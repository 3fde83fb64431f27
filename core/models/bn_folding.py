"""Frozen convolutions with their BatchNorm folded in, for inference on frozen stages.

A frozen stage's BatchNorm runs on its fixed ImageNet statistics, so it is an affine map
per channel that the convolution before it can absorb (w' = w * g / sqrt(var + eps),
b' = beta + (b - mean) * g / sqrt(var + eps); ``torch.nn.utils.fusion``): one pass over each
feature map less. ``bench/encode_rate.py`` measures the frozen towers' encode with and
without it. The folded copy is only run, never saved: checkpoints keep the original layers.

Pairs are a convolution child directly followed, in registration order, by a BatchNorm2d
child of its width: the order timm's and torchvision's blocks run them in (EfficientNet's
DepthwiseSeparableConv / InvertedResidual, ResNet's Bottleneck, a downsample Sequential).
timm's BatchNormAct2d keeps its activation. ``fold_batchnorm`` checks the folded copy
against the original on a probe input and returns None when they differ (a block whose
forward does not run the pair back to back), so a wrong pairing can only cost speed."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _after_norm(bn: nn.BatchNorm2d) -> nn.Module:
    """What is left of a BatchNorm once folded: timm's BatchNormAct2d's dropout and
    activation, else nothing."""
    if hasattr(bn, "act") and hasattr(bn, "drop"):
        return nn.Sequential(bn.drop, bn.act)
    return nn.Identity()


def _fold_children(module: nn.Module) -> int:
    folded = 0
    children = list(module.named_children())
    for (name, conv), (bn_name, bn) in zip(children, children[1:]):
        if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                and bn.track_running_stats and bn.num_features == conv.out_channels):
            setattr(module, name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, _after_norm(bn))
            folded += 1
    for child in module.children():
        folded += _fold_children(child)
    return folded


@torch.no_grad()
def fold_batchnorm(stages: nn.Module, probe: torch.Tensor) -> nn.Module | None:
    """An eval-mode copy of ``stages`` with every (conv, BatchNorm) pair folded, or None
    when there is none or the copy's output on ``probe`` (in fp32) differs from the
    original's: stages in training mode (batch statistics) or a block that does not run
    the pair back to back."""
    folded = copy.deepcopy(stages).eval()
    if not _fold_children(folded):
        return None
    with torch.autocast(probe.device.type, enabled=False):
        expected, got = stages(probe.float()).float(), folded(probe.float()).float()
    scale = expected.abs().max().clamp_min(1e-6)
    if expected.shape != got.shape or ((expected - got).abs().max() / scale) > 1e-4:
        return None
    return folded
