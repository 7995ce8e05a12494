"""The HTTP service (FastAPI): retrieval endpoints over the active bundle version.

    app = create_app(settings, recommender)    # or `recindex serve BUNDLE`

Errors a client can cause answer 4xx with a message (`InvalidRequest` -> 422); nothing a client sends
should produce a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import pathlib
import random
import time
from functools import partial

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recindex.errors import InvalidRequest, RecIndexError
from recindex.pipelines.recommend import find_user
from recindex.serve.attributes import attribute_summary
from recindex.serve.batching import Overloaded, RequestBatcher
from recindex.serve.fast_path import RecommendFastPath
from recindex.serve.items import ItemChange, ItemWriter
from recindex.serve.metrics import ServiceMetrics
from recindex.serve.middleware import LimitAndMeasure
from recindex.serve.monitor import RecallMonitor
from recindex.serve.recommender import Recommender, RecommendQuery
from recindex.serve.registry import BundleRegistry, PromotionRefused, version_row
from recindex.serve.schemas import (
    AttributesPage,
    DeleteRequest,
    DescribedItem,
    RecommendRequest,
    RecommendResponse,
    SimilarItemsRequest,
    StageRequest,
    UpsertRequest,
    UserHistory,
    UserPage,
    WriteResponse,
)
from recindex.serve.settings import ServiceSettings
from recindex.serve.snapshots import Compactor

MAX_HISTORY_SHOWN = 200
WEB_PAGE = pathlib.Path(__file__).with_name("web") / "index.html"


def create_app(
    settings: ServiceSettings,
    recommender: Recommender | None,
    writer: ItemWriter | None = None,
    registry: BundleRegistry | None = None,
    *,
    compactor: Compactor | None = None,
    lifespan=None,
) -> FastAPI:
    # FastAPIOffline: FastAPI whose /docs and /redoc load Swagger UI and ReDoc from files the
    # fastapi-offline package ships, served by this app, rather than from a CDN (blank offline)
    app = FastAPIOffline(
        title="recindex", version="1", summary="Retrieval for recommender systems.", lifespan=lifespan
    )
    app.state.recommender = recommender
    app.state.compactor = compactor
    app.state.writer = writer
    app.state.registry = registry
    app.state.settings = settings
    metrics = app.state.metrics = ServiceMetrics(
        lambda: float(len(app.state.recommender.active.index)),
        lambda: (
            float(sum(h["action"] != "staged" for h in registry.history)) if registry is not None else 0.0
        ),
    )
    sampler = random.Random(0)
    recall_monitor = app.state.recall_monitor = RecallMonitor(
        metrics.online_recall.observe, settings.recall_checks_per_second
    )

    # Read endpoints and the key checks are `async def`: their work is short and CPU-bound, and running
    # it on the event loop saves the hop to a worker thread and back, which costs more than an HNSW
    # search; searches that wait on a server (index.waits_on_server) go to a worker thread instead.
    # Writes (an fsync each) and admin calls (loading bundles) stay in worker threads.
    async def require_key(x_api_key: str | None = Header(None)) -> None:
        """Write endpoints need one of the configured keys; with none configured, writes are closed."""
        if not settings.api_keys:
            raise HTTPException(403, "writes are disabled: no API keys are configured (RECINDEX_API_KEYS)")
        given = (x_api_key or "").encode()
        # compare_digest against every key (no early exit), so timing says nothing about which matched
        if not any([hmac.compare_digest(given, key.encode()) for key in settings.api_keys]):
            raise HTTPException(401, "a valid X-API-Key header is required")

    def observe(endpoint: str, status: int, seconds: float) -> None:
        # endpoint: the route template, so labels stay few
        metrics.request_seconds.labels(endpoint, f"{status // 100}xx").observe(seconds)

    # Added first, so it runs inside LimitAndMeasure (body bound, latency histogram): well-formed recommend
    # requests skip FastAPI's per-request machinery for the same endpoint function (serve.fast_path).
    app.add_middleware(
        RecommendFastPath,
        endpoint=lambda body: recommend(body),
        owner=app,
        enabled=lambda: settings.open_reads,
    )
    app.add_middleware(LimitAndMeasure, max_body_bytes=settings.max_body_bytes, observe=observe)

    batcher = None
    if settings.batch_window_ms > 0:  # coalesce concurrent recommend requests (serve.batching)
        batcher = app.state.batcher = RequestBatcher(
            lambda queries: app.state.recommender.answer(queries),
            window_s=settings.batch_window_ms / 1000,
            max_batch=settings.batch_max_size,
            max_queue=settings.batch_queue_limit,
            timeout_s=settings.batch_timeout_ms / 1000,
            observe_batch=metrics.batch_size.observe,
            observe_refusal=lambda reason: metrics.batch_refusals.labels(reason).inc(),
            in_thread=lambda: app.state.recommender.active.index.waits_on_server,
        )

    @app.exception_handler(Overloaded)
    async def overloaded(_request: Request, error: Overloaded):
        return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(PromotionRefused)
    async def refused(_request: Request, error: PromotionRefused):
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(RecIndexError)
    async def bad_artifact(_request: Request, error: RecIndexError):  # e.g. a staged bundle is corrupt
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(InvalidRequest)
    async def invalid_request(_request: Request, error: InvalidRequest):
        return JSONResponse({"detail": str(error)}, status_code=422)

    async def require_read_key(x_api_key: str | None = Header(None)) -> None:
        """Read endpoints are open unless `open_reads` is false; then they need a key like writes."""
        if not settings.open_reads:
            await require_key(x_api_key)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def web_page() -> HTMLResponse:
        """A page for people: pick a user, see history and results; and the index's versions."""
        return HTMLResponse(WEB_PAGE.read_text(encoding="utf-8"))

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus_metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict:
        version = app.state.recommender.active
        collection = getattr(version.index, "collection", None)
        return {
            "status": "ready",
            "bundle_id": version.bundle_id,
            "collection": collection,
            "items": len(version.index),
        }

    @app.post("/v1/recommend", response_model=RecommendResponse, dependencies=[Depends(require_read_key)])
    async def recommend(body: RecommendRequest) -> Response:
        started = time.perf_counter()
        if body.k > settings.max_k:
            raise InvalidRequest(f"k={body.k} is above this service's limit of {settings.max_k}")
        if body.vector is not None and not all(math.isfinite(x) for x in body.vector):
            raise InvalidRequest("vector must hold finite numbers")
        flt = body.filter.model_dump(exclude_none=True) if body.filter else None
        query = RecommendQuery(
            body.user_id, body.recent_items, body.vector, body.k, flt or None, body.exclude_seen
        )
        # One version answers the whole request (and the whole batch it joins): encoder, index and ids.
        if batcher is None:
            answer_now = app.state.recommender.answer
            if app.state.recommender.active.index.waits_on_server:  # a server's wait, not CPU work
                version, (answer,) = await asyncio.to_thread(answer_now, [query])
            else:
                version, (answer,) = answer_now([query])
            if isinstance(answer, Exception):
                raise answer
        else:
            version, answer = await batcher.submit(query)
        if answer.fallback is not None:
            metrics.fallbacks.labels(answer.fallback).inc()
        elif flt is None and sampler.random() < settings.recall_sample_rate:
            recall_monitor.submit(version, answer)
        return _response(version, answer, body.describe, started)

    @app.post("/v1/similar-items", response_model=RecommendResponse, dependencies=[Depends(require_read_key)])
    async def similar_items(body: SimilarItemsRequest) -> Response:
        started = time.perf_counter()
        if body.k > settings.max_k:
            raise InvalidRequest(f"k={body.k} is above this service's limit of {settings.max_k}")
        flt = body.filter.model_dump(exclude_none=True) if body.filter else None
        version = app.state.recommender.active
        similar = partial(
            app.state.recommender.similar,
            body.item_ids,
            k=min(body.k, len(version.index)),
            filter=flt or None,
            exclude_triggers=body.exclude_triggers,
            version=version,
        )
        answer = await asyncio.to_thread(similar) if version.index.waits_on_server else similar()
        if answer.fallback is not None:
            metrics.fallbacks.labels(answer.fallback).inc()
        return _response(version, answer, body.describe, started)

    @app.get("/v1/users", response_model=UserPage, dependencies=[Depends(require_read_key)])
    async def list_users(offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=1000)) -> UserPage:
        """Users of the active bundle, with their history lengths (for browsing and the web page)."""
        data = app.state.recommender.active.bundle.data
        lengths = np.diff(data.offsets[offset : offset + limit + 1])
        rows = [
            {"user_id": str(data.user_ids[offset + i]), "history": int(length)}
            for i, length in enumerate(lengths.tolist())
        ]
        return UserPage(users=rows, total=data.n_users)

    @app.get("/v1/users/{user_id}", response_model=UserHistory, dependencies=[Depends(require_read_key)])
    async def user_history(user_id: str = Path(max_length=256)) -> UserHistory:
        version = app.state.recommender.active
        try:
            user = find_user(version.bundle.data, user_id)
        except RecIndexError as error:
            raise HTTPException(404, str(error)) from None
        history = version.bundle.data.sequence(user)[-MAX_HISTORY_SHOWN:]
        items = [
            DescribedItem(item_id=version.raw_item_id(int(i)), about=version.describe(int(i)))
            for i in history
        ]
        return UserHistory(user_id=user_id, bundle_id=version.bundle_id, history=items)

    @app.get("/v1/attributes", response_model=AttributesPage, dependencies=[Depends(require_read_key)])
    async def attributes() -> AttributesPage:
        """What the active version's items can be filtered on: names, kinds and sample values."""
        version = app.state.recommender.active
        return AttributesPage(bundle_id=version.bundle_id, attributes=attribute_summary(version))

    @app.get("/v1/status", dependencies=[Depends(require_read_key)])
    async def status() -> dict:
        """The active bundle, the versions held, and the swap history (no server paths)."""
        version = app.state.recommender.active
        registry = app.state.registry
        rows = registry.describe() if registry is not None else [version_row(version, "active")]
        return {
            "active": {
                "bundle_id": version.bundle_id,
                "items": len(version.index),
                "items_added": len(version.new_items),
                "index": version.source.get("index") or "exact",
                "dim": version.index.dim,
                "metric": version.index.metric,
                "created": version.bundle.manifest.get("created"),
            },
            "versions": [{key: row[key] for key in ("bundle_id", "state", "items", "index")} for row in rows],
            "history": registry.history if registry is not None else [],
        }

    @app.put("/v1/items", response_model=WriteResponse, dependencies=[Depends(require_key)])
    def upsert_items(body: UpsertRequest) -> WriteResponse:
        started = time.perf_counter()
        changes = [ItemChange(i.item_id, i.features, i.vector, i.attributes) for i in body.items]
        sequence = _writer(app).upsert(changes)
        metrics.upsert_seconds.observe(time.perf_counter() - started)  # durable and searchable by now
        return WriteResponse(sequence=sequence, items=len(changes))

    @app.delete("/v1/items", response_model=WriteResponse, dependencies=[Depends(require_key)])
    def delete_items(body: DeleteRequest) -> WriteResponse:
        sequence, removed = _writer(app).delete(body.item_ids)
        return WriteResponse(sequence=sequence, items=removed)

    @app.get("/v1/admin/bundles", dependencies=[Depends(require_key)])
    def list_bundles() -> dict:
        registry = _registry(app)
        return {"bundles": registry.describe(), "history": registry.history}

    @app.post("/v1/admin/bundles", dependencies=[Depends(require_key)])
    def stage_bundle(body: StageRequest) -> dict:
        version = _registry(app).stage(body.bundle, body.index)
        return {"bundle_id": version.bundle_id, "state": "staged", "items": len(version.index)}

    @app.post("/v1/admin/bundles/{bundle_id}/promote", dependencies=[Depends(require_key)])
    def promote_bundle(bundle_id: str) -> dict:
        return _registry(app).promote(bundle_id)

    @app.post("/v1/admin/rollback", dependencies=[Depends(require_key)])
    def rollback() -> dict:
        return _registry(app).rollback()

    @app.post("/v1/admin/compact", dependencies=[Depends(require_key)])
    def compact_now() -> dict:
        """Fold the write-ahead log into a snapshot now (it also happens every `compact_every` changes)."""
        if app.state.compactor is None:
            raise HTTPException(503, "this service was started without a write-ahead log to compact")
        return app.state.compactor.run_once()

    @app.post("/v1/admin/rebuild", dependencies=[Depends(require_key)])
    def rebuild_index() -> dict:
        """Rebalance the active index where its backend can (MFLI: every item coded again, leaves split
        and merged within bounds; ids unchanged). Writes wait while it runs, and so do searches (for
        1M items about 5 s on two cores); the new layout is saved by the next compaction."""
        writer = _writer(app)
        with writer.lock:
            index = writer.version.index
            if not index.capabilities.rebuild:
                raise HTTPException(409, f"the active index ({index.backend}) has nothing to rebalance")
            started = time.perf_counter()
            report = index.rebuild()
            return {
                "rebuilt": True,
                "items": len(index),
                "seconds": round(time.perf_counter() - started, 3),
                **report,
            }

    return app


