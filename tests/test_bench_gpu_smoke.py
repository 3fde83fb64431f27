"""bench/gpu.py is meant for a GPU machine; on the CPU, --smoke runs its plain-PyTorch
paths (matmul peaks, encoders, the fusion head, naive vs split, train steps) at small sizes
so they cannot rot between GPU sessions, and writes only where told. Its --with-ray part
(`rocoray train` + the scoring job, timed) is NOT run here: those jobs are tested on the CPU
by test_train_ray.py and test_score_ray.py, the bench's timing of them only on a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_gpu_bench_code_paths_on_cpu(tmp_path):
    out = tmp_path / "gpu-smoke.json"
    done = subprocess.run([sys.executable, "-m", "bench.gpu", "--device", "cpu", "--smoke",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=580)  # the benchmark as the program it is
    assert done.returncode == 0, done.stderr[-3000:]
    result = saved = json.loads(out.read_text())
    assert saved["device"] == "cpu" and saved["smoke"] is True
    assert {"bf16", "fp32"} <= set(result["matmul_tflops"])
    assert {h["precision"] for h in result["head"]} == {"fp32", "bf16"}
    assert result["bf16_vs_fp32"]["top10_overlap"] > 0.5
    assert result["naive_vs_split"]["speedup"] > 1
    assert set(result["train_step_samples_per_s"]) == {"two_tower", "fusion"}
