"""The frozen encode stage with Ray's worker niceness as Ray sets it against niceness 0: does
a lower-priority actor explain why its calls run slower than the same work in one process?

Ray starts every worker process (tasks, actors, Ray Data's map workers) at niceness 15
(``RAY_worker_niceness``; the driver stays at 0) so that its own daemons keep their CPU. On
a machine whose cores the encode actor's threads fill, everything else that runs at
niceness 0 (the driver writing the store, Ray's own processes) then preempts one of the
actor's intra-op threads, and the other waits for it at the op's end.

Each run is a fresh local Ray instance in a child process (the niceness is fixed when Ray
starts), and measures one alternated pair as ``bench.encode_rate`` does: the same whole
split in one process, then through ``ray_jobs.frozen`` (the actor keeps its own clock:
``bench._timed_encoder``). The two settings take turns, ``--repeats`` runs each. Per run:
the stage's ratio to the in-process rate, its calls' ratio (start-up excluded), its start-up,
the actor's niceness as observed, and the CPU seconds the driver, the actor and Ray's own
processes used during the stage.

    python -m bench.worker_niceness [--data datasets/roco-ccby] [--repeats 4]

No target: this measures a setting that rocoray does not change (yet). Writes
bench/results/worker_niceness.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench._common import write_result

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "datasets" / "roco-ccby"
SETTINGS = {"Ray's default": None, "niceness 0": "0"}  # RAY_worker_niceness (None: unset)
ACTOR = "MapWorker"  # Ray Data's actor processes are named ray::MapWorker(...)


def snapshot() -> dict[int, tuple[str, float, int]]:
    """Every process's (command line, CPU seconds, niceness) now, by pid."""
    import psutil

    out = {}
    for p in psutil.process_iter(["cmdline", "name"]):
        try:
            t = p.cpu_times()
            out[p.pid] = (" ".join(p.info["cmdline"] or []) or p.info["name"],
                          t.user + t.system, p.nice())
        except psutil.Error:
            continue
    return out


def sample(latest: dict, stop: threading.Event) -> None:
    """``snapshot`` into ``latest`` every 0.5 s until ``stop``: a process that exits before
    the end (the stage's actor) keeps its last count."""
    while True:
        latest.update(snapshot())
        if stop.wait(0.5):
            return


def role(pid: int, cmd: str) -> str | None:
    """This driver, the encode actor, Ray's own processes (its daemons and workers), or
    neither (the rest of the machine, left out)."""
    if pid == os.getpid():
        return "driver"
    if ACTOR in cmd:
        return "actor"
    return "ray" if cmd.startswith("ray::") or "/ray/" in cmd else None


