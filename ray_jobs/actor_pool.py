"""Stage 2 of the scoring job: one pool of actors runs the work items of the scoring plan
(``core.scoring``). Each actor loads the model once and reads feature blocks from the object
store; results travel back through Ray, and the driver keeps finished items in a keyed cache
so that a rerun after a crash skips them."""

from __future__ import annotations

import logging
import resource
import time

import ray

from core import storage
from ray_jobs import faults
from core.checkpoint import load_checkpoint
from core.models import MODELS
from core.scoring import ScoringPlan, TileWorker
from core.work_cache import keyed_dir
from ray_jobs.gallery import Gallery, actor_resources, pool_size, torch_device
from ray_jobs.runtime import Progress


log = logging.getLogger("rocoray.score")

# Actors lost (with their node) that one run replaces before it gives up: as cluster.yaml's
# Train max_failures, per actor of the pool.
REPLACEMENTS_PER_ACTOR = 3


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@ray.remote
class ScoringActor:
    """Loads the model once; runs any work item of the plan on blocks from the object store."""

    def __init__(self, checkpoint: str, kind: str, plan: ScoringPlan, refs: dict, device: str,
                 precision: str):
        self.device = torch_device(device)
        model = load_checkpoint(checkpoint, device=self.device).model
        types, cache = MODELS[kind].feature_types, {}

        def blocks(side: str, b: int):
            if (side, b) not in cache:
                if len(cache) >= 8:
                    cache.pop(next(iter(cache)))
                cache[(side, b)] = types[side].from_numpy(ray.get(refs[side][b]), self.device)
            return cache[(side, b)]

        self.worker = TileWorker(model, blocks, plan, self.device, precision)
        self.done = 0

    def run(self, item, context: dict):
        t0 = time.perf_counter()
        self.done += 1
        faults.maybe_fail("score.item", self.done)
        faults.maybe_pause("score.pause", self.done,
                           lambda: ray.get_runtime_context().get_node_id())
        result = self.worker.run(item, context)
        return item, result, time.perf_counter() - t0, peak_rss_mb()


class ActorExecutor:
    """Runs plan items on one pool of ``ScoringActor``s; finished items are written to a
    keyed cache dir by the driver (results travel through Ray) and skipped on a rerun."""

    def __init__(self, job, kind: str, plan: ScoringPlan, gallery: Gallery, key: dict):
        cfg = job.cfg
        actor = ScoringActor.options(**actor_resources(cfg))
        self.new_actor = lambda: actor.remote(job.checkpoints[kind], kind, plan, gallery.refs,
                                              job.device, job.precision)
        self.actors = [self.new_actor() for _ in range(pool_size(cfg))]
        self.max_replacements = REPLACEMENTS_PER_ACTOR * len(self.actors)
        self.items_dir, _ = keyed_dir(job.cache, "items", key)
        self.stats = {"done": 0, "cached": 0, "actor_seconds": 0.0, "actor_peak_rss_mb": 0.0,
                      "actor_seconds_by_kind": {}, "cache_write_s": 0.0, "actors_replaced": 0}

    def run_all(self, items, ctx):
        """(item, result, seconds, rss) as items finish, one in flight per actor. A node lost
        (a spot instance reclaimed) takes its actors: each is replaced by a new actor, which
        Ray places on a node with room, and the item it held is queued again. Items are
        pure functions of the feature blocks, whose primary copies live with the driver, so
        a re-run gives the same result; a finished item is never run again."""
        from ray.exceptions import RayActorError

        queue, idle, running = list(items)[::-1], list(self.actors), {}
        while queue or running:
            while queue and idle:
                actor, item = idle.pop(), queue.pop()
                running[actor.run.remote(item, ctx)] = (actor, item)
            (ready,), _ = ray.wait(list(running), num_returns=1)
            actor, item = running.pop(ready)
            try:
                out = ray.get(ready)
            except RayActorError as exc:
                self.stats["actors_replaced"] += 1
                if self.stats["actors_replaced"] > self.max_replacements:
                    raise
                reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
                log.warning("scoring actor lost (%s): %s queued again on a new actor (%d/%d "
                            "replacements)", reason or type(exc).__name__, item.name,
                            self.stats["actors_replaced"], self.max_replacements)
                queue.append(item)
                fresh = self.new_actor()
                self.actors[self.actors.index(actor)] = fresh  # later passes use it too
                idle.append(fresh)
                continue
            idle.append(actor)
            yield out

    def __call__(self, items, context):
        ctx = ray.put(context)
        todo = []
        for item in items:
            name = f"{item.name}.npz"
            if storage.exists(self.items_dir, name):
                self.stats["cached"] += item.kind.value == "tile"
                yield item, storage.read_arrays(self.items_dir, name)
            else:
                todo.append(item)
        progress = Progress(f"{items[0].kind.value} items" if items else "items", len(items), 5.0)
        progress.update(len(items) - len(todo))
        for item, result, seconds, rss in self.run_all(todo, ctx):
            t0 = time.perf_counter()
            storage.write_arrays(self.items_dir, f"{item.name}.npz", result)
            self.stats["cache_write_s"] += time.perf_counter() - t0
            self.stats["done"] += item.kind.value == "tile"
            self.stats["actor_seconds"] += seconds
            by_kind = self.stats["actor_seconds_by_kind"]
            by_kind[item.kind.value] = by_kind.get(item.kind.value, 0.0) + seconds
            self.stats["actor_peak_rss_mb"] = max(self.stats["actor_peak_rss_mb"], rss)
            progress.update(1)
            yield item, result
