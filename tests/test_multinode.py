"""Distributed for real, on one machine: a simulated cluster (``ray.cluster_utils.Cluster``,
as Ray's own Train tests use) of a head with no CPUs and two 1-CPU nodes, each its own
raylet. One module-scoped cluster, shut down in a ``finally`` so nothing after it attaches to
a dead cluster; small data, fractional CPUs, timeouts."""

from __future__ import annotations

import csv
import shutil
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import truncated_jpeg, with_scoring

pytestmark = [pytest.mark.ray, pytest.mark.multinode, pytest.mark.slow]

SMALL = ["train.batch_size=32", "train.eval_batch_size=64", "train.fusion_val_max_items=32"]


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # Ray Train waits this long for a worker group to start before it decides again (60 s by
    # default): after a lost node, the first restart asks for the workers that were there.
    # Read by the controller, which inherits it from the raylets started here.
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "20")
    sim = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        nodes = [sim.add_node(num_cpus=1) for _ in range(2)]
        sim.wait_for_nodes()
        yield sim, nodes
    finally:
        ray.shutdown()
        sim.shutdown()
        monkeypatch.undo()


def with_corrupt_rows(src, dst, rows: list[int]):
    """A copy of ``src`` whose training rows ``rows`` (global indices) hold truncated JPEGs."""
    shutil.copytree(src, dst)
    start = 0
    for shard in sorted(dst.glob("train-*.parquet")):
        table = pq.read_table(shard)
        images = table.column("image").to_pylist()
        for r in rows:
            if start <= r < start + len(images):
                images[r - start] = {"bytes": truncated_jpeg(), "path": images[r - start]["path"]}
        table = table.set_column(table.schema.get_field_index("image"), "image",
                                 pa.array(images, table.schema.field("image").type))
        pq.write_table(table, shard)
        start += len(images)
    return dst, start


def wait_for(path, proc, what: str, seconds: float = 240):
    """Until ``path`` exists, while the job process ``proc`` runs; its log if it never does."""
    deadline = time.time() + seconds
    while time.time() < deadline and not path.exists() and proc.poll() is None:
        time.sleep(0.2)
    if not path.exists():
        proc.kill()
        raise AssertionError(f"{what}:\n" + proc.communicate()[0][-3000:])


def preempt(sim, node_id: str, proc, replace: bool = True) -> str:
    """Spot preemption of node ``node_id``: a fresh node joins as it goes (unless not
    ``replace``), from this main thread, as Ray requires; then the job's whole log."""
    victim = next(n for n in sim.list_all_nodes() if n.node_id == node_id)
    if replace:
        sim.add_node(num_cpus=1)
    sim.remove_node(victim)
    return proc.communicate(timeout=300)[0]


@pytest.mark.timeout(300)
def test_two_workers_on_two_nodes_stay_in_step_and_count_every_rank(cluster, synthetic_dir,
                                                                     tmp_path):
    from core.config import load_config
    from ray_jobs.train import run

    sim, _ = cluster
    corrupt = [3, 130, 250]  # in both shards of the split: read by whichever rank gets them
    data, n_train = with_corrupt_rows(synthetic_dir, tmp_path / "data", corrupt)
    # data and storage as fsspec URLs: the filesystem reaches every Ray Data task and worker
    cfg = load_config("tiny", [f"data.path=file://{data}", "model.kind=two_tower",
                               "train.epochs=1", "train.num_workers=2",
                               "train.cpus_per_worker=0.5",
                               "train.placement_strategy=STRICT_SPREAD",
                               f"train.storage_path=file://{tmp_path / 'runs'}",
                               "train.name=spread", *SMALL])
    summary = run(cfg, sim.address)
    final = summary["final"]
    written = tmp_path / "runs" / "spread"
    assert summary["path"] == f"file://{written}" and (written / "result.json").exists()
    assert (written / summary["best_checkpoint"] / "model.safetensors").exists()
    assert final["train/world_size"] == 2 and final["train/nodes"] == 2  # one rank per node
    assert final["train/replicas_identical"] is True  # DDP kept both replicas in step
    # counted on every rank and summed: each corrupt row once, every other row trained on
    assert final["train/skipped_rows"] == len(corrupt)
    assert final["train/skipped/image_undecodable"] == len(corrupt)
    assert final["train/samples"] == n_train - len(corrupt)
    # validation: the whole split, gathered from both ranks, scored once
    n_val = sum(pq.read_metadata(f).num_rows for f in data.glob("validation-*.parquet"))
    assert final["val/gallery_size"] == n_val
    # the gathered gallery is scored once: its recall is a mean of counts over n_val queries
    recall = final["val/t2i/R@10"] * n_val
    assert recall == pytest.approx(round(recall), abs=1e-6)


