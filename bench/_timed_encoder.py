"""The encode stage's actor with its own clock, for ``bench.encode_rate``: the wall-clock times
at which it started, was ready (model built) and ran each call come back as extra columns
beside the encoded rows (the store writes only its own columns). A module of its own, so the
actor imports nothing the real one does not (not ``bench._common``, which asks git)."""

from __future__ import annotations

import time

import numpy as np

from ray_jobs.frozen import FrozenStageEncoder

CLOCK = ("t_init", "t_ready", "t_call_start", "t_call_end")


class TimedEncoder(FrozenStageEncoder):
    def __init__(self, *args, **kwargs):
        self.t_init = time.time()
        super().__init__(*args, **kwargs)
        self.t_ready = time.time()

    def __call__(self, units: dict) -> dict:
        start = time.time()
        out = super().__call__(units)
        n, end = len(out["skip"]), time.time()
        for name, value in zip(CLOCK, (self.t_init, self.t_ready, start, end)):
            out[name] = np.full(n, value)
        return out


def stage_parts(t0: float, t_end: float, clocks: list[dict], rows: int) -> dict:
    """The stage's wall time in parts, from the actors' clocks (one dict per call: its
    CLOCK values) and the driver's start ``t0`` and end ``t_end``: before the first call
    (the actor's process, imports, model), in the calls (the time an actor had at least one
    call running: its calls may overlap), between them, after the last."""
    first = min(c["t_call_start"] for c in clocks)
    last = max(c["t_call_end"] for c in clocks)
    by_actor = {}
    for c in clocks:
        by_actor.setdefault(c["t_init"], []).append((c["t_call_start"], c["t_call_end"]))
    in_calls = sum(busy(spans) for spans in by_actor.values())
    actors = len(by_actor)
    return {"start_up_s": first - t0,
            "before_actor_init_s": min(c["t_init"] for c in clocks) - t0,
            "actor_init_s": max(c["t_ready"] - c["t_init"] for c in clocks),
            "calls": len(clocks), "actors": actors, "in_calls_s": in_calls,
            "in_calls_rows_per_s": rows / in_calls * actors,
            "between_calls_s": (last - first) - in_calls / actors,
            "after_last_call_s": t_end - last}


def busy(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of (start, end) spans."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total
