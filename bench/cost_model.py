"""A PROJECTION, not a measurement: time and cost of training the `base` two-tower on
ROCOv2 with 1-64 GPU workers (the g5.2xlarge workers of cluster.yaml, one GPU each).

Every input is named in the result with where it comes from:
- measured here: the `base` towers' FLOPs per training pair (ResNet-50 at 224 px + BERT-base
  at 64 tokens, counted by torch's FlopCounterMode from the shapes), their parameter count
  (the gradient bytes DDP all-reduces each step), the Ray Data input rate per CPU
  (bench/results/input_pipeline.json) and the start-up and coordination time each extra
  node adds (bench/results/multinode.json, simulated nodes on this machine);
- from bench/results/gpu.json when it exists (a GPU machine ran `python -m bench.gpu`):
  the measured two-tower training rate per GPU; otherwise an ASSUMED sustained rate (peak
  bf16 x utilisation, flags below);
- assumed (flags): ROCOv2's training split size, the network bandwidth between nodes and the
  hourly prices.

Per epoch, each worker runs ceil(pairs / (batch x N)) steps; a step takes the slower of its
compute and its input pipeline, plus a ring all-reduce of the gradients that is NOT assumed
to overlap with compute (an upper bound on time). The run adds the start-up of N nodes.

    python -m bench.cost_model        # after bench.multinode and bench.input_pipeline
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from bench._common import RESULTS, write_result

GPUS = [1, 2, 4, 8, 16, 32, 64]


def base_two_tower_cost(image_size: int = 224, tokens: int = 64) -> dict:
    """FLOPs of one training pair (forward x 3: forward + backward) and parameters of the
    `base` towers, counted on CPU from randomly initialised models of the same shapes."""
    import torch
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, BertModel

    image = torchvision.models.resnet50(weights=None).eval()
    text = BertModel(BertConfig()).eval()  # BERT-base: 12 x 768, as BiomedBERT-base
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        image(torch.zeros(1, 3, image_size, image_size))
        text(input_ids=torch.zeros(1, tokens, dtype=torch.long))
    params = sum(p.numel() for m in (image, text) for p in m.parameters())
    return {"forward_gflop_per_pair": counter.get_total_flops() / 1e9,
            "train_gflop_per_pair": 3 * counter.get_total_flops() / 1e9, "parameters": params}


def per_node_overhead_s() -> float | None:
    """Seconds of start-up and coordination each extra node adds to a run: the slope of the
    time outside training steps over 1-3 simulated nodes (bench.multinode)."""
    path = RESULTS / "multinode.json"
    if not path.exists():
        return None
    rows = json.loads(path.read_text())["training"]  # every repeat of every size
    xs = [r["nodes"] for r in rows]
    ys = [r["outside_steps_s"] for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


# the GPU the projection prices (a g5.2xlarge's); a rate measured on another is not its rate
PRICED_GPU = "A10G"


def measured_gpu_rate(path: Path) -> float | None:
    """The measured two-tower training rate of the priced GPU from bench.gpu's results file;
    None for a smoke run (64 px, batch 4: the code paths, not a rate) or another device."""
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    if result.get("smoke") or PRICED_GPU not in str(result.get("device", "")):
        return None
    return (result.get("train_step_samples_per_s") or {}).get("two_tower")


def bound(compute_s: float, allreduce_s: float, input_bound: bool) -> str:
    """What a step's time is bound by: the larger of its terms."""
    if allreduce_s > compute_s:
        return "network (gradient all-reduce)"
    return "input" if input_bound else "compute"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=59958, help="ROCOv2 training pairs (its paper)")
    p.add_argument("--epochs", type=int, default=10, help="the base preset's epochs")
    p.add_argument("--batch", type=int, default=128, help="per worker (the base preset)")
    p.add_argument("--cpus-per-worker", type=int, default=8, help="the base preset's")
    p.add_argument("--peak-tflops", type=float, default=70.0,
                   help="ASSUMED bf16 dense peak of one A10G (g5) GPU")
    p.add_argument("--utilisation", type=float, default=0.35, help="ASSUMED share of the peak")
    p.add_argument("--network-gbps", type=float, default=10.0,
                   help="ASSUMED bandwidth between g5.2xlarge nodes (AWS: up to 10 Gbps)")
    p.add_argument("--gpu-node-usd-h", type=float, default=1.212,
                   help="ASSUMED on-demand price of a g5.2xlarge (us-east-1)")
    p.add_argument("--head-usd-h", type=float, default=0.384,
                   help="ASSUMED on-demand price of the m6i.2xlarge head")
    args = p.parse_args(argv)

    model = base_two_tower_cost()
    inputs = {"pairs": {"value": args.pairs, "source": "assumed: ROCOv2 train split (paper)"},
              "train_gflop_per_pair": {"value": model["train_gflop_per_pair"],
                                       "source": "measured here: FlopCounterMode, 3 x forward"},
              "parameters": {"value": model["parameters"], "source": "measured here"}}
    measured_rate = measured_gpu_rate(RESULTS / "gpu.json")
    if measured_rate:
        gpu_rate = measured_rate
        inputs["gpu_pairs_per_s"] = {"value": gpu_rate, "source": "measured: bench/results/gpu.json"}
    else:
        gpu_rate = args.peak_tflops * 1e12 * args.utilisation / (model["train_gflop_per_pair"] * 1e9)
        inputs["gpu_pairs_per_s"] = {
            "value": gpu_rate, "source": f"assumed: {args.peak_tflops:g} TFLOP/s x "
                                         f"{args.utilisation:g} / the measured FLOPs per pair"}
    pipeline = json.loads((RESULTS / "input_pipeline.json").read_text())
    input_rate = pipeline["ray_data_rows_per_s_per_cpu"] * args.cpus_per_worker
    inputs["input_pairs_per_s_per_worker"] = {
        "value": input_rate, "source": f"measured here: Ray Data rows/s per CPU x "
                                       f"{args.cpus_per_worker} CPUs (a projection itself)"}
    overhead = per_node_overhead_s()
    inputs["start_up_s_per_node"] = {
        "value": overhead, "source": "fit here over every run of bench/results/multinode.json "
                                     "(simulated nodes on one machine: a projection input, not a "
                                     "cloud measurement); 0 where missing"}
    bandwidth = args.network_gbps * 1e9 / 8
    inputs["network_bytes_per_s"] = {"value": bandwidth, "source": "assumed"}
    inputs["usd_per_gpu_node_hour"] = {"value": args.gpu_node_usd_h, "source": "assumed"}
    inputs["usd_per_head_hour"] = {"value": args.head_usd_h, "source": "assumed"}

    rows = []
    for n in GPUS:
        steps = math.ceil(args.pairs / (args.batch * n))
        compute_s = args.batch / min(gpu_rate, input_rate)
        allreduce_s = (0 if n == 1 else
                       2 * (n - 1) / n * model["parameters"] * 4 / bandwidth)  # fp32 grads
        epoch_s = steps * (compute_s + allreduce_s)
        run_s = args.epochs * epoch_s + (overhead or 0.0) * n
        usd = run_s / 3600 * (n * args.gpu_node_usd_h + args.head_usd_h)
        rows.append({"gpus": n, "steps_per_epoch": steps, "step_compute_s": compute_s,
                     "step_allreduce_s": allreduce_s, "epoch_min": epoch_s / 60,
                     "run_h": run_s / 3600, "run_usd": usd,
                     "bound": bound(compute_s, allreduce_s, input_rate < gpu_rate)})
    one = rows[0]
    for r in rows:
        r["speedup"] = one["run_h"] / r["run_h"]
        r["efficiency"] = r["speedup"] / r["gpus"]
    result = {"bench": "cost_model", "projection": True, "epochs": args.epochs,
              "batch_per_worker": args.batch, "inputs": inputs, "rows": rows}
    write_result(result)
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    by = {row["gpus"]: row for row in r["rows"]}
    return [(f"PROJECTION: `base` two-tower on ROCOv2, {r['epochs']} epochs, g5.2xlarge "
             "workers (inputs named in bench/results/cost_model.json)",
             "; ".join(f"{n} GPU(s) {by[n]['run_h']:.2f} h, ${by[n]['run_usd']:.2f}, "
                       f"efficiency {100 * by[n]['efficiency']:.0f}%, {by[n]['bound']}-bound"
                       for n in (1, 8, 64) if n in by)
             + " (each step bound by the larger of its terms; the gradient all-reduce over "
               "the network counted as not overlapped with compute: an upper bound on time)",
             "no target", "projection (not measured)")]


if __name__ == "__main__":
    main()
