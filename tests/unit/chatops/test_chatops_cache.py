"""The recent-anomalies cache (in memory and in the real Redis) and the shared rate limiter."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chatops_helpers import TOKEN, AppFactory, Fleet, ask, auth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatops.cache import MemoryTTL, RateLimiter, RecentAnomalies, RedisRateLimiter, RedisTTL, redis_client
from smartcloudops.domain import Anomaly, Severity

REDIS_URL = "redis://127.0.0.1:6379/15"  # a DB of its own; keys under a per-test prefix
REDIS_HELP = (
    "Redis is not answering on 127.0.0.1:6379. Start it with: redis-server --daemonize yes "
    "--bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no"
)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class ListStore:
    """The event store's recent_anomalies semantics over a list; counts calls."""

    items: list[Anomaly]
    calls: list[tuple[int, datetime | None, str | None]] = field(default_factory=list)

    def recent_anomalies(self, limit: int = 10, since: datetime | None = None,
                         host: str | None = None) -> list[Anomaly]:
        self.calls.append((limit, since, host))
        found = sorted((a for a in self.items if (since is None or a.timestamp >= since)
                        and (host is None or a.host == host)), key=lambda a: a.timestamp, reverse=True)
        return found[:limit]


def anomaly(host: str, minutes_ago: float, score: float = 0.9) -> Anomaly:
    return Anomaly(host, NOW - timedelta(minutes=minutes_ago), score, Severity.HIGH, "4",
                   {"cpu": 0.5}, {"cpu": 91.0})


def ids(items: list[Anomaly]) -> list[str]:
    return [a.anomaly_id for a in items]


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    client = redis_client(REDIS_URL, 1.0)
    try:
        client.ping()
    except Exception as exc:
        pytest.fail(f"{REDIS_HELP} ({exc})")
    prefix = f"test:chatops:{uuid.uuid4().hex}:"
    yield prefix
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)
    client.close()


# -- in memory -----------------------------------------------------------------------------

def test_answers_from_the_snapshot_until_the_ttl_passes() -> None:
    tick = [0.0]
    store = ListStore([anomaly("web-1", 1), anomaly("db-1", 5), anomaly("web-1", 30)])
    cache = RecentAnomalies(lambda: store, MemoryTTL(clock=lambda: tick[0]), ttl_seconds=5, clock=lambda: NOW)
    first, age = cache.lookup(limit=2)
    assert ids(first) == ids(store.items[:2]) and age is not None
    assert len(store.calls) == 1  # the snapshot fetch
    assert ids(cache.recent_anomalies(limit=1, host="web-1")) == [store.items[0].anomaly_id]
    assert ids(cache.recent_anomalies(limit=10, since=NOW - timedelta(minutes=10))) == ids(store.items[:2])
    assert len(store.calls) == 1 and cache.hits == 3
    store.items.insert(0, anomaly("app-1", 0.5))
    assert store.items[0].anomaly_id not in ids(cache.recent_anomalies(limit=2))  # within the TTL
    tick[0] = 5.1
    assert ids(cache.recent_anomalies(limit=1)) == [store.items[0].anomaly_id]
    assert len(store.calls) == 2


def test_goes_to_the_store_when_the_snapshot_cannot_hold_the_answer() -> None:
    store = ListStore([anomaly("web-1", m) for m in (1, 2, 3)] + [anomaly("db-1", 3000)])
    cache = RecentAnomalies(lambda: store, MemoryTTL(), capacity=3, clock=lambda: NOW)
    # Capped snapshot, fewer matches than asked: older ones may exist -> the store answers.
    got, age = cache.lookup(limit=4)
    assert age is None and ids(got) == ids(store.items)
    # No window and fewer matches than asked: anything older than the horizon may exist.
    uncapped = RecentAnomalies(lambda: store, MemoryTTL(), clock=lambda: NOW)
    got, age = uncapped.lookup(limit=5, host="db-1")
    assert age is None and ids(got) == [store.items[3].anomaly_id]
    # A window inside the horizon of an uncapped snapshot is complete even when short.
    got, age = uncapped.lookup(limit=5, host="db-1", since=NOW - timedelta(minutes=60))
    assert age is not None and got == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    minutes=st.lists(st.integers(0, 3000), max_size=25, unique=True),
    hosts=st.lists(st.sampled_from(["web-1", "db-1", "app-1"]), min_size=25, max_size=25),
    limit=st.integers(1, 30),
    since=st.one_of(st.none(), st.integers(1, 4000)),
    host=st.one_of(st.none(), st.sampled_from(["web-1", "db-1", "zzz"])),
    capacity=st.integers(1, 30),
)
def test_cache_gives_exactly_the_store_answer(minutes: list[int], hosts: list[str], limit: int,
                                              since: int | None, host: str | None, capacity: int) -> None:
    store = ListStore([anomaly(h, m) for m, h in zip(minutes, hosts, strict=False)])
    cache = RecentAnomalies(lambda: store, MemoryTTL(), capacity=capacity, clock=lambda: NOW)
    start = NOW - timedelta(minutes=since) if since is not None else None
    expected = ids(store.recent_anomalies(limit, start, host))
    assert ids(cache.recent_anomalies(limit, start, host)) == expected


