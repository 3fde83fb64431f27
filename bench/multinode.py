"""Training and scoring on 1, 2 and 3 simulated nodes, side by side in one run.

Each size is a fresh ``ray.cluster_utils.Cluster`` on this machine (a head without CPUs and
N nodes of 1 logical CPU, each its own raylet, as ``tests/test_multinode.py`` uses):

- training: the two-tower ``tiny`` model on the demo's synthetic data, the SAME global batch
  split over N workers (one per node, ``STRICT_SPREAD``), the same seed, epochs and
  learning-rate schedule. Reported per N: wall time of the fit, the slowest rank's
  training-step seconds per epoch, the time outside the steps (start-up, validation,
  checkpoints: what grows with nodes), the bytes created in Ray's object stores (and spilled), and the
  final validation recall. Every size runs ``--repeats`` times (seeds 0..R-1). Data
  parallelism is correct when N workers x batch B/N reach the mean recall of 1 worker x
  batch B within noise; the noise is the largest spread (max - min) of any size's repeats,
  measured in the same run (``compare_sizes``).
- scoring: the fusion scoring job with one actor per node over the same gallery: wall time
  and whether the top-K lists equal the 1-node run's.

The nodes share this machine's 2 cores: more nodes add processes, not compute, so the
step seconds here show the overhead of coordination, not a speed-up. ``bench.cost_model``
turns these figures into a projection for ROCOv2 on GPU clusters.

    python -m bench.multinode [--repeats 3]   # the README row gives its command and date
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench._checkpoints import checkpoint_record
from bench._common import write_result

GLOBAL_BATCH = 48  # divides over 1, 2 and 3 workers


def object_store_stats() -> dict:
    """Cumulative object-store figures summed over the live cluster's nodes (what Ray's
    `ray memory --stats-only` prints)."""
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    stats = get_memory_info_reply(get_state_from_address()).store_stats
    return {"created_mib": stats.cumulative_created_bytes / 2**20,
            "spilled_mib": stats.spilled_bytes_total / 2**20}


def cluster(nodes: int):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    sim = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(nodes):
        sim.add_node(num_cpus=1)
    sim.wait_for_nodes()
    return sim


def train(sim, data: str, nodes: int, seed: int, epochs: int, storage: str) -> dict:
    from core.config import load_config
    from ray_jobs.train import run

    cfg = load_config("tiny", [
        f"data.path={data}", "model.kind=two_tower", f"train.epochs={epochs}",
        f"train.seed={seed}", f"train.num_workers={nodes}",
        f"train.batch_size={GLOBAL_BATCH // nodes}", "train.cpus_per_worker=0.5",
        "train.placement_strategy=STRICT_SPREAD", f"train.storage_path={storage}",
        f"train.name=n{nodes}-s{seed}", "train.eval_batch_size=64"])
    before = object_store_stats()
    t0 = time.perf_counter()
    summary = run(cfg, sim.address)
    wall = time.perf_counter() - t0
    after = object_store_stats()
    history = summary["history"]
    step_s = [h["train/epoch_s"] for h in history]
    final = summary["final"]
    return {"nodes": nodes, "seed": seed, "workers": final["train/world_size"],
            "nodes_used": final["train/nodes"], "batch_per_worker": GLOBAL_BATCH // nodes,
            "wall_s": wall, "step_s_per_epoch": statistics.median(step_s[1:] or step_s),
            "outside_steps_s": wall - sum(step_s), "samples": final["train/samples"],
            "steps": final["step"], "val_mean_recall": final["val/mean_recall"],
            "replicas_identical": final["train/replicas_identical"],
            "object_store_created_mib": after["created_mib"] - before["created_mib"],
            "object_store_spilled_mib": after["spilled_mib"] - before["spilled_mib"]}


def score(sim, checkpoint: str, data: str, nodes: int, out: str) -> dict:
    import pyarrow.parquet as pq

    from core.scoring.settings import ScoringSettings
    from ray_jobs.score import ScoreConfig, run

    t0 = time.perf_counter()
    run(ScoreConfig(model="fusion", checkpoint=checkpoint, data=data, split="test",
                    scoring=ScoringSettings(k=10, block=32), actors=nodes, cpus_per_actor=1.0,
                    address=sim.address, out=out))
    wall = time.perf_counter() - t0
    return {"nodes": nodes, "wall_s": wall,
            "t2i": pq.read_table(Path(out) / "t2i.parquet"),
            "i2t": pq.read_table(Path(out) / "i2t.parquet")}


METRICS = ("wall_s", "step_s_per_epoch", "outside_steps_s")


def compare_sizes(training: list[dict]) -> dict:
    """Every size against 1 node, over the repeats: each time ratio as mean with its range
    (runs of N nodes / mean of the 1-node runs), called different only when the range
    lies outside the 1-node runs' own spread; mean recall as the difference of means,
    called different only beyond the largest spread of any size's repeats."""
    by = {}
    for r in training:
        by.setdefault(r["nodes"], []).append(r)
    one = by[1]
    base = {m: sum(r[m] for r in one) / len(one) for m in METRICS}
    own = {m: (min(r[m] for r in one) / base[m], max(r[m] for r in one) / base[m]) for m in METRICS}
    recall = {n: [r["val_mean_recall"] for r in rows] for n, rows in by.items()}
    noise = max(max(v) - min(v) for v in recall.values()) if len(one) > 1 else None
    ratios = []
    for n, rows in sorted(by.items()):
        row = {"nodes": n, "runs": len(rows)}
        for m in METRICS:
            values = [r[m] / base[m] for r in rows]
            low, high = min(values), max(values)
            row[m] = {"mean": sum(values) / len(values), "low": low, "high": high,
                      "beyond_noise": high < own[m][0] or low > own[m][1]}
        diff = sum(recall[n]) / len(recall[n]) - sum(recall[1]) / len(recall[1])
        row["recall_diff"] = {"value": diff, "beyond_noise": noise is not None and abs(diff) > noise}
        ratios.append(row)
    return {"training_ratios_vs_1_node": ratios, "recall_noise": noise,
            "equivalent_within_noise": noise is not None and not any(
                r["recall_diff"]["beyond_noise"] for r in ratios)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--fusion", default="runs/demo/train/fusion")
    p.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of every size (seeds 0..R-1): ratios carry their spread")
    args = p.parse_args(argv)
    import ray

    storage = tempfile.mkdtemp(prefix="rocoray-bench-multinode-")
    training, scoring, reference = [], [], None
    for nodes in args.nodes:
        sim = cluster(nodes)
        try:
            for seed in range(args.repeats):
                row = train(sim, args.data, nodes, seed, args.epochs, storage)
                print(json.dumps(row), flush=True)
                training.append(row)
            if Path(args.fusion).exists():
                row = score(sim, args.fusion, args.data, nodes, f"{storage}/score-n{nodes}")
                tables = (row.pop("t2i"), row.pop("i2t"))
                if reference is None:  # the first size is the reference, not compared
                    reference, row["identical_to_1_node"] = tables, None
                else:
                    row["identical_to_1_node"] = all(a.equals(b)
                                                     for a, b in zip(tables, reference))
                print(json.dumps(row), flush=True)
                scoring.append(row)
        finally:
            ray.shutdown()
            sim.shutdown()
    result = {"bench": "multinode", "global_batch": GLOBAL_BATCH, "epochs": args.epochs,
              "repeats": args.repeats, "data": args.data, "training": training,
              "scoring": scoring, "checkpoint": checkpoint_record(args.fusion)
              if scoring else None, **compare_sizes(training)}
    write_result(result)
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    if "repeats" not in r:
        return [("training on simulated nodes", "result written by an older bench.multinode "
                 "(one run per size, ratios without their spread): rerun it", "", "missed")]

    def ratio(v: dict) -> str:
        return (f"x{v['mean']:.2f} [{v['low']:.2f}, {v['high']:.2f}]"
                + ("*" if v["beyond_noise"] else ""))

    rows = [(f"training on {'/'.join(str(v['nodes']) for v in r['training_ratios_vs_1_node'])} "
             f"simulated nodes (two-tower tiny, global batch {r['global_batch']}, "
             f"{r['epochs']} epochs, one 1-CPU node per worker, {r['repeats']} runs each)",
             "; ".join(f"{v['nodes']} node(s): wall {ratio(v['wall_s'])}, steps "
                       f"{ratio(v['step_s_per_epoch'])}, outside the steps "
                       f"{ratio(v['outside_steps_s'])}, mean recall "
                       f"{v['recall_diff']['value']:+.3f}"
                       + ("*" if v["recall_diff"]["beyond_noise"] else "")
                       for v in r["training_ratios_vs_1_node"] if v["nodes"] > 1)
             + f" (ratios to the mean of the 1-node runs, [range over runs]; * beyond the "
               f"1-node runs' own spread; recall spread {r['recall_noise']:.3f})",
             "N workers x batch B/N = 1 x B within the noise",
             "met" if r["equivalent_within_noise"] else "missed")]
    compared = [s for s in r["scoring"] if s["identical_to_1_node"] is not None]
    if compared:
        first = r["scoring"][0]["wall_s"]
        same = all(s["identical_to_1_node"] for s in compared)
        rows.append(("fusion scoring job, one actor per simulated node",
                     "; ".join(f"{s['nodes']} node(s) {s['wall_s']:.0f} s (x"
                               f"{s['wall_s'] / first:.2f})" for s in r["scoring"])
                     + f"; top-K identical to 1 node's: {same}",
                     "identical output on every size", "met" if same else "missed"))
    return rows


if __name__ == "__main__":
    main()
