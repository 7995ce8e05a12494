"""The HTTP service (FastAPI): retrieval endpoints over the active bundle version.

    app = create_app(settings, recommender)    # or `recindex serve BUNDLE`

Errors a client can cause answer 4xx with a message (`InvalidRequest` -> 422); nothing a client sends
should produce a 500.
"""

from __future__ import annotations

import hmac
import math
import random
import time

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recindex.errors import InvalidRequest, RecIndexError
from recindex.serve.items import ItemChange, ItemWriter
from recindex.serve.metrics import ServiceMetrics
from recindex.serve.recommender import Recommender, online_recall
from recindex.serve.registry import BundleRegistry, PromotionRefused
from recindex.serve.schemas import (
    DeleteRequest,
    RecommendRequest,
    RecommendResponse,
    ScoredItem,
    StageRequest,
    UpsertRequest,
    WriteResponse,
)
from recindex.serve.settings import ServiceSettings


def create_app(
    settings: ServiceSettings,
    recommender: Recommender | None,
    writer: ItemWriter | None = None,
    registry: BundleRegistry | None = None,
) -> FastAPI:
    app = FastAPI(title="recindex", version="1", summary="Retrieval for recommender systems.")
    app.state.recommender = recommender
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

    def require_key(x_api_key: str | None = Header(None)) -> None:
        """Write endpoints need one of the configured keys; with none configured, writes are closed."""
        if not settings.api_keys:
            raise HTTPException(403, "writes are disabled: no API keys are configured (RECINDEX_API_KEYS)")
        given = (x_api_key or "").encode()
        # compare_digest against every key (no early exit), so timing says nothing about which matched
        if not any([hmac.compare_digest(given, key.encode()) for key in settings.api_keys]):
            raise HTTPException(401, "a valid X-API-Key header is required")

    @app.middleware("http")
    async def limit_body_and_time(request: Request, call_next):
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            response = JSONResponse({"detail": f"body over {settings.max_body_bytes} bytes"}, status_code=413)
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")  # the route template, so labels stay few
        metrics.request_seconds.labels(endpoint, f"{response.status_code // 100}xx").observe(
            time.perf_counter() - started
        )
        return response

    @app.exception_handler(PromotionRefused)
    async def refused(_request: Request, error: PromotionRefused):
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(RecIndexError)
    async def bad_artifact(_request: Request, error: RecIndexError):  # e.g. a staged bundle is corrupt
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(InvalidRequest)
    async def invalid_request(_request: Request, error: InvalidRequest):
        return JSONResponse({"detail": str(error)}, status_code=422)

    def require_read_key(x_api_key: str | None = Header(None)) -> None:
        """Read endpoints are open unless `open_reads` is false; then they need a key like writes."""
        if not settings.open_reads:
            require_key(x_api_key)

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus_metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> dict:
        version = app.state.recommender.active
        return {"status": "ready", "bundle_id": version.bundle_id, "items": len(version.index)}

    @app.post("/v1/recommend", response_model=RecommendResponse, dependencies=[Depends(require_read_key)])
    def recommend(body: RecommendRequest) -> RecommendResponse:
        if body.k > settings.max_k:
            raise InvalidRequest(f"k={body.k} is above this service's limit of {settings.max_k}")
        if body.vector is not None and not all(math.isfinite(x) for x in body.vector):
            raise InvalidRequest("vector must hold finite numbers")
        flt = body.filter.model_dump(exclude_none=True) if body.filter else None
        version = app.state.recommender.active  # read once: encoder, index and ids all come from it
        k = min(body.k, len(version.index))
        answer = app.state.recommender.recommend(
            user_id=body.user_id,
            recent_items=body.recent_items,
            vector=body.vector,
            k=k,
            filter=flt or None,
            exclude_seen=body.exclude_seen,
            version=version,
        )
        items = [
            ScoredItem(item_id=version.raw_item_id(int(i)), score=float(s))
            for i, s in zip(answer.ids, answer.scores, strict=True)
        ]
        if answer.fallback is not None:
            metrics.fallbacks.labels(answer.fallback).inc()
        elif flt is None and sampler.random() < settings.recall_sample_rate:
            recall = online_recall(version, answer)
            if recall is not None:
                metrics.online_recall.observe(recall)
        return RecommendResponse(items=items, bundle_id=answer.bundle_id, fallback=answer.fallback)

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

    return app


def _registry(app: FastAPI) -> BundleRegistry:
    if app.state.registry is None:
        raise HTTPException(503, "this service was started without bundle management")
    return app.state.registry


def openapi_schema() -> dict:
    """The API's OpenAPI document (docs/openapi.json is this, committed; a test keeps them equal)."""
    return create_app(ServiceSettings(), recommender=None).openapi()  # routes only: nothing is served


def _writer(app: FastAPI) -> ItemWriter:
    if app.state.writer is None:
        raise HTTPException(503, "this service was started without a write-ahead log; it is read-only")
    return app.state.writer
