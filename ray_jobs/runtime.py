"""Ray start-up, logging and progress shared by the jobs."""

from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger("rocoray")

# Quiet, harmless defaults on small machines (see ../shared/ENVIRONMENT.md).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def setup_logging(level: int = logging.INFO) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, stream=sys.stdout,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")


def init_ray(address: str | None = None, num_cpus: int | None = None,
             progress_bars: bool | None = None):
    """Connect to a cluster (``address``, ``RAY_ADDRESS``, or a job's own cluster) or start a
    local one. Idempotent. The dashboard stays on: Tune over Train V2 needs it."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs = {"log_to_driver": True}
        if address:
            kwargs["address"] = address
        elif num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)
    configure_data_context(progress_bars)
    return ray


def configure_data_context(progress_bars: bool | None = None) -> None:
    """Ray Data's bars are for terminals; in job logs (and from Tune's trial drivers, which
    build their own datasets) they are noise, and our Progress lines say what is happening.
    ``ROCORAY_PROGRESS_BARS=1`` turns them on."""
    import ray.data

    if progress_bars is None:
        default = "1" if sys.stdout.isatty() else "0"
        progress_bars = os.environ.get("ROCORAY_PROGRESS_BARS", default) != "0"
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress_bars
    ctx.print_on_execution_start = False


class Progress:
    """One log line per step, at most every ``every`` seconds: readable in `ray job logs`."""

    def __init__(self, label: str, total: int | None = None, every: float = 5.0):
        self.label, self.total, self.every = label, total, every
        self.start = self.last = time.perf_counter()
        self.done = 0

    def update(self, n: int = 1, extra: str = "") -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every or (self.total and self.done >= self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            of = f"/{self.total}" if self.total else ""
            log.info("%s: %d%s (%.1f/s) %s", self.label, self.done, of, rate, extra)
