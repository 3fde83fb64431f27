"""Masked contrastive reconstruction: seconds per training step and peak memory of
``mcr.mode`` off / masked_single / dual_stream, at the same batch, side by side in one run.

MCR's claim: with masked data as the only input (masked_single), the contrastive and the
reconstruction tasks share one forward per modality, cutting memory and time against a dual
stream (masked for reconstruction + unmasked for the contrastive loss). Each mode runs in
its own process (peak memory is per process): on a GPU the peak of allocated CUDA memory,
on a CPU the growth of the process's peak RSS from before the first training step (model,
optimizer and batch built) to the end.

    python -m bench.mcr_efficiency [--config tiny] [--batch 64] [--steps 20] [--alignment mba]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from bench._common import write_result

MODES = ("off", "masked_single", "dual_stream")


def child(args) -> dict:
    import torch

    from core.config import load_config
    from core.models import build_model
    from core.training.loop import LossModule, build_optimizer, build_scheduler, train_step
    from core.batch import Batch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = load_config(args.config, [f"model.mcr.mode={args.mode}",
                                    f"model.two_tower.alignment={args.alignment}"])
    cfg.model.text.vocab_size = 30522 if cfg.model.text.name_or_path else 2000
    cfg.model.text.name_or_path = None  # built from config: offline, same sizes
    cfg.model.image.pretrained = False
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    module = LossModule(model, cfg.model, mask_token_id=4).to(device).train()
    opt = build_optimizer(module, cfg.train)
    sched = build_scheduler(opt, args.steps + 3, 0.0)
    size, length, b = cfg.model.image.image_size, cfg.model.text.max_length, args.batch
    ids = torch.randint(5, cfg.model.text.vocab_size, (b, length))
    ids[:, 0], ids[:, length * 3 // 4], ids[:, length * 3 // 4 + 1:] = 2, 3, 0
    batch = Batch(inputs={"pixel_values": torch.randint(0, 255, (b, 3, size, size), dtype=torch.uint8),
                          "input_ids": ids, "attention_mask": (ids != 0).long(),
                          "group": torch.arange(b)}, group=None, image_id=None,
                  caption=None).to(device)
    precision = "bf16" if device.type == "cuda" else "fp32"
    # the process's peak RSS with the model, optimizer and batch built and no step taken: on
    # a CPU, what training adds (activations, gradients, optimizer state) is the growth over it
    # (measured before the warm-up, which already reaches the steps' peak)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(3):
        train_step(module, opt, sched, batch, precision, 1.0)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        train_step(module, opt, sched, batch, precision, 1.0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / args.steps
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else peak_rss - before)
    return {"mode": args.mode, "s_per_step": seconds, "samples_per_s": b / seconds,
            "peak_memory_mb": peak, "process_peak_rss_mb": peak_rss,
            "memory_kind": "CUDA max allocated" if device.type == "cuda"
            else "growth of the process's peak RSS over training steps", "device": str(device)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="tiny")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--alignment", default="mba", choices=["abm", "mba"])
    p.add_argument("--mode", choices=MODES)
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(child(args)))
        return {}
    rows = []
    for mode in MODES:
        out = subprocess.run([sys.executable, "-m", "bench.mcr_efficiency", "--mode", mode,
                              "--config", args.config, "--batch", str(args.batch),
                              "--steps", str(args.steps), "--alignment", args.alignment],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    off = rows[0]
    for r in rows:
        r["time_vs_off"] = round(r["s_per_step"] / off["s_per_step"], 3)
        r["memory_vs_off"] = round(r["peak_memory_mb"] / off["peak_memory_mb"], 3)
    single, dual = rows[1], rows[2]
    result = {"bench": "mcr_efficiency", "config": args.config, "alignment": args.alignment,
              "batch": args.batch, "steps": args.steps, "modes": rows,
              "masked_single_vs_dual_stream": {
                  "time": round(single["s_per_step"] / dual["s_per_step"], 3),
                  "memory": round(single["peak_memory_mb"] / dual["peak_memory_mb"], 3)}}
    write_result(result)
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    m = {row["mode"]: row for row in r["modes"]}
    ratio = r["masked_single_vs_dual_stream"]
    return [(f"MCR training step, {r['config']} {r['alignment']}, batch {r['batch']} "
             f"({m['off']['device']}; {m['off']['memory_kind']})",
             "; ".join(f"{k} {v['s_per_step'] * 1000:.0f} ms, {v['peak_memory_mb']:.0f} MB"
                       for k, v in m.items())
             + f"; masked_single / dual_stream: time x{ratio['time']}, memory x{ratio['memory']}",
             "masked_single cheaper than dual_stream",
             "met" if ratio["time"] < 1 and ratio["memory"] <= 1 else "missed")]


if __name__ == "__main__":
    main()
