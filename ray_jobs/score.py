"""Score a gallery with Ray: encode every caption and image once (Ray Data batch inference),
score the caption x image tiles on one pool of actors, keep a streaming top-K per query in
both directions, and write the results.

    rocoray score --model fusion --checkpoint runs/demo/train/fusion --data data/synthetic
    rocoray score --model two_tower --checkpoint runs/demo/train/two_tower --data data/synthetic
    rocoray score --model rerank --checkpoint runs/demo/train/fusion \\
        --retriever runs/demo/train/two_tower --data data/synthetic

fusion     encode (Ray Data: read + preprocess + encode in one actor stage), then the
           scoring plan of ``core.scoring`` (positives, every tile) on one actor pool: each
           actor loads the model once; each tile sends back only its top-K lists and
           rank counts (O(N*K) memory, exact ranks).
two_tower  embed both sides once, then the same plan in this process (a matmul per tile).
rerank     the two-tower model's top-k candidates re-scored by the fusion head (2Nk pairs),
           optionally fused with the two-tower score (--alpha).

Outputs in --out: gallery.parquet, t2i.parquet / i2t.parquet (top-K rows, ids, scores, exact
rank of the first correct item), scoring.json. Encoded galleries and finished work items are
cached under --cache, keyed on everything that produced them: a rerun after a crash reuses
them and writes identical output; changed inputs are computed anew (the log says why).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass


from core import storage
from core.checkpoint import read_checkpoint_config, resolve_checkpoint
from core.data.rocov2 import resolve_split, row_groups
from core.metrics import bidirectional_metrics
from core.models.kind import ModelKind
from core.precision import scoring_precision
from core.scoring import outputs
from core.scoring.settings import Method, ScoringSettings
from ray_jobs.actor_pool import peak_rss_mb
from ray_jobs.gallery import encode
from ray_jobs.score_methods import fusion_topk, rerank_topk, tile_side, two_tower_topk
from ray_jobs.options import UserError, opt, parse, run_cli
from ray_jobs.runtime import init_ray, setup_logging

log = logging.getLogger("rocoray.score")


@dataclass
class ScoringOptions:
    """Settings shared by ``rocoray score``, ``rocoray evaluate`` and the demo. ``scoring``
    (--k, --rerank-k, --alpha, --block, --chunk, --precision) is one typed object, built and
    checked once where the command line is read, and handed whole to every job."""

    split: str = opt("test", "split of --data to score")
    scoring: ScoringSettings = opt(ScoringSettings(), "k, rerank k, alpha, tiles, precision")
    max_items: int | None = opt(None, "score only the first N rows of the split")
    actors: int = opt(2, "actors of the encode and scoring pools")
    cpus_per_actor: float = opt(0.75, "CPUs per actor (fractional on small machines; the "
                                "frozen encoders' stage shares actors x this among its actors)")
    gpus_per_actor: float = opt(1.0, "GPUs per actor, with --use-gpu")
    use_gpu: bool = opt(False, "encode and score on GPUs")
    cache: str | None = opt(None, "cached encoded galleries and work items (default: <out>/cache)")
    placement_timeout: float = opt(600.0, "seconds the job waits for a node when every actor of "
                                   "its pool is lost and none can be replaced (spot clusters: "
                                   "the autoscaler adds one) before it stops")
    address: str | None = opt(None, "Ray cluster address (default: RAY_ADDRESS, else a local Ray)")


@dataclass
class ScoreConfig(ScoringOptions):
    model: Method = opt(None, "what to score", choices=[m.value for m in Method], required=True)
    checkpoint: str = opt(None, "checkpoint dir or training run dir (rerank: the fusion model)",
                          required=True)
    retriever: str | None = opt(None, "rerank: the two-tower checkpoint or run")
    data: str | None = opt(None, "ROCOv2 data (default: the checkpoint's data.path)")
    out: str = opt("runs/score", "output directory")

    def __post_init__(self):
        self.model = Method(self.model)


@dataclass
class Job:
    """A validated request: every path resolved, sizes known; nothing written yet."""

    cfg: ScoreConfig
    checkpoints: dict  # ModelKind -> checkpoint dir
    files: object  # core.data.rocov2.SplitFiles
    rows: int  # rows in the split (before skipping), from the Parquet footers
    device: str
    precision: str
    out: str
    cache: str

    @property
    def settings(self) -> ScoringSettings:
        return self.cfg.scoring


def check_checkpoint(path: str, kind: ModelKind, flag: str) -> str:
    """The checkpoint ``path`` (a checkpoint or a run) resolves to, if it holds a ``kind``
    model; a one-line error naming ``flag`` otherwise."""
    resolved = resolve_checkpoint(path)
    found = read_checkpoint_config(resolved).model.kind
    if found != kind:
        raise UserError(f"{flag} {path} holds a {found} model, but {flag} needs a {kind} "
                        "checkpoint or training run")
    return resolved


def prepare(cfg: ScoreConfig) -> Job:
    """Check everything a user can get wrong, before Ray starts or anything is written."""
    method = cfg.model
    given = {ModelKind.FUSION: cfg.checkpoint, ModelKind.TWO_TOWER: cfg.checkpoint}
    flag = dict.fromkeys(ModelKind, "--checkpoint")
    if method is Method.RERANK:
        if not cfg.retriever:
            raise UserError("--model rerank needs --retriever (a two-tower checkpoint or run)")
        given[ModelKind.TWO_TOWER], flag[ModelKind.TWO_TOWER] = cfg.retriever, "--retriever"
    checkpoints = {kind: check_checkpoint(given[kind], kind, flag[kind]) for kind in method.models}
    main = read_checkpoint_config(checkpoints[method.models[0]])
    data = cfg.data or main.data.path
    files = resolve_split(data, cfg.split)
    rows = sum(n for _, _, n in row_groups(files, cfg.max_items))
    rows = rows if cfg.max_items is None else min(rows, cfg.max_items)
    cfg.scoring.check(method, rows, f"split {cfg.split!r} of {data}")
    device = "cuda" if cfg.use_gpu else "cpu"
    precision = scoring_precision(cfg.scoring.precision, device, main.train.precision)
    out = storage.absolute(cfg.out)
    return Job(dataclasses.replace(cfg, data=data), checkpoints, files, rows, device, precision,
               out, storage.absolute(cfg.cache or storage.join(out, "cache")))


# --- the job ---------------------------------------------------------------------------------

def execute(job: Job) -> dict:
    cfg, settings, t_start = job.cfg, job.settings, time.perf_counter()
    method = cfg.model
    main_kind = method.models[0]
    gallery = encode(job, main_kind, tile_side(job, main_kind)[0])
    n = len(gallery.groups)
    settings.check(method, n, f"the gallery (items that could be used; skipped: "
                   f"{gallery.meta['skipped'] or 'none'})")
    encode_s = {main_kind: gallery.meta["encode_s"]}
    encoded = {main_kind: gallery.meta}
    if method is Method.TWO_TOWER:
        results, timings = two_tower_topk(job, gallery, settings.k)
    elif method is Method.FUSION:
        results, timings = fusion_topk(job, gallery)
    else:
        first = encode(job, ModelKind.TWO_TOWER, tile_side(job, ModelKind.TWO_TOWER)[0])
        encode_s[ModelKind.TWO_TOWER] = first.meta["encode_s"]
        encoded = {ModelKind.TWO_TOWER: first.meta, **encoded}  # the report's order
        if first.meta.get("frozen_store") and first.meta["frozen_store"] == gallery.meta.get(
                "frozen_store"):  # both models on the same frozen towers: encoded once
            encode_s[ModelKind.TWO_TOWER] -= first.meta["frozen_encode_s"]
        results, timings = rerank_topk(job, first, gallery)
    storage.write_parquet(job.out, outputs.GALLERY, gallery.table)
    for direction, (index, scores, ranks) in results.items():
        outputs.write_topk(job.out, direction, gallery.table, index, scores, ranks)
    ks = tuple(k for k in (1, 5, 10) if k <= n)
    metrics = bidirectional_metrics(results["t2i"][2], results["i2t"][2], n_images=n, n_texts=n,
                                    ks=ks)
    timings.update(encode_s=sum(encode_s.values()), encode_s_by_model=encode_s,
                   encoder_passes={m: meta.get("encoder_passes") for m, meta in encoded.items()},
                   total_s=time.perf_counter() - t_start, driver_peak_rss_mb=peak_rss_mb())
    timings["pairs_per_s"] = timings["pairs"] / max(timings["score_s"], 1e-9)
    summary = {"model": method, "checkpoints": job.checkpoints, "data": str(cfg.data),
               "split": cfg.split, "n": n, "k": settings.k, "skipped": gallery.meta["skipped"],
               "precision": job.precision, "device": job.device, "metrics": metrics,
               "timings": timings, "features": {g: gallery.store.root for g in [main_kind]}}
    if method is Method.RERANK:
        summary.update(rerank_k=settings.rerank_k, alpha=settings.alpha)
        summary["features"][ModelKind.TWO_TOWER] = first.store.root
    storage.write_json(job.out, outputs.SUMMARY, summary)
    log.info("%s on %d items: %s (%.1fs)", method, n, ", ".join(
        f"{d} R@{k} {metrics[d][f'R@{k}']:.3f}" for d in ("t2i", "i2t") for k in ks),
        timings["total_s"])
    return summary


def run(cfg: ScoreConfig) -> dict:
    """Validate, start (or join) Ray, score. Jobs call this with a ScoreConfig."""
    job = prepare(cfg)
    init_ray(cfg.address)
    return execute(job)


def main(argv=None) -> dict:
    cfg = parse(ScoreConfig, argv, "rocoray score", __doc__)
    setup_logging()
    summary = run_cli("rocoray score", lambda: run(cfg))
    print(storage.dumps_json({k: summary[k] for k in ("model", "n", "metrics")}))
    print(f"results: {storage.absolute(cfg.out)}")
    return summary


if __name__ == "__main__":
    main()
