"""Channels-last (NHWC) against NCHW input for the image towers on this CPU, side by side in
one run: the same weights and the same batch through each preset's image backbone in both
memory orders, as the image encoder's own calls run them (``core.models.encoders.
channels_last``, which every image-encoder call now uses):

  roco_cpu   EfficientNet-Lite0, 224 px, batch 32: forward in bf16 (the frozen towers'
             encode), forward in fp32 and forward + backward to the pixels in fp32 (the
             explanations: Integrated Gradients, Grad-CAM, deletion / insertion curves)
  base       ResNet-50, 224 px, batch 16: forward + backward of a training step (fp32)
  tiny       the synthetic demo's small CNN, 64 px, batch 64: forward + backward (fp32)

Each timing is the median of 5 after a warm-up; the largest difference of the pooled
features between the two orders is recorded beside it.

    python -m bench.channels_last

Writes bench/results/channels_last.json.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench._common import write_result

ORDERS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}
CASES = (  # (preset, batch, mode)
    ("roco_cpu", 32, "forward bf16"),
    ("roco_cpu", 32, "forward fp32"),
    ("roco_cpu", 32, "forward + backward to the pixels fp32"),
    ("base", 16, "forward + backward fp32"),
    ("tiny", 64, "forward + backward fp32"),
)


def encoder(preset: str):
    from core.config import load_config
    from core.models.encoders import ImageEncoder

    config = load_config(preset).model.image
    return ImageEncoder(config, load_weights=False), config.image_size


def run_once(backbone, x: torch.Tensor, mode: str) -> tuple[float, torch.Tensor]:
    from core.precision import autocast

    t0 = time.perf_counter()
    if mode.startswith("forward bf16") or mode == "forward fp32":
        with torch.no_grad(), autocast(torch.device("cpu"), "bf16" if "bf16" in mode else "fp32"):
            pooled = backbone(x).float().mean((2, 3))
    else:
        x = x.detach().requires_grad_("pixels" in mode)
        pooled = backbone(x).mean((2, 3))
        pooled.sum().backward()
    return time.perf_counter() - t0, pooled.detach()


def measure(preset: str, batch: int, mode: str, repeats: int = 5) -> dict:
    torch.manual_seed(0)
    enc, size = encoder(preset)
    backbone = enc.backbone.train("backward" in mode and "pixels" not in mode)
    x = torch.randn(batch, 3, size, size)
    seconds, pooled = {}, {}
    for name, order in ORDERS.items():
        xo = x.contiguous(memory_format=order)
        run_once(backbone, xo, mode)  # warm-up: oneDNN picks and caches its kernels
        times = []
        for _ in range(repeats):
            backbone.zero_grad(set_to_none=True)
            t, pooled[name] = run_once(backbone, xo, mode)
            times.append(t)
        seconds[name] = statistics.median(times)
    diff = float((pooled["nchw"] - pooled["nhwc"]).abs().max())
    row = {"preset": preset, "arch": enc.config.arch, "image_size": size, "batch": batch,
           "mode": mode, "seconds": seconds, "speedup": seconds["nchw"] / seconds["nhwc"],
           "max_abs_difference": diff, "pooled_abs_mean": float(pooled["nchw"].abs().mean())}
    print(f"{preset} ({enc.config.arch}, {size} px, batch {batch}) {mode}: NCHW "
          f"{seconds['nchw']:.3f} s, NHWC {seconds['nhwc']:.3f} s ({row['speedup']:.2f}x); "
          f"max |difference| {diff:.2g}")
    return row


def main(argv=None) -> dict:
    import argparse

    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    rows = [measure(*case) for case in CASES]
    result = {"bench": "channels_last", "input": "random N(0, 1) batches (torch seed 0)",
              "threads": torch.get_num_threads(), "cases": rows}
    write_result(result, data=[])
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's row of the README's performance table (``bench.summary``)."""
    parts = [f"{c['arch']} {c['mode']} {c['speedup']:.2f}x" for c in r["cases"]]
    worst = min(c["speedup"] for c in r["cases"])
    return [("image towers, channels-last vs NCHW input on this CPU (same weights and batch)",
             "; ".join(parts), "faster in every case", "met" if worst > 1 else "missed")]


if __name__ == "__main__":
    main()
