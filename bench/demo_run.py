"""A finished `rocoray demo` as a committed results file: its summary (stages with seconds
and peak memory, training finals, minutes) and its metrics (recall with intervals, the
comparison, cost, concepts, explanations), with the run's own provenance, in
bench/results/<name>.json. The README's demo and real-data blocks are generated from these
files (`python tools/update_readme.py`), never from a run directory that is not committed.

    python -m bench.demo_run --name demo                    # runs `rocoray demo` (synthetic)
    python -m bench.demo_run --name roco_ccby --data datasets/roco-ccby --config roco_cpu
    python -m bench.demo_run --name roco_sample --data ../shared/data/roco-sample --config roco_cpu
    python -m bench.demo_run --name roco_sample --run runs/demo-roco-sample   # collect a run

Each file names the checkpoints the run evaluated (``bench._checkpoints``: path, epoch,
widths and the digest of the weights), the same record the benches that read a demo's
checkpoint write, so a bench row and its demo row can be matched by weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench._checkpoints import checkpoint_record
from bench._common import write_result

ROOT = Path(__file__).resolve().parents[1]
# Bulky per-case content the README never shows (figures and maps stay in the run's report).
DROP = {"explanations": ("captions", "top3", "figure"), "modality_gap": ("figure",)}


def collect(run: Path, name: str) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for key, fields in DROP.items():
        if isinstance(metrics.get(key), dict):
            metrics[key] = {k: v for k, v in metrics[key].items() if k not in fields}
    for record in (metrics.get("training") or {}).values():
        record.pop("config", None)
    return {"bench": name, "data": summary["data"], "config": summary["config"],
            "minutes": summary["minutes"], "stages": summary["stages"],
            "training": {k: {"final": v["final"], "epochs": v["epochs"],
                             "chance_R@10": v.get("chance_R@10")}
                         for k, v in summary["training"].items()},
            "checkpoints": {k: checkpoint_record(run / "train" / k) for k in summary["training"]},
            "metrics": metrics, "machine": summary.get("machine")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="results file name: demo, roco_ccby, roco_sample")
    p.add_argument("--data", default=None, help="`rocoray demo --data` (default: synthetic)")
    p.add_argument("--config", default=None, help="`rocoray demo --config`")
    p.add_argument("--run", default=None, help="collect this finished demo run instead")
    p.add_argument("--out", default=None,
                   help="write the results here instead of bench/results/<name>.json")
    args = p.parse_args(argv)
    run = Path(args.run) if args.run else ROOT / "runs" / f"bench-{args.name}"
    if args.run is None:
        from ray_jobs import demo

        if run.exists():
            raise SystemExit(f"{run} exists: collect it with --run {run}, or move it away")
        demo.main([*(["--data", args.data] if args.data else []),
                   *(["--config", args.config] if args.config else []), "--out", str(run)])
    result = collect(run, args.name)
    summary = json.loads((run / "summary.json").read_text())
    # the run's own provenance: when and from which code it was measured, not collected
    write_result(result, provenance=summary.get("provenance"), out=args.out)
    return result


if __name__ == "__main__":
    main()
