"""Helpers for the remediation tests: a recording adapter, a settable clock, metric frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from remediation.adapters.base import HealthReport, RemediationAdapter
from smartcloudops.audit import AuditLog
from smartcloudops.errors import ActionError

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HOSTS = ("web-1", "web-2", "app-1")


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class FakeAdapter(RemediationAdapter):
    """Records every call; ``fail`` makes a method raise ActionError."""

    host_names: Sequence[str] = HOSTS
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)
    capacities: dict[str, int] = field(default_factory=dict)
    healthy: bool = True
    restarted_at: datetime | None = None

    name = "fake"

    def _record(self, method: str, host: str) -> None:
        self.calls.append((method, host))
        if method in self.fail:
            raise ActionError(f"{method} on {host} failed: connection refused")

    def hosts(self) -> list[str]:
        return list(self.host_names)

    def restart_service(self, host: str, service: str) -> None:
        self._record("restart_service", host)

    def capacity(self, host: str) -> int:
        return self.capacities.get(host, 2)

    def scale_up(self, host: str, replicas: int, *, max_capacity: int) -> int:
        self._record("scale_up", host)
        self.capacities[host] = min(self.capacity(host) + replicas, max_capacity)
        return self.capacities[host]

    def scale_down(self, host: str, replicas: int, *, min_capacity: int) -> int:
        self._record("scale_down", host)
        self.capacities[host] = max(self.capacity(host) - replicas, min_capacity)
        return self.capacities[host]

    def health(self, host: str, service: str = "app") -> HealthReport:
        self._record("health", host)
        return HealthReport(host, self.healthy, {"app_up": self.healthy})

    def last_restart(self, host: str, service: str) -> datetime | None:
        return self.restarted_at

    @property
    def mutations(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] != "health"]


def frame(
    host: str,
    metric: str,
    values: Sequence[float | None],
    *,
    end: datetime = T0,
    step: int = 60,
) -> pd.DataFrame:
    """Samples ending at ``end``, one per step; ``None`` is a lost scrape (no row)."""
    n = len(values)
    rows = [
        {"timestamp": end - timedelta(seconds=step * (n - 1 - i)), "host": host, "metric": metric, "value": v}
        for i, v in enumerate(values)
        if v is not None
    ]
    return pd.DataFrame(rows, columns=["timestamp", "host", "metric", "value"])


def frames(*parts: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True)


CPU_RULE = """
rules:
  - name: cpu_high
    condition: {metric: cpu, operator: ">", threshold: 90, duration: 3m,
                min_samples_ratio: 0.75, clear_threshold: 80}
    action: restart_service
    params: {service: app}
    cooldown: 10m
"""


def audit_records(audit_dir: Path) -> list[dict[str, Any]]:
    return list(AuditLog(audit_dir).records())
