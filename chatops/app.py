"""The ChatOps Flask app: ``create_app(config)`` in the style of Flask's tutorial.

Config keys (all optional; see :data:`DEFAULT_CONFIG`):

``SETTINGS``                  a :class:`~smartcloudops.settings.Settings` (default ``get_settings()``)
``TOKENS``                    bearer tokens (default ``settings.chatops_token_list()``)
``ALLOW_NO_AUTH``             start without any token configured -- local development only.
                              Without it, no tokens means ``create_app`` raises ConfigError.
                              Even then approve/reject are refused (nobody to record as approver).
``MAX_CONTENT_LENGTH``        request body limit in bytes (413 above it), default 16 KiB
``MAX_QUERY_CHARS``           longest accepted question after cleaning (400 above it), default 500
``RATE_LIMIT_PER_MINUTE``     requests per token per minute (429 above it); 0 disables
                              (default ``settings.chatops_rate_limit_per_minute``, 300)
``METRIC_SOURCE``             object with ``latest/query_range/hosts`` (default ``get_metric_source``)
``EVENT_STORE``               object with the EventStore read API (default ``EventStore.from_settings``)
``REMEDIATION_ENGINE``        object with ``approve(id, by)`` / ``reject(id, by, reason)``; or
``REMEDIATION_ENGINE_FACTORY`` ``callable(settings, event_store) -> engine``
                              (default ``RemediationEngine.from_settings(settings, events=store)``)
``MODEL_STATUS``              ``callable() -> dict`` (default: MLflow registry, see tools)
``MLFLOW_CLIENT_FACTORY``     ``callable(tracking_uri) -> client`` for the default MODEL_STATUS
``MLFLOW_TIMEOUT_SECONDS``    deadline for one registry read, default 5
``LOG_DIR`` / ``LOG_READER``  where logs live (default ``settings.log_dir``) / a reader with
                              ``read_logs``' signature (default: ``IncrementalLogReader``, the same
                              answers without re-parsing whole files)
``METRIC_CACHE_SECONDS``      metric-source results kept this long per process (default 5; 0: off)
``SESSION_STORE``             object with ``get/put/close`` (default: Redis if
                              ``settings.redis_url`` else in-memory); ``SESSION_TTL_SECONDS``
``LLM_MODEL``                 overrides ``settings.llm_model``; ``LLM_TIMEOUT_SECONDS``,
                              ``LLM_RETRIES``, ``LLM_COMPLETION_KWARGS`` (e.g. ``mock_response``)
``CLOCK``                     ``callable() -> aware datetime`` (tests)
``STATUS_WINDOW_MINUTES``     window of "recent anomalies" in /status, default 60
``LABEL_STORE``               object with ``add/find/delete`` of :class:`smartcloudops.labels.LabelStore`
                              (default: a LabelStore on the app's event store)
``ANOMALY_CACHE_SECONDS``     TTL of the recent-anomalies snapshot (Redis if ``settings.redis_url``,
                              else in memory), default 5; 0 disables. ``ANOMALY_CACHE`` injects one.
``REDIS_PREFIX``              key prefix of everything ChatOps keeps in Redis (tests isolate with it)
``RATE_LIMITER``              object with ``check(key) -> wait | None`` (default: shared in Redis
                              when ``settings.redis_url`` is set, else per process)
``SLACK_SIGNING_SECRET``      overrides ``settings.slack_signing_secret``; unset: /slack/command 503
``SLACK_REPLAY_WINDOW_SECONDS`` accepted clock skew of Slack's timestamp, default 300
``SLACK_APPROVERS``           Slack user ids allowed to approve/reject (default
                              ``settings.slack_approvers``); nobody when empty
``SLACK_USE_LLM``             rephrase Slack answers with the LLM too (default False: Slack wants
                              an answer within 3 s)

Resources (metric source, event store, engine, MLflow reader) are opened lazily, once per
app, on first use -- not per request, because an SQLAlchemy engine or a Prometheus client is
a pool meant to be reused -- and closed by :func:`close_app` (the server calls it at exit;
tests call it in their fixture). Objects passed in through the config belong to the caller
and are not closed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from chatops import answer as answers
from chatops import llm, slack
from chatops.cache import (
    MemoryTTL,
    RateLimiter,
    RecentAnomalies,
    RedisRateLimiter,
    RedisTTL,
    TTLBackend,
    redis_client,
)
from chatops.intents import LEVELS, MAX_SINCE_MINUTES, ParsedQuery, clean_text, parse
from chatops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from chatops.metrics import ChatOpsMetrics
from chatops.openapi import openapi_document
from chatops.readers import CachedMetricSource, IncrementalLogReader
from chatops.sessions import Resolved, SessionStore, Turn, make_session_store, remember, resolve
from chatops.tools import Evidence, MlflowModelStatus, Resources, Tools, iso
from smartcloudops.errors import ConfigError, InputError, SmartCloudOpsError, StoreError
from smartcloudops.labels import MAX_LIST_LIMIT, LabelError
from smartcloudops.settings import Settings, get_settings

log = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "SETTINGS": None,
    "TOKENS": None,
    "ALLOW_NO_AUTH": False,
    "MAX_CONTENT_LENGTH": 16 * 1024,
    "MAX_QUERY_CHARS": 500,
    "RATE_LIMIT_PER_MINUTE": None,
    "METRIC_SOURCE": None,
    "EVENT_STORE": None,
    "REMEDIATION_ENGINE": None,
    "REMEDIATION_ENGINE_FACTORY": None,
    "MODEL_STATUS": None,
    "MLFLOW_CLIENT_FACTORY": None,
    "MLFLOW_TIMEOUT_SECONDS": 5.0,
    "LOG_DIR": None,
    "LOG_READER": None,
    "SESSION_STORE": None,
    "SESSION_TTL_SECONDS": 1800.0,
    "LLM_MODEL": None,
    "LLM_TIMEOUT_SECONDS": 20.0,
    "LLM_RETRIES": 1,
    "LLM_COMPLETION_KWARGS": None,
    "CLOCK": None,
    "STATUS_WINDOW_MINUTES": 60,
    "ANOMALY_CACHE_SECONDS": 5.0,
    "METRIC_CACHE_SECONDS": 5.0,
    "ANOMALY_CACHE": None,
    "REDIS_PREFIX": "smartcloudops:chatops:",
    "RATE_LIMITER": None,
    "SLACK_SIGNING_SECRET": None,
    "SLACK_REPLAY_WINDOW_SECONDS": slack.REPLAY_WINDOW_SECONDS,
    "SLACK_APPROVERS": None,
    "SLACK_USE_LLM": False,
    "LABEL_STORE": None,
}

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# /slack/command is authenticated by Slack's request signature, not a bearer token.
# /metrics is for Prometheus' scrape (no user text in it), as /healthz is for probes.
PUBLIC_ENDPOINTS = frozenset({"chatops.healthz", "chatops.openapi", "chatops.metrics",
                              "chatops.slack_command", "static"})
MAX_LOG_LIMIT = 1000
MAX_CONTAINS_CHARS = 200


class ApiError(Exception):
    """A client error answered as ``{"error": {"code", "message", "field"}}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


