"""``flawmap serve``: the HTTP API and web page over an :class:`~flawmap.serve.service.Inspector`.

FastAPI on uvicorn. Around the routes, in order: the request-size limit (413 before a body larger
than ``max_upload_bytes`` is read), bearer-token authentication (401), and Prometheus metrics.
Uploads are decoded on two reader threads and scored on one scoring thread (a model uses all
intra-op threads), behind a bounded admission count: a predict request that finds
``queue_size`` requests already admitted gets 503 with ``Retry-After`` instead of waiting in
memory; an unreadable upload is refused by a reader without waiting for the scorer.
Every error is JSON ``{"error": code, "message": text}``.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import flawmap
from flawmap.errors import ConfigError, DataError
from flawmap.serve.service import Inspector, ServeConfig, Upload
from flawmap.serve.store import VERDICTS

__all__ = ["ApiError", "create_app"]

#: Paths anyone may read: the page shell and its assets, the API description (no data in any).
_PUBLIC = ("/", "/docs", "/openapi.json", "/v1/info", "/favicon.ico")
_PUBLIC_PREFIXES = ("/static/", "/docs-assets/")
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ApiError(Exception):
    """An error answered as JSON ``{"error": code, "message": message}`` with ``status``."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None):
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


class _BodyTooLarge(Exception):
    pass


