"""Test-only fault injection: the one switch, read here and nowhere else.

``ROCORAY_FAULTS="<point>=<n>[,<point>=<n>...]@<marker dir>"`` makes the named point fail
ONCE, at its n-th event, across processes: the first process to get there claims a marker
file in the marker dir (an atomic create) and fails; every later pass finds the marker and
goes on. It is read from the environment of the process that reaches the point (Ray passes
it to its workers, see ``ray_jobs.runtime.init_ray``) and never written into a config or a
checkpoint.

Points: ``train.step`` (a Ray Train worker process dies after n optimizer steps, once Ray
Train has had time to collect what it reported before: see ``maybe_fail``),
``score.item`` (a scoring actor raises after n work items), ``score.pause`` (a scoring
actor, at its n-th item, writes its node id into the marker and sleeps: a test removes that
node meanwhile), ``tune.trial=1`` (the first trial driver to get there raises).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "ROCORAY_FAULTS"


class InjectedFault(RuntimeError):
    pass


def _spec() -> tuple[dict[str, int], Path] | None:
    raw = os.environ.get(ENV)
    if not raw:
        return None
    points, _, marker_dir = raw.partition("@")
    parsed = {}
    for item in points.split(","):
        name, _, n = item.partition("=")
        parsed[name.strip()] = int(n)
    return parsed, Path(marker_dir or "/tmp")


def _claim(marker: Path) -> bool:
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def maybe_fail(point: str, count: int, hard: bool = False) -> None:
    """Fail at ``point`` if it is armed for event ``count`` and no process failed there yet:
    raise ``InjectedFault``, or with ``hard`` end the process (a worker dying)."""
    spec = _spec()
    if spec is None or spec[0].get(point) != count:
        return
    if not _claim(spec[1] / f"fault-{point}"):
        return
    if hard:
        # Ray Train takes a worker's reports (its checkpoints) when its controller polls it,
        # every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s); a report still queued in a process that
        # dies is lost, and a run restarts from the checkpoint before it. The injected death
        # waits out three polls, so a test knows which checkpoint the restart resumes from.
        time.sleep(3 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")))
        os._exit(1)
    raise InjectedFault(f"injected fault at {point} #{count} (test hook {ENV})")


def maybe_pause(point: str, count: int, detail, seconds: float = 60.0) -> None:
    """At ``point``'s armed event, once across processes: write ``detail()`` into the marker
    and sleep ``seconds`` (the test acts meanwhile, e.g. removes this process's node).
    ``detail`` is a callable, so unarmed passes cost nothing."""
    spec = _spec()
    if spec is None or spec[0].get(point) != count:
        return
    marker = spec[1] / f"fault-{point}"
    if not _claim(marker):
        return
    # atomically: the test reads the file as soon as it exists
    final = marker.parent / f"{marker.name}.detail"
    partial = marker.parent / f".{marker.name}.detail.tmp"
    partial.write_text(detail())
    partial.replace(final)
    time.sleep(seconds)
