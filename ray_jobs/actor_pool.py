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
from ray_jobs.options import UserError
from ray_jobs.runtime import Progress


log = logging.getLogger("rocoray.score")

# Actors lost (with their node) that one run replaces before it gives up: as cluster.yaml's
# Train max_failures, per actor of the pool.
REPLACEMENTS_PER_ACTOR = 3
WAIT_LOG_S = 30.0  # while the whole pool waits for a node, a log line this often


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
        self.resources = actor_resources(cfg)
        actor = ScoringActor.options(**self.resources)
        self.new_actor = lambda: actor.remote(job.checkpoints[kind], kind, plan, gallery.refs,
                                              job.device, job.precision)
        self.actors = [self.new_actor() for _ in range(pool_size(cfg))]
        self.max_replacements = REPLACEMENTS_PER_ACTOR * len(self.actors)
        self.placement_timeout = cfg.placement_timeout
        self.pending: dict = {}  # ready ref -> a replacement actor Ray has not placed yet
        self.items_dir, _ = keyed_dir(job.cache, "items", key)
        self.stats = {"done": 0, "cached": 0, "actor_seconds": 0.0, "actor_peak_rss_mb": 0.0,
                      "actor_seconds_by_kind": {}, "cache_write_s": 0.0, "actors_replaced": 0}

    def run_all(self, items, ctx):
        """(item, result, seconds, rss) as items finish, one in flight per actor. A node lost
        (a spot instance reclaimed) takes its actors: the item each held is queued again and
        a replacement actor is requested, which Ray places on a node with room. Until it is
        placed the pool runs on the actors it has left (the run shrinks); with none left it
        waits for a node, saying so, for ``placement_timeout`` seconds. Items are pure
        functions of the feature blocks, whose primary copies live with the driver, so a
        re-run gives the same result; a finished item is never run again."""
        from ray.exceptions import RayActorError

        pending = self.pending  # replacements not placed yet, kept across passes
        queue, running = list(items)[::-1], {}
        idle = [a for a in self.actors if not any(a is p for p in pending.values())]
        waited = 0.0
        while queue or running:
            while queue and idle:
                actor, item = idle.pop(), queue.pop()
                running[actor.run.remote(item, ctx)] = (actor, item)
            ready, _ = ray.wait(list(running) + list(pending), num_returns=1,
                                timeout=WAIT_LOG_S)
            if not ready:
                if pending and not running:  # the whole pool waits for a node
                    waited += WAIT_LOG_S
                    self._no_node(len(pending), len(queue), waited)
                continue
            waited = 0.0
            if ready[0] in pending:
                fresh = pending.pop(ready[0])
                try:
                    ray.get(ready[0])
                except RayActorError as exc:  # lost before it could start
                    self._lost(exc, "its replacement", pending, fresh)
                    continue
                idle.append(fresh)
                log.info("replacement scoring actor placed: the pool has %d of %d actors again",
                         len(self.actors) - len(pending), len(self.actors))
                continue
            actor, item = running.pop(ready[0])
            try:
                out = ray.get(ready[0])
            except RayActorError as exc:
                queue.append(item)
                self._lost(exc, item.name, pending, actor)
                continue
            idle.append(actor)
            yield out

    def _lost(self, exc, what: str, pending: dict, actor) -> None:
        """An actor died with its node: request a replacement (placed when a node has room)."""
        self.stats["actors_replaced"] += 1
        if self.stats["actors_replaced"] > self.max_replacements:
            raise exc
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        fresh = self.new_actor()
        self.actors[self.actors.index(actor)] = fresh  # later passes use it too
        pending[fresh.__ray_ready__.remote()] = fresh
        log.warning("scoring actor lost (%s): %s queued again on a new actor (%d/%d "
                    "replacements); the pool continues with %d of %d actors until a node can "
                    "take it", reason or type(exc).__name__, what, self.stats["actors_replaced"],
                    self.max_replacements, len(self.actors) - len(pending), len(self.actors))

    def _no_node(self, missing: int, queued: int, waited: float) -> None:
        if waited >= self.placement_timeout:
            raise UserError(f"scoring: every actor of the pool was lost and no node could take "
                            f"a replacement in {waited:.0f} s ({queued} work items left): add "
                            "nodes, or raise --placement-timeout")
        log.warning("scoring: every actor of the pool was lost; waiting for a node with room "
                    "for %d replacement actor(s) (%s each), %d work items queued (%.0f of "
                    "%.0f s, --placement-timeout)", missing, self.resources, queued, waited,
                    self.placement_timeout)

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