@pytest.fixture(scope="module")
def scoring_reference(cluster, checkpoints, synthetic_dir, tmp_path_factory):
    """The fusion scoring job on the undisturbed cluster: one actor per node (1 CPU each)."""
    from ray_jobs.runtime import init_ray
    from ray_jobs.score import ScoreConfig, run

    sim, _ = cluster
    init_ray(sim.address)
    common = dict(model="fusion", checkpoint=checkpoints["fusion"], data=str(synthetic_dir),
                  block=8, k=10, actors=2, cpus_per_actor=1.0, address=sim.address)
    out = tmp_path_factory.mktemp("scoring") / "reference"
    return common, out, run(ScoreConfig(**with_scoring(**common, out=str(out))))


def disturbed_scoring(sim, reference, tmp_path, replace: bool) -> tuple[str, dict]:
    """The reference's job as a `rocoray score` process joined to the cluster; the node of
    the actor that holds its 2nd tile is removed while it works on it (a replacement node
    joining if ``replace``). Its log and scoring.json, after checking its output equals the
    reference's (top-K lists and exact ranks) and every tile was accepted exactly once."""
    import json
    import os
    import subprocess
    import sys

    from ray_jobs import faults

    common, ref_out, ref = reference
    markers = tmp_path / "markers"
    argv = [part for name, value in common.items()
            for part in (f"--{name.replace('_', '-')}", str(value))]
    proc = subprocess.Popen([sys.executable, "-m", "ray_jobs.score", *argv, "--out",
                             str(tmp_path / "disturbed")],
                            env={**os.environ, faults.ENV: f"score.pause=2@{markers}"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        detail = markers / "fault-score.pause.detail"
        wait_for(detail, proc, "no actor reached its 2nd tile")
        log = preempt(sim, detail.read_text(), proc, replace=replace)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-3000:]
    assert "scoring actor lost" in log and "queued again on a new actor" in log, log[-3000:]
    for name in ("t2i.parquet", "i2t.parquet"):
        assert pq.read_table(tmp_path / "disturbed" / name).equals(
            pq.read_table(ref_out / name)), name
    disturbed = json.loads((tmp_path / "disturbed" / "scoring.json").read_text())
    assert disturbed["timings"]["done"] == ref["timings"]["done"] > 2
    lost = [line for line in log.splitlines() if "scoring actor lost" in line]
    assert disturbed["timings"]["cached"] == 0 and disturbed["timings"]["actors_replaced"] == 1, lost
    return log, disturbed


@pytest.mark.timeout(300)
def test_scoring_survives_a_node_lost_while_tiles_are_scored(cluster, scoring_reference,
                                                            tmp_path):
    """Spot preemption under the scoring job, a replacement node joining: the job replaces
    the lost actor (placed on the new node), queues its item again and finishes with the
    undisturbed run's output."""
    sim, _ = cluster
    log, _ = disturbed_scoring(sim, scoring_reference, tmp_path, replace=True)
    assert "continues with 1 of 2 actors" in log  # until the replacement is placed


@pytest.mark.timeout(300)
def test_scoring_shrinks_when_a_lost_node_is_not_replaced(cluster, scoring_reference, tmp_path):
    """The node lost and NO node joining: the pool goes on with the actor it has left (one
    log line says so), the requeued item runs there, and the output equals the undisturbed
    run's; the replacement it requested is never placed. The module's cluster gets its
    second node back afterwards."""
    sim, _ = cluster
    try:
        log, _ = disturbed_scoring(sim, scoring_reference, tmp_path, replace=False)
        assert "the pool continues with 1 of 2 actors until a node can take it" in log
        assert "replacement scoring actor placed" not in log, log[-2000:]
    finally:
        sim.add_node(num_cpus=1)
        sim.wait_for_nodes()


def train_process(sim, data, runs, name: str, workers: int, epochs: int, *overrides: str):
    """`rocoray train` (two-tower, ``workers`` workers) as a process joined to the cluster."""
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "ray_jobs.train", "--data", str(data), "--model", "two_tower",
         "--epochs", str(epochs), "--num-workers", str(workers), "--storage-path", str(runs),
         "--name", name, "--address", sim.address, "--set", *SMALL, "train.max_failures=3",
         *overrides],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(root, proc, condition=lambda record: True,
                        pattern: str = "checkpoint_epoch_*/history.json", seconds: float = 240):
    """The first checkpoint history under ``root`` (``pattern``) whose last epoch record meets
    ``condition``, waiting while the job process ``proc`` runs; its log if none does."""
    import json

    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        for history in sorted(root.glob(pattern)):
            try:
                last = json.loads(history.read_text())[-1]
            except (ValueError, IndexError):
                continue  # being written
            if condition(last):
                return history
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("no checkpoint as expected:\n" + proc.communicate()[0][-3000:])


