#!/usr/bin/env bash
# The whole pipeline on the `base` preset (ResNet-50 at 224 px + BERT-base shapes, built from
# config: no model hub needed), 1 epoch each, on ONE GPU machine:
#   prepare (synthetic, 224 px) -> train two-tower -> train fusion -> score three ways on
#   GPU actors (bf16) -> evaluate -> report.
# Exits non-zero on any failure. Output: runs/gpu-smoke-<time>/ (a new directory each run).
#
#   tools/gpu_smoke.sh                # with the project's virtualenv active, or PYTHON=...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-runs/gpu-smoke-$(date +%Y%m%d-%H%M%S)}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_smoke: no CUDA device here')"
"$PY" -m ray_jobs.demo --config base --use-gpu --epochs 1 --out "$OUT" \
    --synthetic-dir "$OUT/data" --n-train 2048 --n-val 256 --n-test 1024 \
    --set model.image.pretrained=false model.text.name_or_path=null model.text.tokenizer=null \
          train.num_workers=1 train.cpus_per_worker=4 train.fusion_val_max_items=256
"$PY" - "$OUT" <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/eval/metrics.json"))
assert set(m["methods"]) == {"two_tower", "fusion", "rerank"}, m["methods"].keys()
for name, method in m["methods"].items():
    print(f"{name}: t2i R@10 {method['metrics']['t2i']['R@10']:.3f}, "
          f"score {method['timings']['score_s']:.1f}s, {method['timings']['pairs_per_s']:.0f} pairs/s")
print("gpu smoke: OK")
PY
