"""The comparison on real radiology: `rocoray demo` on the ROCO sample (../shared/data/
roco-sample: 2,574 / 416 / 857 real PubMed Central figures) with the `roco_cpu` preset
(pretrained towers from pinned packages), collected into bench/results/roco_sample.json:
test recall of the three methods with 95 % intervals and group-aware chance, the verdict,
concept detection against the priors, the minutes and peak memory of each stage, and the
machine it ran on.

    python -m bench.roco_sample                       # runs the demo (about 30 min, 2 CPUs)
    python -m bench.roco_sample --run runs/demo-roco-sample   # collect an existing run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench._common import write_result

ROOT = Path(__file__).resolve().parents[1]


def collect(run: Path) -> dict:
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    if (run / "summary.json").exists():
        summary = json.loads((run / "summary.json").read_text())
    else:  # a run whose evaluation was rerun on its own (`rocoray evaluate`): no demo summary
        summary = {"data": metrics["data"], "config": "roco_cpu", "minutes": None,
                   "report": metrics.get("report") or {"html": str(run / "eval" / "report.html")},
                   "training": {k: json.loads((run / "train" / k / "result.json").read_text())
                                for k in ("two_tower", "fusion")}}
    cmp_ = metrics["comparison"]
    methods = {}
    for method, by_direction in cmp_["estimates"].items():
        methods[method] = {d: {k: v for k, v in by_direction[d].items() if k.startswith("R@")}
                           for d in by_direction}
    concepts = (metrics.get("concepts") or {}).get("detection") or {}
    return {
        "bench": "roco_sample", "data": summary["data"], "config": summary["config"],
        "test_items": metrics["gallery_size"], "chance": cmp_["chance"],
        "at_chance": cmp_["at_chance"], "recall": methods, "verdict": cmp_["verdict"],
        "rerank": {k: metrics["rerank_selection"].get(k) for k in ("k", "alpha", "split")},
        "concept_detection": concepts,
        "training": {k: {m: v for m, v in t["final"].items() if m.startswith("val/")}
                     for k, t in summary["training"].items()},
        "minutes": summary["minutes"], "stages": summary.get("stages"),
        "ran_on": summary.get("machine"), "report": summary["report"]["html"],
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "roco-sample"))
    p.add_argument("--run", default=None, help="collect this finished demo run instead")
    args = p.parse_args(argv)
    run = Path(args.run) if args.run else ROOT / "runs" / "demo-roco-sample"
    if args.run is None:
        from ray_jobs import demo

        if run.exists():
            raise SystemExit(f"{run} exists: collect it with --run {run}, or move it away")
        demo.main(["--data", args.data, "--config", "roco_cpu", "--out", str(run)])
    result = collect(run)
    write_result(result)
    return result


if __name__ == "__main__":
    main()
