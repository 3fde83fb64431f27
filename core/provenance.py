"""Where a result came from: the code (git commit, and whether the tree had uncommitted
changes), the UTC time, the exact command, the machine, and a fingerprint of the data read.

Every results file carries one (``bench/results/*.json``, a demo's summary.json, metrics.json,
ablation.json), so a number can be traced to what produced it and a README row whose code
has changed since is marked stale (``tools/update_readme.py``). Paths are written relative to
the repository, or by dataset name: never a machine's absolute path.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_state() -> dict:
    """The commit the code is at and whether tracked files differ from it."""
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def portable_path(path) -> str:
    """A path as a result file may hold it: relative to the repository (or to ../shared, as
    ``shared/...``), a URL as it is, else the directory's name alone (a dataset name)."""
    text = str(path)
    if "://" in text:
        return text
    p = Path(text).resolve()
    for root, prefix in ((REPO, ""), (SHARED, "shared/")):
        try:
            return prefix + str(p.relative_to(root))
        except ValueError:
            continue
    return p.name


def portable_command(argv: list[str] | None = None) -> str:
    """The command line, program and path arguments made portable."""
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(("rocoray", "__main__.py", ".py")):
        argv[0] = Path(argv[0]).name
    out = []
    for a in argv:
        out.append(portable_path(a) if a.startswith(("/", "./", "../")) and len(a) > 1 else a)
    return " ".join(out)


def data_fingerprint(path) -> dict:
    """A data directory's (or file's) files: names, sizes and one BLAKE2 digest of them all."""
    if path is None:
        return {"path": None}
    text = str(path)
    if "://" in text:
        return {"path": text}
    p = Path(text)
    files = sorted(f for f in (p.rglob("*") if p.is_dir() else [p])
                   if f.is_file() and f.suffix in (".parquet", ".json", ".txt", ""))
    h = hashlib.blake2b(digest_size=12)
    listed = []
    for f in files:
        rel = str(f.relative_to(p)) if p.is_dir() else f.name
        size = f.stat().st_size
        h.update(f"{rel}:{size}".encode())
        with f.open("rb") as handle:  # the head and tail: Parquet footers hold the layout
            h.update(handle.read(1 << 20))
            if size > 1 << 20:
                handle.seek(max(1 << 20, size - (1 << 20)))
                h.update(handle.read())
        listed.append(rel)
    return {"path": portable_path(p), "files": len(listed), "bytes": sum(
        f.stat().st_size for f in files), "blake2b": h.hexdigest()}


def machine() -> dict:
    import torch

    try:
        import psutil

        memory = round(psutil.virtual_memory().total / 2 ** 30, 1)
    except ImportError:
        memory = None
    try:
        ray_version = metadata.version("ray")
    except metadata.PackageNotFoundError:
        ray_version = None
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "memory_gib": memory,
            "python": platform.python_version(), "torch": torch.__version__, "ray": ray_version,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def provenance(data=None, argv: list[str] | None = None, code: dict | None = None) -> dict:
    """The provenance record of a result written now: code (``code``: the state taken when
    the measurement started, ``code_state()``; by default now), time, command, machine,
    data (``data``: one path or several)."""
    paths = data if isinstance(data, (list, tuple)) else ([] if data is None else [data])
    return {**(code or code_state()),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": portable_command(argv), "machine": machine(),
            "data": [data_fingerprint(p) for p in paths]}
