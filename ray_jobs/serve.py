"""Case search: a Ray Serve application over a trained two-tower model (and, optionally, the
fusion model as a reranker) and an encoded gallery.

    rocoray serve --two-tower runs/demo/train/two_tower --fusion runs/demo/train/fusion \\
        --data data/synthetic --evaluation runs/demo/eval
    serve run ray_jobs.serve:app_builder two_tower=runs/demo/train/two_tower data=data/synthetic

The gallery is encoded once by the scoring job's Ray Data stage (``ray_jobs.gallery``), or
its cached encoding is reused when the checkpoint, data, split, rows, block and precision
match (``--cache``: point it at a scoring run's cache to reuse that run's). Each replica
loads the models and the encoded gallery; ``core.search`` answers the queries. Rerank's k
and alpha are the validation choice of an evaluation run (``--evaluation``) unless given.

HTTP (JSON unless said; schema at /docs and /openapi.json):
  GET  /                                   the search page
  GET  /api/info                           gallery size, models, rerank k/alpha, limits
  POST /api/search/text                    {"query", "k", "rerank"} -> hits
  POST /api/search/image?k=&rerank=        body: the image bytes -> hits
  GET  /api/cases/{image_id}/thumbnail     JPEG
  GET  /api/cases/{image_id}/explain?caption=   PNG: Grad-CAM (+ attention) of the pair
Bad input is a 4xx with {"error": "<one line>"}; it binds to 127.0.0.1 unless --host says.
"""

# No ``from __future__ import annotations``: FastAPI reads the route signatures' types.
import logging
import time
from urllib.parse import quote
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from core import storage
from core.checkpoint import load_checkpoint
from core.data.rocov2 import resolve_split
from core.feature_store import FeatureStore
from core.models import MODELS
from core.models.kind import ModelKind
from core.scoring import outputs
from core.scoring.settings import Method, ScoringSettings
from core.search import LIMITS, CaseIndex, SearchError, check_image, read_cases
from core.search.limits import body_limit
from ray_jobs.options import UserError, opt, parse, run_cli
from ray_jobs.runtime import init_ray, setup_logging

log = logging.getLogger("rocoray.serve")

MAX_ONGOING = 64  # requests a replica accepts at once (the rest wait in the proxy)


@dataclass
class ServeConfig:
    two_tower: str = opt(None, "the two-tower checkpoint or training run (first stage)",
                         required=True)
    fusion: str | None = opt(None, "the fusion checkpoint or run (rerank and explanations)")
    data: str | None = opt(None, "ROCOv2 data of the gallery (default: the checkpoint's)")
    split: str = opt("test", "split of --data that is the gallery")
    max_items: int | None = opt(None, "only the first N rows of the split")
    evaluation: str | None = opt(None, "an evaluation run whose validation choice of rerank "
                                 "k and alpha to use (its metrics.json)")
    rerank_k: int | None = opt(None, "rerank candidates (default: --evaluation's, else 32)")
    alpha: float | None = opt(None, "rerank: fusion logit + alpha x cosine (default: "
                              "--evaluation's, else 0)")
    host: str = opt("127.0.0.1", "address the HTTP proxy binds to")
    port: int = opt(8000, "HTTP port")
    replicas: int = opt(1, "Serve replicas of the search deployment")
    cpus_per_replica: float = opt(1.0, "CPUs each replica reserves")
    cache: str = opt("runs/serve/cache", "encoded galleries (a scoring run's cache is reused "
                     "when its key matches)")
    actors: int = opt(2, "actors of the encoding stage")
    cpus_per_actor: float = opt(0.5, "CPUs per encoding actor")
    address: str | None = opt(None, "Ray cluster address (default: RAY_ADDRESS, else a local Ray)")


def rerank_choice(cfg: ServeConfig) -> tuple[ScoringSettings, str]:
    """(the scoring settings, where rerank's k and alpha come from): the flags, else
    --evaluation's validation choice, else the scoring defaults."""
    chosen = {}
    if cfg.evaluation:
        if not storage.exists(cfg.evaluation, "metrics.json"):
            raise UserError(f"--evaluation {cfg.evaluation}: no metrics.json there")
        chosen = storage.read_json(cfg.evaluation, "metrics.json").get("rerank_selection") or {}
        if not chosen:
            raise UserError(f"--evaluation {cfg.evaluation}: its metrics.json holds no "
                            "rerank_selection (evaluate with --select-rerank)")
    defaults = ScoringSettings()
    settings = defaults.replace(  # checked on construction: --rerank-k 0 is one clear line
        rerank_k=int(cfg.rerank_k if cfg.rerank_k is not None else chosen.get("k", defaults.rerank_k)),
        alpha=float(cfg.alpha if cfg.alpha is not None else chosen.get("alpha", defaults.alpha)))
    source = ("flags" if cfg.rerank_k is not None and cfg.alpha is not None else
              f"chosen on {chosen.get('split', 'validation')} by {cfg.evaluation}" if chosen
              else "defaults (not chosen on validation: pass --evaluation)")
    return settings, source


