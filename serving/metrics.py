"""Prometheus metrics for the scoring service (prometheus_client, one registry per app).

A registry per app, not the library's global one, so tests and embedders can build many
apps in one process. Request figures are recorded as requests happen; the model's state is
read from the provider at scrape time by a collector, so /metrics can never disagree with
/readyz.

Each uvicorn worker process keeps its own figures (issue 4: prometheus_client's
multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, to sum them behind one port).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from serving.model import ProviderStatus, Scorer

#: prometheus_client's text format 0.0.4, what every Prometheus scrapes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "smartcloudops_scoring"

#: Seconds. Dense below 10 ms because issue 4's target is p99 <= 5 ms.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class _ModelCollector(Collector):
    """The served model's state, read from the provider at each scrape."""

    def __init__(self, status: Callable[[], ProviderStatus], current: Callable[[], Scorer | None]) -> None:
        self._status = status
        self._current = current

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        scorer = self._current()
        info = GaugeMetricFamily(
            f"{PREFIX}_model_info",
            "1 for the model version being served (labels name it).",
            labels=("version", "run_id", "source"),
        )
        if scorer is not None:
            info.add_metric((scorer.version, scorer.run_id or "", scorer.source), 1)
        yield info
        yield GaugeMetricFamily(
            f"{PREFIX}_model_loaded", "1 when a model is loaded and serving.", value=1 if status.ready else 0
        )
        if scorer is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_model_loaded_timestamp_seconds",
                "Unix time the served model was loaded.",
                value=scorer.loaded_at.timestamp(),
            )
        yield CounterMetricFamily(
            f"{PREFIX}_model_loads",
            "Successful model loads since start (initial and swaps).",
            value=status.loads,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_model_load_failures",
            "Failed model loads or registry checks since start.",
            value=status.load_failures,
        )
        error = GaugeMetricFamily(
            f"{PREFIX}_model_load_error",
            "1 while the most recent load or registry check failed (message in the label).",
            labels=("error",),
        )
        if status.last_error:
            # Truncated: a label is not a log; the full text is in /readyz and the log.
            error.add_metric((status.last_error[:200],), 1)
        yield error


class ServingMetrics:
    """The scoring service's metric families, in their own registry."""

    def __init__(
        self,
        status: Callable[[], ProviderStatus] | None = None,
        current: Callable[[], Scorer | None] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time to answer an HTTP request, by route and status code.",
            ("route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._latency_children: dict[tuple[str, int], Any] = {}
        self.rows_scored = Counter(f"{PREFIX}_rows_scored", "Rows scored.", registry=self.registry)
        self.anomalies = Counter(
            f"{PREFIX}_anomalies",
            "Rows flagged anomalous, by severity.",
            ("severity",),
            registry=self.registry,
        )
        if status is not None and current is not None:
            self.registry.register(_ModelCollector(status, current))

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        # The labelled child looked up once per (route, status): labels() costs more than
        # observe() on the hot path.
        child = self._latency_children.get((route, status))
        if child is None:
            child = self._latency_children[(route, status)] = self.request_latency.labels(
                route=route, status=str(status)
            )
        child.observe(seconds)

    def count_scored(self, rows: int, anomalies_by_severity: dict[str, int]) -> None:
        self.rows_scored.inc(rows)
        for severity, n in anomalies_by_severity.items():
            self.anomalies.labels(severity=severity).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
