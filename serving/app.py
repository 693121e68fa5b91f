"""The scoring service's HTTP API (ASGI, Starlette).

``create_app`` builds a fresh app around a :class:`~serving.model.ModelProvider`; nothing
happens at import and nothing connects until the app's lifespan starts the provider's poller.

Routes: ``POST /v1/score``, ``GET /v1/model``, ``GET /healthz``, ``GET /readyz``,
``GET /metrics``. Every error answers ``{"error": {"code", "message", "field"}}``; input
problems are 4xx, never 500.

Hot-path choices (issue 4 measures them): msgspec decodes the body straight into typed
structs and encodes the response; small requests are scored on the event loop (a thread hop
costs more than scoring one row), large ones in a worker thread so a 10,000-row batch does
not stall every other connection.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.metrics import ServingMetrics
from serving.model import ModelProvider
from serving.schema import (
    MAX_BATCH_ROWS,
    MAX_BODY_BYTES,
    Batch,
    RequestError,
    ScoreOutput,
    decode_score_request,
    encode_json,
    encode_score_response,
    error_body,
)
from smartcloudops.errors import ModelError
from smartcloudops.settings import Settings, get_settings

logger = logging.getLogger("serving.app")

#: Bodies at least this large are decoded and scored in a worker thread.
OFFLOAD_BODY_BYTES = 64 * 1024

_ROUTES = ("/v1/score", "/v1/model", "/healthz", "/readyz", "/metrics")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(encode_json(data), status_code=status, media_type="application/json", headers=headers)


def create_app(
    settings: Settings | None = None,
    *,
    model_provider: ModelProvider | None = None,
    max_batch_rows: int = MAX_BATCH_ROWS,
    max_body_bytes: int = MAX_BODY_BYTES,
    offload_body_bytes: int = OFFLOAD_BODY_BYTES,
) -> Starlette:
    """Build the scoring app.

    Args:
        settings: defaults to :func:`get_settings`.
        model_provider: defaults to the registry's ``champion`` per ``settings``; tests pass
            ``ModelProvider.static(model)`` or a provider over a fake source.
        max_batch_rows: rows per request before 413.
        max_body_bytes: request body size before 413.
        offload_body_bytes: bodies this large are handled in a worker thread.
    """
    settings = settings or get_settings()
    provider = model_provider or ModelProvider.from_settings(settings)
    metrics = ServingMetrics(provider.status, provider.current)

    def handle_score(body: bytes) -> Response:
        batch = decode_score_request(body, max_rows=max_batch_rows)
        # Read the reference once: this request uses this scorer to the end, whatever swaps.
        scorer = provider.current()
        if scorer is None:
            status = provider.status()
            return json_response(
                error_body("model_not_ready", status.reason or "no model loaded"),
                status=503,
                headers={"Retry-After": "5"},
            )
        try:
            output = scorer.score(batch)
        except ModelError as exc:
            logger.error(
                "scoring failed: %s", exc, extra={"model_version": scorer.version, "rows": len(batch)}
            )
            return json_response(error_body("model_error", str(exc)), status=500)
        _count(metrics, batch, output)
        return Response(encode_score_response(batch, output, scorer.version), media_type="application/json")

    async def score(request: Request) -> Response:
        _check_content_type(request)
        body = await _read_body(request, max_body_bytes)
        if len(body) >= offload_body_bytes:
            return await anyio.to_thread.run_sync(handle_score, body)
        return handle_score(body)

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        status = provider.status()
        body = {
            "ready": status.ready,
            "reason": status.reason,
            "model_version": status.model_version,
            "last_error": status.last_error,
        }
        return json_response(body, status=200 if status.ready else 503)

    async def model_info(request: Request) -> Response:
        return json_response(provider.status().to_dict())

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), headers={"content-type": METRICS_CONTENT_TYPE})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The poller starts with the server, never at import or app construction.
        provider.start()
        try:
            yield
        finally:
            provider.stop()

    app = Starlette(
        routes=[
            Route("/v1/score", score, methods=["POST"]),
            Route("/v1/model", model_info, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        exception_handlers={
            RequestError: _request_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.provider = provider
    app.state.metrics = metrics
    app.add_middleware(_TimingMiddleware, metrics=metrics)
    return app


# -- request helpers -----------------------------------------------------------------------


def _check_content_type(request: Request) -> None:
    raw = request.headers.get("content-type")
    if raw is None:
        raise RequestError(415, "unsupported_media_type", "send Content-Type: application/json")
    media, _, params = raw.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise RequestError(
            415, "unsupported_media_type", f"Content-Type {media!r} is not supported; send application/json"
        )
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise RequestError(415, "unsupported_media_type", "JSON bodies must be UTF-8")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RequestError(415, "unsupported_media_type", f"Content-Encoding {encoding!r} is not supported")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, "bad_request", f"invalid Content-Length {declared!r}") from None
        if size > limit:
            raise RequestError(413, "body_too_large", f"body of {size} bytes exceeds the limit of {limit}")
    # Chunked bodies have no Content-Length: count while reading and stop at the limit.
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise RequestError(413, "body_too_large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _count(metrics: ServingMetrics, batch: Batch, output: ScoreOutput) -> None:
    flagged: dict[str, int] = {}
    if output.anomaly.any():
        flagged = dict(Tally(output.severity[int(i)] or "unknown" for i in output.anomaly.nonzero()[0]))
    metrics.count_scored(len(batch), flagged)


# -- error handlers ------------------------------------------------------------------------


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    logger.info(
        "rejected %s %s: %s", request.method, request.url.path, exc.message,
        extra={"status": exc.status, "code": exc.code, "field": exc.field},
    )  # fmt: skip
    return json_response(exc.body(), status=exc.status)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"no route {request.url.path}; try POST /v1/score"
    else:
        message = f"{request.method} is not allowed on {request.url.path}"
    return json_response(error_body(code, message), status=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_response(error_body("internal", "internal error; see the service log"), status=500)


class _TimingMiddleware:
    """Request latency by route and status: a plain ASGI wrapper (BaseHTTPMiddleware would
    add a task and a stream per request)."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            route = path if path in _ROUTES else "other"
            self.metrics.observe_request(route, status, time.perf_counter() - start)
