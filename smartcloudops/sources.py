"""Metric sources: where live and historical samples come from.

Two implementations of one protocol: Prometheus's HTTP API (``query_range`` with the PromQL
below, which works for node_exporter and for the simulator's exporters alike) and the
simulator read directly, for the embedded default where no Prometheus runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import pandas as pd

from smartcloudops.domain import CANONICAL_METRICS, empty_long_frame, normalize_long, utcnow
from smartcloudops.errors import InputError, SourceError

if TYPE_CHECKING:
    from smartcloudops.settings import Settings
    from smartcloudops.simulator import FleetSimulator

# node_exporter names; every target carries a ``host`` label set in the scrape config.
_FS = 'mountpoint="/",fstype!~"tmpfs|overlay|squashfs"'
# CPU is idle time over *all* CPU time rather than 1 - avg(rate(idle)): the same number once
# the rate window is full, but right from the second scrape of a new series too. rate()
# divides by the whole window, so in a fresh Prometheus's first minute every rate is too low
# and 1 - rate(idle) showed ~100 % busy on every host; in the ratio that bias cancels.
PROMQL: dict[str, str] = {
    "cpu": '100 * (1 - sum by (host) (rate(node_cpu_seconds_total{mode="idle"}[1m]))'
    " / sum by (host) (rate(node_cpu_seconds_total[1m])))",
    "memory": "100 * (1 - avg by (host) (node_memory_MemAvailable_bytes"
    " / node_memory_MemTotal_bytes))",
    "disk": f"100 * (1 - max by (host) (node_filesystem_avail_bytes{{{_FS}}}"
    f" / node_filesystem_size_bytes{{{_FS}}}))",
    "load": "max by (host) (node_load1)",
    "network_in": 'sum by (host) (rate(node_network_receive_bytes_total{device!="lo"}[1m]))',
    "network_out": 'sum by (host) (rate(node_network_transmit_bytes_total{device!="lo"}[1m]))',
}

#: Prometheus refuses more than 11,000 points per series in one query_range.
_MAX_POINTS = 10_000


class MetricSource(Protocol):
    def query_range(
        self,
        start: datetime,
        end: datetime,
        step_seconds: int = 60,
        hosts: Sequence[str] | None = None,
    ) -> pd.DataFrame: ...

    def latest(self, hosts: Sequence[str] | None = None) -> pd.DataFrame: ...

    def hosts(self) -> list[str]: ...


def _check_range(start: datetime, end: datetime, step_seconds: int) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InputError("start and end must be timezone-aware (UTC)")
    if end <= start:
        raise InputError(f"empty time range: {start.isoformat()} .. {end.isoformat()}")
    if step_seconds <= 0:
        raise InputError("step_seconds must be positive")


class SimulatorSource:
    """Reads the built-in fleet simulator directly (no Prometheus needed)."""

    def __init__(self, sim: FleetSimulator) -> None:
        self.sim = sim

    def query_range(
        self,
        start: datetime,
        end: datetime,
        step_seconds: int = 60,
        hosts: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        _check_range(start, end, step_seconds)
        # Prometheus's range is inclusive of ``end``; keep the two sources interchangeable.
        return self.sim.values(start, end + timedelta(microseconds=1), step_seconds, self._known(hosts))

    def latest(self, hosts: Sequence[str] | None = None) -> pd.DataFrame:
        return self.sim.latest(hosts=self._known(hosts))

    def hosts(self) -> list[str]:
        return list(self.sim.hosts)

    def _known(self, hosts: Sequence[str] | None) -> list[str] | None:
        if hosts is None:
            return None
        unknown = sorted(set(hosts) - set(self.sim.hosts))
        if unknown:
            raise InputError(f"unknown host(s) {', '.join(unknown)}; known: {', '.join(self.sim.hosts)}")
        return list(hosts)


class PrometheusSource:
    """Prometheus's HTTP API: ``/api/v1/query_range`` and ``/api/v1/query``."""

    def __init__(self, base_url: str, timeout_seconds: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout_seconds

    def _get(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        url = f"{self.base_url}{path}"
        try:
            response = httpx.get(url, params=params, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise SourceError(f"Prometheus at {self.base_url} is unreachable: {exc}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise SourceError(f"Prometheus answered {response.status_code} with non-JSON") from exc
        if response.status_code != 200 or body.get("status") != "success":
            raise SourceError(f"Prometheus query failed ({response.status_code}): {body.get('error', body)}")
        result = body.get("data", {}).get("result", [])
        return list(result)

    @staticmethod
    def _host_filter(hosts: Sequence[str] | None) -> set[str] | None:
        return set(hosts) if hosts else None

    def query_range(
        self,
        start: datetime,
        end: datetime,
        step_seconds: int = 60,
        hosts: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        _check_range(start, end, step_seconds)
        wanted = self._host_filter(hosts)
        rows: list[tuple[float, str, str, float]] = []
        chunk = timedelta(seconds=step_seconds * _MAX_POINTS)
        for metric, promql in PROMQL.items():
            chunk_start = start
            while chunk_start <= end:
                chunk_end = min(chunk_start + chunk, end)
                series = self._get(
                    "/api/v1/query_range",
                    {
                        "query": promql,
                        "start": chunk_start.timestamp(),
                        "end": chunk_end.timestamp(),
                        "step": step_seconds,
                    },
                )
                rows.extend(_rows(series, metric, wanted, key="values"))
                chunk_start = chunk_end + timedelta(seconds=step_seconds)
        return _frame(rows)

    def latest(self, hosts: Sequence[str] | None = None) -> pd.DataFrame:
        wanted = self._host_filter(hosts)
        rows: list[tuple[float, str, str, float]] = []
        # One evaluation instant for all six queries: otherwise each metric gets its own
        # timestamp and long_to_wide() turns one host into six half-empty rows.
        params: dict[str, Any] = {"time": round(utcnow().timestamp(), 3)}
        for metric, promql in PROMQL.items():
            series = self._get("/api/v1/query", {**params, "query": promql})
            rows.extend(_rows(series, metric, wanted, key="value"))
        return _frame(rows)

    def hosts(self) -> list[str]:
        series = self._get("/api/v1/query", {"query": "count by (host) (node_load1)"})
        return sorted(s["metric"]["host"] for s in series if "host" in s.get("metric", {}))


def _rows(
    series: list[dict[str, Any]], metric: str, wanted: set[str] | None, key: str
) -> list[tuple[float, str, str, float]]:
    rows = []
    for item in series:
        host = item.get("metric", {}).get("host")
        if host is None or (wanted is not None and host not in wanted):
            continue
        points = item.get(key, [])
        if key == "value":
            points = [points]
        for ts, raw in points:
            value = float(raw)
            if math.isfinite(value):
                rows.append((float(ts), host, metric, value))
    return rows


def _frame(rows: list[tuple[float, str, str, float]]) -> pd.DataFrame:
    if not rows:
        return empty_long_frame()
    frame = pd.DataFrame(rows, columns=["timestamp", "host", "metric", "value"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
    return normalize_long(frame)


def get_metric_source(settings: Settings) -> MetricSource:
    """Prometheus when ``PROMETHEUS_URL`` is set, else the simulator (embedded default)."""
    if settings.prometheus_url:
        return PrometheusSource(settings.prometheus_url, settings.http_timeout_seconds)
    from smartcloudops.simulator import FleetSimulator

    return SimulatorSource(FleetSimulator.from_settings(settings))


def recent_window(minutes: float, now: datetime | None = None) -> tuple[datetime, datetime]:
    end = now or utcnow()
    return end - timedelta(minutes=minutes), end.astimezone(UTC)


__all__ = [
    "CANONICAL_METRICS",
    "PROMQL",
    "MetricSource",
    "PrometheusSource",
    "SimulatorSource",
    "get_metric_source",
    "recent_window",
]
