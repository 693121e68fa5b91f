"""Short-lived shared state: the recent-anomalies cache and the cross-worker rate limiter.

Both live in Redis when ``settings.redis_url`` is set (shared by every gunicorn worker and
every replica) and in process memory otherwise. Redis clients are created lazily and connect
on first use; a Redis failure degrades (read the event store directly, count locally) rather
than failing a question.

**Recent anomalies.** "Summarize last 3 anomalies", "/status" and Slack all ask the event
store for the newest anomalies, many times a second under load. We keep one *snapshot* --
the newest :attr:`RecentAnomalies.capacity` anomalies of the last
:attr:`RecentAnomalies.horizon_minutes` -- for ``ttl_seconds`` and answer from it whenever
the snapshot provably holds the whole answer (see :meth:`RecentAnomalies.recent_anomalies`);
otherwise the question goes to the store. Answers may lag new anomalies by at most the TTL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from smartcloudops.domain import Anomaly, Severity
from smartcloudops.errors import StoreError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "smartcloudops:chatops:"


def redis_client(url: str, timeout_seconds: float = 2.0) -> Any:
    """A Redis client for ``url``; it connects on first command, not here."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                socket_connect_timeout=timeout_seconds)


V = TypeVar("V")


class TTLBackend(Protocol):
    name: str

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl_seconds: float) -> None: ...

    def close(self) -> None: ...


