"""Fakes and fixtures for the scoring service tests."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest
import uvicorn

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

METRICS = ("cpu", "memory", "disk", "load", "network_in", "network_out")


class FakeFleetModel:
    """FleetModel's scoring contract, in a few lines: score = cpu / 100, anomaly above 0.9."""

    def __init__(self, offset: float = 0.0, delay: float = 0.0) -> None:
        self.offset = offset
        self.delay = delay
        self.frames: list[pd.DataFrame] = []

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.frames.append(frame)
        if self.delay:
            time.sleep(self.delay)
        score = frame["cpu"].fillna(0.0) / 100.0 + self.offset
        anomaly = score > 0.9
        return pd.DataFrame(
            {
                "score": score,
                "anomaly": anomaly,
                "severity": [
                    "critical" if s > 0.95 else "high" if a else None
                    for s, a in zip(score, anomaly, strict=True)
                ],
                "contributions": [
                    {"cpu": float(s), "memory": 0.0} if a else {} for s, a in zip(score, anomaly, strict=True)
                ],
            }
        )


class VersionedModel:
    """Scores every row with its own version number, so a response shows which model
    produced it; ``delay`` keeps a request in flight across a swap."""

    def __init__(self, version: int, delay: float = 0.0) -> None:
        self.version = version
        self.delay = delay

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.delay:
            time.sleep(self.delay)
        n = len(frame)
        return pd.DataFrame(
            {
                "score": [float(self.version)] * n,
                "anomaly": [False] * n,
                "severity": [None] * n,
                "contributions": [{} for _ in range(n)],
            }
        )


class FakeSource:
    """A ModelSource whose registry state the test controls."""

    def __init__(self, models: dict[str, Any] | None = None, version: str | None = None) -> None:
        self.models: dict[str, Any] = dict(models or {})
        self.version = version
        self.resolve_error: Exception | None = None
        self.load_error: Exception | None = None
        self.resolves = 0
        self.loads = 0

    def describe(self) -> str:
        return "fake:champion"

    def resolve(self) -> str:
        self.resolves += 1
        if self.resolve_error is not None:
            raise self.resolve_error
        if self.version is None:
            from smartcloudops.errors import ModelError

            raise ModelError("no champion registered")
        return self.version

    def load(self) -> Any:
        from serving.model import Loaded

        self.loads += 1
        if self.load_error is not None:
            raise self.load_error
        assert self.version is not None
        return Loaded(model=self.models[self.version], version=self.version, run_id=f"run-{self.version}")


def row(host: str = "web-1", **metrics: float) -> dict[str, Any]:
    return {"host": host, "timestamp": "2024-05-01T12:00:00Z", "metrics": metrics or {"cpu": 50.0}}


class LiveServer:
    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def live_server() -> Iterator[Callable[[Any], LiveServer]]:
    started: list[LiveServer] = []

    def start(app: Any) -> LiveServer:
        server = LiveServer(app).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


# Helpers reach the tests as fixtures, which works under any pytest import mode.


@pytest.fixture
def fake_model() -> FakeFleetModel:
    return FakeFleetModel()


@pytest.fixture
def fake_model_cls() -> type[FakeFleetModel]:
    return FakeFleetModel


@pytest.fixture
def versioned_model() -> type[VersionedModel]:
    return VersionedModel


@pytest.fixture
def fake_source() -> type[FakeSource]:
    return FakeSource


@pytest.fixture
def make_row() -> Callable[..., dict[str, Any]]:
    return row
