"""The scoring service's HTTP API (ASGI, Starlette).

``create_app`` builds a fresh app around a :class:`~serving.model.ModelProvider`; nothing
happens at import and nothing connects until the app's lifespan starts the provider's poller.

Routes: ``POST /v1/score``, ``GET /v1/model``, ``GET /healthz``, ``GET /readyz``,
``GET /metrics``. Every error answers ``{"error": {"code", "message", "field"}}``; input
problems are 4xx, never 500.

Hot-path choices (issue 4 measures them): ``POST /v1/score`` is answered by a plain ASGI
handler in front of Starlette (no routing, no Request/Response objects); msgspec decodes the
body straight into typed structs and encodes the response; small requests are scored on the
event loop (a thread hop costs more than scoring one row), large ones in a worker thread so
a 10,000-row batch does not stall every other connection.
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
    JSON_MEDIA_TYPE,
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

    def handle_score(body: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        batch = decode_score_request(body, max_rows=max_batch_rows)
        # Read the reference once: this request uses this scorer to the end, whatever swaps.
        scorer = provider.current()
        if scorer is None:
            status = provider.status()
            error = error_body("model_not_ready", status.reason or "no model loaded")
            return 503, encode_json(error), [(b"retry-after", b"5")]
        try:
            output = scorer.score(batch)
        except ModelError as exc:
            logger.error(
                "scoring failed: %s", exc, extra={"model_version": scorer.version, "rows": len(batch)}
            )
            return 500, encode_json(error_body("model_error", str(exc))), []
        _count(metrics, batch, output)
        return 200, encode_score_response(batch, output, scorer.version), []

    async def score(request: Request) -> Response:
        # Reached only when the ASGI fast path below is bypassed (it answers POST /v1/score).
        _check_media(request.headers.get("content-type"), request.headers.get("content-encoding"))
        body = await _read_body(request.stream(), request.headers.get("content-length"), max_body_bytes)
        status, payload, headers = handle_score(body)
        return Response(
            payload, status_code=status, media_type=JSON_MEDIA_TYPE, headers=_str_headers(headers)
        )

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
    # Outermost: POST /v1/score, the hot path, skips routing and Request/Response objects.
    app.add_middleware(
        _ScorePath,
        handle=handle_score,
        metrics=metrics,
        max_body_bytes=max_body_bytes,
        offload_body_bytes=offload_body_bytes,
    )
    return app


# -- request helpers -----------------------------------------------------------------------


def _check_media(content_type: str | None, content_encoding: str | None) -> None:
    if content_type is None:
        raise RequestError(415, "unsupported_media_type", "send Content-Type: application/json")
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise RequestError(
            415, "unsupported_media_type", f"Content-Type {media!r} is not supported; send application/json"
        )
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise RequestError(415, "unsupported_media_type", "JSON bodies must be UTF-8")
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RequestError(415, "unsupported_media_type", f"Content-Encoding {encoding!r} is not supported")


async def _read_body(chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, "bad_request", f"invalid Content-Length {declared!r}") from None
        if size > limit:
            raise RequestError(413, "body_too_large", f"body of {size} bytes exceeds the limit of {limit}")
    # Chunked bodies have no Content-Length: count while reading and stop at the limit.
    parts: list[bytes] = []
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise RequestError(413, "body_too_large", f"body exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def _asgi_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


class _ClientGoneError(Exception):
    """The client closed the connection before sending its whole body."""


def _str_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {key.decode("latin-1"): value.decode("latin-1") for key, value in headers}


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


class _ScorePath:
    """``POST /v1/score`` as a plain ASGI handler; every other request goes to Starlette.

    The hot path pays for no routing, no Request/Response objects and no middleware send
    wrappers: about a tenth of a millisecond per request that single-row scoring (a few
    tenths of a millisecond) would otherwise spend in the framework. Errors answer exactly
    as the Starlette handlers do (``{"error": {...}}``, 4xx for the client's mistakes).
    """

    def __init__(
        self,
        app: ASGIApp,
        handle: Callable[[bytes], tuple[int, bytes, list[tuple[bytes, bytes]]]],
        metrics: ServingMetrics,
        max_body_bytes: int,
        offload_body_bytes: int,
    ) -> None:
        self.app = app
        self.handle = handle
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.offload_body_bytes = offload_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/score" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope["headers"])
        try:
            status, payload, extra = await self._answer(headers, receive)
        except _ClientGoneError:
            self.metrics.observe_request("/v1/score", 499, time.perf_counter() - start)
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        self.metrics.observe_request("/v1/score", status, time.perf_counter() - start)

    async def _answer(
        self, headers: dict[bytes, bytes], receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        def header(name: bytes) -> str | None:
            value = headers.get(name)
            return None if value is None else value.decode("latin-1")

        try:
            _check_media(header(b"content-type"), header(b"content-encoding"))
            body = await _read_body(_asgi_body(receive), header(b"content-length"), self.max_body_bytes)
            if len(body) >= self.offload_body_bytes:
                # A large batch is decoded and scored in a worker thread, so it does not
                # stall every other connection.
                return await anyio.to_thread.run_sync(self.handle, body)
            return self.handle(body)
        except RequestError as exc:
            logger.info(
                "rejected POST /v1/score: %s", exc.message,
                extra={"status": exc.status, "code": exc.code, "field": exc.field},
            )  # fmt: skip
            return exc.status, encode_json(exc.body()), []
        except _ClientGoneError:
            raise
        except Exception as exc:  # boundary: an unexpected error is a 500, never a traceback
            logger.exception("unhandled error on POST /v1/score", exc_info=exc)
            return 500, encode_json(error_body("internal", "internal error; see the service log")), []


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
