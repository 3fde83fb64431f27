"""The control the demo's comparison needs: a two-tower model trained for as many epochs as
the demo's fusion encoders saw (its two-tower start + its own epochs), scored on the same test
split, side by side with the demo's fusion and rerank (from runs/demo/eval/metrics.json).

If this two-tower matches fusion's recall and sibling accuracy, the demo's gap is training
budget, not cross-attention.

    python -m bench.equal_budget [--demo runs/demo]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench._checkpoints import checkpoint_record
from bench._common import write_result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--demo", default="runs/demo")
    args = p.parse_args(argv)
    from core.evaluation import fine_grained
    from core.scoring.pairs import pair_scores
    from core.checkpoint import load_checkpoint
    from core.config import load_config
    from core.data.rocov2 import read_split
    from core.evaluation.comparison import METHODS
    from core.report import encoder_epochs
    from core.scoring import outputs
    from core.evaluation.significance import bootstrap_ci, per_query
    from ray_jobs import score, train
    from core.analyses.scored import load_features
    from ray_jobs.runtime import init_ray

    demo = Path(args.demo)
    metrics = json.loads((demo / "eval" / "metrics.json").read_text())
    summary = json.loads((demo / "summary.json").read_text())
    epochs = encoder_epochs(metrics["training"])
    work = Path(tempfile.mkdtemp(prefix="rocoray-equal-budget-"))
    init_ray()
    cfg = load_config(summary["config"], [*summary["overrides"], "model.kind=two_tower",
                                          f"data.path={summary['data']}",
                                          f"train.epochs={epochs['fusion']}",
                                          f"train.storage_path={work}", "train.name=two_tower"])
    run = train.run(cfg)
    scored = score.run(score.ScoreConfig(model="two_tower", checkpoint=run["path"],
                                         data=summary["data"], split=metrics["split"],
                                         out=str(work / "score")))
    out = {"bench": "equal_budget", "epochs": epochs,
           "demo_checkpoints": {k: checkpoint_record(demo / "train" / k)
                                for k in ("two_tower", "fusion")},
           "two_tower_equal_budget": {"epochs": epochs["fusion"], "metrics": scored["metrics"]}}
    ranks = {d: outputs.read_topk(str(work / "score"), d)[2] for d in ("t2i", "i2t")}
    out["two_tower_equal_budget"]["recall"] = {
        d: {k: bootstrap_ci(per_query(ranks[d], k)).as_dict() for k in ("R@1", "R@5", "R@10")}
        for d in ranks}
    ids = outputs.read_gallery(str(work / "score")).column("image_id").to_pylist()
    wanted = ["image_id", *fine_grained.COLUMNS]
    table = read_split(summary["data"], metrics["split"], columns=wanted)
    pairs = fine_grained.sibling_pairs({c: table.column(c).to_pylist() for c in wanted}, ids)
    if pairs is not None and len(pairs["query"]):
        model = load_checkpoint(score.check_checkpoint(run["path"], "two_tower", "run")).model
        text, image = load_features(outputs.read_summary(str(work / "score")), "two_tower")
        wins = fine_grained.score_wins(
            lambda ti, ii: pair_scores(model, text, image, ti, ii), pairs)
        out["two_tower_equal_budget"]["sibling"] = fine_grained.accuracy(wins, pairs)
    out["demo"] = {m: {"epochs": epochs.get(m, epochs.get("fusion")),
                       "metrics": metrics["methods"][m]["metrics"],
                       "sibling": (metrics.get("fine_grained") or {}).get("methods", {}).get(m)}
                   for m in METHODS}
    write_result(out)
    return out


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    tt = r["two_tower_equal_budget"]
    demo = r["demo"]

    def sib(x):
        return f"{x['overall']['value']:.3f}" if x else "n/a"
    def pair(m):
        return f"{demo[m]['metrics']['mean_recall']:.3f} / {sib(demo[m]['sibling'])}"
    return [(f"equal-budget control: a two-tower trained {tt['epochs']} epochs (the fusion "
             "encoders' budget); mean recall / sibling accuracy on the demo's test split",
             f"{tt['metrics']['mean_recall']:.3f} / {sib(tt.get('sibling'))}; the demo's "
             f"fusion {pair('fusion')}, rerank {pair('rerank')}, two-tower "
             f"({demo['two_tower']['epochs']} epochs) {pair('two_tower')}",
             "context for the demo's verdict (no target)", "")]


if __name__ == "__main__":
    main()