@dataclass
class ChatOps:
    """Everything one app instance owns (kept in ``app.extensions["chatops"]``)."""

    settings: Settings
    tokens: tuple[bytes, ...]
    resources: Resources
    tools: Tools
    sessions: SessionStore
    rate_limiter: RateLimiter | RedisRateLimiter
    llm_config: llm.LLMConfig | None
    max_query_chars: int
    status_window_minutes: int
    owned: list[str] = field(default_factory=list)  # resource names we opened and must close
    _owned_sessions: bool = False
    slack_secret: bytes | None = None
    slack_window_seconds: float = slack.REPLAY_WINDOW_SECONDS
    slack_approvers: frozenset[str] = frozenset()
    slack_use_llm: bool = False
    slack_replays: slack.ReplayGuard | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)  # other things we opened
    metrics: ChatOpsMetrics = field(default_factory=ChatOpsMetrics)

    def close(self) -> None:
        opened = self.resources.opened()
        for name in self.owned:
            obj = opened.get(name)
            closer = getattr(obj, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception as exc:  # noqa: BLE001 -- closing must not mask other work
                    log.warning("closing %s failed: %s", name, exc)
        model_status = self.resources.model_status
        if isinstance(model_status, MlflowModelStatus):
            model_status.close()
        if self._owned_sessions:
            try:
                self.sessions.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the session store failed: %s", exc)
        for closer in self.closers:
            try:
                closer()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing a cache failed: %s", exc)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(DEFAULT_CONFIG)
    if config:
        app.config.from_mapping(config)
    cfg = app.config
    settings: Settings = cfg["SETTINGS"] or get_settings()

    tokens = [t for t in (cfg["TOKENS"] if cfg["TOKENS"] is not None else settings.chatops_token_list()) if t]
    if not tokens and not cfg["ALLOW_NO_AUTH"]:
        raise ConfigError(
            "no ChatOps bearer tokens configured: set SMARTCLOUDOPS_CHATOPS_TOKENS "
            "(comma-separated), or pass ALLOW_NO_AUTH=True for local development only"
        )
    if not tokens:
        log.warning("ChatOps is running WITHOUT authentication (ALLOW_NO_AUTH); local development only")

    clock: Callable[[], datetime] = cfg["CLOCK"] or (lambda: datetime.now(UTC))
    owned: list[str] = []

    def open_metric_source() -> Any:
        source = cfg["METRIC_SOURCE"]
        if source is None:
            from smartcloudops.sources import get_metric_source

            owned.append("metric_source")
            source = get_metric_source(settings)
        ttl = float(cfg["METRIC_CACHE_SECONDS"])
        return CachedMetricSource(source, ttl) if ttl > 0 else source

    def open_event_store() -> Any:
        if cfg["EVENT_STORE"] is not None:
            return cfg["EVENT_STORE"]
        from smartcloudops.events import EventStore

        owned.append("event_store")
        return EventStore.from_settings(settings)

    def open_label_store() -> Any:
        if cfg["LABEL_STORE"] is not None:
            return cfg["LABEL_STORE"]
        from smartcloudops.events import EventStore
        from smartcloudops.labels import LabelStore

        store = resources.event_store
        if not isinstance(store, EventStore):
            raise StoreError("labels need the SQL event store (or LABEL_STORE in the app config)")
        # Shares the event store's engine; closing the event store closes it.
        return LabelStore(store)

    def open_engine() -> Any:
        if cfg["REMEDIATION_ENGINE"] is not None:
            return cfg["REMEDIATION_ENGINE"]
        factory = cfg["REMEDIATION_ENGINE_FACTORY"]
        store = resources.event_store
        if factory is not None:
            return factory(settings, store)
        from remediation.engine import RemediationEngine

        return RemediationEngine.from_settings(settings, events=store)  # type: ignore[arg-type]

    model_status = cfg["MODEL_STATUS"] or MlflowModelStatus(
        settings.resolved_tracking_uri, settings.registered_model,
        timeout_seconds=float(cfg["MLFLOW_TIMEOUT_SECONDS"]),
        client_factory=cfg["MLFLOW_CLIENT_FACTORY"],
    )
    log_reader = cfg["LOG_READER"]
    if log_reader is None:
        # read_logs' answers, without re-parsing the whole day's file on every question.
        log_reader = IncrementalLogReader()

    prefix = str(cfg["REDIS_PREFIX"])
    closers: list[Callable[[], None]] = []
    anomaly_cache = cfg["ANOMALY_CACHE"]
    if anomaly_cache is None and float(cfg["ANOMALY_CACHE_SECONDS"]) > 0:
        backend: TTLBackend = (RedisTTL(settings.redis_url, prefix=prefix) if settings.redis_url
                               else MemoryTTL[bytes](max_entries=4))
        anomaly_cache = RecentAnomalies(lambda: resources.event_store, backend,
                                        ttl_seconds=float(cfg["ANOMALY_CACHE_SECONDS"]), clock=clock,
                                        store_id=settings.resolved_event_store_url)
        closers.append(anomaly_cache.close)

    resources = Resources(
        settings=settings,
        open_metric_source=open_metric_source,
        open_event_store=open_event_store,
        open_engine=open_engine,
        model_status=model_status,
        log_reader=log_reader,
        log_dir=Path(cfg["LOG_DIR"] or settings.log_dir),
        clock=clock,
        anomaly_cache=anomaly_cache,
        open_label_store=open_label_store,
    )
    sessions = cfg["SESSION_STORE"]
    owned_sessions = sessions is None
    if sessions is None:
        sessions = make_session_store(settings.redis_url, float(cfg["SESSION_TTL_SECONDS"]),
                                      prefix=str(cfg["REDIS_PREFIX"]) + "session:")
    model_name = cfg["LLM_MODEL"] or settings.llm_model
    llm_config = llm.LLMConfig(
        model=model_name,
        timeout_seconds=float(cfg["LLM_TIMEOUT_SECONDS"]),
        retries=int(cfg["LLM_RETRIES"]),
        completion_kwargs=dict(cfg["LLM_COMPLETION_KWARGS"] or {}),
    ) if model_name else None

    rate_limiter = cfg["RATE_LIMITER"]
    if rate_limiter is None:
        per_minute = int(cfg["RATE_LIMIT_PER_MINUTE"] if cfg["RATE_LIMIT_PER_MINUTE"] is not None
                         else settings.chatops_rate_limit_per_minute)
        if settings.redis_url and per_minute > 0:
            rate_limiter = RedisRateLimiter(per_minute, settings.redis_url, prefix=prefix + "ratelimit:")
            closers.append(rate_limiter.close)
        else:
            rate_limiter = RateLimiter(per_minute)

    secret = cfg["SLACK_SIGNING_SECRET"] or settings.slack_signing_secret
    if secret is not None and not isinstance(secret, str):
        secret = secret.get_secret_value()  # SecretStr
    approvers = cfg["SLACK_APPROVERS"]
    if approvers is None:
        approvers = settings.slack_approver_list()
    replay_client = None
    if secret and settings.redis_url:
        replay_client = redis_client(settings.redis_url)
        closers.append(replay_client.close)
    window = float(cfg["SLACK_REPLAY_WINDOW_SECONDS"])

    state = ChatOps(
        settings=settings,
        tokens=tuple(t.encode("utf-8") for t in tokens),
        resources=resources,
        tools=Tools(resources),
        sessions=sessions,
        rate_limiter=rate_limiter,
        llm_config=llm_config,
        max_query_chars=int(cfg["MAX_QUERY_CHARS"]),
        status_window_minutes=int(cfg["STATUS_WINDOW_MINUTES"]),
        owned=owned,
        _owned_sessions=owned_sessions,
        slack_secret=secret.encode("utf-8") if secret else None,
        slack_window_seconds=window,
        slack_approvers=frozenset(a.strip() for a in approvers if a and a.strip()),
        slack_use_llm=bool(cfg["SLACK_USE_LLM"]),
        slack_replays=slack.ReplayGuard(window, redis_client=replay_client,
                                        prefix=prefix + "slack-seen:") if secret else None,
        closers=closers,
    )
    app.extensions["chatops"] = state
    app.register_blueprint(bp)
    _register_errors(app)
    return app


def close_app(app: Flask) -> None:
    """Close what the app opened (event store engine, session store, MLflow worker)."""
    state = app.extensions.get("chatops")
    if isinstance(state, ChatOps):
        state.close()


def _state() -> ChatOps:
    return current_app.extensions["chatops"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------
# Errors: every failure is JSON {"error": {"code", "message", "field"}}
# ---------------------------------------------------------------------------------------

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type",
               429: "rate_limited"}


def _error_response(status: int, code: str, message: str, field: str | None = None,
                    headers: Mapping[str, str] | None = None) -> Any:
    response = jsonify({"error": {"code": code, "message": message, "field": field}})
    response.status_code = status
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def _count_refused(status: int, code: str) -> None:
    state = current_app.extensions.get("chatops")
    if isinstance(state, ChatOps):
        state.metrics.refused.labels(str(status), code).inc()


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Any:
        _count_refused(exc.status, exc.code)
        return _error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            message = f"request body is larger than the {limit}-byte limit"
        _count_refused(status, _HTTP_CODES.get(status, "http_error"))
        headers = {}
        valid_methods = getattr(exc, "valid_methods", None)
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(valid_methods)
        return _error_response(status, _HTTP_CODES.get(status, "http_error"), message,
                               "body" if status == 413 else None, headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        # A bug, not bad input: log it with the traceback, tell the client nothing internal.
        log.exception("unhandled error in ChatOps", extra={"path": request.path})
        return _error_response(500, "internal_error", "internal error; see the server log")


# ---------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------

bp = Blueprint("chatops", __name__)


def _fingerprint(token: bytes) -> str:
    return "tok-" + hashlib.sha256(token).hexdigest()[:10]


@bp.before_app_request
def _authenticate() -> None:
    g.started = time.perf_counter()
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return
    state = _state()
    if not state.tokens:
        g.caller = None  # ALLOW_NO_AUTH
        key = "anon:" + (request.remote_addr or "?")
    else:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if not header:
            raise ApiError(401, "unauthorized", "missing bearer token", "Authorization",
                           {"WWW-Authenticate": 'Bearer realm="chatops"'})
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "unauthorized", "Authorization must be 'Bearer <token>'",
                           "Authorization", {"WWW-Authenticate": 'Bearer realm="chatops"'})
        given_bytes = given.strip().encode("utf-8", "replace")
        matched: bytes | None = None
        # Compare against every token, no early exit: timing says nothing about which matched.
        for token in state.tokens:
            if hmac.compare_digest(token, given_bytes):
                matched = token
        if matched is None:
            raise ApiError(401, "unauthorized", "invalid bearer token", "Authorization",
                           {"WWW-Authenticate": 'Bearer realm="chatops", error="invalid_token"'})
        g.caller = _fingerprint(matched)
        key = g.caller
    wait = state.rate_limiter.check(key)
    if wait is not None:
        raise ApiError(429, "rate_limited",
                       f"more than {state.rate_limiter.per_minute} requests a minute; retry later",
                       None, {"Retry-After": str(max(1, int(wait + 0.999)))})


@bp.after_app_request
def _headers(response: Any) -> Any:
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@bp.get("/metrics")
def metrics() -> Any:
    return current_app.response_class(_state().metrics.render(), mimetype=None,
                                      content_type=METRICS_CONTENT_TYPE)


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document(_state().max_query_chars))


