"""The install a newcomer runs, timed: a fresh virtual environment and the README's
`pip install -e .`, with the environment's size on disk and whether pip's cache was warm.
The README's install figures are generated from its results file.

    python -m bench.install_time

The environment is made in a temporary directory and removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import write_result

ROOT = Path(__file__).resolve().parents[1]


def _size_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _pip_cache_bytes() -> int:
    out = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True,
                         text=True)
    cache = Path(out.stdout.strip()) if out.returncode == 0 else None
    return _size_bytes(cache) if cache and cache.is_dir() else 0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default=None, help="where the temporary environment goes")
    args = p.parse_args(argv)
    cache_before = _pip_cache_bytes()
    tmp = Path(tempfile.mkdtemp(prefix="rocoray-install-", dir=args.dir))
    try:
        venv = tmp / "venv"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-e", "."], check=True,
                       cwd=ROOT)
        seconds = time.perf_counter() - t0
        size = _size_bytes(venv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "bench": "install_time",
        "command": "python3 -m venv .venv && .venv/bin/pip install -e .",
        "seconds": round(seconds, 1),
        "venv_gb": round(size / 1e9, 2),
        "pip_cache_before_gb": round(cache_before / 1e9, 2),
        # a local wheel directory pip also reads (PIP_FIND_LINKS), as this machine had it
        "pip_find_links": os.environ.get("PIP_FIND_LINKS"),
        "python": sys.version.split()[0],
    }
    write_result(result, data="pyproject.toml")
    return result


if __name__ == "__main__":
    main()
