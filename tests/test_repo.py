"""Project invariants: CI runs the README's test command; core/ never imports ray."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    command = [line for line in ci if "pytest" in line]
    assert len(command) == 1
    assert command[0].strip() in readme


def test_core_never_imports_ray_or_the_app():
    for path in (REPO / "core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "ray" or n.startswith("ray.") for n in names), path
            assert not any(n == "ray_jobs" or n.startswith("ray_jobs.") for n in names), path


def test_the_readme_is_what_the_results_files_generate():
    """Every number in the README comes from a committed results file (tools/update_readme.py
    regenerates the blocks; a hand edit or a stale block makes this fail)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "tools/update_readme.py", "--check"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr


def test_a_result_is_stale_once_the_code_it_measured_changes():
    import subprocess
    import sys

    sys.path.insert(0, str(REPO / "tools"))
    import update_readme

    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    files = update_readme.measured_files("bench/fusion_variants.py")
    assert "core/frozen_store.py" in files and "bench/_common.py" in files  # imported, transitively
    changed = git("log", "-1", "--format=%H", "--", "core/frozen_store.py")
    before = git("rev-parse", f"{changed}^")
    assert "STALE" in update_readme.stamp({"provenance": {"commit": before}}, "bench/fusion_variants.py")
    assert "STALE" not in update_readme.stamp({"provenance": {"commit": git("rev-parse", "HEAD")}},
                                              "bench/fusion_variants.py")
    assert "STALE" in update_readme.stamp({}, "bench/fusion_variants.py")  # no provenance
