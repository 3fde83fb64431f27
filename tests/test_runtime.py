"""Which Ray a job uses is decided explicitly: the address given (or RAY_ADDRESS), else a new
local instance, never the last cluster recorded on the machine."""

from __future__ import annotations

import types

import pytest


@pytest.mark.parametrize("given,env,expected", [
    (None, None, "local"),
    ("ray://head:10001", None, "ray://head:10001"),
    (None, "10.0.0.1:6379", "10.0.0.1:6379"),
])
def test_init_ray_never_joins_a_recorded_cluster_silently(monkeypatch, given, env, expected):
    import ray

    from ray_jobs import runtime

    seen = {}

    def fake_init(**kwargs):
        seen.update(kwargs)
        return types.SimpleNamespace(address_info={"gcs_address": "127.0.0.1:1"})

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(runtime, "filter_worker_logs", lambda: None)
    monkeypatch.setattr(runtime, "configure_data_context", lambda *_: None)
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    runtime.init_ray(given, num_cpus=2)
    assert seen["address"] == expected
    # resources are only ours to set on an instance we start
    assert ("num_cpus" in seen) == (expected == "local")
    assert ("_system_config" in seen) == (expected == "local")


@pytest.mark.ray
def test_a_local_instance_keeps_its_data_workers_warm_between_passes():
    """Ray Data's 0.25-CPU tasks run 4 workers per CPU. Between two passes (an epoch's
    validation) the pool must stay: Ray's default kills idle workers above one per CPU after a
    second, and the next pass paid a fresh worker's torch import per task slot."""
    import os
    import time

    import ray

    from ray_jobs.runtime import init_ray

    init_ray(num_cpus=2, progress_bars=False)
    try:
        @ray.remote(num_cpus=0.25)
        def pid():
            time.sleep(1.0)  # long enough that the 8 run at once, on 8 workers
            return os.getpid()

        first = set(ray.get([pid.remote() for _ in range(8)]))
        time.sleep(4)  # Ray's idle-worker killing acts after 1 s idle
        second = set(ray.get([pid.remote() for _ in range(8)]))
        from ray._private import worker  # the raylet's messages pass rocoray's filter
        assert getattr(worker.print_to_stdstream, "rocoray", False)
    finally:
        ray.shutdown()
    assert len(first) > 2, f"the 0.25-CPU tasks ran on only {len(first)} workers"
    assert second <= first, f"{len(second - first)} worker(s) started again for the second pass"


def test_a_local_storage_path_on_a_multi_machine_cluster_is_named():
    from ray_jobs.runtime import storage_reach

    one = [{"NodeManagerAddress": "10.0.0.1", "Alive": True}] * 3  # nodes of one machine
    two = one + [{"NodeManagerAddress": "10.0.0.2", "Alive": True}]
    dead = one + [{"NodeManagerAddress": "10.0.0.9", "Alive": False}]
    assert storage_reach("runs", one) is None and storage_reach("runs", dead) is None
    assert storage_reach("s3://bucket/runs", two) is None
    warning = storage_reach("runs", two)
    assert "runs is a local path" in warning and "2 machines" in warning and "\n" not in warning
    assert "file:///data/runs is a local path" in storage_reach("file:///data/runs", two)


def test_the_raylet_warning_about_the_kept_pool_becomes_one_plain_line(caplog):
    from ray_jobs.ray_logs import explain_pool_warning

    warning = ("WARNING: 10 PYTHON worker processes have been started on node: 81b5 with address: "
               "192.0.2.2, which is 5x the maximum expected startup concurrency (2). This could "
               "be a result of using a large number of actors")
    with caplog.at_level("INFO", logger="rocoray"):
        assert explain_pool_warning({"lines": [warning], "pid": "raylet"}) is None
    assert "worker pool on this node holds 10 processes" in caplog.text
    other = "Raylet is terminated. Termination is unexpected."  # every other message is kept
    kept = explain_pool_warning({"lines": [warning, other], "pid": "raylet"})
    assert kept == {"lines": [other], "pid": "raylet"}
