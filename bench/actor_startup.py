"""What an encode stage's fixed start-up is made of, side by side in one run. Every Ray Data
actor stage (the frozen towers' encode stage of ``ray_jobs.frozen``, the scoring jobs' pools)
starts its actors in fresh worker processes and pays this before its first row:

  ray       the same kind of stage (one actor, one one-row block) whose actor does nothing:
            Ray Data's planning, the actor's worker process, the block's round trip
  model     ... whose actor imports what the encode actor imports (``ray_jobs.frozen``, then
            what ``core.models`` imports to build the roco_cpu towers: timm, transformers'
            BERT) and then builds the roco_cpu two-tower model (EfficientNet-Lite0 + MiniLM,
            the packaged weights read and checked), each timed inside the actor

and, for contrast, a task stage (``map_batches`` with a function, Ray's task workers) whose
function makes the same imports, run several times in one job: the first stage pays them;
Ray reuses an idle task worker for a later stage, with its imports, where every actor stage
starts a fresh process (checked: one more actor stage after the task stages, with their
warm workers idle, reports its process and whether torch was imported before its own
imports). And, each in a fresh interpreter before Ray starts, the same
imports one library at a time in the order the actor makes them, so the imports are named
by library. A new actor each repeat (a stage's actors end with it); medians over
``--repeats``.

    python -m bench.actor_startup [--repeats 3]

Writes bench/results/actor_startup.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what the encode actor imports, in its order: its module, then the towers' libraries
CHAIN = ["torch", "ray_jobs.frozen", "torchvision", "timm",
         "transformers.models.bert.modeling_bert", "core.models"]
LABELS = {"torchvision": "torchvision (it imports torch._dynamo)",
          "transformers.models.bert.modeling_bert": "transformers' BERT"}


def import_chain() -> float:
    """Import CHAIN in order here: the seconds it took (none where it was imported already)."""
    import importlib

    t = time.perf_counter()
    for name in CHAIN:
        importlib.import_module(name)
    return time.perf_counter() - t


def chain_in_fresh_interpreter() -> dict[str, float]:
    """Seconds each import of CHAIN adds, in order, in a new interpreter (its start excluded)."""
    code = ("import importlib, json, sys, time\nimport ray.data  # a Ray worker has it\nout = {}\n"
            f"for name in {CHAIN!r}:\n"
            "    t = time.perf_counter(); importlib.import_module(name)\n"
            "    out[name] = time.perf_counter() - t\n"
            "print(json.dumps(out))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


class Noop:
    """The actor of the 'ray' stage."""

    def __init__(self, build: bool = False):
        import os

        # which process, and whether it had the imports before this actor made any
        self.parts = {"pid": os.getpid(), "had_torch": "torch" in sys.modules}
        if build:
            self.parts["imports_s"] = import_chain()
            from core.config import load_config
            from core.models import build_model

            t = time.perf_counter()
            build_model(load_config("roco_cpu", ["model.kind=two_tower"]).model).eval()
            self.parts["model_s"] = time.perf_counter() - t

    def __call__(self, batch: dict) -> dict:
        return {"parts": [json.dumps(self.parts)] * len(batch["id"])}


def stage(build: bool) -> dict:
    """One actor stage over one one-row block: its wall seconds and the parts its actor timed."""
    import warnings

    import ray.data

    t = time.perf_counter()
    with warnings.catch_warnings():  # max_restarts=0 as the encode stage (ray_jobs.frozen)
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ray.data.range(1, override_num_blocks=1).map_batches(
            Noop, fn_constructor_kwargs={"build": build}, batch_size=1,
            batch_format="numpy", num_cpus=1, compute=ray.data.ActorPoolStrategy(size=1),
            max_restarts=0)
    rows = ds.take_all()
    return {"wall_s": time.perf_counter() - t, **json.loads(rows[0]["parts"])}


def _imports_task(batch: dict) -> dict:
    import os

    seconds, n = import_chain(), len(batch["id"])
    return {"pid": [os.getpid()] * n, "imports_s": [seconds] * n}


def task_stages(count: int) -> list[dict]:
    """``count`` one-row task stages in a row: wall seconds, the worker and its import time."""
    import ray.data

    out = []
    for _ in range(count):
        t = time.perf_counter()
        row = ray.data.range(1, override_num_blocks=1).map_batches(
            _imports_task, batch_size=1, num_cpus=1).take_all()[0]
        out.append({"wall_s": time.perf_counter() - t, "pid": int(row["pid"]),
                    "imports_s": float(row["imports_s"])})
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    from bench._common import write_result  # not in the actors: it asks git

    chains = [chain_in_fresh_interpreter() for _ in range(args.repeats)]  # before Ray starts
    from ray_jobs.runtime import init_ray

    init_ray(num_cpus=2, progress_bars=False)
    stage(build=False)  # Ray Data's first use in this process: not a part
    runs = {"ray": [], "model": []}
    for _ in range(args.repeats):  # the arms alternate, so a slow spell hits each alike
        runs["ray"].append(stage(build=False))
        runs["model"].append(stage(build=True))
    med = statistics.median
    parts = {"ray_s": med([r["wall_s"] for r in runs["ray"]]),
             "imports_s": med([r["imports_s"] for r in runs["model"]]),
             "model_s": med([r["model_s"] for r in runs["model"]]),
             "stage_wall_s": med([r["wall_s"] for r in runs["model"]])}
    tasks = task_stages(args.repeats + 1)
    later, after = tasks[1:], stage(build=False)  # an actor stage once task workers are warm
    parts.update(task_first_s=tasks[0]["wall_s"], task_later_s=med([t["wall_s"] for t in later]),
                 task_later_imports_s=med([t["imports_s"] for t in later]),
                 task_later_on_a_used_worker=sum(t["pid"] in {u["pid"] for u in tasks[:i + 1]}
                                                 for i, t in enumerate(later)),
                 actor_after_tasks_on_a_used_worker=after["pid"] in {t["pid"] for t in tasks},
                 actor_after_tasks_had_torch=bool(after["had_torch"]))
    libraries = {name: med([c[name] for c in chains]) for name in CHAIN}
    result = {"bench": "actor_startup", "repeats": args.repeats, "chain": CHAIN,
              "parts": parts, "imports_in_fresh_interpreter_s": libraries,
              "runs": {**runs, "task": tasks, "actor_after_tasks": after}}
    print(f"actor stage start-up: Ray {parts['ray_s']:.1f} s, imports {parts['imports_s']:.1f} s, "
          f"model {parts['model_s']:.1f} s; whole stage {parts['stage_wall_s']:.1f} s")
    print("imports in a fresh interpreter: " + ", ".join(
        f"{k} {v:.2f} s" for k, v in libraries.items()))
    write_result(result)
    return result


def readme_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """This benchmark's rows of the README's performance table: (benchmark, measured,
    target, verdict), from its results file (``bench.summary`` collects them)."""
    parts, libs = r["parts"], r["imports_in_fresh_interpreter_s"]
    named = ", ".join(f"{LABELS.get(k, k)} {v:.1f} s" for k, v in libs.items())
    after = ("" if "actor_after_tasks_on_a_used_worker" not in parts else
             "; an actor stage started after them, with those workers idle: on one of them "
             f"{'yes' if parts['actor_after_tasks_on_a_used_worker'] else 'no'}, torch already "
             f"imported {'yes' if parts['actor_after_tasks_had_torch'] else 'no'}")
    rows = [("an actor stage's start-up, in parts (one actor, one row; a fresh worker "
             "process, as each stage's actors are)",
             f"{parts['stage_wall_s']:.1f} s: Ray Data and the actor's process "
             f"{parts['ray_s']:.1f} s (a stage whose actor does nothing), imports "
             f"{parts['imports_s']:.1f} s, building the roco_cpu towers {parts['model_s']:.1f} s; "
             f"the imports one library at a time in a fresh interpreter: {named} "
             f"(median of {r['repeats']})", "no target",
             "what the encode ratio's start-up is made of")]
    rows.append(("the same imports in a task stage (a function, Ray's task workers), first and "
                 "later stages of one job", f"first {parts['task_first_s']:.1f} s; later "
                 f"{parts['task_later_s']:.1f} s, imports {parts['task_later_imports_s']:.2f} s "
                 f"({parts['task_later_on_a_used_worker']} of {r['repeats']} on a worker an "
                 "earlier stage used): Ray reuses task workers across stages, never an actor's "
                 "process" + after, "no target", "what a warm worker saves each stage"))
    return rows


if __name__ == "__main__":
    main()