def wait_for_registration(run_dir, checkpoint: str, proc, seconds: float = 60) -> None:
    """Poll until Ray Train's checkpoint manager of ``run_dir`` lists ``checkpoint``."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if snapshot.exists() and checkpoint in snapshot.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"{checkpoint} of {run_dir.name} never registered")


def train_workers() -> list:
    from ray.util.state import list_actors

    return [a for a in list_actors(filters=[("state", "=", "ALIVE")])
            if a.class_name.endswith("RayTrainWorker")]


@pytest.mark.timeout(420)
def test_an_elastic_run_shrinks_when_a_lost_node_is_not_replaced(cluster, synthetic_dir,
                                                                 tmp_path):
    """train.min_workers: two workers, one per node; one node is removed after a checkpoint
    trained on both and none joins. Ray Train restarts the run with the one worker the
    cluster can still place, it resumes from the checkpoint, says so in one line, and
    finishes every epoch; the history shows the world size going from 2 to 1. The module's
    cluster gets its second node back afterwards."""
    import json

    from ray_jobs.runtime import init_ray

    sim, _ = cluster
    init_ray(sim.address)
    run_dir = tmp_path / "runs" / "elastic"
    # 0.6 CPU per worker: one worker per 1-CPU node, the rest for Ray Data's tasks
    epochs = 8
    proc = train_process(sim, synthetic_dir, tmp_path / "runs", "elastic", 2, epochs,
                         "train.min_workers=1", "train.cpus_per_worker=0.6",
                         "train.preprocess_num_cpus=0.2", "train.placement_strategy=SPREAD",
                         "train.elastic_resize_interval_s=3")
    try:
        try:
            # an elastic run starts with the workers the cluster can place at that moment (Ray
            # Data's reservations may hold one back) and grows at its next resize check (3 s
            # here, a minute by default; a 1-worker run of this size can finish within a
            # minute): wait for an epoch trained on two nodes, and for Ray Train to register it
            history = wait_for_checkpoint(run_dir, proc, lambda h: h["train/nodes"] == 2)
            wait_for_registration(run_dir, history.parent.name, proc)
            log = preempt(sim, sorted({w.node_id for w in train_workers()})[0], proc,
                          replace=False)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, log[-3000:]
        history = json.loads((run_dir / "result.json").read_text())["history"]
        assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
        assert any(h["train/world_size"] == 2 for h in history), history
        assert history[-1]["train/world_size"] == history[-1]["train/nodes"] == 1
        assert "the run continues on 1 of 2 workers" in log, log[-3000:]
    finally:
        sim.add_node(num_cpus=1)
        sim.wait_for_nodes()


TUNE_SPACE = """
model: two_tower
config: tiny
search: random
num_samples: 2
max_concurrent_trials: 2
epochs: 3
# no early stopping: ASHA would stop whichever trial trails at epoch 1, and this test wants
# both trials to run every epoch
scheduler: {type: fifo}
metric: val/mean_recall
mode: max
overrides: [train.cpus_per_worker=0.5, train.preprocess_num_cpus=0.2, train.max_failures=2]
params:
  model.two_tower.temperature: {choice: [0.05, 0.1]}
