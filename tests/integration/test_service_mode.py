"""Service mode: the event store and MLflow on PostgreSQL, the cache on Redis (real services).

PostgreSQL and Redis run on this machine type (NOTES.md, "Services on this machine type");
each test creates and drops its own database. A service that does not answer FAILS the test
with the command that starts it.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from smartcloudops.domain import ActionRecord, ActionStatus, Anomaly, Severity
from smartcloudops.events import EventStore

pytestmark = pytest.mark.integration

PG = "postgres@127.0.0.1:5432"
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_URL = "redis://127.0.0.1:6379/15"
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


def _admin() -> Any:
    import psycopg2

    try:
        conn = psycopg2.connect(
            host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=5
        )
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL does not answer on 127.0.0.1:5432 ({exc}); start it with: {PG_START}")
    conn.autocommit = True
    return conn


@pytest.fixture
def fresh_db() -> Iterator[str]:
    """A new, empty database; dropped afterwards (also when connections are still open)."""
    name = f"scops_it_{uuid.uuid4().hex[:10]}"
    admin = _admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg2://{PG}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# -- event store on PostgreSQL ------------------------------------------------------------------


def test_event_store_round_trip_on_postgres(fresh_db: str) -> None:
    store = EventStore(fresh_db)
    try:
        plus2 = timezone(timedelta(hours=2))
        when = datetime(2024, 5, 6, 12, 0, tzinfo=plus2)  # 10:00 UTC
        anomaly = Anomaly("web-1", when, 0.97, Severity.CRITICAL, "7", {"cpu": 0.9}, {"cpu": 97.0})
        assert store.record_anomalies([anomaly]) == 1
        assert store.record_anomalies([anomaly]) == 0
        back = store.get_anomaly(anomaly.anomaly_id)
        assert back is not None and back.timestamp == when and back.timestamp.utcoffset() == timedelta(0)
        assert store.recent_anomalies(since=datetime(2024, 5, 6, 9, 59, tzinfo=UTC)) == [back]

        record = ActionRecord("scale_up", "web-1", ActionStatus.PENDING, "cpu_high", False, when)
        store.record_action(record)
        done = ActionRecord(
            "scale_up", "web-1", ActionStatus.SUCCEEDED, "cpu_high", False, when,
            action_id=record.action_id, approved_by="bob",
        )
        store.record_action(done)
        assert [a.result for a in store.actions()] == [ActionStatus.SUCCEEDED]
        store.put_state("rule:cpu_high", {"since": "x"})
        assert store.get_state("rule:cpu_high") == {"since": "x"}
        assert store.claim("k", "a", ttl_seconds=0.2) and not store.claim("k", "b")
        time.sleep(0.3)
        assert store.claim("k", "b")
    finally:
        store.close()


def test_operator_labels_round_trip_on_postgres(fresh_db: str) -> None:
    from smartcloudops.labels import LabelStore

    events = EventStore(fresh_db)
    labels = LabelStore(events)
    try:
        now = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
        plus2 = timezone(timedelta(hours=2))
        first, created = labels.add(
            "web-1", datetime(2024, 5, 6, 12, 0, tzinfo=plus2), "2024-05-06T10:30:00Z", "incident",
            author="ops", note="cpu hog", now=now,
        )
        assert created and first.start == datetime(2024, 5, 6, 10, 0, tzinfo=UTC)
        again, created = labels.add(
            "web-1", "2024-05-06T10:00:00Z", "2024-05-06T10:30:00Z", "incident", author="other", now=now
        )
        assert not created and again.label_id == first.label_id
        labels.add("web-1", "2024-05-06T10:20:00Z", "2024-05-06T11:00:00Z", "incident", author="ops", now=now)
        labels.add(
            "web-2", "2024-05-06T10:00:00Z", "2024-05-06T10:10:00Z", "false_alarm", author="ops", now=now
        )
        windows = labels.windows(datetime(2024, 5, 6, tzinfo=UTC), now)
        # Overlapping incidents of one host merge; false alarms are not incident windows.
        assert windows == {"web-1": [["2024-05-06T10:00:00Z", "2024-05-06T11:00:00Z"]]}
    finally:
        events.close()


def _race(url: str, name: str, keys: list[str], barrier: Any, results: Any) -> None:
    store = EventStore(url)  # a fresh database: both racers also race to create the tables
    wins = []
    try:
        for key in keys:
            barrier.wait(timeout=60)
            if store.claim(key, name, ttl_seconds=600):
                wins.append(key)
        results.put((name, wins, None))
    except BaseException as exc:
        results.put((name, wins, repr(exc)))
    finally:
        store.close()


def test_claims_race_exactly_once_across_processes(fresh_db: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    keys = [f"incident:web-{i % 3}:cpu:{i}" for i in range(30)]
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_race, args=(fresh_db, f"sensor-{n}", keys, barrier, results)) for n in (1, 2)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert [err for _, _, err in outcomes] == [None, None]
    won = [key for _, wins, _ in outcomes for key in wins]
    assert sorted(won) == sorted(keys)  # every key claimed exactly once, by one of the two
    assert len(set(won)) == len(won)


# -- MLflow on PostgreSQL -----------------------------------------------------------------------


def test_mlflow_tracking_on_postgres(fresh_db: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=fresh_db)  # migrates the empty database on first use
    experiment_id = client.create_experiment("smartcloudops-anomaly", artifact_location=tmp_path.as_uri())
    run = client.create_run(experiment_id, tags={"candidate": "isolation_forest"})
    client.log_param(run.info.run_id, "n_estimators", "100")
    client.log_metric(run.info.run_id, "event_f1", 0.91)
    client.set_terminated(run.info.run_id)

    # a second client (another process would be the same) reads it back from PostgreSQL
    reader = MlflowClient(tracking_uri=fresh_db)
    got = reader.get_run(run.info.run_id)
    assert got.data.params == {"n_estimators": "100"}
    assert got.data.metrics == {"event_f1": 0.91}
    assert got.data.tags["candidate"] == "isolation_forest"
    assert got.info.status == "FINISHED"
    [found] = reader.search_runs([experiment_id], "metrics.event_f1 > 0.85")
    assert found.info.run_id == run.info.run_id


# -- Redis --------------------------------------------------------------------------------------


def test_redis_answers_with_ttl() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis does not answer on 127.0.0.1:6379 ({exc}); start it with: {REDIS_START}")
    key = f"scops:test:{uuid.uuid4().hex}"
    try:
        assert client.set(key, "context-of-session-1", px=400) is True
        assert client.get(key) == b"context-of-session-1"
        assert 0 < client.pttl(key) <= 400
        time.sleep(0.6)
        assert client.get(key) is None  # expired
        # SET NX is what a lock uses: only the first taker gets it
        assert client.set(key, "owner-a", nx=True, ex=5) is True
        assert client.set(key, "owner-b", nx=True, ex=5) is None
        assert client.get(key) == b"owner-a"
    finally:
        client.delete(key)
        client.close()
