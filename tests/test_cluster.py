"""The cluster path: `ray job submit` to a local head started with `ray start --head --block`
on loopback, and cluster.yaml checked by Ray's own cluster-config validation.

The head is stopped by ending the process tree this test started (never `ray stop`, which
would end every Ray on the machine), so the test runs in any order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def test_cluster_yaml_passes_ray_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config = prepare_config(raw)
    validate_config(config)
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and gpu["max_workers"] > gpu["min_workers"] == 0
    assert config["idle_timeout_minutes"] > 0
    assert any("pip install" in c and "rocoray" in c for c in config["setup_commands"])
    bad = dict(raw, head_node_type="missing")
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(bad))


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_job_submit_to_a_local_head(synthetic_dir, tmp_path):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               RAY_ADDRESS="")
    env.pop("RAY_ADDRESS")
    port, dash = free_port(), free_port()
    head = subprocess.Popen([RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                             f"--port={port}", f"--dashboard-port={dash}",
                             "--dashboard-host=127.0.0.1", "--num-cpus=2", "--disable-usage-stats",
                             f"--temp-dir={tempfile.mkdtemp(prefix='rocoray-head-')}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    job_id = f"rocoray-test-{int(time.time())}"
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.time() + 120
        while True:  # the head is up once its dashboard answers
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:
                assert head.poll() is None, "ray start --head exited"
                assert time.time() < deadline, "the head did not come up"
                time.sleep(2)
        subprocess.run(
            [RAY, "job", "submit", "--address", address, "--submission-id", job_id,
             "--no-wait", "--working-dir", str(REPO), "--",
             "python", "-m", "ray_jobs.train", "--model", "two_tower",
             "--data", str(synthetic_dir), "--name", "submitted", "--storage-path", str(tmp_path),
             "--epochs", "1", "--set", "train.batch_size=32", "train.eval_batch_size=64"],
            check=True, env=env, timeout=120, capture_output=True)
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(address)
        deadline = time.time() + 420
        status = client.get_job_status(job_id)
        while status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            assert time.time() < deadline, "job did not finish in time"
            time.sleep(3)
            status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        assert status == JobStatus.SUCCEEDED, logs[-3000:]
        result = json.loads((tmp_path / "submitted" / "result.json").read_text())
        assert result["final"]["epoch"] == 1 and "val/mean_recall" in result["final"]
        assert "two_tower run submitted" in logs
    finally:
        _stop_tree(head)


def _stop_tree(proc: subprocess.Popen) -> None:
    """End the `ray start --block` process and everything it started (GCS, raylet, dashboard,
    workers), and nothing else."""
    import psutil

    try:
        parent = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return
    family = parent.children(recursive=True) + [parent]
    for p in family:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=30)
    for p in alive:
        p.kill()