"""


@pytest.mark.timeout(480)
def test_a_node_lost_under_a_tune_trial_resumes_on_a_replacement_node(cluster, synthetic_dir,
                                                                      tmp_path):
    """Spot preemption under Tune: two concurrent trials (each a Ray Train run) on the two
    nodes; the node of a trial's training worker disappears after that trial's first
    checkpoint and a fresh node joins. The trial recovers on the new node (Ray Train restarts
    its worker, or Tune its driver, `train.max_failures` for both) and resumes its run from
    the last checkpoint; the experiment ends with every trial finished, every epoch in the
    trial's history and what was written before the loss kept as it was. The run is a
    `rocoray tune` process joined to the cluster (nodes are added and removed from this
    test's main thread, as Ray requires). Runs last: it changes the module's cluster."""
    import json
    import subprocess
    import sys

    from ray_jobs.runtime import init_ray
    from ray_jobs.train import HISTORY

    sim, _ = cluster
    init_ray(sim.address)
    space = tmp_path / "space.yaml"
    space.write_text(TUNE_SPACE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray_jobs.tune", "--space", str(space), "--data",
         str(synthetic_dir), "--storage-path", str(tmp_path / "tune"), "--name", "exp",
         "--address", sim.address, "--set", *SMALL],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs = tmp_path / "tune" / "exp" / "trainer_runs"
    try:
        first = wait_for_checkpoint(runs, proc, pattern=f"*/checkpoint_epoch_0001/{HISTORY}",
                                    seconds=300)
        written = json.loads(first.read_text())
        trial_run = first.parent.parent
        # Ray Train registers the checkpoint after it is written: wait until it has
        wait_for_registration(trial_run, "checkpoint_epoch_0001", proc)
        # the node of THIS trial's worker (its history says where epoch 1 ran): this trial
        # recovers on the new node, the other runs on
        log = preempt(sim, written[-1]["train/node_ids"].split(",")[0], proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-3000:]
    trials = list(csv.DictReader(open(tmp_path / "tune" / "exp" / "trials.csv")))
    assert len(trials) == 2 and all(t["status"] == "OK" for t in trials), trials
    assert [t["epochs"] for t in trials] == ["3", "3"], [(t["trial"], t["epochs"]) for t in trials]
    assert "resumed from the checkpoint of epoch" in log, log[-3000:]
    histories = {run.name: json.loads(sorted(run.glob(f"checkpoint_epoch_*/{HISTORY}"))[-1]
                                      .read_text()) for run in runs.iterdir() if run.is_dir()}
    assert len(histories) == 2
    assert all([h["epoch"] for h in history] == [1, 2, 3] for history in histories.values())
    assert histories[trial_run.name][0] == written[0]  # what epoch 1 wrote is kept as it was