def prepare(cfg: ServeConfig):
    """Validate everything before Ray starts: the checkpoints' kinds, the data, the split's
    rows against rerank k, the port. Returns the scoring job it encodes with."""
    from ray_jobs.score import ScoreConfig, prepare as prepare_scoring

    if not 0 < cfg.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {cfg.port}")
    if cfg.replicas < 1:
        raise UserError(f"--replicas must be at least 1, got {cfg.replicas}")
    settings, source = rerank_choice(cfg)
    common = dict(data=cfg.data, split=cfg.split, max_items=cfg.max_items,
                  actors=cfg.actors, cpus_per_actor=cfg.cpus_per_actor, cache=cfg.cache,
                  out="runs/serve", address=cfg.address)
    if cfg.fusion:  # the gallery holds at least rerank k items
        job = prepare_scoring(ScoreConfig(model=Method.RERANK, checkpoint=cfg.fusion,
                                          retriever=cfg.two_tower,
                                          scoring=settings.replace(k=1), **common))
    else:
        job = prepare_scoring(ScoreConfig(model=Method.TWO_TOWER, checkpoint=cfg.two_tower,
                                          scoring=settings.replace(k=1), **common))
    return job, (settings.capped(job.rows), source)


def encode_galleries(job) -> dict:
    """Encode (or reuse) each model's gallery with the Ray Data stage: the replicas' spec."""
    from ray_jobs.gallery import encode
    from ray_jobs.score_methods import tile_side

    spec = {"data": job.cfg.data, "split": job.cfg.split, "max_items": job.cfg.max_items,
            "checkpoints": dict(job.checkpoints), "features": {}}
    for kind in job.checkpoints:
        gallery = encode(job, kind, tile_side(job, kind)[0])
        spec["features"][kind] = {"root": gallery.store.root, "blocks": gallery.meta["blocks"]}
    return spec


def load_index(spec: dict) -> CaseIndex:
    """What a replica holds: the models, their gallery features (read from the feature
    store), the cases (captions, concepts, thumbnails)."""
    t0 = time.perf_counter()
    features, loaded, ids = {}, {}, {}
    for kind, where in spec["features"].items():
        store = FeatureStore(where["root"], MODELS[kind].feature_types)
        features[kind] = {side: store.read_all(side, where["blocks"]) for side in ("text", "image")}
        loaded[kind] = load_checkpoint(spec["checkpoints"][kind], expected_kind=kind)
        ids[kind] = [str(i) for i in outputs.read_gallery(where["root"]).column("image_id").to_pylist()]
    if ModelKind.FUSION in ids and ids[ModelKind.FUSION] != ids[ModelKind.TWO_TOWER]:
        # rerank indexes the fusion features by the two-tower candidates' rows
        raise ValueError("the fusion and two-tower galleries hold different rows")
    cases = read_cases(resolve_split(spec["data"], spec["split"]), ids[ModelKind.TWO_TOWER])
    index = CaseIndex(loaded[ModelKind.TWO_TOWER], features[ModelKind.TWO_TOWER], cases,
                      reranker=loaded.get(ModelKind.FUSION),
                      fusion_gallery=features.get(ModelKind.FUSION), scoring=spec["scoring"])
    log.info("case index: %d cases, rerank %s, loaded in %.1fs", len(index),
             "on" if index.reranker is not None else "off", time.perf_counter() - t0)
    return index


# --- the HTTP application --------------------------------------------------------------------

def page() -> str:
    return resources.files("core.search").joinpath("page.html").read_text()


