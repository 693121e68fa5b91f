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
``METRIC_SOURCE``             object with ``latest/query_range/hosts`` (default ``get_metric_source``)
``EVENT_STORE``               object with the EventStore read API (default ``EventStore.from_settings``)
``REMEDIATION_ENGINE``        object with ``approve(id, by)`` / ``reject(id, by, reason)``; or
``REMEDIATION_ENGINE_FACTORY`` ``callable(settings, event_store) -> engine``
                              (default ``RemediationEngine.from_settings(settings, events=store)``)
``MODEL_STATUS``              ``callable() -> dict`` (default: MLflow registry, see tools)
``MLFLOW_CLIENT_FACTORY``     ``callable(tracking_uri) -> client`` for the default MODEL_STATUS
``MLFLOW_TIMEOUT_SECONDS``    deadline for one registry read, default 5
``LOG_DIR`` / ``LOG_READER``  where logs live (default ``settings.log_dir``) / ``read_logs``
``SESSION_STORE``             object with ``get/put/close`` (default: Redis if
                              ``settings.redis_url`` else in-memory); ``SESSION_TTL_SECONDS``
``LLM_MODEL``                 overrides ``settings.llm_model``; ``LLM_TIMEOUT_SECONDS``,
                              ``LLM_RETRIES``, ``LLM_COMPLETION_KWARGS`` (e.g. ``mock_response``)
``CLOCK``                     ``callable() -> aware datetime`` (tests)
``STATUS_WINDOW_MINUTES``     window of "recent anomalies" in /status, default 60

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
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from chatops import answer as answers
from chatops import llm
from chatops.intents import LEVELS, MAX_SINCE_MINUTES, ParsedQuery, clean_text, parse
from chatops.openapi import openapi_document
from chatops.sessions import Resolved, SessionStore, Turn, make_session_store, remember, resolve
from chatops.tools import Evidence, MlflowModelStatus, Resources, Tools, iso
from smartcloudops.errors import ConfigError, SmartCloudOpsError
from smartcloudops.settings import Settings, get_settings

log = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "SETTINGS": None,
    "TOKENS": None,
    "ALLOW_NO_AUTH": False,
    "MAX_CONTENT_LENGTH": 16 * 1024,
    "MAX_QUERY_CHARS": 500,
    "RATE_LIMIT_PER_MINUTE": 300,
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
}

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
PUBLIC_ENDPOINTS = frozenset({"chatops.healthz", "chatops.openapi", "static"})
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