def _response(version, answer, describe: bool, started: float) -> Response:
    """The answer as JSON in the RecommendResponse shape, written directly: it is on every request's
    path, and building and re-validating a model per item costs more than the index search does
    (orjson: a quarter of the json module's time for 100 items; numbers and strings come out the same
    but for how exponents are written, 1e-05 there and 1e-5 here, which JSON reads alike)."""
    raw_ids = version.raw_item_ids(answer.ids)
    scores = answer.scores.tolist()
    if describe:
        ids = answer.ids.tolist()
        items = [
            {"item_id": raw, "score": score, "about": version.describe(i)}
            for i, raw, score in zip(ids, raw_ids, scores, strict=True)
        ]
    else:
        items = [
            {"item_id": raw, "score": score, "about": None}
            for raw, score in zip(raw_ids, scores, strict=True)
        ]
    body = {
        "items": items,
        "bundle_id": answer.bundle_id,
        "collection": getattr(version.index, "collection", None),
        "fallback": answer.fallback,
        "took_ms": (time.perf_counter() - started) * 1000,
    }
    return Response(orjson.dumps(body), media_type="application/json")


def _registry(app: FastAPI) -> BundleRegistry:
    if app.state.registry is None:
        raise HTTPException(
            503, "this service has no bundle management (it is read-only: read_only = true)"
        )
    return app.state.registry


def openapi_schema() -> dict:
    """The API's OpenAPI document (docs/openapi.json is this, committed; a test keeps them equal)."""
    return create_app(ServiceSettings(), recommender=None).openapi()  # routes only: nothing is served


def _writer(app: FastAPI) -> ItemWriter:
    if app.state.writer is None:
        raise HTTPException(
            503, "this service is read-only (read_only = true): it follows the log that others write"
        )
    return app.state.writer
