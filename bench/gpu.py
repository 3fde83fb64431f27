"""The GPU path, side by side in one run, on the machine it runs on (meant for one GPU; a CPU
run with --smoke only checks that the plain-PyTorch paths 1-5 work, at 64 px, and writes
nowhere by default; tests/test_bench_gpu_smoke.py runs it, without --with-ray).

    python -m bench.gpu                      # on a GPU machine: bench/results/gpu.json
    python -m bench.gpu --device cpu --smoke --out /tmp/gpu-smoke.json

Measures, with the `base` preset built from config (ResNet-50 at 224 px + BERT-base shapes,
random weights: no hub needed):
  1. matmul peak: bf16, TF32 and fp32 (8192^3 on a GPU);
  2. encoders: images + captions per second, fp32 and bf16;
  3. the fusion head: pairs/s of ``FusionModel.score`` for fp32 / bf16 and sub-block sizes,
     with TFLOP/s by the head's FLOP count and its share of the bf16 matmul peak;
  4. naive (full forward per pair) vs split scoring at N = 2048;
  5. a train step of both models in plain PyTorch (bf16 autocast), samples/s;
  6. (--with-ray) the same through ``rocoray train`` with 1 GPU worker, and the scoring job's
     head stage at N >= 4096 vs the plain-PyTorch best.
Writes bench/results/gpu.json with the device's name; the README's GPU rows come only from
that file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench._common import RESULTS, machine
from core import storage


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int = 3, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` after warm-up, synchronised on GPUs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peaks(device, n: int) -> dict:
    out = {}
    for name, dtype, tf32 in (("bf16", torch.bfloat16, False), ("tf32", torch.float32, True),
                              ("fp32", torch.float32, False)):
        if torch.device(device).type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
        elif name == "tf32":
            continue
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        seconds = timed(lambda a=a, b=b: a @ b, device)
        out[name] = 2 * n ** 3 / seconds / 1e12
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    return out


def base_model(kind: str, device, tokens: int, size: int = 224):
    from core.config import load_config
    from core.models import build_model

    cfg = load_config("base", [f"model.kind={kind}", "model.image.pretrained=false",
                               "model.text.name_or_path=null", "model.text.tokenizer=null",
                               f"model.image.image_size={size}"])
    return build_model(cfg.model).to(device).eval(), cfg


def inputs(n: int, size: int, tokens: int, device, vocab: int = 30522, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 255, (n, 3, size, size), dtype=torch.uint8, generator=g)
    ids = torch.randint(5, vocab, (n, tokens), generator=g)
    mask = torch.ones(n, tokens, dtype=torch.long)
    return pixels.to(device), ids.to(device), mask.to(device)


@torch.no_grad()
def encode(model, pixels, ids, mask, precision: str, batch: int = 128):
    from core.precision import autocast

    texts, images = [], []
    with autocast(pixels.device, precision):
        for a in range(0, len(ids), batch):
            images.append(model.encode_image(pixels[a:a + batch]))
            texts.append(model.encode_text(ids[a:a + batch], mask[a:a + batch]))
    return type(texts[0]).cat(texts), type(images[0]).cat(images)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="small sizes: check the code paths only")
    p.add_argument("--with-ray", action="store_true", help="also time rocoray train and score")
    p.add_argument("--out", default=None, help="result file (default bench/results/gpu.json "
                   "on a GPU; nothing is written for a CPU run without --out)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.gpu: no CUDA device here (run it on a GPU machine, or "
                         "--device cpu --smoke to check the code paths)")
    from bench.roofline import fusion_flops_per_pair
    from core.precision import autocast
    from core.scoring import score_block

    small = args.smoke
    tokens = 30
    n_matmul = 512 if small else 8192
    n_enc = 4 if small else 1024
    n_head = 32 if small else 2048
    size = 64 if small else 224  # smoke: the code paths, not the sizes
    result = {"bench": "gpu", "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                         else "cpu"),
              "smoke": small, "machine": machine(), "torch": torch.__version__}
    result["matmul_tflops"] = matmul_peaks(device, n_matmul)
    print("matmul TFLOP/s", result["matmul_tflops"], flush=True)

    fusion, cfg = base_model("fusion", device, tokens, size)
    pixels, ids, mask = inputs(n_enc, size, tokens, device)
    result["encode_items_per_s"] = {}
    for precision in ("fp32", "bf16"):
        seconds = timed(lambda p=precision: encode(fusion, pixels, ids, mask, p), device, repeats=2)
        result["encode_items_per_s"][precision] = n_enc / seconds
    print("encode items/s", result["encode_items_per_s"], flush=True)

    pixels, ids, mask = inputs(n_head, size, tokens, device, seed=1)
    text, image = encode(fusion, pixels, ids, mask, "bf16")
    # features travel (object store, feature store) as fp32, as in the scoring job
    text, image = text.to(dtype=torch.float32), image.to(dtype=torch.float32)
    fc = cfg.model.fusion
    flops = fusion_flops_per_pair(tokens, fc.width, fc.num_layers,
                                  fusion.image_encoder.num_patches, fc.mlp_ratio)
    result["head_flops_per_pair"] = flops
    head = []
    for precision in ("fp32", "bf16"):
        for chunk in ((8,) if small else (64, 128, 256, 512)):
            def run(precision=precision, chunk=chunk):
                with autocast(device, precision):
                    score_block(fusion, text, image, chunk)
            seconds = timed(run, device, repeats=2)
            rate = n_head * n_head / seconds
            head.append({"precision": precision, "chunk": chunk, "pairs_per_s": rate,
                         "tflops": rate * flops / 1e12})
            print(head[-1], flush=True)
    result["head"] = head
    best = max(head, key=lambda h: h["pairs_per_s"])
    result["head_best"] = {**best, "fraction_of_bf16_peak":
                           best["tflops"] / result["matmul_tflops"]["bf16"]}

    # bf16 vs fp32 scores: max difference and top-10 agreement on the same block
    with autocast(device, "fp32"):
        ref = score_block(fusion, text, image, 64 if not small else 16)
    with autocast(device, "bf16"):
        low = score_block(fusion, text, image, 64 if not small else 16)
    top_ref = np.argsort(-ref, 1)[:, :10]
    top_low = np.argsort(-low, 1)[:, :10]
    result["bf16_vs_fp32"] = {"max_abs_diff": float(np.abs(ref - low).max()),
                              "top10_overlap": float(np.mean([len(set(a) & set(b)) / 10
                                                              for a, b in zip(top_ref, top_low)]))}

    # naive (full forward per pair) vs split
    n_naive = min(n_head, 256 if small else 2048)
    sample = np.random.default_rng(0).integers(0, n_naive, (8 if small else 4096, 2))

    @torch.no_grad()
    def naive():
        with autocast(device, "bf16"):
            for a in range(0, len(sample), 256):
                t, i = sample[a:a + 256, 0], sample[a:a + 256, 1]
                fusion(pixels[i], ids[t], mask[t])
    naive_rate = len(sample) / timed(naive, device, repeats=1)
    result["naive_vs_split"] = {"n": n_naive, "naive_pairs_per_s": naive_rate,
                                "split_pairs_per_s": best["pairs_per_s"],
                                "speedup": best["pairs_per_s"] / naive_rate}
    print("naive vs split", result["naive_vs_split"], flush=True)

    result["train_step_samples_per_s"] = plain_train_steps(device, size, tokens, small)
    print("train steps", result["train_step_samples_per_s"], flush=True)
    if args.with_ray:
        result["ray"] = ray_paths(device, small)
    out = args.out or (str(RESULTS / "gpu.json") if device.type == "cuda" else None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(storage.dumps_json(result) + "\n")
    print(json.dumps(storage.json_safe(result)))
    return result


def plain_train_steps(device, size: int, tokens: int, small: bool) -> dict:
    """A training step of each model in plain PyTorch, bf16 autocast on GPUs, batch 128."""
    from core.batch import collate
    from core.training.loop import LossModule, build_optimizer, build_scheduler, train_step

    batch_size = 4 if small else 128
    out = {}
    for kind in ("two_tower", "fusion"):
        model, cfg = base_model(kind, device, tokens, size)
        model.train()
        module = LossModule(model, cfg.model)
        opt = build_optimizer(module, cfg.train)
        sched = build_scheduler(opt, 100, 0.05)
        pixels, ids, mask = inputs(batch_size, size, tokens, "cpu")
        batch = collate({"pixel_values": pixels.numpy(), "input_ids": ids.numpy(),
                         "attention_mask": mask.numpy(), "group": np.arange(batch_size),
                         "skip": np.zeros(batch_size, np.int8)},
                        pin_memory=torch.device(device).type == "cuda").to(device)
        precision = "bf16" if torch.device(device).type == "cuda" else "fp32"
        def step(module=module, opt=opt, sched=sched, batch=batch, precision=precision):
            train_step(module, opt, sched, batch, precision, 1.0)

        seconds = timed(step, device, repeats=1 if small else 10, warmup=1 if small else 3)
        out[kind] = batch_size / seconds
    return out


def ray_paths(device, small: bool) -> dict:
    """``rocoray train`` (1 GPU worker, 1 epoch) and the scoring job's head stage, on a
    synthetic set at 224 px generated here."""
    import tempfile

    from core.config import load_config
    from core.synthetic.generate import SyntheticSpec, write_synthetic
    from ray_jobs import score, train
    from ray_jobs.runtime import init_ray

    work = Path(tempfile.mkdtemp(prefix="rocoray-gpu-"))
    n_train, n_test = (64, 64) if small else (4096, 4096)
    data = work / "data"
    write_synthetic(SyntheticSpec(sizes={"train": n_train, "validation": 256, "test": n_test},
                                  image_size=224), data)
    init_ray()
    gpu = torch.device(device).type == "cuda"
    out = {}
    for kind in ("two_tower", "fusion"):
        cfg = load_config("base", [f"model.kind={kind}", f"data.path={data}",
                                   "model.image.pretrained=false", "model.text.name_or_path=null",
                                   "model.text.tokenizer=null", "train.epochs=2",
                                   "train.num_workers=1", f"train.use_gpu={str(gpu).lower()}",
                                   f"train.storage_path={work / 'runs'}", f"train.name={kind}",
                                   "train.fusion_val_max_items=256",
                                   *(["train.batch_size=8", "model.image.image_size=64",
                                      "train.cpus_per_worker=1"] if small else [])])
        summary = train.run(cfg)
        out[f"train_{kind}_samples_per_s"] = summary["final"]["train/samples_per_s"]
        out[f"train_{kind}_path"] = summary["path"]
    job = score.run(score.ScoreConfig(model="fusion", checkpoint=out["train_fusion_path"],
                                      data=str(data), out=str(work / "score"), use_gpu=gpu,
                                      actors=1, cpus_per_actor=4 if gpu else 0.5))
    t = job["timings"]
    out["score_n"] = job["n"]
    out["score_head_pairs_per_s"] = t["pairs_per_s"]
    out["score_encode_s"] = t["encode_s"]
    out["score_total_s"] = t["total_s"]
    return out


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    if r.get("smoke"):
        return []
    best = r["head_best"]
    rows = [(f"GPU head ({r['device']}, {best['precision']}, chunk {best['chunk']})",
             f"{best['pairs_per_s']:,.0f} pairs/s = {best['tflops']:.0f} TFLOP/s = "
             f"{100 * best['fraction_of_bf16_peak']:.0f}% of the measured bf16 matmul "
             f"{r['matmul_tflops']['bf16']:.0f} TFLOP/s", ">= 30% of bf16 peak",
             "met" if best["fraction_of_bf16_peak"] >= 0.3 else "missed")]
    ray = r.get("ray")
    if ray:
        for kind in ("two_tower", "fusion"):
            plain = r["train_step_samples_per_s"][kind]
            got = ray[f"train_{kind}_samples_per_s"]
            rows.append((f"GPU training through Ray Train, {kind} ({r['device']})",
                         f"{got:.0f} vs {plain:.0f} samples/s plain PyTorch: "
                         f"{100 * got / plain:.0f}%", ">= 80%",
                         "met" if got >= 0.8 * plain else "missed"))
        share = ray["score_head_pairs_per_s"] / best["pairs_per_s"]
        rows.append((f"GPU scoring job head stage, N={ray['score_n']} ({r['device']})",
                     f"{ray['score_head_pairs_per_s']:,.0f} pairs/s = {100 * share:.0f}% of "
                     "the plain-PyTorch best", ">= 80%", "met" if share >= 0.8 else "missed"))
    return rows


if __name__ == "__main__":
    main()
