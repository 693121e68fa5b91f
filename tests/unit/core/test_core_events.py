"""The event store on SQLite: anomalies, actions, exactly-once claims, small JSON state."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from smartcloudops.domain import ActionRecord, ActionStatus, Anomaly, Severity
from smartcloudops.errors import StoreError
from smartcloudops.events import EventStore
from smartcloudops.settings import get_settings

T0 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    events = EventStore(f"sqlite:///{tmp_path / 'db' / 'events.db'}")
    yield events
    events.close()


def _anomaly(host: str, minutes: int, score: float = 0.9, **kw: object) -> Anomaly:
    return Anomaly(
        host=host,
        timestamp=T0 + timedelta(minutes=minutes),
        score=score,
        severity=Severity.HIGH,
        model_version="4",
        contributions={"cpu": 0.7, "memory": 0.2},
        metrics={"cpu": 97.5, "memory": 60.0},
        **kw,  # type: ignore[arg-type]
    )


def test_construction_connects_to_nothing(tmp_path: Path) -> None:
    EventStore("postgresql+psycopg2://nobody:pw@127.0.0.1:1/none")  # closed port: fine until used
    path = tmp_path / "lazy" / "events.db"
    EventStore(f"sqlite:///{path}")
    assert not path.exists()


def test_anomalies_round_trip(store: EventStore) -> None:
    batch = [_anomaly("web-1", 0), _anomaly("db-1", 5, 0.95), _anomaly("web-1", 10, 0.99)]
    assert store.record_anomalies(batch) == 3
    assert store.record_anomalies(batch[:2]) == 0  # ids already known: nothing duplicated
    assert store.record_anomalies([]) == 0
    recent = store.recent_anomalies(limit=10)
    assert [a.anomaly_id for a in recent] == [batch[2].anomaly_id, batch[1].anomaly_id, batch[0].anomaly_id]
    assert recent[0] == batch[2]  # every field, timestamps aware UTC
    assert recent[0].timestamp.tzinfo is not None
    assert [a.anomaly_id for a in store.recent_anomalies(limit=1)] == [batch[2].anomaly_id]
    assert [a.host for a in store.recent_anomalies(host="db-1")] == ["db-1"]
    since = store.recent_anomalies(since=T0 + timedelta(minutes=5))
    assert {a.anomaly_id for a in since} == {batch[1].anomaly_id, batch[2].anomaly_id}
    assert store.get_anomaly(batch[1].anomaly_id) == batch[1]
    assert store.get_anomaly("anom-nope") is None
    assert store.recent_anomalies(limit=0) == []


def test_times_in_other_zones_are_stored_as_instants(store: EventStore) -> None:
    plus5 = timezone(timedelta(hours=5))
    local = Anomaly("web-2", datetime(2024, 5, 6, 15, 0, tzinfo=plus5), 0.9, Severity.LOW, "1")  # 10:00 UTC
    store.record_anomalies([local, _anomaly("web-1", 30)])
    back = store.get_anomaly(local.anomaly_id)
    assert back is not None and back.timestamp == T0 and back.timestamp.utcoffset() == timedelta(0)
    # "since" given in another zone means the same instant
    since = (T0 + timedelta(minutes=15)).astimezone(plus5)
    assert [a.host for a in store.recent_anomalies(since=since)] == ["web-1"]
    assert [a.host for a in store.recent_anomalies(limit=1)] == ["web-1"]


def test_actions_round_trip_and_replace(store: EventStore) -> None:
    pending = ActionRecord(
        "scale_up", "web-1", ActionStatus.PENDING, "cpu_high", dry_run=False,
        timestamp=T0, params={"replicas": 1}, anomaly_id="anom-1",
    )
    other = ActionRecord(
        "restart_service", "db-1", ActionStatus.DRY_RUN, "mem_leak", True, T0 + timedelta(minutes=1)
    )
    store.record_action(pending)
    store.record_action(other)
    assert store.get_action(pending.action_id) == pending
    assert [a.action_id for a in store.actions()] == [other.action_id, pending.action_id]
    # an approval rewrites the same record: replaced by action_id, never duplicated
    approved = ActionRecord(
        "scale_up", "web-1", ActionStatus.SUCCEEDED, "cpu_high", False, T0,
        action_id=pending.action_id, approved_by="alice", duration_ms=12.5, params={"replicas": 1},
        anomaly_id="anom-1", detail="capacity 3",
    )
    store.record_action(approved)
    assert len(store.actions(limit=50)) == 2
    assert store.get_action(pending.action_id) == approved
    assert [a.action_id for a in store.actions(status=ActionStatus.SUCCEEDED)] == [pending.action_id]
    assert store.actions(status=ActionStatus.PENDING) == []
    assert [a.instance for a in store.actions(instance="db-1")] == ["db-1"]
    assert [a.action_id for a in store.actions(since=T0 + timedelta(seconds=30))] == [other.action_id]
    assert store.get_action("act-nope") is None


def test_claim_exactly_once_and_release(store: EventStore) -> None:
    assert store.claim("incident:web-1:cpu", "sensor-a") is True
    assert store.claim("incident:web-1:cpu", "sensor-b") is False
    assert store.claim("incident:web-1:cpu", "sensor-a") is False  # not re-entrant either
    assert store.claim("incident:db-1:cpu", "sensor-b") is True  # other keys are free
    store.release("incident:web-1:cpu")
    assert store.claim("incident:web-1:cpu", "sensor-b") is True
    store.release("never-claimed")  # harmless


def test_claim_ttl_expires(store: EventStore) -> None:
    assert store.claim("k", "a", ttl_seconds=0.3) is True
    assert store.claim("k", "b", ttl_seconds=0.3) is False
    time.sleep(0.4)
    assert store.claim("k", "b", ttl_seconds=60) is True
    assert store.claim("k", "c") is False
    # without a TTL a claim holds until released
    assert store.claim("forever", "a") is True
    time.sleep(0.1)
    assert store.claim("forever", "b") is False


def test_threads_racing_for_a_claim_get_exactly_one_winner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    EventStore(url).engine  # noqa: B018 - create the tables up front, like a running service
    racers = 6
    keys = [f"incident-{i}" for i in range(8)]
    wins: dict[str, list[str]] = {k: [] for k in keys}
    errors: list[BaseException] = []
    barrier = threading.Barrier(racers)
    lock = threading.Lock()

    def race(name: str) -> None:
        store = EventStore(url)  # own engine and connections, like another worker
        try:
            for key in keys:
                barrier.wait(timeout=20)
                if store.claim(key, name, ttl_seconds=300):
                    with lock:
                        wins[key].append(name)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            store.close()

    threads = [threading.Thread(target=race, args=(f"worker-{n}",)) for n in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert {k: len(v) for k, v in wins.items()} == dict.fromkeys(keys, 1)


def test_two_threads_first_touching_a_fresh_store(tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'fresh.db'}")
    results: list[object] = []
    barrier = threading.Barrier(2)

    def touch() -> None:
        barrier.wait(timeout=10)
        try:
            results.append(store.claim("k", threading.current_thread().name))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=touch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(map(str, results)) == ["False", "True"]


def test_state_kv(store: EventStore) -> None:
    assert store.get_state("rule:cpu_high:web-1") is None
    store.put_state("rule:cpu_high:web-1", {"breach_since": T0.isoformat(), "count": 3})
    assert store.get_state("rule:cpu_high:web-1") == {"breach_since": T0.isoformat(), "count": 3}
    store.put_state("rule:cpu_high:web-1", {"count": 0})
    assert store.get_state("rule:cpu_high:web-1") == {"count": 0}
    store.put_state("when", {"at": T0})  # non-JSON values become strings, not a crash
    assert store.get_state("when") == {"at": str(T0)}


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    first = EventStore(url)
    first.record_anomalies([_anomaly("web-1", 0)])
    first.put_state("x", {"y": 1})
    first.close()
    second = EventStore(url)
    assert len(second.recent_anomalies()) == 1 and second.get_state("x") == {"y": 1}
    second.close()


def test_unusable_urls_are_store_errors_without_passwords() -> None:
    with pytest.raises(StoreError) as info:
        EventStore("postgresql+psycopg2://scops:hunter2@127.0.0.1:1/none").recent_anomalies()
    assert "hunter2" not in str(info.value) and "127.0.0.1:1" in str(info.value)
    with pytest.raises(StoreError, match="unusable"):
        EventStore("nosuchdialect://x/y").get_state("k")


def test_from_settings_defaults_to_sqlite_under_home(isolated_home: Path) -> None:
    store = EventStore.from_settings(get_settings())
    assert store.url == f"sqlite:///{(isolated_home / 'events.db').resolve()}"
    store.put_state("k", {"v": 1})
    assert (isolated_home / "events.db").exists()
    store.close()
