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


def test_a_bare_pytest_collects_the_tests_that_import_tests_helpers():
    """The README's test line shows ``pytest tests``: the console script, which (unlike
    ``python -m pytest``) does not put the working directory on sys.path; pyproject's
    ``pythonpath`` does, so ``from tests.helpers import ...`` resolves. Run as a recorded
    suite run would run it (ROCORAY_RECORD_TESTS=1): collecting one file is no suite run,
    so the recorded test times stay as they are."""
    import os
    import subprocess
    import sys

    recorded = REPO / "bench" / "results" / "test_suite.json"
    before = recorded.read_bytes()
    pytest_script = Path(sys.executable).parent / "pytest"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        done = subprocess.run([str(pytest_script), "--collect-only", "-q", "-p",
                               "no:cacheprovider", "tests/test_global_batchnorm.py"], cwd=REPO,
                              env={**env, "ROCORAY_RECORD_TESTS": "1"}, capture_output=True,
                              text=True)
        after = recorded.read_bytes()
    finally:
        recorded.write_bytes(before)
    assert done.returncode == 0 and "tests collected" in done.stdout, done.stdout[-2000:]
    assert after == before, "a collect-only run of one file rewrote the recorded test times"


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


def test_a_results_file_in_an_older_format_is_a_stale_row_not_a_crash(tmp_path):
    """A bench whose results format changed, with a sibling results file not yet rerun: the
    README still regenerates, and that file's row says STALE and how to rerun it."""
    import json
    import sys

    sys.path.insert(0, str(REPO / "tools"))
    import update_readme

    current = json.loads((REPO / "bench" / "results" / "encode_rate.json").read_text())
    (tmp_path / "encode_rate.json").write_text(json.dumps(current))
    older = {k: v for k, v in current.items() if k != "arms"}  # as before the format changed
    (tmp_path / "encode_rate_elsewhere.json").write_text(json.dumps(older))
    block = update_readme.performance_block(tmp_path)
    stale = [line for line in block.splitlines() if "no longer reads" in line]
    assert len(stale) == 1 and "rerun `python -m bench.encode_rate`" in stale[0], stale
    assert "frozen towers' encode stage" in block  # the current file's rows are all there


def test_a_comment_or_docstring_edit_is_no_new_code_but_any_statement_is():
    import sys

    sys.path.insert(0, str(REPO / "tools"))
    from update_readme import code_fingerprint

    source = '''"""Module doc."""
import numpy as np


def top(x, k=10):
    """Return the top k."""
    return np.argsort(-x)[:k]  # best first
'''
    reworded = source.replace("Return the top k.", "The k best, best first.").replace(
        "# best first", "").replace("Module doc.", "What this module does.")
    assert code_fingerprint(reworded) == code_fingerprint(source)
    for changed in (source.replace("k=10", "k=5"), source.replace("[:k]", "[:k + 1]"),
                    source.replace('"""Return the top k."""', "print(k)")):
        assert code_fingerprint(changed) != code_fingerprint(source)


def test_rewording_a_benchs_readme_rows_is_no_new_code_but_what_it_calls_is():
    """A bench's ``readme_rows`` words its results file as README rows at every regeneration:
    editing it measures nothing anew, so the rows stay current; the helpers it calls, and
    any other function, still count."""
    import sys

    sys.path.insert(0, str(REPO / "tools"))
    from update_readme import code_fingerprint

    source = '''def run(n):
    return sum(range(n))


def share(r):
    return r["hits"] / r["n"]


def readme_rows(r):
    return [("hits", f"{share(r):.2f}", "no target", "")]
'''
    reworded = source.replace('f"{share(r):.2f}"', 'f"{share(r):.1%} of {r[\'n\']}"')
    assert reworded != source and code_fingerprint(reworded) == code_fingerprint(source)
    for changed in (source.replace("range(n)", "range(n + 1)"),
                    source.replace('r["hits"] / r["n"]', 'r["hits"] / (r["n"] + 1)')):
        assert code_fingerprint(changed) != code_fingerprint(source)
    nested = source.replace("def readme_rows(r):", "def rows(r):")
    assert code_fingerprint(nested) != code_fingerprint(nested.replace(".2f", ".3f"))


