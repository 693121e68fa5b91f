"""Metric sources: the simulator read directly, and Prometheus's HTTP API against a loopback stub.

The real Prometheus is in tests/integration/test_prometheus.py; here a tiny HTTP server plays
the odd answers a real one rarely gives on demand (errors, non-JSON, NaN, slowness).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

from smartcloudops.domain import CANONICAL_METRICS
from smartcloudops.errors import InputError, SourceError
from smartcloudops.settings import Settings
from smartcloudops.simulator import FleetSimulator
from smartcloudops.sources import PROMQL, PrometheusSource, SimulatorSource, get_metric_source

T0 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)
HOSTS = ["web-1", "db-1"]

Reply = Callable[[str, dict[str, str]], tuple[int, bytes]]


class Stub:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[tuple[str, dict[str, str]]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                stub.requests.append((url.path, params))
                status, body = stub.reply(url.path, params)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client timed out
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[Callable[[Reply], Stub]]:
    started: list[Stub] = []

    def start(reply: Reply) -> Stub:
        started.append(Stub(reply))
        return started[-1]

    yield start
    for s in started:
        s.close()


def _ok(result: list[dict[str, Any]], result_type: str = "matrix") -> tuple[int, bytes]:
    body = {"status": "success", "data": {"resultType": result_type, "result": result}}
    return 200, json.dumps(body).encode()


# -- simulator source ------------------------------------------------------------------------


def test_simulator_source_matches_the_simulator(tmp_path: Path) -> None:
    sim = FleetSimulator(tmp_path / "s", HOSTS)
    source = SimulatorSource(sim)
    assert source.hosts() == HOSTS
    frame = source.query_range(T0, T0 + timedelta(minutes=10), 60, hosts=["db-1"])
    # like Prometheus, the range includes its end
    assert frame["timestamp"].max() == pd.Timestamp(T0 + timedelta(minutes=10))
    assert set(frame["host"]) == {"db-1"} and len(frame) == 11 * 6
    latest = source.latest()
    assert set(latest["metric"]) == set(CANONICAL_METRICS) and set(latest["host"]) == set(HOSTS)
    with pytest.raises(InputError, match="unknown host"):
        source.query_range(T0, T0 + timedelta(minutes=1), hosts=["nope-1"])
    with pytest.raises(InputError, match="timezone-aware"):
        source.query_range(datetime(2024, 5, 6), datetime(2024, 5, 7))
    with pytest.raises(InputError, match="empty time range"):
        source.query_range(T0, T0)


def test_get_metric_source_follows_settings(tmp_path: Path) -> None:
    assert isinstance(get_metric_source(Settings(home=tmp_path)), SimulatorSource)
    settings = Settings(home=tmp_path, prometheus_url="http://127.0.0.1:9/", http_timeout_seconds=3)
    prom = get_metric_source(settings)
    assert isinstance(prom, PrometheusSource)
    assert prom.base_url == "http://127.0.0.1:9" and prom.timeout == 3


# -- Prometheus source -----------------------------------------------------------------------


def test_promql_uses_node_exporter_names_by_host() -> None:
    assert set(PROMQL) == set(CANONICAL_METRICS)
    for query in PROMQL.values():
        assert "by (host)" in query and "node_" in query


def test_query_range_parses_and_skips_what_it_cannot_use(stub: Callable[[Reply], Stub]) -> None:
    t = T0.timestamp()

    def reply(path: str, params: dict[str, str]) -> tuple[int, bytes]:
        return _ok([
            {"metric": {"host": "web-1"}, "values": [[t, "1.5"], [t + 60, "NaN"], [t + 120, "+Inf"]]},
            {"metric": {"instance": "no-host-label"}, "values": [[t, "9"]]},
            {"metric": {"host": "db-1"}, "values": [[t, "2"]]},
        ])

    server = stub(reply)
    frame = PrometheusSource(server.url).query_range(T0, T0 + timedelta(minutes=2), 60, hosts=["web-1"])
    assert len(frame) == len(CANONICAL_METRICS)  # one finite web-1 value per metric
    assert set(frame["host"]) == {"web-1"} and set(frame["value"]) == {1.5}
    assert frame["timestamp"].iloc[0] == pd.Timestamp(T0)
    assert {p for p, _ in server.requests} == {"/api/v1/query_range"}
    assert {q["query"] for _, q in server.requests} == set(PROMQL.values())


def test_long_ranges_are_chunked_below_prometheus_point_limit(stub: Callable[[Reply], Stub]) -> None:
    server = stub(lambda path, params: _ok([]))
    start = T0
    end = start + timedelta(seconds=25_000)
    frame = PrometheusSource(server.url).query_range(start, end, step_seconds=1)
    assert frame.empty and list(frame.columns) == ["timestamp", "host", "metric", "value"]
    cpu = [(float(q["start"]), float(q["end"])) for _, q in server.requests if q["query"] == PROMQL["cpu"]]
    assert len(cpu) == 3
    assert cpu[0][0] == start.timestamp() and cpu[-1][1] == end.timestamp()
    for (s, e), (next_s, _) in itertools.pairwise(cpu):
        assert e - s <= 11_000  # Prometheus's limit is 11,000 points per series
        assert next_s == e + 1  # contiguous, no point fetched twice


def test_latest_asks_for_one_instant(stub: Callable[[Reply], Stub]) -> None:
    now = time.time()

    def reply(path: str, params: dict[str, str]) -> tuple[int, bytes]:
        return _ok([{"metric": {"host": "web-1"}, "value": [float(params["time"]), "3"]}], "vector")

    server = stub(reply)
    frame = PrometheusSource(server.url).latest()
    assert {p for p, _ in server.requests} == {"/api/v1/query"}
    assert len({q["time"] for _, q in server.requests}) == 1  # the same instant for all six
    assert abs(float(server.requests[0][1]["time"]) - now) < 30
    assert frame["timestamp"].nunique() == 1 and len(frame) == 6


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (502, b"<html>bad gateway</html>", "502 with non-JSON"),
        (
            400,
            json.dumps({"status": "error", "error": "parse error at char 3"}).encode(),
            "parse error at char 3",
        ),
        (200, json.dumps({"status": "error", "error": "query timed out"}).encode(), "query timed out"),
    ],
)
def test_error_answers_are_source_errors(
    stub: Callable[[Reply], Stub], status: int, body: bytes, message: str
) -> None:
    server = stub(lambda path, params: (status, body))
    with pytest.raises(SourceError, match=message):
        PrometheusSource(server.url).hosts()


def test_timeouts_are_source_errors(stub: Callable[[Reply], Stub]) -> None:
    def slow(path: str, params: dict[str, str]) -> tuple[int, bytes]:
        time.sleep(1.0)
        return _ok([])

    server = stub(slow)
    with pytest.raises(SourceError, match="unreachable"):
        PrometheusSource(server.url, timeout_seconds=0.2).latest()


def test_hosts_lists_host_labels(stub: Callable[[Reply], Stub]) -> None:
    server = stub(lambda path, params: _ok(
        [{"metric": {"host": "web-2"}, "value": [0, "1"]}, {"metric": {"host": "app-1"}, "value": [0, "1"]},
         {"metric": {}, "value": [0, "1"]}],
        "vector",
    ))
    assert PrometheusSource(server.url).hosts() == ["app-1", "web-2"]
