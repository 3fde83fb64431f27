"""The ``rocoray`` console script: ``rocoray <job> [args]`` runs ``ray_jobs.<job>.main``."""

from __future__ import annotations

import importlib
import sys

JOBS = {
    "demo": "the main job: the whole pipeline on the synthetic default data",
    "train": "train the fusion or two-tower model with Ray Train",
    "tune": "Ray Tune search over a space in tune_spaces/ (ASHA, TensorBoard, resume)",
    "score": "score a gallery (fusion tiles / two-tower / rerank) with Ray Data",
    "evaluate": "compare fusion, two-tower and rerank; write metrics.json and the report",
    "prepare": "generate synthetic data / fit the tokenizer / dataset statistics",
}


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in JOBS:
        print("usage: rocoray <job> [options]   (rocoray <job> --help for its options)\n\njobs:")
        for name, help_text in JOBS.items():
            print(f"  {name:<10} {help_text}")
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    module = importlib.import_module(f"ray_jobs.{argv[0]}")
    module.main(argv[1:])


if __name__ == "__main__":
    main()
