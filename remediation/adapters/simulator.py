"""Adapter acting on the built-in fleet simulator (the demo and the tests)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from remediation.adapters.base import HealthReport, RemediationAdapter
from smartcloudops.errors import ActionError, SmartCloudOpsError

if TYPE_CHECKING:
    from smartcloudops.simulator import FleetSimulator

T = TypeVar("T")

#: How far back ``last_restart`` looks for incidents a restart ended.
_RESTART_LOOKBACK = timedelta(days=1)


class SimulatorAdapter(RemediationAdapter):
    """Calls the simulator's remediation hooks; its state file makes them visible to every
    process (the exporter, other sensor runs), so this adapter keeps no state of its own."""

    name: ClassVar[str] = "simulator"

    def __init__(
        self, sim: FleetSimulator, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.sim = sim
        # With a clock (tests, replays) effects happen at the engine's "now", not wall time.
        self._clock = clock

    def _at(self) -> datetime | None:
        return self._clock() if self._clock is not None else None

    def _check_host(self, host: str) -> None:
        if host not in self.sim.hosts:
            known = ", ".join(self.sim.hosts)
            raise ActionError(f"unknown host {host!r}; known hosts: {known}")

    def _call(self, what: str, host: str, fn: Callable[[], T]) -> T:
        self._check_host(host)
        try:
            return fn()
        except SmartCloudOpsError as exc:
            raise ActionError(f"{what} on {host} failed: {exc}") from exc
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ActionError(f"{what} on {host} failed: {exc}") from exc

    def hosts(self) -> list[str]:
        return list(self.sim.hosts)

    def restart_service(self, host: str, service: str) -> None:
        self._call(
            "restart_service",
            host,
            lambda: self.sim.restart_service(host, service=service, at=self._at()),
        )

    def capacity(self, host: str) -> int:
        return int(self._call("capacity", host, lambda: self.sim.capacity(host)))

    def scale_up(self, host: str, replicas: int, *, max_capacity: int) -> int:
        current = self.capacity(host)
        step = min(replicas, max_capacity - current)
        if step <= 0:
            return current
        return int(
            self._call("scale_up", host, lambda: self.sim.scale_up(host, step, at=self._at()))
        )

    def scale_down(self, host: str, replicas: int, *, min_capacity: int) -> int:
        current = self.capacity(host)
        step = min(replicas, current - min_capacity)
        if step <= 0:
            return current
        return int(
            self._call(
                "scale_down", host, lambda: self.sim.scale_down(host, step, at=self._at())
            )
        )

    def health(self, host: str, service: str = "app") -> HealthReport:
        raw: dict[str, Any] = self._call("health", host, lambda: self.sim.health(host, at=self._at()))
        return HealthReport(
            host=host,
            healthy=bool(raw.get("healthy", False)),
            checks=dict(raw.get("checks", {})),
            active_incidents=list(raw.get("active_incidents", [])),
        )

    def last_restart(self, host: str, service: str) -> datetime | None:
        # The simulator records which remediation ended an incident; a restart that ended
        # one on this host is the evidence another run (or an operator) already acted.
        now = self._at()
        if now is None:
            from smartcloudops.domain import utcnow

            now = utcnow()
        incidents = self._call(
            "last_restart", host, lambda: self.sim.incidents(now - _RESTART_LOOKBACK, now)
        )
        ends = [
            inc.end
            for inc in incidents
            if inc.host == host and inc.ended_by and "restart" in str(inc.ended_by)
        ]
        return max(ends) if ends else None
