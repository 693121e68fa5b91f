"""Metric names the stack really exports, read from the real exporters (tests/infra).

* node_exporter: the Debian package's binary, started on a loopback port and scraped;
* the fleet simulator: its exporters, started on free loopback ports and scraped;
* the scoring service: ``serving.metrics.ServingMetrics`` rendered with every family filled;
* Prometheus itself: the series it synthesises (``up``, ``ALERTS``, ...).

Also a small PromQL reader that lists the metric names an expression selects.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import httpx
from helpers import free_port, require_binary, stop_process, wait_until
from prometheus_client.parser import text_string_to_metric_families

PROMETHEUS_SYNTHETIC = {
    "up",
    "ALERTS",
    "ALERTS_FOR_STATE",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
}

_PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
}


def sample_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
    return names


@cache
def node_exporter_names() -> frozenset[str]:
    binary = require_binary("prometheus-node-exporter", "apt-get install prometheus-node-exporter")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "node_exporter.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [binary, f"--web.listen-address=127.0.0.1:{port}", "--no-collector.systemd"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            body = wait_until(
                lambda: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text,
                timeout=30,
                what="node_exporter /metrics",
            )
        finally:
            stop_process(proc)
    return frozenset(sample_names(body))


@cache
def simulator_names() -> frozenset[str]:
    from smartcloudops.simulator import FleetSimulator, serve_exporters

    with tempfile.TemporaryDirectory() as tmp:
        sim = FleetSimulator(Path(tmp), ["web-1"], seed=7)
        group = serve_exporters(sim, host="127.0.0.1", base_port=0)
        try:
            body = httpx.get(f"http://{group.targets[0]}/metrics", timeout=10).text
        finally:
            group.stop()
    return frozenset(sample_names(body))


@cache
def serving_names() -> frozenset[str]:
    from serving.metrics import ServingMetrics
    from serving.model import FleetScorer, ProviderStatus

    now = datetime.now(UTC)
    status = ProviderStatus(
        ready=True,
        source="test",
        model_version="3",
        loaded_at=now,
        loads=1,
        load_failures=1,
        last_error="registry unreachable",
    )
    scorer = FleetScorer(model=object(), version="3", run_id="r1", source="test", loaded_at=now)
    metrics = ServingMetrics(status=lambda: status, current=lambda: scorer)
    metrics.observe_request("/v1/score", 200, 0.002)
    metrics.count_scored(10, {"low": 1, "critical": 1})
    return frozenset(sample_names(metrics.render().decode()))


def all_exported() -> set[str]:
    return set(node_exporter_names()) | set(simulator_names()) | set(serving_names()) | PROMETHEUS_SYNTHETIC


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\$\{?\w+\}?", "1", text)  # Grafana variables ($host, $__rate_interval)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end() :].lstrip()
        if following.startswith("(") or word.lower() in _PROMQL_KEYWORDS:
            continue  # a function call or an operator
        if re.fullmatch(r"\d+(e\d+)?", word) or word in {"e"}:
            continue
        names.add(word)
    return names
