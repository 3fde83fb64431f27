"""What Ray prints, made readable in a job's log: its own lines that say nothing about the
user's run dropped (``RAY_NOISE``), colour codes stripped when the output is not a terminal,
worker output filtered the same way, Ray Data's progress bars off in logs."""

from __future__ import annotations

import logging
import os
import re
import sys

log = logging.getLogger("rocoray")

# Ray's own lines that say nothing about the user's run, dropped from job logs:
# Ray Data's notes that progress bars are off (they are, in logs) and that a dataset
# finished; Ray Train's dump of every report (the epoch line says it readably) and its
# internal use of a deprecated Ray Data option; and Ray core's error-
# level note about its own actors (PreemptionWatcher, Ray Data's map workers) keeping
# constructor arguments in the object store (ray-project/ray#53727), explained once instead.
RAY_NOISE = re.compile("|".join([
    r"Progress bars (for operators )?disabled",
    r"Dataset \S+ execution finished in",
    r"ExecutionOptions\.exclude_resources` is deprecated",
    r"self\.exclude_resources = exclude_resources",
    r"has constructor arguments in the object store and max_restarts > 0",
    r"Reporting training result \d+: TrainingReport",
    # the GCS asking an actor that has already exited to stop (Ray Data's pool shutdown)
    r"Failed to kill actor \w+, return status: Invalid: KillActor RPC failed",
]))
CONSTRUCTOR_NOTE = re.compile(r"constructor arguments in the object store")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class DropRayNoise(logging.Filter):
    """On Ray's own loggers in this process: drop ``RAY_NOISE``, strip colour codes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if RAY_NOISE.search(message):
            return False
        if "\x1b[" in message:
            record.msg, record.args = ANSI.sub("", message), ()
        return True


def quiet_ray_loggers() -> None:
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, DropRayNoise) for f in handler.filters):
                handler.addFilter(DropRayNoise())

class _StripAnsi:
    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(ANSI.sub("", text))

    def flush(self) -> None:
        self.stream.flush()


def filter_worker_logs() -> None:
    """Worker and actor output that Ray forwards to this driver, minus ``RAY_NOISE``, without
    colour codes when the output is not a terminal. Hooks Ray's log dispatcher (a private
    API of the pinned Ray); if it changes, logs are simply printed unfiltered."""
    try:
        from ray._private import worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return
    if not any(name == "ray_print_logs" for name, _ in dispatcher.handlers):
        return
    explained = []

    def handler(data: dict) -> None:
        lines = []
        for line in data.get("lines", []):
            if CONSTRUCTOR_NOTE.search(line) and not explained:
                explained.append(True)
                log.info("Ray logs an error-level note that its own actors keep constructor "
                         "arguments in the object store (ray-project/ray#53727): harmless, "
                         "not shown")
            if not RAY_NOISE.search(line):
                lines.append(line)
        if not lines:
            return
        data = {**data, "lines": lines}
        sink = sys.stderr if data["is_err"] else sys.stdout
        dedup = worker.stderr_deduplicator if data["is_err"] else worker.stdout_deduplicator
        batches = dedup.deduplicate(data) if data.get("pid") not in ["autoscaler"] else [data]
        sink = sink if sink.isatty() else _StripAnsi(sink)
        ignore_prefix = worker._should_ignore_worker_log_prefix(worker.global_worker)
        for batch in batches:
            worker.print_worker_logs(batch, sink, ignore_prefix)

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("rocoray_print_logs", handler)


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