def test_app_serves_repeated_questions_from_the_cache(make_app: AppFactory) -> None:
    client = make_app(ANOMALY_CACHE_SECONDS=300).test_client()  # a slow CI pause must not expire it
    first = ask(client, "Summarize last 3 anomalies")
    second = ask(client, "Summarize last 3 anomalies")
    assert first["evidence"][0]["values"] == second["evidence"][0]["values"]
    assert len(second["evidence"][0]["values"]) == 3
    assert second["evidence"][0]["cached_seconds"] >= 0
    off = make_app(ANOMALY_CACHE_SECONDS=0).test_client()
    assert "cached_seconds" not in ask(off, "Summarize last 3 anomalies")["evidence"][0]


# -- in Redis ------------------------------------------------------------------------------

def test_redis_snapshot_is_shared_by_workers_and_expires(fleet: Fleet, redis_prefix: str) -> None:
    one = ListStore(list(fleet.anomalies))
    two = ListStore(list(fleet.anomalies))
    worker1 = RecentAnomalies(lambda: one, RedisTTL(REDIS_URL, prefix=redis_prefix), ttl_seconds=30,
                              clock=lambda: fleet.now, store_id="fleet")
    worker2 = RecentAnomalies(lambda: two, RedisTTL(REDIS_URL, prefix=redis_prefix), ttl_seconds=30,
                              clock=lambda: fleet.now, store_id="fleet")
    try:
        got = worker1.recent_anomalies(limit=3)
        assert ids(got) == ids(fleet.anomalies[:3])
        # The other worker answers from Redis without touching its store; objects round-trip.
        again, age = worker2.lookup(limit=3)
        assert two.calls == [] and age is not None and again == got
        client = worker1.backend.client  # type: ignore[attr-defined]
        ttl_ms = client.pttl(redis_prefix + worker1.KEY)
        assert 0 < ttl_ms <= 30_000
        client.delete(redis_prefix + worker1.KEY)  # as if it expired
        worker2.recent_anomalies(limit=3)
        assert len(two.calls) == 1
        # Another event store (another deployment on the same Redis) has its own key.
        other = RecentAnomalies(lambda: ListStore([]), RedisTTL(REDIS_URL, prefix=redis_prefix),
                                clock=lambda: fleet.now, store_id="elsewhere")
        assert other.recent_anomalies(limit=3) == []
    finally:
        worker1.close()
        worker2.close()


def test_redis_down_reads_the_store() -> None:
    store = ListStore([anomaly("web-1", 1)])
    cache = RecentAnomalies(lambda: store, RedisTTL("redis://127.0.0.1:1/0", timeout_seconds=0.3),
                            clock=lambda: NOW)
    assert ids(cache.recent_anomalies(limit=1)) == ids(store.items)
    cache.close()


def test_app_with_redis_url_caches_anomalies_in_redis(make_app: AppFactory, fleet: Fleet,
                                                      redis_prefix: str) -> None:
    settings = fleet.settings.model_copy(update={"redis_url": REDIS_URL})
    one, two = (make_app(SETTINGS=settings, REDIS_PREFIX=redis_prefix, ANOMALY_CACHE_SECONDS=300)
                .test_client() for _ in range(2))
    ask(one, "Summarize last 3 anomalies")
    client = redis_client(REDIS_URL)
    keys = [k.decode() for k in client.scan_iter(redis_prefix + "recent-anomalies:*")]
    client.close()
    assert len(keys) == 1
    data = ask(two, "Summarize last 3 anomalies")
    assert "cached_seconds" in data["evidence"][0]
    assert [v["anomaly_id"] for v in data["evidence"][0]["values"]] == ids(fleet.anomalies[:3])


# -- rate limiting ---------------------------------------------------------------------------

def test_redis_rate_limit_is_shared_between_workers(redis_prefix: str) -> None:
    now = [1000.0]
    a = RedisRateLimiter(3, REDIS_URL, prefix=redis_prefix, clock=lambda: now[0])
    b = RedisRateLimiter(3, REDIS_URL, prefix=redis_prefix, clock=lambda: now[0])
    try:
        assert [a.check("tok-1"), b.check("tok-1"), a.check("tok-1")] == [None, None, None]
        wait = b.check("tok-1")
        assert wait is not None and 0 < wait <= 60
        assert a.check("tok-2") is None  # per caller
        now[0] += 60.5
        assert b.check("tok-1") is None  # the window slid
    finally:
        a.close()
        b.close()


def test_redis_down_limits_per_process() -> None:
    limiter = RedisRateLimiter(2, "redis://127.0.0.1:1/0", timeout_seconds=0.3)
    assert [limiter.check("k"), limiter.check("k")] == [None, None]
    assert limiter.check("k") is not None


def test_memory_rate_limiter_window() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert limiter.check("k") is None and limiter.check("k") is None
    assert limiter.check("k") == pytest.approx(60.0)
    now[0] = 60.0
    assert limiter.check("k") is None
    assert RateLimiter(0).check("k") is None


def test_app_workers_share_the_limit_through_redis(make_app: AppFactory, fleet: Fleet,
                                                   redis_prefix: str) -> None:
    settings = fleet.settings.model_copy(update={"redis_url": REDIS_URL})
    apps: list[Any] = [make_app(SETTINGS=settings, REDIS_PREFIX=redis_prefix, RATE_LIMIT_PER_MINUTE=2)
                       for _ in range(2)]
    one, two = (app.test_client() for app in apps)
    assert one.get("/status", headers=auth(TOKEN)).status_code == 200
    assert two.get("/status", headers=auth(TOKEN)).status_code == 200
    limited = one.get("/status", headers=auth(TOKEN))
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.get_json()["error"]["code"] == "rate_limited"