def build_api():
    """The FastAPI app (routes bound to a replica's index by ``CaseSearch``)."""
    api = FastAPI(title="rocoray case search", version="1",
                  description="Text -> images and image -> cases over a trained rocoray "
                              "two-tower model, with an optional fusion rerank.")

    @api.exception_handler(SearchError)
    async def search_error(_request, exc: SearchError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @api.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = list(first.get("loc", ()))
        where = ".".join(str(p) for p in (loc[1:] if loc[:1] in (["body"], ["query"]) else loc))
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get(
            "msg", "invalid request")
        return JSONResponse({"error": message}, status_code=422)

    @api.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    api.add_middleware(BoundedBody)
    return api


class _BodyTooLarge(Exception):
    pass


class BoundedBody:
    """ASGI middleware: every route's request body is bounded WHILE it is read
    (``core.search.limits.body_limit``): a Content-Length over the limit is refused at once,
    and a chunked body as soon as it passes it, before anything buffers it whole (a 20 MB
    chunked JSON body was read entirely before the text route's length check)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit(scope.get("path", ""))
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_large = JSONResponse({"error": f"the request body is over this route's limit: "
                                           f"the limit is {limit} bytes"}, status_code=413)
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await too_large(scope, receive, send)
        received, refused = 0, False

        async def bounded():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not refused:
                    # answer 413 now; FastAPI turns any error while it reads a body into its
                    # own 400, which the guarded send below then drops
                    refused = True
                    await too_large(scope, receive, send)
                    raise _BodyTooLarge
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        try:
            await self.app(scope, bounded, guarded_send)
        except _BodyTooLarge:
            pass


async def read_body(request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes (also when it
    comes chunked, without a Content-Length)."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise SearchError(413, f"the request body passes the limit of {limit} bytes")
    return bytes(data)


class TextQuery(BaseModel):
    query: str = Field(description=f"caption-like text, at most {LIMITS.max_query_chars} "
                                   "characters")
    k: int = Field(10, description="hits to return (1..min(gallery, max_k))")
    rerank: bool = Field(False, description="re-score the first stage's candidates with the "
                                            "fusion model")


class HitModel(BaseModel):
    rank: int
    image_id: str
    score: float
    first_stage_score: float
    caption: str
    concepts: list[str]
    thumbnail: str = Field(description="the case's thumbnail: GET this path (JPEG)")


def with_thumbnails(result: dict) -> dict:
    """Each hit with the path of its thumbnail (addressed by gallery id only)."""
    for hit in result["hits"]:
        hit["thumbnail"] = f"/api/cases/{quote(hit['image_id'], safe='')}/thumbnail"
    return result


class SearchResponse(BaseModel):
    hits: list[HitModel]
    reranked: bool
    rerank_k: int | None
    alpha: float | None
    took_ms: float


def deployment():
    """The Serve deployment class (built on first use)."""
    from ray import serve

    api = build_api()

    @serve.deployment(name="CaseSearch")
    @serve.ingress(api)
    class CaseSearch:
        def __init__(self, spec: dict):
            import torch

            # one replica = its reserved CPUs: concurrent requests share them, not oversubscribe
            torch.set_num_threads(max(1, int(spec.get("cpus", 1))))
            self.index = load_index(spec)
            self.page = page()

        @api.get("/", response_class=HTMLResponse, include_in_schema=False)
        def home(self):
            return self.page

        @api.get("/api/info")
        def info(self) -> dict:
            return self.index.info()

        @api.post("/api/search/text", response_model=SearchResponse)
        def search_text(self, body: TextQuery):
            return with_thumbnails(self.index.search_text(body.query, body.k, body.rerank))

        @api.post("/api/search/image", response_model=SearchResponse)
        async def search_image(self, request: Request, k: int = Query(10), rerank: bool = False):
            data = await read_body(request, LIMITS.max_upload_bytes)
            image = await run_in_threadpool(check_image, data)
            return with_thumbnails(await run_in_threadpool(self.index.search_image, image, k,
                                                           rerank))

        @api.get("/api/cases/{image_id}/thumbnail", response_class=Response)
        def thumbnail(self, image_id: str):
            return Response(self.index.thumbnail(image_id), media_type="image/jpeg")

        @api.get("/api/cases/{image_id}/explain", response_class=Response)
        def explain(self, image_id: str, caption: str | None = None):
            out = self.index.explain(image_id, caption)
            return Response(out["png"], media_type="image/png",
                            headers={"X-Score": f"{out['score']:.4f}", "X-Model": out["model"]})

    return CaseSearch


def application(cfg: ServeConfig):
    """The bound Serve application: galleries encoded (or reused) first."""
    job, (settings, source) = prepare(cfg)
    init_ray(cfg.address)
    spec = encode_galleries(job) | {"scoring": settings, "cpus": cfg.cpus_per_replica}
    log.info("rerank: k=%d alpha=%g (%s)", settings.rerank_k, settings.alpha, source)
    # Requests wait in the replica's queue rather than in the router: past Serve's default of 5
    # ongoing requests the router backs off and retries, and throughput falls (measured: 44
    # req/s at 8 clients, 12 at 32 with the default, by bench.serve_latency.load on 2 CPUs).
    return deployment().options(num_replicas=cfg.replicas, max_ongoing_requests=MAX_ONGOING,
                                ray_actor_options={"num_cpus": cfg.cpus_per_replica}).bind(spec)


def app_builder(args: dict):
    """``serve run ray_jobs.serve:app_builder two_tower=RUN [fusion=RUN] [data=DIR] ...``:
    the same application for ``serve run`` / ``serve deploy`` (HTTP options come from Serve's
    own config there)."""
    argv = [part for name, value in args.items()
            for part in (f"--{name.replace('_', '-')}", str(value))]
    return application(parse(ServeConfig, argv, "serve run ray_jobs.serve:app_builder", __doc__))


def start(cfg: ServeConfig) -> str:
    """Start Serve's HTTP proxy on --host/--port and the application; the base URL."""
    app = application(cfg)
    from ray import serve

    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(app, name="rocoray-search", route_prefix="/")
    url = f"http://{cfg.host}:{cfg.port}"
    log.info("case search: %s (page) and %s/docs (API); Ctrl-C stops it", url, url)
    return url


def main(argv=None) -> None:
    cfg = parse(ServeConfig, argv, "rocoray serve", __doc__)
    setup_logging()
    run_cli("rocoray serve", lambda: start(cfg))
    from ray import serve

    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        serve.shutdown()
