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
