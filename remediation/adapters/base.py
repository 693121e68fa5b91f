"""The one interface every remediation target (simulator, local host, AWS) implements.

Actions talk only to this interface, so the same ``restart_service`` class restarts a
simulated host in the demo, a systemd unit on a laptop and an EC2 instance through SSM.
Adapters translate their own failures into :class:`smartcloudops.errors.ActionError` so the
executor has one exception to audit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

#: systemd-unit-like names only: they end up in argv lists and SSM parameters.
SERVICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"


@dataclass(frozen=True)
class HealthReport:
    host: str
    healthy: bool
    checks: dict[str, Any] = field(default_factory=dict)
    active_incidents: list[Any] = field(default_factory=list)

    def summary(self) -> str:
        state = "healthy" if self.healthy else "UNHEALTHY"
        failing = [name for name, ok in self.checks.items() if ok is False]
        extra = f" (failing: {', '.join(failing)})" if failing else ""
        return f"{self.host} is {state}{extra}"


class RemediationAdapter(ABC):
    """What an action may do to a host. Every method may raise ``ActionError``."""

    name: ClassVar[str] = "abstract"

    @abstractmethod
    def hosts(self) -> list[str]:
        """Hosts this adapter can act on (used to reject typos before acting)."""

    @abstractmethod
    def restart_service(self, host: str, service: str) -> None: ...

    @abstractmethod
    def capacity(self, host: str) -> int:
        """Current capacity (instances/replicas) of the group ``host`` belongs to."""

    @abstractmethod
    def scale_up(self, host: str, replicas: int, *, max_capacity: int) -> int:
        """Add up to ``replicas``, never above ``max_capacity``; return the new capacity."""

    @abstractmethod
    def scale_down(self, host: str, replicas: int, *, min_capacity: int) -> int:
        """Remove up to ``replicas``, never below ``min_capacity``; return the new capacity."""

    @abstractmethod
    def health(self, host: str, service: str = "app") -> HealthReport: ...

    def last_restart(self, host: str, service: str) -> datetime | None:
        """When ``service`` on ``host`` was last restarted, if the adapter can tell.

        Used for idempotency: a restart that already happened during this incident (by
        another sensor run or an operator) is not repeated. ``None`` means unknown.
        """
        return None
