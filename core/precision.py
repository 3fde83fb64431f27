"""Numeric precision, in one place: the autocast context and the precision a run actually
uses on a device. ``train.precision`` (checked at config load: fp32 or bf16) is honoured on
GPUs; CPUs train and validate in fp32. Validation runs in the precision training runs in."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16")


def autocast(device, precision: str):
    """bf16 autocast for ``precision == "bf16"``; fp32 otherwise (TF32 allowed on GPUs)."""
    device = torch.device(device)
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return contextlib.nullcontext()


def training_precision(requested: str, device_type: str) -> str:
    """What training (and its validation) runs in: bf16 only on CUDA."""
    return requested if device_type == "cuda" else "fp32"


def scoring_precision(requested: str | None, device_type: str, trained: str) -> str:
    """What the scoring job runs in: the flag when given (bf16 on a CPU too: a user's
    choice), else the checkpoint's training precision on GPUs and fp32 on CPUs."""
    return requested or training_precision(trained, device_type)
