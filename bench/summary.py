"""The README's performance table, built from bench/results/*.json (no number typed)."""

from __future__ import annotations

import json
from pathlib import Path


def _load(results_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))}


def _rows(r: dict) -> list[tuple[str, str, str, str]]:
    """(benchmark, measured, target, verdict) rows for one result file: each benchmark
    formats its own (``bench.<name>.readme_rows``), next to its measurement."""
    import importlib

    try:
        module = importlib.import_module(f"bench.{r['bench']}")
    except ImportError:
        return []
    rows = getattr(module, "readme_rows", None)
    if rows is None:
        return []
    try:
        return rows(r)
    except KeyError:  # a key the bench reads now is missing: an earlier version wrote it
        ran = (r.get("provenance") or {}).get("command")
        return [(f"`bench/{r['bench']}.py`", "STALE: its results file is in a format this "
                 f"bench no longer reads; rerun `python -m bench.{r['bench']}`"
                 + (f" (its recorded command: `{ran}`)" if ran else ""), "", "")]


def performance_markdown(results_dir: Path, stamp=None) -> str:
    """The table; ``stamp(result, name)`` (the README generator's) says per row which commit
    and date the row was measured at, and whether its code changed since (STALE)."""
    results = _load(results_dir)
    lines = ["Each row is one `bench/<name>.py` run, regenerated into this table by "
             "`python tools/update_readme.py` from its results file, with the commit and date "
             "it was measured at (STALE: the bench or a module it imports has changed since; "
             "its `readme_rows`, which only words the results file, aside).", "",
             "| benchmark | measured | target | | measured at |", "|---|---|---|---|---|"]
    for name, r in results.items():
        when = stamp(r, name) if stamp else ""
        lines += [f"| {a} | {b} | {c} | {d} | {when} |" for a, b, c, d in _rows(r)]
    if "gpu" not in results or results["gpu"].get("smoke"):
        lines += ["", "GPU figures: none measured yet (`python -m bench.gpu --with-ray` on a GPU "
                  "machine writes bench/results/gpu.json; no GPU number here comes from a CPU)."]
    return "\n".join(lines)