def by_role(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds each role used between two snapshots."""
    roles = {"driver": 0.0, "actor": 0.0, "ray": 0.0}
    for pid, (cmd, t, _) in after.items():
        if who := role(pid, cmd):
            roles[who] += t - before.get(pid, (cmd, 0.0, 0))[1]
    return roles


def one_run(data: Path) -> dict:
    """In a fresh Ray: one in-process run, then the Ray stage, over the whole train split."""
    from bench.encode_rate import in_process, ray_stage
    from core.config import load_config
    from core.data.tokenizer import resolve_tokenizer
    from core.precision import training_precision
    from ray_jobs.runtime import init_ray

    config = load_config("roco_cpu")
    tokenizer, _ = resolve_tokenizer(config.model.text, str(data))
    cpus = config.train.num_workers * config.train.cpus_per_worker
    precision = training_precision(config.train.precision, "cpu")
    init_ray(num_cpus=os.cpu_count())
    local = in_process(config, tokenizer, None, precision, data=data)
    before, stop = snapshot(), threading.Event()
    latest = dict(before)
    sampler = threading.Thread(target=sample, args=(latest, stop), daemon=True)
    sampler.start()
    staged, info = ray_stage(config, tokenizer, None, cpus, precision, data=data)
    stop.set()
    sampler.join()
    latest.update(snapshot())
    return {"in_process_rows_per_s": local, "ray_stage_rows_per_s": staged,
            "ratio": staged / local,
            "in_calls_ratio": float(info["in_calls_rows_per_s"]) / local,
            "rows": info["rows"], "wall_s": info["wall_s"],
            "start_up_s": float(info["start_up_s"]), "in_calls_s": float(info["in_calls_s"]),
            "actor_niceness": sorted({nice for cmd, _, nice in latest.values() if ACTOR in cmd}),
            "stage_cpu_s": by_role(before, latest)}


def child(setting: str, data: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_worker_niceness"}
    if SETTINGS[setting] is not None:
        env["RAY_worker_niceness"] = SETTINGS[setting]
    out = subprocess.run([sys.executable, "-m", "bench.worker_niceness", "--child",
                          "--data", str(data)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=1800)
    if out.returncode:
        raise RuntimeError(f"{setting} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help="real figures in the ROCOv2 layout")
    p.add_argument("--repeats", type=int, default=4, help="runs per setting, alternated")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(one_run(args.data)), flush=True)
        return {}
    runs = {name: [] for name in SETTINGS}
    for i in range(args.repeats):
        for name in SETTINGS:
            t0 = time.perf_counter()
            run = child(name, args.data)
            runs[name].append(run)
            print(f"run {i + 1}, {name}: Ray stage {run['ratio']:.2f}x the in-process rate, its "
                  f"calls {run['in_calls_ratio']:.2f}x, start-up {run['start_up_s']:.1f} s, "
                  f"actor niceness {run['actor_niceness']} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    result = {"bench": "worker_niceness", "data": str(args.data), "repeats": args.repeats,
              "settings": {name: {"env": SETTINGS[name], "runs": got,
                                  **{k: median_of(got, k) for k in
                                     ("ratio", "in_calls_ratio", "start_up_s",
                                      "in_process_rows_per_s", "ray_stage_rows_per_s")},
                                  "ratio_range": [min(r["ratio"] for r in got),
                                                  max(r["ratio"] for r in got)],
                                  "in_calls_ratio_range": [min(r["in_calls_ratio"] for r in got),
                                                           max(r["in_calls_ratio"] for r in got)],
                                  "stage_cpu_s": {role: statistics.median(
                                      r["stage_cpu_s"][role] for r in got)
                                      for role in ("driver", "actor", "ray")},
                                  "actor_niceness": sorted({n for r in got
                                                            for n in r["actor_niceness"]})}
                           for name, got in runs.items()}}
    write_result(result)
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    on = "" if r["data"].endswith("roco-ccby") else f", on {r['data']}"
    parts = []
    for name, s in r["settings"].items():
        lo, hi = s["ratio_range"]
        clo, chi = s["in_calls_ratio_range"]
        cpu = s["stage_cpu_s"]
        parts.append(f"{name} (actor at niceness {'/'.join(map(str, s['actor_niceness']))}): "
                     f"stage {s['ratio']:.2f}x [{lo:.2f}, {hi:.2f}], its calls "
                     f"{s['in_calls_ratio']:.2f}x [{clo:.2f}, {chi:.2f}], start-up "
                     f"{s['start_up_s']:.1f} s; CPU s in the stage: actor {cpu['actor']:.0f}, "
                     f"driver {cpu['driver']:.0f}, Ray's own {cpu['ray']:.0f}")
    default, zero = (r["settings"][name]["runs"] for name in SETTINGS)
    ahead = {key: sum(b[key] > a[key] for a, b in zip(default, zero))
             for key in ("ratio", "in_calls_ratio")}
    return [(f"frozen encode stage (roco_cpu, whole split{on}) with Ray's worker niceness vs "
             "niceness 0, each against the in-process rate",
             "; ".join(parts) + f" ({default[0]['rows']} real figures; medians of "
             f"{r['repeats']} alternated runs, each a fresh Ray [range])", "no target",
             f"niceness 0 ahead in {ahead['ratio']} of {len(zero)} pairs (stage), "
             f"{ahead['in_calls_ratio']} of {len(zero)} (its calls); rocoray runs Ray's default")]

if __name__ == "__main__":
    main()