def _read_json_body(expected: str = "a JSON object with a 'query'") -> dict[str, Any]:
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    if not raw.strip():
        raise ApiError(400, "missing_body", f"request body must be {expected}", "body")
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ApiError(400, "malformed_json", f"body is not UTF-8: {exc.reason}", "body") from exc
    except json.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json",
                       f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                       "body") from exc
    except RecursionError as exc:
        raise ApiError(400, "malformed_json", "body is nested too deeply", "body") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body",
                       f"body must be a JSON object, not {type(body).__name__}", "body")
    return body


@bp.post("/query")
def query() -> Any:
    state = _state()
    body = _read_json_body()
    if "query" not in body or body["query"] is None:
        raise ApiError(400, "missing_field", "'query' is required", "query")
    text = body["query"]
    if not isinstance(text, str):
        raise ApiError(400, "invalid_type", f"'query' must be a string, not {_json_type(text)}", "query")
    if len(text) > state.max_query_chars * 4:
        raise ApiError(400, "too_long", f"'query' is longer than {state.max_query_chars} characters",
                       "query")
    cleaned = clean_text(text)
    if not cleaned:
        raise ApiError(400, "empty", "'query' is empty (after removing control characters)", "query")
    if len(cleaned) > state.max_query_chars:
        raise ApiError(400, "too_long",
                       f"'query' is {len(cleaned)} characters; the limit is {state.max_query_chars}",
                       "query")
    session_id = body.get("session_id")
    if session_id is None:
        session_id = "sess-" + uuid.uuid4().hex[:16]
    elif not isinstance(session_id, str):
        raise ApiError(400, "invalid_type",
                       f"'session_id' must be a string, not {_json_type(session_id)}", "session_id")
    elif not SESSION_ID_RE.fullmatch(session_id):
        raise ApiError(400, "invalid_value",
                       "'session_id' must be 1-128 characters of letters, digits, '.', '_', ':' or '-'",
                       "session_id")
    return jsonify(answer_question(state, cleaned, session_id, g.get("caller")))


