"""Numeric precision, in one place: the autocast context and the precision a run actually
uses on a device. ``train.precision`` (checked at config load: fp32 or bf16) is honoured on
GPUs and on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX: oneDNN runs bf16 matmuls
there); other CPUs train and validate in fp32. Validation runs in the precision training
runs in, and scoring defaults to it."""

from __future__ import annotations

import contextlib
import functools

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


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (oneDNN's check: AVX512-BF16 / AMX).
    Elsewhere bf16 autocast is emulated, slower than fp32, so it is not used."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def training_precision(requested: str, device_type: str) -> str:
    """What training (and its validation) runs in: bf16 on CUDA and on CPUs with native bf16,
    fp32 elsewhere."""
    if requested == "bf16" and device_type != "cuda" and not cpu_has_native_bf16():
        return "fp32"
    return requested


def scoring_precision(requested: str | None, device_type: str, trained: str) -> str:
    """What the scoring job runs in: the flag when given (a user's choice), else the
    checkpoint's training precision where this device runs it (``training_precision``)."""
    return requested or training_precision(trained, device_type)
