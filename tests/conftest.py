"""Shared fixtures: offline Hugging Face, one Ray session per test module, a small
synthetic ROCOv2 dataset, and the real chest X-ray sample (skipped when ../shared is absent).

Tiers (markers registered in pyproject.toml): ``ray`` (starts Ray: a local instance, a
subprocess job or a simulated cluster), ``multinode`` (a simulated multi-node cluster),
``browser`` (a real headless Chromium), ``slow`` (a minute or more). A test that uses a
Ray-starting fixture is marked ``ray`` here; one that starts Ray itself says so in its
module. ``pytest -m "not ray"`` is the developer's loop; a test that starts Ray in this
process without the marker fails (the tiers cannot drift)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("ROCORAY_PROGRESS_BARS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
REAL_SAMPLE = Path(os.environ.get(
    "ROCORAY_REAL_SAMPLE", REPO.parent / "shared" / "data" / "chest-xray-sample"))


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A small synthetic ROCOv2 dataset (no Ray needed to make it) with its tokenizer."""
    from core.config import load_config
    from core.data.tokenizer import TOKENIZER_DIRNAME, resolve_tokenizer
    from core.synthetic.generate import SyntheticSpec, write_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    spec = SyntheticSpec(sizes={"train": 256, "validation": 64, "test": 64}, seed=7,
                         image_size=96, rows_per_shard=128)
    write_synthetic(spec, out)
    tok, _ = resolve_tokenizer(load_config("tiny").model.text, out)
    tok.save_pretrained(str(out / TOKENIZER_DIRNAME))
    return out


@pytest.fixture(scope="session")
def real_sample() -> Path:
    if not (REAL_SAMPLE / "train-00000-of-00001.parquet").exists():
        pytest.skip(f"real chest X-ray sample not found at {REAL_SAMPLE} (../shared absent)")
    return REAL_SAMPLE


@pytest.fixture(scope="session")
def _ray_cleanup():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module", autouse=True)
def _fresh_ray_per_module():
    """Each test module gets its own Ray: actors, placement groups or a streaming executor
    left behind by one module's jobs must not starve the next module's (2 CPUs here)."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def ray_session(_ray_cleanup):
    """A local Ray shared by the tests of a module (ray.init costs seconds); init_ray is
    idempotent, and re-starts it after a module (or the job-submission test) shut it down. Every
    test that uses it must also carry a timeout: a resource mistake hangs, not fails."""
    from ray_jobs.runtime import init_ray

    return init_ray(num_cpus=2, progress_bars=False)


@pytest.fixture(scope="session")
def tiny_tokenizer(synthetic_dir):
    from core.data.tokenizer import load_tokenizer

    return load_tokenizer(synthetic_dir / "tokenizer")


@pytest.fixture(scope="session")
def checkpoints(synthetic_dir, tiny_tokenizer, tmp_path_factory):
    """Randomly initialised tiny fusion and two-tower checkpoints on the synthetic data:
    correctness of scoring and search needs no training."""
    import torch

    from core.checkpoint import save_checkpoint
    from core.config import load_config
    from core.models import build_model

    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for kind in ("fusion", "two_tower"):
        torch.manual_seed(1)
        cfg = load_config("tiny", [f"model.kind={kind}", f"data.path={synthetic_dir}"])
        cfg.model.text.vocab_size = len(tiny_tokenizer)
        out[kind] = str(save_checkpoint(root / kind, build_model(cfg.model).eval(), cfg,
                                        tiny_tokenizer))
    return out


# Fixtures that start Ray: every test using one (directly or through another) is a Ray test.
RAY_FIXTURES = {"ray_session", "service", "synthetic_demo"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)


def _ray_running() -> bool:
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@pytest.fixture(autouse=True)
def _ray_tests_are_marked(request):
    """The fast tier stays fast: a test that starts Ray in this process carries ``ray``
    (Ray already running from an earlier test of the module is not this test's doing)."""
    before = _ray_running()
    yield
    if not before and _ray_running() and request.node.get_closest_marker("ray") is None:
        pytest.fail("this test started Ray but is not marked `ray` (pytest.mark.ray, or a "
                    "fixture in conftest.RAY_FIXTURES)", pytrace=False)


def _runs_the_suite(config) -> bool:
    """Whether this run is one the README's test times stand for: every test under tests/
    (a marker selection allowed), run, not collected only, no -k, no single file."""
    return (not config.option.collectonly and not config.getoption("keyword")
            and [(config.invocation_params.dir / a).resolve() for a in config.args] == [REPO / "tests"])


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """With ROCORAY_RECORD_TESTS=1, the run writes its own counts and wall time (pytest's) to
    bench/results/test_suite.json, keyed by its marker selection: the README's test times
    are generated from this file, never typed."""
    if not os.environ.get("ROCORAY_RECORD_TESTS") or not _runs_the_suite(config):
        return
    import json
    import sys

    from core.provenance import provenance

    stats = terminalreporter.stats
    count = {k: len([r for r in stats.get(k, []) if getattr(r, "when", "call") in ("call", "setup")])
             for k in ("passed", "failed", "skipped", "error")}
    selection = config.getoption("markexpr") or "all"
    path = REPO / "bench" / "results" / "test_suite.json"
    record = json.loads(path.read_text()) if path.exists() else {"bench": "test_suite", "runs": {}}
    prov = provenance(argv=["pytest", *sys.argv[1:]])
    record["runs"][selection] = {
        "command": prov["command"], "passed": count["passed"], "failed": count["failed"] + count["error"],
        "skipped": count["skipped"], "exit_status": int(exitstatus),
        "seconds": round(terminalreporter._session_start.elapsed().seconds, 1),  # pytest's own
        "machine": prov["machine"], "provenance": prov}
    path.write_text(json.dumps(record, indent=2) + "\n")