@bp.post("/slack/command")
def slack_command() -> Any:
    """A Slack slash command: verified by Slack's request signature, answered in Slack's
    message format with the same understanding and evidence as /query."""
    state = _state()
    if state.slack_secret is None or state.slack_replays is None:
        raise ApiError(503, "not_configured",
                       "Slack is not configured: set SMARTCLOUDOPS_SLACK_SIGNING_SECRET")
    try:
        # Timestamp first: a stale or unsigned request is refused before its body is read.
        timestamp = slack.check_timestamp(request.headers.get("X-Slack-Request-Timestamp"),
                                          state.resources.clock().timestamp(), state.slack_window_seconds)
        signature = request.headers.get("X-Slack-Signature")
        if signature is None or not signature.strip():
            raise slack.SlackRequestError(401, "unauthorized", "missing X-Slack-Signature header",
                                          "X-Slack-Signature")
        raw = request.get_data(cache=True)  # the exact bytes Slack signed; 413 past the limit
        slack.verify_signature(state.slack_secret, timestamp, raw, signature)
        if not state.slack_replays.first_use(signature.strip()):
            raise slack.SlackRequestError(401, "replayed_request",
                                          "this signed request was already received", "X-Slack-Signature")
        if request.mimetype != "application/x-www-form-urlencoded":
            raise slack.SlackRequestError(
                415, "unsupported_media_type",
                f"expected application/x-www-form-urlencoded, got {request.mimetype or 'no Content-Type'}",
                "Content-Type")
        command = slack.parse_command(raw)
    except slack.SlackRequestError as exc:
        # Worth seeing in the log (forged or replayed requests); never the secret or the body.
        log.warning("slack request refused", extra={"code": exc.code, "field": exc.field,
                                                    "remote_addr": request.remote_addr})
        headers = {"WWW-Authenticate": 'Slack-Signature realm="chatops"'} if exc.status == 401 else None
        raise ApiError(exc.status, exc.code, exc.message, exc.field, headers) from exc
    if command.ssl_check:
        return "", 200  # Slack's certificate probe: answer 200, do nothing
    # From here on the asker is a real Slack user: problems are told to them in Slack (an
    # HTTP error would only show "failed with the error ..." there).
    wait = state.rate_limiter.check("slack:" + command.caller)
    if wait is not None:
        return jsonify(slack.notice(
            f"Too many requests: more than {state.rate_limiter.per_minute} a minute. "
            f"Try again in {max(1, int(wait + 0.999))} s."))
    cleaned = clean_text(command.text) or "help"
    if len(cleaned) > state.max_query_chars:
        return jsonify(slack.notice(
            f"That question is {len(cleaned)} characters; the limit is {state.max_query_chars}."))
    refusal = None
    if command.user_id not in state.slack_approvers:
        refusal = (f"Slack user {command.user_id} may not approve or reject actions "
                   "(not in SMARTCLOUDOPS_SLACK_APPROVERS)")
    g.caller = command.caller
    result = answer_question(state, cleaned, command.session_id, command.caller,
                             use_llm=state.slack_use_llm, decide_refusal=refusal, channel="slack")
    return jsonify(slack.to_message(result))