class MemoryTTL(Generic[V]):
    """Per-process TTL map, bounded (oldest entries go first), thread-safe: the memory backend
    of this cache (bytes) and of the ChatOps session store (turns)."""

    name = "memory"

    def __init__(self, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def keys(self) -> list[str]:
        """Keys held now (expired ones included until they are next read)."""
        with self._lock:
            return list(self._data)

    def get(self, key: str) -> V | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if item[0] <= self._clock():
                del self._data[key]
                return None
            return item[1]

    def set(self, key: str, value: V, ttl_seconds: float) -> None:
        with self._lock:
            self._data[key] = (self._clock() + ttl_seconds, value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def close(self) -> None:
        with self._lock:
            self._data.clear()


class RedisTTL:
    """``GET`` / ``SET PX`` under a key prefix; Redis errors become StoreError."""

    name = "redis"

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, timeout_seconds: float = 2.0,
                 client: Any = None) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_seconds = timeout_seconds
        self._client = client
        self._owned = client is None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = redis_client(self.url, self.timeout_seconds)
        return self._client

    def get(self, key: str) -> bytes | None:
        import redis

        try:
            value = self.client.get(self.prefix + key)
        except redis.RedisError as exc:
            raise StoreError(f"cache (redis): {exc}") from exc
        return value if value is None else bytes(value)

    def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        import redis

        try:
            self.client.set(self.prefix + key, value, px=max(1, int(ttl_seconds * 1000)))
        except redis.RedisError as exc:
            raise StoreError(f"cache (redis): {exc}") from exc

    def close(self) -> None:
        if self._owned and self._client is not None:
            self._client.close()
            self._client = None


# ---------------------------------------------------------------------------------------
# Recent anomalies
# ---------------------------------------------------------------------------------------

class AnomalyReader(Protocol):
    def recent_anomalies(self, limit: int = 10, since: datetime | None = None,
                         host: str | None = None) -> list[Anomaly]: ...


def _anomaly_from_dict(data: dict[str, Any]) -> Anomaly:
    ts = datetime.fromisoformat(str(data["timestamp"]))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return Anomaly(
        host=str(data["host"]), timestamp=ts, score=float(data["score"]),
        severity=Severity.parse(str(data["severity"])), model_version=str(data["model_version"]),
        contributions={str(k): float(v) for k, v in (data.get("contributions") or {}).items()},
        metrics={str(k): float(v) for k, v in (data.get("metrics") or {}).items()},
        anomaly_id=str(data["anomaly_id"]),
    )


class _Snapshot:
    __slots__ = ("capped", "fetched_epoch", "horizon_start", "items")

    def __init__(self, items: list[Anomaly], horizon_start: datetime, capped: bool,
                 fetched_epoch: float) -> None:
        self.items = items
        self.horizon_start = horizon_start
        self.capped = capped
        self.fetched_epoch = fetched_epoch

    def to_bytes(self) -> bytes:
        return json.dumps({
            "items": [a.to_dict() for a in self.items],
            "horizon_start": self.horizon_start.isoformat(),
            "capped": self.capped,
            "fetched_epoch": self.fetched_epoch,
        }).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> _Snapshot:
        data = json.loads(raw)
        return cls([_anomaly_from_dict(d) for d in data["items"]],
                   datetime.fromisoformat(data["horizon_start"]), bool(data["capped"]),
                   float(data["fetched_epoch"]))


class RecentAnomalies:
    """The recent-anomalies cache in front of the event store (see the module docstring)."""

    def __init__(self, open_store: Callable[[], AnomalyReader], backend: TTLBackend, *,
                 ttl_seconds: float = 5.0, horizon_minutes: int = 24 * 60, capacity: int = 1000,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 store_id: str = "default") -> None:
        # The key names the event store, so deployments (or tests) sharing one Redis with
        # different stores never read each other's anomalies.
        self.KEY = "recent-anomalies:v1:" + hashlib.sha256(store_id.encode("utf-8")).hexdigest()[:16]
        self._open_store = open_store
        self.backend = backend
        self.ttl_seconds = ttl_seconds
        self.horizon_minutes = horizon_minutes
        self.capacity = capacity
        self._clock = clock
        self._refresh_lock = threading.Lock()
        self._decoded: tuple[bytes, _Snapshot] | None = None
        self.hits = 0
        self.misses = 0

    def _load(self) -> _Snapshot | None:
        try:
            raw = self.backend.get(self.KEY)
        except StoreError as exc:
            log.warning("anomaly cache unavailable; reading the event store", extra={"error": str(exc)})
            return None
        if raw is None:
            return None
        decoded = self._decoded
        if decoded is not None and decoded[0] == raw:
            return decoded[1]  # the same snapshot as last time: decoding it again is the cost
        try:
            snap = _Snapshot.from_bytes(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("dropping an unreadable anomaly cache entry", extra={"error": str(exc)})
            return None
        self._decoded = (raw, snap)
        return snap

    def snapshot(self) -> _Snapshot:
        """The cached snapshot, refreshed from the store when missing or expired."""
        snap = self._load()
        if snap is not None:
            return snap
        with self._refresh_lock:  # one refresh per process at a time; the rest reuse it
            snap = self._load()
            if snap is not None:
                return snap
            horizon_start = self._clock() - timedelta(minutes=self.horizon_minutes)
            items = self._open_store().recent_anomalies(limit=self.capacity, since=horizon_start)
            snap = _Snapshot(list(items), horizon_start, len(items) >= self.capacity, time.time())
            try:
                self.backend.set(self.KEY, snap.to_bytes(), self.ttl_seconds)
            except StoreError as exc:
                log.warning("anomaly cache unavailable; not stored", extra={"error": str(exc)})
            return snap

    def recent_anomalies(self, limit: int = 10, since: datetime | None = None,
                         host: str | None = None) -> list[Anomaly]:
        return self.lookup(limit, since, host)[0]

    def lookup(self, limit: int = 10, since: datetime | None = None,
               host: str | None = None) -> tuple[list[Anomaly], float | None]:
        """Same answer as ``EventStore.recent_anomalies`` (up to the TTL's lag), and the age in
        seconds of the snapshot it came from -- None when it came from the store itself.

        The snapshot holds every anomaly newer than its oldest item. So if it has at least
        ``limit`` matches, those are the newest ``limit`` overall. With fewer matches it is only
        the whole answer when nothing was cut off: the snapshot was not capped and the asked
        window starts inside the horizon it covers.
        """
        snap = self.snapshot()
        matches = [a for a in snap.items
                   if (since is None or a.timestamp >= since) and (host is None or a.host == host)]
        if len(matches) >= limit or (not snap.capped and since is not None
                                     and since >= snap.horizon_start):
            self.hits += 1
            return matches[:limit], max(0.0, time.time() - snap.fetched_epoch)
        self.misses += 1
        return self._open_store().recent_anomalies(limit=limit, since=since, host=host), None

    def close(self) -> None:
        self.backend.close()


# ---------------------------------------------------------------------------------------
# Rate limiting
# ---------------------------------------------------------------------------------------

class RateLimiter:
    """Sliding one-minute window per caller, in this process."""

    name = "memory"

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

    def close(self) -> None:
        return None


# One round trip, atomic: drop hits older than the window, count, admit or report the wait.
_SLIDING_WINDOW_LUA = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local member = ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count >= limit then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tostring(tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', key, now, member)
redis.call('PEXPIRE', key, math.ceil(window * 1000))
return false
"""


class RedisRateLimiter:
    """The same sliding window, in Redis (a sorted set per caller), shared by every worker.

    Each worker stamps hits with its own wall clock (hosts are assumed NTP-synced, as Slack's
    request signing already requires). If Redis fails, the per-process limiter takes over,
    so an outage neither blocks everyone nor lifts the limit.
    """

    name = "redis"

    def __init__(self, per_minute: int, url: str, prefix: str = DEFAULT_PREFIX + "ratelimit:",
                 timeout_seconds: float = 1.0, client: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.per_minute = per_minute
        self.url = url
        self.prefix = prefix
        self.timeout_seconds = timeout_seconds
        self._client = client
        self._owned = client is None
        self._clock = clock
        self._script: Any = None
        self._lock = threading.Lock()
        self._fallback = RateLimiter(per_minute)
        self._counter = 0

    def _get_script(self) -> Any:
        if self._script is None:
            with self._lock:
                if self._client is None:
                    self._client = redis_client(self.url, self.timeout_seconds)
                if self._script is None:
                    self._script = self._client.register_script(_SLIDING_WINDOW_LUA)
        return self._script

    def check(self, key: str) -> float | None:
        if self.per_minute <= 0:
            return None
        import redis

        with self._lock:
            self._counter += 1
            member = f"{self._clock():.6f}:{id(self)}:{self._counter}"
        try:
            wait = self._get_script()(keys=[self.prefix + key],
                                      args=[self._clock(), 60.0, self.per_minute, member])
        except redis.RedisError as exc:
            log.warning("shared rate limiter unavailable; limiting per process", extra={"error": str(exc)})
            return self._fallback.check(key)
        if wait is None:
            return None
        return max(0.0, float(wait))

    def close(self) -> None:
        if self._owned and self._client is not None:
            self._client.close()
            self._client = None
            self._script = None