class RateLimiter:
    """Sliding one-minute window per caller. Per process: with N workers the effective
    limit is up to N times higher (a shared limiter would go to Redis)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> float | None:
        """None if allowed, else seconds until the next request would be."""
        if self.per_minute <= 0:
            return None
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and now - hits[0] >= 60.0:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return max(0.0, 60.0 - (now - hits[0]))
            hits.append(now)
            if len(self._hits) > 10_000:  # forget idle callers
                for k in [k for k, v in self._hits.items() if not v][:5000]:
                    del self._hits[k]
            return None


@dataclass
class ChatOps:
    """Everything one app instance owns (kept in ``app.extensions["chatops"]``)."""

    settings: Settings
    tokens: tuple[bytes, ...]
    resources: Resources
    tools: Tools
    sessions: SessionStore
    rate_limiter: RateLimiter
    llm_config: llm.LLMConfig | None
    max_query_chars: int
    status_window_minutes: int
    owned: list[str] = field(default_factory=list)  # resource names we opened and must close
    _owned_sessions: bool = False

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
        if cfg["METRIC_SOURCE"] is not None:
            return cfg["METRIC_SOURCE"]
        from smartcloudops.sources import get_metric_source

        owned.append("metric_source")
        return get_metric_source(settings)

    def open_event_store() -> Any:
        if cfg["EVENT_STORE"] is not None:
            return cfg["EVENT_STORE"]
        from smartcloudops.events import EventStore

        owned.append("event_store")
        return EventStore.from_settings(settings)

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
        from smartcloudops.logs import read_logs

        log_reader = read_logs

    resources = Resources(
        settings=settings,
        open_metric_source=open_metric_source,
        open_event_store=open_event_store,
        open_engine=open_engine,
        model_status=model_status,
        log_reader=log_reader,
        log_dir=Path(cfg["LOG_DIR"] or settings.log_dir),
        clock=clock,
    )
    sessions = cfg["SESSION_STORE"]
    owned_sessions = sessions is None
    if sessions is None:
        sessions = make_session_store(settings.redis_url, float(cfg["SESSION_TTL_SECONDS"]))
    model_name = cfg["LLM_MODEL"] or settings.llm_model
    llm_config = llm.LLMConfig(
        model=model_name,
        timeout_seconds=float(cfg["LLM_TIMEOUT_SECONDS"]),
        retries=int(cfg["LLM_RETRIES"]),
        completion_kwargs=dict(cfg["LLM_COMPLETION_KWARGS"] or {}),
    ) if model_name else None

    state = ChatOps(
        settings=settings,
        tokens=tuple(t.encode("utf-8") for t in tokens),
        resources=resources,
        tools=Tools(resources),
        sessions=sessions,
        rate_limiter=RateLimiter(int(cfg["RATE_LIMIT_PER_MINUTE"])),
        llm_config=llm_config,
        max_query_chars=int(cfg["MAX_QUERY_CHARS"]),
        status_window_minutes=int(cfg["STATUS_WINDOW_MINUTES"]),
        owned=owned,
        _owned_sessions=owned_sessions,
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


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Any:
        return _error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            message = f"request body is larger than the {limit}-byte limit"
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


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document(_state().max_query_chars))


def _read_json_body() -> dict[str, Any]:
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    if not raw.strip():
        raise ApiError(400, "missing_body", "request body must be a JSON object with a 'query'", "body")
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


def answer_question(state: ChatOps, text: str, session_id: str, caller: str | None) -> dict[str, Any]:
    """The whole /query pipeline, callable without HTTP (Slack, benchmarks)."""
    started = time.perf_counter()
    now = state.resources.clock()
    hosts = state.resources.known_hosts()
    parsed = parse(text, hosts=hosts, now=now)
    session_key = f"{caller or 'anon'}:{session_id}"
    previous: Turn | None = None
    if parsed.followup:
        try:
            previous = state.sessions.get(session_key)
        except SmartCloudOpsError as exc:
            log.warning("session store unavailable; answering without context", extra={"error": str(exc)})
    resolved = resolve(parsed, previous)
    evidence, returned = _run(state, parsed, resolved, caller)
    refusal = parsed.refusal if resolved.intent == "unknown" else None
    text_answer = answers.compose(
        resolved.intent, resolved.params, evidence, now=now, refusal=refusal, note=resolved.note or None,
        known_hosts=hosts,
    )
    llm_info: dict[str, Any]
    if state.llm_config is None:
        llm_info = llm.disabled()
    elif resolved.intent in ("help", "unknown") or not evidence:
        llm_info = llm.disabled("not used: nothing to rephrase for this intent") | {
            "enabled": True, "model": state.llm_config.model}
    else:
        text_answer, llm_info = llm.rephrase(text, evidence, text_answer, state.llm_config)
    turn = remember(resolved, returned)
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
    return {
        "intent": resolved.intent,
        "params": resolved.params,
        "answer": text_answer,
        "evidence": evidence,
        "session_id": session_id,
        "llm": llm_info,
    }


def _run(state: ChatOps, parsed: ParsedQuery, resolved: Resolved,
         caller: str | None) -> tuple[list[Evidence], int]:
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
        else:
            evidence = [tools.decide(verb, p["action_id"], by=f"chatops:{caller}",
                                     note=parsed.decision_note)]
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
