"""Short-lived locks for the rule engine in Redis (service mode, ``SMARTCLOUDOPS_REMEDIATION_LOCKS=redis``).

The engine takes two kinds of keys: *locks* (``remediation:lock:*``: a (rule, host) being
decided, the fleet lock around the guards) that live seconds and carry a TTL, and *claims*
(incident, decision, verification) that must outlive any process. Locks may go to Redis --
``SET NX PX`` is the textbook lock, no table writes on every poll -- while claims stay in the
event store, which is durable (the Redis here keeps nothing on disk).

A lock is released only by the run that holds it (compare-and-delete), so a run that stalled
past its TTL cannot release a lock another run has taken since.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from smartcloudops.errors import StoreError

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class Locks(Protocol):
    """What the engine needs of a lock store (the event store has the same two methods)."""

    def claim(self, key: str, owner: str, ttl_seconds: float | None = None) -> bool: ...

    def release(self, key: str) -> None: ...


class RedisLocks:
    def __init__(self, url: str, *, timeout_seconds: float = 2.0, prefix: str = "smartcloudops:") -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds
        self.prefix = prefix
        self._client: Any = None
        self._held: dict[str, str] = {}
        self._mutex = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            import redis  # lazily: importing the engine never needs it

            self._client = redis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout_seconds,
                socket_connect_timeout=self.timeout_seconds,
            )
        return self._client

    def _safe_url(self) -> str:
        head, sep, tail = self.url.partition("@")
        return f"{head.split('://')[0]}://***@{tail}" if sep else self.url

    def claim(self, key: str, owner: str, ttl_seconds: float | None = None) -> bool:
        import redis

        px = max(1, int(ttl_seconds * 1000)) if ttl_seconds is not None else None
        try:
            taken = bool(self.client.set(self.prefix + key, owner, nx=True, px=px))
        except redis.RedisError as exc:
            raise StoreError(f"redis locks at {self._safe_url()}: {exc}") from exc
        if taken:
            with self._mutex:
                self._held[key] = owner
        return taken

    def release(self, key: str) -> None:
        import redis

        with self._mutex:
            owner = self._held.pop(key, None)
        if owner is None:
            return  # not ours (or already released): never delete another run's lock
        try:
            self.client.eval(_RELEASE, 1, self.prefix + key, owner)
        except redis.RedisError as exc:
            raise StoreError(f"redis locks at {self._safe_url()}: {exc}") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