def test_a_result_is_stale_once_the_preset_it_ran_has_other_settings_not_other_comments(
        monkeypatch):
    import subprocess
    import sys

    sys.path.insert(0, str(REPO / "tools"))
    import update_readme

    settings = update_readme.preset_settings
    assert settings("43c4669^", "roco_cpu") == settings("43c4669", "roco_cpu")  # comments only
    assert settings("8c1fa29^", "roco_cpu") != settings("8c1fa29", "roco_cpu")  # fusion_keep
    assert settings(None, "roco_cpu")["model"]["image"]["arch"] == "efficientnet_lite0"
    assert update_readme.presets_named("demo_run.py --name x --data d --config roco_cpu") == [
        "roco_cpu"]
    assert update_readme.presets_named("encode_rate.py") == []
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
    ran = {"provenance": {"commit": head, "command": "demo_run.py --config roco_cpu"}}
    assert "STALE" not in update_readme.stamp(ran, "bench/demo_run.py")
    monkeypatch.setattr(update_readme, "preset_settings",
                        lambda ref, name: settings(ref, name) if ref else {"changed": name})
    assert "STALE: the settings of the preset it ran changed" in update_readme.stamp(
        ran, "bench/demo_run.py")
    assert "STALE" not in update_readme.stamp({"provenance": {"commit": head}},
                                              "bench/demo_run.py")  # no preset named


def _imports(path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
    return out


def _unit(module: str) -> str:
    """The unit of the package picture: core's subpackages and top modules, and each of
    the other top-level folders as one."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "core" and len(parts) > 1 else parts[0]


# Which folder may import which: the library at the bottom, the app and the tools above it.
ALLOWED = {"core": {"core"}, "ray_jobs": {"core", "ray_jobs"},
           "bench": {"core", "ray_jobs", "bench"}, "tools": {"core", "bench", "tools"},
           "tests": {"core", "ray_jobs", "tests", "tools"}}


def test_imports_run_one_way_between_packages():
    """No import loop between packages (core's subpackages and top modules, the app, the
    benches, the tools), and every arrow points down: tests do not import bench, bench does
    not import tools."""
    edges, where = {}, {}
    for folder in ALLOWED:
        for path in (REPO / folder).rglob("*.py"):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            for name, line in _imports(path):
                if name.split(".")[0] not in ALLOWED:
                    continue
                assert name.split(".")[0] in ALLOWED[folder], f"{path}:{line} imports {name}"
                a, b = _unit(module), _unit(name)
                if a != b:
                    edges.setdefault(a, set()).add(b)
                    where[(a, b)] = f"{path.relative_to(REPO)}:{line}"
    # a loop is a strongly connected set of units: find one by depth-first search
    state, stack = {}, []

    def visit(unit):
        state[unit] = "open"
        stack.append(unit)
        for nxt in sorted(edges.get(unit, ())):
            if state.get(nxt) == "open":
                loop = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import loop: " + " -> ".join(
                    f"{x} ({where[(x, y)]})" for x, y in zip(loop, loop[1:])))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[unit] = "done"

    for unit in sorted(edges):
        if unit not in state:
            visit(unit)


def test_model_kinds_and_methods_are_compared_as_enums_never_as_strings():
    """``core.models.kind.ModelKind`` and ``core.scoring.settings.Method`` name the models
    and methods; a comparison with the bare string ("fusion" == kind) is how the two
    defaults and 45 scattered checks came about."""
    names = {"two_tower", "fusion", "rerank"}
    found = []
    for folder in ("core", "ray_jobs"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Compare):
                    continue
                for side in [node.left, *node.comparators]:
                    consts = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                    if any(isinstance(c, ast.Constant) and c.value in names for c in consts):
                        found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found, "compare with ModelKind / Method members: " + ", ".join(found)


def test_functions_stay_short_and_the_jobs_thin():
    """No function over 60 lines in core/ or ray_jobs/; the scoring job under 250 lines."""
    long = []
    for folder in ("core", "ray_jobs"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 60:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines})")
    assert not long, "split these: " + ", ".join(long)
    assert len((REPO / "ray_jobs" / "score.py").read_text().splitlines()) <= 250
