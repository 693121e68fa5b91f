"""The engine's short-lived locks in a real Redis (service mode) on loopback."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from remediation_helpers import CPU_RULE, T0, Clock, FakeAdapter, frame

from remediation.engine import RemediationEngine
from remediation.locks import RedisLocks
from remediation.rules import parse_rules
from remediation.safety import BlastRadius
from smartcloudops.audit import AuditLog
from smartcloudops.errors import ConfigError, StoreError
from smartcloudops.events import EventStore
from smartcloudops.settings import Settings

REDIS_URL = "redis://127.0.0.1:6379/0"
START_REDIS = (
    "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no "
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


@pytest.fixture
def prefix() -> Iterator[str]:
    locks = RedisLocks(REDIS_URL)
    try:
        locks.client.ping()
    except Exception as exc:  # any connection failure: say how to start it
        pytest.fail(f"Redis is not answering at {REDIS_URL} ({exc}); start it with: {START_REDIS}")
    name = f"test-{uuid.uuid4().hex[:8]}:"
    yield name
    for key in locks.client.scan_iter(f"{name}*"):
        locks.client.delete(key)
    locks.close()


def test_claim_release_ttl_and_ownership(prefix: str) -> None:
    a, b = RedisLocks(REDIS_URL, prefix=prefix), RedisLocks(REDIS_URL, prefix=prefix)
    assert a.claim("k", "run-a", ttl_seconds=0.3)
    assert not b.claim("k", "run-b", ttl_seconds=10)
    b.release("k")  # b does not hold it: a no-op, a's lock stays
    assert not b.claim("k", "run-b", ttl_seconds=10)
    time.sleep(0.45)  # a stalled past its TTL: b may take the lock...
    assert b.claim("k", "run-b", ttl_seconds=10)
    a.release("k")  # ...and a's late release must not free b's lock
    assert not a.claim("k", "run-a", ttl_seconds=10)
    b.release("k")
    assert a.claim("k", "run-a")
    a.close()
    b.close()


def test_unreachable_redis_is_a_store_error() -> None:
    locks = RedisLocks("redis://127.0.0.1:1/0", timeout_seconds=0.5)
    with pytest.raises(StoreError, match=r"redis locks at redis://127\.0\.0\.1:1/0"):
        locks.claim("k", "me", ttl_seconds=1)


def test_concurrent_engines_with_redis_locks_act_once(
    prefix: str, tmp_path: Path, adapter: FakeAdapter, clock: Clock
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [EventStore(url) for _ in range(4)]
    stores[0].get_state("warm-up")
    engines = [
        RemediationEngine(
            parse_rules(CPU_RULE), adapter, store, AuditLog(tmp_path / "audit"), dry_run=False,
            clock=clock, guards=[BlastRadius(store, lambda: 3, max_share=1.0)],
            locks=RedisLocks(REDIS_URL, prefix=prefix),
        )
        for store in stores
    ]
    breach = frame("web-1", "cpu", [50, 95, 95, 95, 95], end=T0)
    barrier = threading.Barrier(len(engines))
    acted: list[int] = []

    def run(engine: RemediationEngine) -> None:
        barrier.wait()
        for _ in range(5):
            acted.append(len(engine.evaluate(breach)))

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for store in stores:
        store.close()
    assert sum(acted) == 1 and adapter.mutations == [("restart_service", "web-1")]


def test_from_settings_picks_redis_locks(tmp_path: Path) -> None:
    engine = RemediationEngine.from_settings(
        Settings(home=tmp_path, remediation_locks="redis", redis_url=REDIS_URL), FakeAdapter()
    )
    assert isinstance(engine.locks, RedisLocks)
    default = RemediationEngine.from_settings(Settings(home=tmp_path), FakeAdapter())
    assert isinstance(default.locks, EventStore)
    with pytest.raises(ConfigError, match="needs SMARTCLOUDOPS_REDIS_URL"):
        RemediationEngine.from_settings(Settings(home=tmp_path, remediation_locks="redis"), FakeAdapter())
