"""Ray start-up, logging and progress shared by the jobs."""

from __future__ import annotations

import logging
import os
import sys
import time

from ray_jobs import faults
from ray_jobs.ray_logs import configure_data_context, filter_worker_logs, quiet_ray_loggers

log = logging.getLogger("rocoray")

# Set (unless the user set them) when a job starts Ray: no usage-stats prompt, no token-auth
# warning on a local cluster, no Train V1->V2 migration notices, no tokenizers fork warning.
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
             "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0", "TOKENIZERS_PARALLELISM": "false"}


def quiet_defaults() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def setup_logging(level: int = logging.INFO) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, stream=sys.stdout,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")


def init_ray(address: str | None = None, num_cpus: int | None = None,
             progress_bars: bool | None = None):
    """Connect to a cluster (``address``, or ``RAY_ADDRESS``: a submitted job's own cluster)
    or start a NEW local one: never the last cluster recorded on the machine, which
    ``ray.init()`` would silently join (or hang on, when it is dead). Idempotent. Logs which
    cluster the job uses. The dashboard stays on: Tune over Train V2 needs it."""
    quiet_defaults()
    import ray

    quiet_ray_loggers()
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs = {"log_to_driver": True}
        if os.environ.get(faults.ENV):  # test-only fault injection reaches every worker
            kwargs["runtime_env"] = {"env_vars": {faults.ENV: os.environ[faults.ENV]}}
        if address:
            kwargs["address"] = address
        else:
            kwargs["address"] = "local"
            if num_cpus is not None:
                kwargs["num_cpus"] = num_cpus
        context = ray.init(**kwargs)
        log.info("Ray: %s (%s)", "joined the cluster at " + address if address
                 else "a new local instance", getattr(context, "address_info", {}).get(
                     "gcs_address", "?"))
        filter_worker_logs()
    quiet_ray_loggers()  # Ray Data's loggers exist once it is imported
    configure_data_context(progress_bars)
    return ray


class Progress:
    """One log line per step, at most every ``every`` seconds: readable in `ray job logs`."""

    def __init__(self, label: str, total: int | None = None, every: float = 5.0):
        self.label, self.total, self.every = label, total, every
        self.start = self.last = time.perf_counter()
        self.done = 0

    def update(self, n: int = 1, extra="") -> None:
        """Count ``n`` more; ``extra`` is a string, or a callable evaluated only when a line
        is printed (e.g. a loss that would otherwise sync a GPU every step)."""
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every or (self.total and self.done >= self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            of = f"/{self.total}" if self.total else ""
            extra = extra() if callable(extra) else extra
            log.info("%s: %d%s (%.1f/s)%s", self.label, self.done, of, rate,
                     f" {extra}" if extra else "")


def format_epoch(m: dict, epochs: int | None = None) -> str:
    """One readable line for an epoch's metrics."""
    if not m:
        return "no epoch finished"
    parts = [f"epoch {m.get('epoch')}" + (f"/{epochs}" if epochs else "")]
    if "train/loss" in m:
        parts.append(f"loss {m['train/loss']:.4f}")
    if "train/samples_per_s" in m:
        parts.append(f"{m['train/samples_per_s']:.0f} samples/s")
    recalls = [f"{d} " + "/".join(f"{m[f'val/{d}/R@{k}']:.3f}" for k in (1, 5, 10)
                                 if f"val/{d}/R@{k}" in m) for d in ("t2i", "i2t")
               if f"val/{d}/R@1" in m]
    if recalls:
        parts.append("val R@1/5/10 " + ", ".join(recalls))
    if "val/mean_recall" in m:
        parts.append(f"mean recall {m['val/mean_recall']:.3f}"
                     + (f" (fused score, alpha {m['val/score_alpha']:g})"
                        if m.get("val/score_alpha") else ""))
    if "val/match_acc" in m:
        parts.append(f"match acc {m['val/match_acc']:.3f}")
    for name in ("itc", "rerank"):
        if f"val/{name}/mean_recall" in m:
            parts.append(f"{name} mean recall {m[f'val/{name}/mean_recall']:.3f}")
    if m.get("train/skipped_rows"):
        parts.append(f"skipped rows {m['train/skipped_rows']}")
    if "train/epoch_s" in m:
        parts.append(f"({m['train/epoch_s']:.0f}s)")
    return ", ".join(parts)


def machine() -> dict:
    """What a run ran on, recorded with its results (a README line is written from this,
    never from the machine that regenerates the README)."""
    import platform

    import psutil
    import torch

    import ray

    return {"machine": platform.machine(), "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2 ** 30, 1),
            "python": platform.python_version(), "torch": torch.__version__,
            "ray": ray.__version__, "gpu": (torch.cuda.get_device_name(0)
                                            if torch.cuda.is_available() else None)}


class StageClock:
    """Seconds and peak resident memory (this process and every process under it: the
    local Ray's raylet and workers) of each stage of a job, sampled every 0.5 s."""

    def __init__(self):
        self.stages: dict[str, dict] = {}

    def stage(self, name: str):
        import contextlib
        import threading

        import psutil

        @contextlib.contextmanager
        def timed():
            stop, peak = threading.Event(), [0]
            me = psutil.Process()

            def sample():
                while not stop.is_set():
                    total = 0
                    for p in [me, *me.children(recursive=True)]:
                        try:
                            total += p.memory_info().rss
                        except psutil.Error:
                            pass
                    peak[0] = max(peak[0], total)
                    stop.wait(0.5)

            thread = threading.Thread(target=sample, daemon=True)
            t0 = time.perf_counter()
            thread.start()
            try:
                yield
            finally:
                stop.set()
                thread.join()
                self.stages[name] = {"seconds": round(time.perf_counter() - t0, 1),
                                     "peak_rss_mb": round(peak[0] / 2 ** 20)}
        return timed()


def storage_reach(path: str, nodes: list[dict] | None = None) -> str | None:
    """A one-line warning when ``path`` (a run's storage) is a local path (or a ``file://``
    URL) while the cluster's live nodes sit on more than one machine: checkpoints written
    there by one node are not read by another unless the path is a shared file system
    mounted alike on every node.
    None when there is nothing to say. ``nodes``: ``ray.nodes()`` (read here by default)."""
    from core import storage

    if storage.is_url(path) and not str(path).startswith("file://"):
        return None  # object storage every node reaches
    if nodes is None:
        import ray

        nodes = ray.nodes()
    hosts = {n.get("NodeManagerAddress") for n in nodes if n.get("Alive")}
    if len(hosts) <= 1:
        return None
    return (f"storage {path} is a local path and the cluster spans {len(hosts)} machines: "
            "it must be a shared file system mounted at that path on every node (NFS, EFS), "
            "or give s3:// / gs:// storage; otherwise a restarted worker cannot read the "
            "checkpoints")
