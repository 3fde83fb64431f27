"""The main job: the whole pipeline on the embedded default data.

    rocoray demo [--out runs/demo]

Stages: prepare the synthetic ROCOv2 (data/synthetic) and print its statistics.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ray_jobs.runtime import init_ray, setup_logging

log = logging.getLogger("rocoray.demo")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="rocoray demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synthetic", help="where the synthetic data goes")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-val", type=int, default=300)
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--address", default=None)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging()
    init_ray(args.address)
    from ray_jobs import prepare

    data = Path(args.data)
    log.info("stage 1/1: prepare the synthetic ROCOv2 in %s", data)
    return prepare.main(["--synthetic", "--out", str(data), "--n-train", str(args.n_train),
                         "--n-val", str(args.n_val), "--n-test", str(args.n_test)])


if __name__ == "__main__":
    main()