def answer_question(state: ChatOps, text: str, session_id: str, caller: str | None, *,
                    use_llm: bool = True, decide_refusal: str | None = None,
                    channel: str = "api") -> dict[str, Any]:
    """The whole /query pipeline, callable without HTTP (Slack, benchmarks).

    ``decide_refusal``: when set, an approve/reject is not carried out and its evidence says
    this instead (a Slack user who is not an approver).
    """
    started = time.perf_counter()
    now = state.resources.clock()
    hosts = state.resources.known_hosts()
    parsed = parse(text, hosts=hosts, now=now)
    session_key = f"{caller or 'anon'}:{session_id}"
    previous: Turn | None = None
    if parsed.followup or parsed.label_target == "previous":
        try:
            previous = state.sessions.get(session_key)
        except SmartCloudOpsError as exc:
            log.warning("session store unavailable; answering without context", extra={"error": str(exc)})
    resolved = resolve(parsed, previous)
    evidence, returned = _run(state, parsed, resolved, caller, decide_refusal, previous)
    refusal = parsed.refusal if resolved.intent == "unknown" else None
    text_answer = answers.compose(
        resolved.intent, resolved.params, evidence, now=now, refusal=refusal, note=resolved.note or None,
        known_hosts=hosts,
    )
    llm_info: dict[str, Any]
    if state.llm_config is None:
        llm_info = llm.disabled()
    elif not use_llm:
        llm_info = llm.disabled("not used for this channel") | {
            "enabled": True, "model": state.llm_config.model}
    elif resolved.intent == "label.add":
        llm_info = llm.disabled("not used: the answer states exactly what was stored") | {
            "enabled": True, "model": state.llm_config.model}
    elif resolved.intent in ("help", "unknown") or not evidence:
        llm_info = llm.disabled("not used: nothing to rephrase for this intent") | {
            "enabled": True, "model": state.llm_config.model}
    else:
        text_answer, llm_info = llm.rephrase(text, evidence, text_answer, state.llm_config)
    turn = remember(resolved, returned, _shown_anomalies(resolved.intent, evidence))
    if turn is not None:
        try:
            state.sessions.put(session_key, turn)
        except SmartCloudOpsError as exc:
            log.warning("session store unavailable; context not saved", extra={"error": str(exc)})
    log.info(
        "chatops query",
        extra={
            "intent": resolved.intent,
            "params": resolved.params,
            "parse_reason": parsed.reason,
            "followup": parsed.followup,
            "injection": parsed.injection,
            "corrections": parsed.corrections or None,
            "caller": caller or "anonymous",
            "session_id": session_id,
            "query_chars": len(text),
            "evidence_sources": [e.get("source") for e in evidence],
            "llm_used": llm_info.get("used"),
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    state.metrics.observe(channel, resolved.intent, time.perf_counter() - started,
                          llm_info.get("used") if llm_info.get("enabled") else None,
                          [str(e.get("source")) for e in evidence if e.get("error")])
    return {
        "intent": resolved.intent,
        "params": resolved.params,
        "answer": text_answer,
        "evidence": evidence,
        "session_id": session_id,
        "llm": llm_info,
    }


def _shown_anomalies(intent: str, evidence: list[Evidence]) -> tuple[str, ...]:
    """Ids of the anomalies an answer listed (not the baselines beside them), newest first."""
    position = {"anomaly.summary": 0, "anomaly.explain": 0, "status.overview": 1}.get(intent)
    if position is None or len(evidence) <= position or evidence[position].get("error"):
        return ()
    values = evidence[position].get("values") or []
    return tuple(dict.fromkeys(str(v["anomaly_id"]) for v in values if v.get("anomaly_id")))


def _run(state: ChatOps, parsed: ParsedQuery, resolved: Resolved, caller: str | None,
         decide_refusal: str | None = None,
         previous: Turn | None = None) -> tuple[list[Evidence], int]:
    """Execute one resolved intent; returns the evidence and how many list items it shows."""
    tools = state.tools
    p = resolved.params
    intent = resolved.intent
    off = resolved.offset
    evidence: list[Evidence]
    if intent == "metric.current":
        evidence = [tools.current_metrics(p.get("metric"), p.get("host"))]
    elif intent == "metric.history":
        evidence = [tools.metric_history(p.get("metric"), p.get("host"), p.get("since_minutes"))]
    elif intent == "anomaly.summary":
        evidence = [tools.anomalies(p.get("limit"), p.get("since_minutes"), p.get("host"),
                                    p.get("metric"), off)]
    elif intent == "anomaly.explain":
        evidence = tools.explain(p.get("limit"), p.get("since_minutes"), p.get("host"), p.get("metric"),
                                 parsed.anomaly_id, off)
    elif intent == "logs.search":
        evidence = [tools.logs(p.get("since_minutes"), p.get("level"), p.get("contains"),
                               p.get("limit"), p.get("host"), off)]
    elif intent == "remediation.history":
        evidence = tools.actions(p.get("limit"), p.get("since_minutes"), p.get("host"),
                                 p.get("action_id"), off)
    elif intent in ("remediation.approve", "remediation.reject"):
        verb = intent.split(".", 1)[1]
        if caller is None:
            evidence = [{"source": "chatops", "query": f"{verb} {p['action_id']}", "window_start": None,
                         "window_end": iso(state.resources.clock()), "values": [],
                         "error": "refused: approvals need an authenticated caller "
                                  "(this server runs with ALLOW_NO_AUTH)"}]
        elif decide_refusal is not None:
            evidence = [{"source": "chatops", "query": f"{verb} {p['action_id']}", "window_start": None,
                         "window_end": iso(state.resources.clock()), "values": [],
                         "error": f"refused: {decide_refusal}"}]
        else:
            evidence = [tools.decide(verb, p["action_id"], by=f"chatops:{caller}",
                                     note=parsed.decision_note)]
    elif intent == "label.add":
        if caller is None:
            evidence = [{"source": "chatops", "query": "label", "window_start": None,
                         "window_end": iso(state.resources.clock()), "values": [],
                         "error": "refused: labels need an authenticated caller "
                                  "(this server runs with ALLOW_NO_AUTH)"}]
        else:
            evidence = [tools.add_label(p, author=f"chatops:{caller}", target=parsed.label_target,
                                        note=parsed.decision_note,
                                        previous_anomalies=previous.anomaly_ids if previous else ())]
    elif intent == "model.status":
        evidence = [tools.model()]
    elif intent == "status.overview":
        evidence = tools.overview(p.get("host"), state.status_window_minutes)
    elif intent == "unknown" and parsed.reason == "malformed action request":
        evidence = [e for e in tools.actions(limit=1) if e.get("kind") == "pending"]
    else:
        evidence = []
    returned = len(evidence[0].get("values", [])) if evidence else 0
    return evidence, returned


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _query_args(allowed: set[str]) -> dict[str, str]:
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise ApiError(400, "unknown_parameter",
                       f"unknown parameter {unknown[0]!r}; valid: {', '.join(sorted(allowed))}", unknown[0])
    return {k: request.args[k] for k in allowed if k in request.args}


def _int_arg(args: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    if name not in args:
        return None
    raw = args[name].strip()
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise ApiError(400, "invalid_type", f"'{name}' must be a whole number, got {raw[:20]!r}", name)
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(400, "out_of_range", f"'{name}' must be between {low} and {high}", name)
    return value


@bp.get("/logs")
def logs() -> Any:
    state = _state()
    args = _query_args({"since_minutes", "level", "contains", "limit"})
    since_minutes = _int_arg(args, "since_minutes", 1, MAX_SINCE_MINUTES)
    limit = _int_arg(args, "limit", 1, MAX_LOG_LIMIT) or 100
    level = args.get("level")
    if level is not None:
        level = level.strip().lower()
        level = {"warn": "warning", "err": "error"}.get(level, level)
        if level not in LEVELS:
            raise ApiError(400, "invalid_value", f"'level' must be one of {', '.join(LEVELS)}", "level")
    contains = args.get("contains")
    if contains is not None:
        contains = clean_text(contains)
        if not contains:
            raise ApiError(400, "empty", "'contains' is empty", "contains")
        if len(contains) > MAX_CONTAINS_CHARS:
            raise ApiError(400, "too_long", f"'contains' is longer than {MAX_CONTAINS_CHARS} characters",
                           "contains")
    end = state.resources.clock()
    start = end - timedelta(minutes=since_minutes) if since_minutes else None
    try:
        records = state.resources.log_reader(state.resources.log_dir, since=start, level=level,
                                             contains=contains, limit=limit)
    except SmartCloudOpsError as exc:
        raise ApiError(503, "unavailable", f"logs unavailable: {exc}") from exc
    except OSError as exc:
        raise ApiError(503, "unavailable", f"logs unavailable: {exc.strerror or exc}") from exc
    return jsonify({
        "filters": {"since_minutes": since_minutes, "level": level, "contains": contains, "limit": limit},
        "window_start": iso(start),
        "window_end": iso(end),
        "count": len(records),
        "records": records,
    })


# -- operator labels ----------------------------------------------------------------------

LABEL_FIELDS = ("host", "start", "end", "kind", "note", "anomaly_id")
REQUIRED_LABEL_FIELDS = ("host", "start", "end", "kind")


def _label_caller() -> str:
    caller = g.get("caller")
    if caller is None:
        raise ApiError(403, "forbidden", "labels need an authenticated caller "
                       "(this server runs with ALLOW_NO_AUTH)", "Authorization")
    return f"chatops:{caller}"


def _label_store(state: ChatOps) -> Any:
    try:
        return state.resources.labels
    except SmartCloudOpsError as exc:
        raise ApiError(503, "unavailable", f"labels unavailable: {exc}") from exc


@bp.post("/labels")
def add_label() -> Any:
    """Store an operator label (idempotent: 201 when new, 200 with the stored one if not)."""
    state = _state()
    body = _read_json_body("a JSON object with host, start, end and kind")
    unknown = sorted(set(body) - set(LABEL_FIELDS))
    if unknown:
        name = str(unknown[0])[:40]
        raise ApiError(400, "unknown_field", f"unknown field {name!r}; valid: {', '.join(LABEL_FIELDS)}",
                       name)
    for name in REQUIRED_LABEL_FIELDS:
        if body.get(name) is None:
            raise ApiError(400, "missing_field", f"'{name}' is required", name)
    for name in LABEL_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], str):
            raise ApiError(400, "invalid_type", f"'{name}' must be a string, not {_json_type(body[name])}",
                           name)
    author = _label_caller()
    store = _label_store(state)
    try:
        label, created = store.add(body["host"], body["start"], body["end"], body["kind"], author=author,
                                   note=body.get("note") or "", anomaly_id=body.get("anomaly_id"),
                                   now=state.resources.clock())
    except LabelError as exc:
        raise ApiError(400, "invalid_value", str(exc), exc.field) from exc
    except InputError as exc:
        raise ApiError(400, "invalid_value", str(exc)) from exc
    except SmartCloudOpsError as exc:
        raise ApiError(503, "unavailable", f"labels unavailable: {exc}") from exc
    log.info("operator label stored" if created else "operator label already present",
             extra={"label_id": label.label_id, "host": label.host, "kind": label.kind, "author": author})
    response = jsonify({"label": label.to_dict(), "created": created})
    response.status_code = 201 if created else 200
    return response


@bp.get("/labels")
def list_labels() -> Any:
    state = _state()
    args = _query_args({"host", "since", "kind", "limit"})
    limit = _int_arg(args, "limit", 1, MAX_LIST_LIMIT) or 100
    for name in ("host", "since", "kind"):
        if name in args and len(args[name]) > 200:
            raise ApiError(400, "too_long", f"'{name}' is too long", name)
    store = _label_store(state)
    try:
        found = store.find(host=args.get("host"), since=args.get("since"), kind=args.get("kind"), limit=limit)
    except LabelError as exc:
        raise ApiError(400, "invalid_value", str(exc), exc.field) from exc
    except SmartCloudOpsError as exc:
        raise ApiError(503, "unavailable", f"labels unavailable: {exc}") from exc
    filters = {"host": args.get("host"), "since": args.get("since"), "kind": args.get("kind"), "limit": limit}
    return jsonify({"filters": filters,
                    "count": len(found), "labels": [label.to_dict() for label in found]})


@bp.delete("/labels/<label_id>")
def delete_label(label_id: str) -> Any:
    state = _state()
    author = _label_caller()
    store = _label_store(state)
    try:
        deleted = store.delete(label_id)
    except LabelError as exc:
        raise ApiError(400, "invalid_value", str(exc), exc.field) from exc
    except SmartCloudOpsError as exc:
        raise ApiError(503, "unavailable", f"labels unavailable: {exc}") from exc
    if not deleted:
        raise ApiError(404, "not_found", f"no label {label_id[:80]!r}", "label_id")
    log.info("operator label deleted", extra={"label_id": label_id, "by": author})
    return jsonify({"deleted": label_id})


@bp.get("/status")
def status() -> Any:
    state = _state()
    args = _query_args({"host"})
    host = args.get("host")
    if host is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", host):
        raise ApiError(400, "invalid_value", "'host' must be a host name like web-1", "host")
    evidence = state.tools.overview(host, state.status_window_minutes)
    return jsonify(build_status(state, evidence, host))


def build_status(state: ChatOps, evidence: list[Evidence], host: str | None) -> dict[str, Any]:
    """Shape the overview evidence as /status JSON; a failed part becomes 'unavailable: …'."""
    current, anomalies = evidence[0], evidence[1]
    history = next((e for e in evidence if e.get("kind") == "history"), None)
    pending = next((e for e in evidence if e.get("kind") == "pending"), None)
    breaker = next((e for e in evidence if e.get("kind") == "breaker"), None)
    model = evidence[-1]
    now = state.resources.clock()

    hosts: Any
    if current.get("error"):
        hosts = current["error"]
    else:
        hosts = {}
        for row in current["values"]:
            hosts.setdefault(row["host"], {})[row["metric"]] = row["value"]
    anomaly_part: Any = anomalies["error"] if anomalies.get("error") else {
        "window_minutes": state.status_window_minutes,
        "count": anomalies.get("total", len(anomalies["values"])),
        "latest": anomalies["values"],
    }
    actions: dict[str, Any] = {
        "recent": (history or {}).get("error") or (history or {}).get("values", []),
        "pending": (pending or {}).get("error") or (pending or {}).get("values", []),
        "breaker": (breaker or {}).get("error") or ((breaker or {}).get("values") or [None])[0],
    }
    model_part: Any = model["error"] if model.get("error") else model["values"][0]
    return {
        "as_of": iso(now),
        "host": host,
        "hosts": hosts,
        "metrics_as_of": current.get("window_end"),
        "anomalies": anomaly_part,
        "actions": actions,
        "model": model_part,
        "summary": answers.compose("status.overview", {"host": host} if host else {}, evidence, now=now,
                                   known_hosts=state.resources.known_hosts()),
    }
