"""Conversation context: what the last turn asked, so "and on db-1?" and "more" work.

A session is keyed by the caller's token fingerprint *and* the session id the client sends,
so one operator cannot read or steer another's context by guessing a session id. State is
small JSON (intent, params, list offset, the ids of the anomalies the answer showed, so that
"that was a false alarm" knows which one). In-memory with a TTL by default; Redis when
``settings.redis_url`` is set, so several gunicorn workers share context.

Follow-ups never carry a write: a turn resolved to approve/reject or to a label is not stored
as something to continue, and merging only ever starts from a read-only intent.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from chatops.cache import MemoryTTL
from chatops.intents import INTENT_PARAMS, LIST_INTENTS, WRITE_INTENTS, ParsedQuery
from smartcloudops.errors import StoreError

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 1800.0
MAX_REMEMBERED_ANOMALIES = 20


@dataclass(frozen=True)
class Turn:
    """What a session remembers about its last answered question."""

    intent: str
    params: dict[str, Any]
    offset: int = 0
    returned: int = 0  # how many list items the last answer showed
    at: float = field(default_factory=time.time)
    #: The anomalies the last answer showed, newest first: what "that was a false alarm" is
    #: about (only when there was exactly one).
    anomaly_ids: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Turn:
        data = json.loads(text)
        return cls(
            intent=str(data["intent"]),
            params=dict(data.get("params") or {}),
            offset=int(data.get("offset", 0)),
            returned=int(data.get("returned", 0)),
            at=float(data.get("at", 0.0)),
            anomaly_ids=tuple(str(a) for a in data.get("anomaly_ids") or ())[:MAX_REMEMBERED_ANOMALIES],
        )


class SessionStore(Protocol):
    def get(self, key: str) -> Turn | None: ...

    def put(self, key: str, turn: Turn) -> None: ...

    def close(self) -> None: ...


class InMemorySessionStore:
    """Thread-safe TTL store, bounded so a client inventing session ids cannot grow it."""

    def __init__(
        self,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_sessions: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_sessions = max_sessions
        self._turns: MemoryTTL[Turn] = MemoryTTL(max_entries=max_sessions, clock=clock)

    def keys(self) -> list[str]:
        return self._turns.keys()

    def get(self, key: str) -> Turn | None:
        return self._turns.get(key)

    def put(self, key: str, turn: Turn) -> None:
        self._turns.set(key, turn, self.ttl_seconds)

    def close(self) -> None:
        self._turns.close()


class RedisSessionStore:
    """Sessions in Redis (``SETEX``), shared by every worker; connects on first use."""

    def __init__(
        self,
        url: str,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        prefix: str = "smartcloudops:chatops:session:",
        timeout_seconds: float = 2.0,
    ) -> None:
        self.url = url
        self.ttl_seconds = ttl_seconds
        self.prefix = prefix
        self.timeout_seconds = timeout_seconds
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import redis

                    self._client = redis.Redis.from_url(
                        self.url,
                        socket_timeout=self.timeout_seconds,
                        socket_connect_timeout=self.timeout_seconds,
                    )
        return self._client

    def get(self, key: str) -> Turn | None:
        import redis

        try:
            raw = self.client.get(self.prefix + key)
        except redis.RedisError as exc:
            raise StoreError(f"session store (redis): {exc}") from exc
        if raw is None:
            return None
        try:
            return Turn.from_json(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("dropping unreadable session state", extra={"session_key": key})
            return None

    def put(self, key: str, turn: Turn) -> None:
        import redis

        try:
            self.client.setex(self.prefix + key, max(1, int(self.ttl_seconds)), turn.to_json())
        except redis.RedisError as exc:
            raise StoreError(f"session store (redis): {exc}") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


@dataclass(frozen=True)
class Resolved:
    """The question to answer after context is applied."""

    intent: str
    params: dict[str, Any]
    offset: int = 0
    note: str = ""  # why a follow-up could not be applied, shown in the answer


#: How many items a list intent shows when the user gave no limit.
DEFAULT_LIMITS: dict[str, int] = {
    "anomaly.summary": 10,
    "anomaly.explain": 1,
    "logs.search": 20,
    "remediation.history": 10,
}


def resolve(parsed: ParsedQuery, previous: Turn | None) -> Resolved:
    """Apply the previous turn to a follow-up; anything else passes through unchanged."""
    if parsed.followup == "more":
        if previous is None or previous.intent not in LIST_INTENTS:
            return Resolved("unknown", {}, note="There is no list to continue; ask a question first.")
        step = previous.returned or int(
            previous.params.get("limit", DEFAULT_LIMITS.get(previous.intent, 10))
        )
        return Resolved(previous.intent, dict(previous.params), offset=previous.offset + step)
    if (
        parsed.followup == "refine"
        and previous is not None
        and previous.intent not in WRITE_INTENTS
        and previous.intent not in ("unknown", "help")
        and parsed.intent not in WRITE_INTENTS
    ):
        mentioned = {k: v for k, v in parsed.mentioned.items() if k != "action_id"} or parsed.params
        new_keys = set(mentioned)
        keeps_intent = parsed.intent in ("metric.current", "unknown") or (
            parsed.reason == "host only"
        )
        target = previous.intent
        if target == "metric.current" and "since_minutes" in new_keys:
            target = "metric.history"  # "and over the last hour?"
        if keeps_intent and (new_keys <= INTENT_PARAMS[target] or parsed.intent == "unknown"):
            # "and on db-1?" / "what about memory?": same question, new parameters.
            merged = {**previous.params, **mentioned}
            return Resolved(target, _allowed(target, merged))
        # "and the logs?": a new question that keeps the scope (host, window) of the last one.
        carried = {k: v for k, v in previous.params.items() if k in ("host", "since_minutes")}
        merged = {**carried, **parsed.params}
        return Resolved(parsed.intent, _allowed(parsed.intent, merged))
    return Resolved(parsed.intent, dict(parsed.params))


def _allowed(intent: str, params: dict[str, Any]) -> dict[str, Any]:
    allowed = INTENT_PARAMS[intent]
    return {k: v for k, v in params.items() if k in allowed}


def remember(resolved: Resolved, returned: int, anomaly_ids: Sequence[str] = ()) -> Turn | None:
    """The turn to store for this answer, or None when it must not be continued."""
    if resolved.intent in WRITE_INTENTS or resolved.intent in ("unknown", "help"):
        return None
    return Turn(resolved.intent, dict(resolved.params), resolved.offset, returned,
                anomaly_ids=tuple(anomaly_ids)[:MAX_REMEMBERED_ANOMALIES])


def make_session_store(redis_url: str | None, ttl_seconds: float = DEFAULT_TTL_SECONDS,
                       prefix: str = "smartcloudops:chatops:session:") -> SessionStore:
    if redis_url:
        return RedisSessionStore(redis_url, ttl_seconds, prefix=prefix)
    return InMemorySessionStore(ttl_seconds)
