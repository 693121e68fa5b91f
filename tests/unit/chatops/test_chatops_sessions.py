"""Session context: follow-up resolution, the in-memory TTL store, and the real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from chatops_helpers import AppFactory, Fleet, ask

from chatops.intents import parse
from chatops.sessions import InMemorySessionStore, RedisSessionStore, Turn, remember, resolve
from smartcloudops.errors import StoreError

REDIS_URL = "redis://127.0.0.1:6379/15"
REDIS_HELP = (
    "Redis is not answering on 127.0.0.1:6379. Start it with: redis-server --daemonize yes "
    "--bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no"
)


def test_refine_keeps_intent_with_new_host() -> None:
    prev = Turn("anomaly.summary", {"limit": 3, "host": "web-1"})
    got = resolve(parse("and on db-1?"), prev)
    assert (got.intent, got.params) == ("anomaly.summary", {"limit": 3, "host": "db-1"})


def test_refine_current_to_history_with_a_window() -> None:
    got = resolve(parse("and over the last hour?"), Turn("metric.current", {"metric": "cpu"}))
    assert (got.intent, got.params) == ("metric.history", {"metric": "cpu", "since_minutes": 60})


def test_refine_with_a_new_intent_keeps_the_scope() -> None:
    got = resolve(parse("and the logs?"), Turn("metric.history", {"metric": "cpu", "host": "db-1",
                                                                  "since_minutes": 30}))
    assert (got.intent, got.params) == ("logs.search", {"host": "db-1", "since_minutes": 30})


def test_more_pages_forward() -> None:
    prev = Turn("logs.search", {"level": "error"}, offset=20, returned=20)
    got = resolve(parse("more"), prev)
    assert (got.intent, got.params, got.offset) == ("logs.search", {"level": "error"}, 40)


def test_actions_are_never_remembered_or_continued() -> None:
    approve = resolve(parse("approve act-1"), None)
    assert approve.intent == "remediation.approve"
    assert remember(approve, 1) is None
    got = resolve(parse("and act-2?"), Turn("remediation.history", {"action_id": "act-1"}))
    assert got.intent == "remediation.history"


def test_labels_are_never_remembered_and_shown_anomalies_are() -> None:
    label = resolve(parse("mark the last anomaly on web-1 as a false alarm"), None)
    assert label.intent == "label.add"
    assert remember(label, 1, ["anom-1"]) is None
    # "that was ..." is not a follow-up: context never turns into a label by merging
    that = resolve(parse("that was a real incident"), Turn("anomaly.summary", {"host": "web-1"}))
    assert (that.intent, that.params) == ("label.add", {"kind": "incident"})
    summary = resolve(parse("summarize the last 2 anomalies"), None)
    turn = remember(summary, 2, ["anom-2", "anom-1"])
    assert turn is not None and turn.anomaly_ids == ("anom-2", "anom-1")
    assert Turn.from_json(turn.to_json()) == turn
    assert Turn.from_json('{"intent": "help", "params": {}}').anomaly_ids == ()  # an older session


def test_standalone_question_ignores_context() -> None:
    got = resolve(parse("model status"), Turn("logs.search", {"level": "error"}))
    assert (got.intent, got.params) == ("model.status", {})


def test_in_memory_ttl_and_bound() -> None:
    now = [0.0]
    store = InMemorySessionStore(ttl_seconds=10, max_sessions=2, clock=lambda: now[0])
    store.put("a", Turn("help", {}))
    assert store.get("a") is not None
    now[0] = 10.5
    assert store.get("a") is None
    for key in ("x", "y", "z"):
        store.put(key, Turn("help", {}))
    assert store.get("x") is None and store.get("z") is not None


@pytest.fixture
def redis_store() -> Iterator[RedisSessionStore]:
    store = RedisSessionStore(REDIS_URL, ttl_seconds=60, prefix=f"test:chatops:{uuid.uuid4().hex}:")
    try:
        store.client.ping()
    except Exception as exc:
        pytest.fail(f"{REDIS_HELP} ({exc})")
    yield store
    for key in store.client.scan_iter(store.prefix + "*"):
        store.client.delete(key)
    store.close()


def test_redis_round_trip_and_ttl(redis_store: RedisSessionStore) -> None:
    turn = Turn("metric.history", {"metric": "cpu", "since_minutes": 60}, offset=0, returned=1)
    redis_store.put("tok:s1", turn)
    got = redis_store.get("tok:s1")
    assert got is not None and (got.intent, got.params) == (turn.intent, turn.params)
    assert 0 < redis_store.client.ttl(redis_store.prefix + "tok:s1") <= 60
    assert redis_store.get("tok:missing") is None


def test_redis_shares_context_between_workers(make_app: AppFactory, fleet: Fleet,
                                              redis_store: RedisSessionStore) -> None:
    # Two app instances (two gunicorn workers) with one Redis: a follow-up may land on either.
    settings = fleet.settings.model_copy(update={"redis_url": REDIS_URL})
    prefix = redis_store.prefix + "app:"  # cleaned up with the fixture's keys
    one = make_app(SETTINGS=settings, REDIS_PREFIX=prefix).test_client()
    two = make_app(SETTINGS=settings, REDIS_PREFIX=prefix).test_client()
    sid = "shared-" + uuid.uuid4().hex[:8]
    ask(one, "memory on web-1 over the last 2 hours", session_id=sid)
    data = ask(two, "and on db-2?", session_id=sid)
    assert (data["intent"], data["params"]) == (
        "metric.history", {"metric": "memory", "host": "db-2", "since_minutes": 120})
    assert list(redis_store.client.scan_iter(prefix + "session:*" + sid))  # kept in Redis


def test_redis_down_degrades_to_no_context(make_app: AppFactory, fleet: Fleet) -> None:
    store = RedisSessionStore("redis://127.0.0.1:1/0", timeout_seconds=0.5)
    with pytest.raises(StoreError):
        store.get("x")
    client = make_app(SESSION_STORE=store).test_client()
    ask(client, "cpu on web-1", session_id="d")
    data = ask(client, "and on db-1?", session_id="d")
    assert (data["intent"], data["params"]) == ("metric.current", {"host": "db-1"})
