"""Shared by the benchmark scripts: where results go and how they are printed."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"



def machine() -> dict:
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def write_result(result: dict) -> None:
    result = {**result, "machine": machine()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{result['bench']}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
