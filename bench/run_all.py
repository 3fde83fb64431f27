"""Run every benchmark, then regenerate the README's performance table.

    make bench            # = python -m bench.run_all

Needs the trained demo models (runs/demo/train/*) and the 2000-pair synthetic training split;
runs `rocoray demo` first when they are missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

BENCHES = ["synthetic_generation", "pairwise_scoring", "roofline", "input_pipeline",
           "ray_overhead", "scaling", "rerank", "equal_budget", "mcr_efficiency", "multinode",
           "cost_model"]


def main(argv=None) -> None:
    names = list(argv if argv is not None else sys.argv[1:]) or BENCHES
    if not Path("runs/demo/summary.json").exists():
        from ray_jobs.demo import main as demo

        demo([])
    for name in names:
        t0 = time.perf_counter()
        print(f"== bench.{name}", flush=True)
        # Each in its own process: one benchmark's memory and Ray state never skew the next.
        subprocess.run([sys.executable, "-m", f"bench.{name}"], check=True,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        print(f"== bench.{name}: {time.perf_counter() - t0:.0f}s", flush=True)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import update_readme

    update_readme.main()


if __name__ == "__main__":
    main()
