"""One fusion training step (roco_cpu: the match head and fusion layers over the frozen
towers' outputs) with the two ways of computing its cross-attention, side by side in one
run, in fp32 and in the precision roco_cpu trains in (bf16 on CPUs with native bf16):

  sdpa       PyTorch's fused kernel (``F.scaled_dot_product_attention``) in every pass
  rocoray    ``core.models.fusion.attend``: the fused kernel, except the explicit product
             where autograd records it in bf16 on a CPU

and, with rocoray's attention, the two dropouts (``torch``: ``nn.Dropout`` in place of
``core.models.dropout.Dropout``, which draws its masks from 64-bit random integers).

Real figures: the first rows of the embedded datasets/roco-ccby training split, run through
the frozen towers once in process, then the same batches (64 rows; roco_cpu's fusion model
and negatives per positive in each direction, which the results file records) stepped with
each attention from the same weights. Also the forward alone (the scoring jobs' path) for the same shapes.

    python -m bench.fusion_step [--rows 256] [--steps 4]

Writes bench/results/fusion_step.json.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench._common import write_result

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "datasets" / "roco-ccby"


def sdpa_only(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def batches(config, rows: int, precision: str) -> list:
    from bench._frozen_inputs import encode_split
    from core.batch import collate
    from core.data.tokenizer import resolve_tokenizer
    from core.frozen_store import model_batch
    from core.models import build_model

    tokenizer, _ = resolve_tokenizer(config.model.text, str(DATA))
    model = build_model(config.model).eval()
    size = config.train.batch_size
    return [collate(model_batch(out)) for out in encode_split(
        model, str(DATA), "train", tokenizer, None, precision, batch_rows=size, max_rows=rows)
        if len(out["skip"]) == size]  # whole batches only


def torch_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every rocoray Dropout replaced by torch's, of the same p."""
    from core.models.dropout import Dropout

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Dropout):
                setattr(module, name, torch.nn.Dropout(child.p))
    return model


def step_seconds(config, data: list, precision: str, attention, steps: int,
                 dropout=None) -> float:
    """Mean seconds of a training step after one warm-up step, with ``attention`` in place
    of ``core.models.fusion.attend`` (and the model passed through ``dropout``, if given)."""
    import core.models.fusion as fusion
    from core.models import build_model
    from core.training.loop import LossModule, build_optimizer, build_scheduler, train_step

    torch.manual_seed(0)
    model = build_model(config.model)
    if dropout is not None:
        model = dropout(model)
    loss = LossModule(model, config.model)
    optimizer = build_optimizer(loss, config.train)
    scheduler = build_scheduler(optimizer, steps + 1, config.train.warmup_fraction)
    kept = fusion.attend
    fusion.attend = attention
    try:
        model.train()
        seconds = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            train_step(loss, optimizer, scheduler, data[i % len(data)], precision, 1.0)
            seconds.append(time.perf_counter() - t0)
    finally:
        fusion.attend = kept
    return sum(seconds[1:]) / steps


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args(argv)
    from core.config import load_config, resolve_fusion_run
    from core.models.fusion import attend
    from core.models.kind import ModelKind
    from core.precision import training_precision

    torch.set_num_threads(os.cpu_count() or 1)
    config = load_config("roco_cpu")
    config.model.kind = ModelKind.FUSION
    config.model.fusion.freeze_encoders = True
    resolve_fusion_run(config)
    trained = training_precision(config.train.precision, "cpu")
    rows = {}
    for precision in dict.fromkeys(("fp32", trained)):
        data = batches(copy.deepcopy(config), args.rows, precision)
        sdpa = step_seconds(config, data, precision, sdpa_only, args.steps)
        ours = step_seconds(config, data, precision, attend, args.steps)
        torch_drop = step_seconds(config, data, precision, attend, args.steps, torch_dropout)
        rows[precision] = {"sdpa_step_s": sdpa, "rocoray_step_s": ours, "speedup": sdpa / ours,
                           "torch_dropout_step_s": torch_drop,
                           "dropout_speedup": torch_drop / ours}
        print(f"{precision}: SDPA {sdpa:.3f} s/step, rocoray {ours:.3f} s/step "
              f"({sdpa / ours:.2f}x); with torch's dropout {torch_drop:.3f} s/step "
              f"({torch_drop / ours:.2f}x)")
    result = {"bench": "fusion_step", "data": str(DATA), "rows": args.rows,
              "batch_size": config.train.batch_size, "steps": args.steps,
              "negatives_per_positive": config.model.fusion.negatives_per_positive,
              "trained_precision": trained, "by_precision": rows,
              "threads": torch.get_num_threads()}
    write_result(result)
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    p = r["trained_precision"]  # in fp32 both run the same kernel (the json has it too)
    v = r["by_precision"][p]
    return [(f"fusion training step (roco_cpu, batch {r['batch_size']}, {p}): attention as "
             "rocoray runs it vs SDPA throughout",
             f"{v['rocoray_step_s']:.2f} vs {v['sdpa_step_s']:.2f} s/step: {v['speedup']:.2f}x "
             f"({r['rows']} real figures)", "> 1x", "met" if v["speedup"] > 1.0 else "missed"),
            (f"fusion training step (roco_cpu, batch {r['batch_size']}, {p}): rocoray's dropout "
             "vs nn.Dropout",
             f"{v['rocoray_step_s']:.2f} vs {v['torch_dropout_step_s']:.2f} s/step: "
             f"{v['dropout_speedup']:.2f}x", "> 1x",
             "met" if v["dropout_speedup"] > 1.0 else "missed")]


if __name__ == "__main__":
    main()