class _BodyLimit:
    """Pure ASGI middleware: refuse a request body above ``limit`` bytes with 413, from its
    Content-Length before reading, or while reading a body of unknown length."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = (
            f"the request body is larger than the service's limit of {self.limit} bytes "
            f"({self.limit / 2**20:.1f} MiB): send fewer or smaller images"
        )
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _error(413, "too_large", message)(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _error(413, "too_large", message)(scope, receive, send)


class _Guard:
    """Pure ASGI middleware, outermost: bearer-token check (401 for every path but the public
    ones) and the request metrics (count, latency, errors by route template and status)."""

    def __init__(self, app: ASGIApp, token: str | None, metrics: _Metrics) -> None:
        self.app, self.token, self.metrics = app, token, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        path = scope.get("path", "")
        public = path in _PUBLIC or path.startswith(_PUBLIC_PREFIXES)

        async def tracking_send(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        try:
            if self.token is not None and not public and not _authorised(scope, self.token):
                await _error(
                    401,
                    "unauthorized",
                    "this service needs its token: send the header 'Authorization: Bearer <token>'",
                    {"WWW-Authenticate": "Bearer"},
                )(scope, receive, tracking_send)
            else:
                await self.app(scope, receive, tracking_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope.get("method", ""), route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
            if status >= 400:
                self.metrics.errors.labels(route, str(status)).inc()


class ThresholdBody(BaseModel):
    threshold: float = Field(description="the new image-score threshold (a finite number)")


class ReviewBody(BaseModel):
    verdict: Literal["good", "defective"] = Field(description="what the image really is")


class _Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "flawmap_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flawmap_request_seconds",
            "Request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "flawmap_errors",
            "Requests answered with an error",
            ["route", "status"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "flawmap_decisions",
            "Images scored, by model and label",
            ["model", "label"],
            registry=self.registry,
        )
        self.images = Histogram(
            "flawmap_image_seconds",
            "Scoring time per image (excluding queueing)",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.admitted = Gauge(
            "flawmap_predict_admitted",
            "Predict requests running or waiting",
            registry=self.registry,
        )
        self.rejected = Counter(
            "flawmap_predict_rejected",
            "Predict requests refused because the queue was full",
            registry=self.registry,
        )


def create_app(config: ServeConfig) -> FastAPI:
    """The service's ASGI app; loads (and warms up) the models before returning.

    Raises:
        ConfigError/DataError: a model or the data folder cannot be used.
    """
    inspector = Inspector(config)
    if config.warm_up:
        inspector.warm_up()
    metrics = _Metrics()
    scorer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flawmap-score")
    readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="flawmap-read")
    state: dict[str, Any] = {"admitted": 0, "seconds_per_request": 0.5}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        for pool in (readers, scorer):
            pool.shutdown(wait=True, cancel_futures=True)
        inspector.store.close()

    app = FastAPI(
        title="flawmap inspection service",
        version=flawmap.__version__,
        description=(
            "Score images with flawmap anomaly-detection models, review the decisions and set "
            "thresholds. With a token file, send `Authorization: Bearer <token>` on every call."
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.inspector = inspector

    # ---------------------------------------------------------------- errors as JSON
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = "no such endpoint or resource (see /docs for the API)"
        return _error(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        what = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        return _error(
            500, "internal_error", f"internal error in flawmap ({what}); please report it"
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return _error(422, "invalid_request", f"the request is not valid: {problems}")

    # ---------------------------------------------------------------- auth, limits, metrics
    app.add_middleware(_BodyLimit, limit=config.max_upload_bytes)
    app.add_middleware(_Guard, token=config.token, metrics=metrics)

    def model_or_404(name: str) -> str:
        if name not in inspector.models:
            raise ApiError(
                404,
                "unknown_model",
                f"no model named {name!r}; served models: {sorted(inspector.models)}",
            )
        return name

    # ---------------------------------------------------------------- service
    @app.get("/health", tags=["service"], summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["service"], summary="Readiness: models loaded and warmed up")
    async def ready() -> dict[str, Any]:
        return {"ready": True, "models": sorted(inspector.models)}

    @app.get(
        "/metrics", tags=["service"], summary="Prometheus metrics", response_class=PlainTextResponse
    )
    async def prometheus() -> Response:
        metrics.admitted.set(state["admitted"])
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/info", tags=["service"], summary="Version and whether a token is needed")
    async def info(request: Request) -> dict[str, Any]:
        allowed = config.token is None or _authorised(request, config.token)
        return {
            "auth": config.token is not None,
            "version": flawmap.__version__,
            "models": sorted(inspector.models) if allowed else [],
        }

    # ---------------------------------------------------------------- models
    @app.get("/v1/models", tags=["models"], summary="The served models' cards")
    async def list_models() -> dict[str, Any]:
        return {"models": [inspector.card(n) for n in inspector.models]}

    @app.get("/v1/models/{name}", tags=["models"], summary="One model's card")
    async def model_card(name: str) -> dict[str, Any]:
        return inspector.card(model_or_404(name))

    @app.post(
        "/v1/models/{name}/threshold",
        tags=["models"],
        summary="Save the threshold the service labels with (recorded with old/new/time)",
    )
    async def save_threshold(name: str, body: ThresholdBody) -> dict[str, Any]:
        model_or_404(name)
        try:
            return inspector.save_threshold(name, body.threshold)
        except ConfigError as exc:
            raise ApiError(422, "invalid_threshold", str(exc)) from None

    @app.get(
        "/v1/models/{name}/threshold-history",
        tags=["models"],
        summary="Every threshold saved for the model",
    )
    async def threshold_history(name: str) -> dict[str, Any]:
        return {"changes": inspector.store.threshold_history(model_or_404(name))}

    @app.post(
        "/v1/models/{name}/predict",
        tags=["predict"],
        summary="Score one or more images (multipart, parts named 'files')",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["files"],
                            "properties": {
                                "files": {
                                    "type": "array",
                                    "items": {"type": "string", "format": "binary"},
                                }
                            },
                        }
                    }
                },
            }
        },
    )
    async def predict(name: str, request: Request) -> dict[str, Any]:
        model_or_404(name)
        if state["admitted"] >= config.queue_size:
            metrics.rejected.inc()
            wait = max(1, math.ceil(state["admitted"] * state["seconds_per_request"]))
            raise ApiError(
                503,
                "busy",
                f"the service is busy ({state['admitted']} requests queued); retry after {wait} s",
                {"Retry-After": str(wait)},
            )
        state["admitted"] += 1
        try:
            uploads = await _read_uploads(request, config.max_files)
            loop = asyncio.get_running_loop()
            start = time.perf_counter()
            try:  # decoding beside the scoring of earlier requests: a bad file never waits
                prepared = await loop.run_in_executor(readers, inspector.prepare, name, uploads)
            except DataError as exc:
                raise ApiError(422, "unreadable_image", str(exc)) from None
            results = await loop.run_in_executor(scorer, inspector.score, prepared)
            seconds = time.perf_counter() - start
            state["seconds_per_request"] = 0.8 * state["seconds_per_request"] + 0.2 * seconds
        finally:
            state["admitted"] -= 1
        for r in results:
            metrics.decisions.labels(name, r.label or "none").inc()
            metrics.images.labels(name).observe(r.latency_ms / 1000.0)
        return {"model": name, "results": [r.to_json() for r in results]}

    # ---------------------------------------------------------------- results
    def result_or_404(result_id: str):
        result = inspector.store.get(result_id)
        if result is None:
            raise ApiError(404, "unknown_result", f"no result with id {result_id!r}")
        return result

    @app.get("/v1/results", tags=["results"], summary="Stored results, newest first")
    async def list_results(
        model: str | None = None,
        label: Literal["good", "defective"] | None = None,
        review: Literal["good", "defective", "none"] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        if not 1 <= limit <= 1000 or offset < 0:
            raise ApiError(422, "invalid_request", "limit must be 1..1000 and offset >= 0")
        total, rows = inspector.store.list(
            model=model, label=label, review=review, limit=limit, offset=offset
        )
        return {"total": total, "results": [r.to_json() for r in rows]}

    @app.get("/v1/results/{result_id}", tags=["results"], summary="One stored result")
    async def get_result(result_id: str) -> dict[str, Any]:
        return result_or_404(result_id).to_json()

    @app.get(
        "/v1/results/{result_id}/overlay.png",
        tags=["results"],
        summary="Heatmap overlay, threshold outlined",
        response_class=Response,
    )
    async def overlay(result_id: str) -> Response:
        result = result_or_404(result_id)
        png = await asyncio.get_running_loop().run_in_executor(None, inspector.overlay_png, result)
        return Response(png, media_type="image/png")

    @app.get(
        "/v1/results/{result_id}/thumbnail.png",
        tags=["results"],
        summary="The image, longer side at most 256 px",
        response_class=Response,
    )
    async def thumbnail(result_id: str) -> Response:
        result = result_or_404(result_id)
        png = await asyncio.get_running_loop().run_in_executor(
            None, inspector.thumbnail_png, result
        )
        return Response(png, media_type="image/png")

    @app.post(
        "/v1/results/{result_id}/review",
        tags=["results"],
        summary=f"Record a reviewer's verdict ({' or '.join(VERDICTS)})",
    )
    async def review(result_id: str, body: ReviewBody) -> dict[str, Any]:
        result = inspector.store.review(result_id, body.verdict)
        if result is None:
            raise ApiError(404, "unknown_result", f"no result with id {result_id!r}")
        return result.to_json()

    @app.get(
        "/v1/export.csv",
        tags=["results"],
        summary="Every result and review as CSV",
        response_class=PlainTextResponse,
    )
    async def export_csv(model: str | None = None) -> Response:
        if model is not None:
            model_or_404(model)
        text = inspector.store.export_csv(config.data_dir, model)
        return Response(
            text,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="flawmap-results.csv"'},
        )

    # ---------------------------------------------------------------- page and docs
    static = resources.files("flawmap.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    swagger = _swagger_assets()
    if swagger is not None:
        app.mount("/docs-assets", StaticFiles(directory=str(swagger)), name="docs-assets")

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if swagger is None:
            return HTMLResponse(
                "<p>The interactive API page needs the <code>swagger-ui-bundle</code> package; "
                "the API description is at <a href='/openapi.json'>/openapi.json</a>.</p>"
            )
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="flawmap inspection service: API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    return app


def _authorised(request_or_scope: Request | Scope, token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (constant-time compare)."""
    if isinstance(request_or_scope, Request):
        header = request_or_scope.headers.get("authorization", "")
    else:
        raw = dict(request_or_scope.get("headers") or []).get(b"authorization", b"")
        header = raw.decode("latin-1")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("latin-1", "replace"), token.encode("latin-1", "replace")
    )


def _swagger_assets() -> Path | None:
    """The folder of Swagger UI's files from the ``swagger-ui-bundle`` package (docs offline)."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


async def _read_uploads(request: Request, max_files: int) -> list[Upload]:
    """The request's multipart parts named ``files`` (422/415/400 when there are none)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the images as multipart/form-data, one part named 'files' per image "
            "(curl -F files=@image.png ...)",
        )
    try:
        form = await request.form(max_files=max_files, max_fields=max_files)
    except MultiPartException as exc:
        raise ApiError(400, "bad_multipart", f"the multipart body cannot be read: {exc}") from None
    try:
        parts = form.getlist("files")
        uploads = []
        for part in parts:
            if isinstance(part, str):
                raise ApiError(
                    422, "not_a_file", "each 'files' part must be a file upload, not a text field"
                )
            uploads.append(Upload(part.filename or "upload", await part.read()))
    finally:
        await form.close()
    if not uploads:
        raise ApiError(
            422, "no_images", "the request holds no images: send one or more parts named 'files'"
        )
    for upload in uploads:
        if not upload.data:
            raise ApiError(422, "unreadable_image", f"{upload.filename}: the file is empty")
    return uploads
