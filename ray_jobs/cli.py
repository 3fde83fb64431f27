"""The ``rocoray`` console script: ``rocoray <job> [args]`` runs ``ray_jobs.<job>.main``."""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

JOBS = {
    "demo": "the main job: the whole pipeline on the synthetic default data",
    "train": "train the fusion or two-tower model with Ray Train",
    "tune": "Ray Tune search over a space in tune_spaces/ (ASHA, TensorBoard, resume)",
    "score": "score a gallery (fusion tiles / two-tower / rerank) on Ray",
    "evaluate": "compare fusion, two-tower and rerank; write metrics.json and the report",
    "prepare": "generate synthetic data / fit the tokenizer / dataset statistics",
    "ablation": "two-tower ablation: AbM / MbA x masked contrastive reconstruction modes",
    "serve": "case search: a Ray Serve app and web page over the trained models",
}


def package_version() -> str:
    try:
        return version("rocoray")
    except PackageNotFoundError:
        return "unknown (not installed)"


def usage() -> str:
    lines = ["usage: rocoray <job> [options]   (rocoray <job> --help for its options)", "",
             "jobs:"]
    lines += [f"  {name:<10} {text}" for name, text in JOBS.items()]
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    if argv[0] == "--version":
        print(f"rocoray {package_version()}")
        raise SystemExit(0)
    if argv[0] not in JOBS:
        print(f"rocoray: error: unknown job {argv[0]!r}; choose one of: {', '.join(JOBS)}",
              file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(f"ray_jobs.{argv[0]}")
    module.main(argv[1:])


if __name__ == "__main__":
    main()
