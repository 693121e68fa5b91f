"""ScoringClient against a real uvicorn server on loopback, and its failure translation."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from serving.app import create_app
from serving.client import ScoringClient, ScoringError, iter_anomalies, rows_from_frame
from serving.model import ModelProvider
from smartcloudops.errors import ModelError, SourceError
from smartcloudops.settings import Settings


@pytest.fixture
def server(tmp_path: Any, fake_model: Any, live_server: Callable[[Any], Any]) -> Any:
    app = create_app(Settings(home=tmp_path), model_provider=ModelProvider.static(fake_model, version="7"))
    return live_server(app)


def test_score_round_trip(server: Any) -> None:
    with ScoringClient(server.url, timeout=5) as client:
        assert client.health() is True
        assert client.ready()["ready"] is True
        assert client.wait_ready(1)["model_version"] == "7"
        assert client.model()["model_version"] == "7"
        results = client.score(
            [
                {"host": "web-1", "timestamp": datetime(2024, 5, 1, tzinfo=UTC), "metrics": {"cpu": 99.0}},
                {"host": "web-2", "metrics": {"cpu": 10.0, "memory": float("nan"), "disk": None}},
            ]
        )
    assert [r["host"] for r in results] == ["web-1", "web-2"]
    assert results[0]["timestamp"] == "2024-05-01T00:00:00Z"
    assert results[0]["anomaly"] is True and results[0]["model_version"] == "7"
    assert [r["host"] for r in iter_anomalies(results)] == ["web-1"]


def test_large_inputs_are_split_into_batches(server: Any) -> None:
    rows = [{"host": f"h{i}", "metrics": {"cpu": 1.0}} for i in range(25)]
    with ScoringClient(server.url) as client:
        results = client.score(rows, batch_rows=10)
    assert [r["host"] for r in results] == [f"h{i}" for i in range(25)]


def test_refused_input_is_a_model_error_naming_the_field(server: Any) -> None:
    with ScoringClient(server.url) as client, pytest.raises(ScoringError) as info:
        client.score([{"host": "a", "metrics": {"cpu": 1.0}}, {"host": "b", "metrics": {"gpu": 1.0}}])
    assert isinstance(info.value, ModelError)
    assert (info.value.status, info.value.code, info.value.field) == (
        422,
        "unknown_metric",
        "instances[1].metrics.gpu",
    )
    assert "instances[1].metrics.gpu" in str(info.value)


def test_not_ready_is_a_model_error(
    tmp_path: Any, fake_source: Any, live_server: Callable[[Any], Any]
) -> None:
    provider = ModelProvider(fake_source({}, version=None), poll_seconds=60)
    server = live_server(create_app(Settings(home=tmp_path), model_provider=provider))
    with ScoringClient(server.url) as client:
        assert client.ready()["ready"] is False
        with pytest.raises(
            ModelError, match=r"not ready after 0\.3s: no model loaded: .*no champion registered"
        ):
            client.wait_ready(0.3, interval=0.1)
        with pytest.raises(ModelError, match="model_not_ready"):
            client.score([{"host": "a", "metrics": {"cpu": 1.0}}])


def test_unreachable_service_is_a_source_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with ScoringClient(f"http://127.0.0.1:{port}", timeout=1, retries=0) as client:
        assert client.health() is False
        with pytest.raises(SourceError, match="not reachable within"):
            client.wait_ready(0.2, interval=0.1)
        with pytest.raises(SourceError, match="unreachable"):
            client.score([{"host": "a", "metrics": {"cpu": 1.0}}])
        with pytest.raises(SourceError):
            client.ready()


def test_timeout_is_a_source_error() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client = ScoringClient("http://scoring", transport=httpx.MockTransport(slow))
    with client, pytest.raises(SourceError, match="timed out"):
        client.score([{"host": "a", "metrics": {"cpu": 1.0}}])


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>proxy</html>"),
        httpx.Response(200, json={"results": []}),  # wrong length
        httpx.Response(502, text="bad gateway"),
        httpx.Response(500, json={"detail": "not our error shape"}),
    ],
)
def test_answers_that_are_not_the_api_are_source_errors(response: httpx.Response) -> None:
    client = ScoringClient("http://scoring", transport=httpx.MockTransport(lambda _: response))
    with client, pytest.raises(SourceError):
        client.score([{"host": "a", "metrics": {"cpu": 1.0}}])


def test_rows_from_long_and_wide_frames() -> None:
    ts = pd.Timestamp("2024-05-01T00:00:00Z")
    long = pd.DataFrame(
        {
            "timestamp": [ts, ts, ts],
            "host": ["a", "a", "b"],
            "metric": ["cpu", "memory", "cpu"],
            "value": [90.0, 40.0, np.nan],
        }
    )
    rows = rows_from_frame(long)
    assert rows == [
        {"host": "a", "timestamp": ts, "metrics": {"cpu": 90.0, "memory": 40.0}}
    ]  # b has no values
    wide = pd.DataFrame({"timestamp": [ts], "host": ["c"], "cpu": [np.float32(5.0)], "disk": [np.nan]})
    assert rows_from_frame(wide) == [{"host": "c", "timestamp": ts, "metrics": {"cpu": 5.0}}]


def test_client_rejects_a_nonsense_timeout() -> None:
    with pytest.raises(ValueError):
        ScoringClient("http://x", timeout=0)
