"""Fixtures: a small real fleet in tmp_path (simulator, SQLite event store, JSON logs) and a
fresh ChatOps app per test, as in Flask's tutorial."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from chatops_helpers import (
    HOSTS,
    LOG_LINES,
    OTHER_TOKEN,
    TOKEN,
    AppFactory,
    FakeEngine,
    Fleet,
    champion_status,
    write_log_lines,
)
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr

from chatops.app import close_app, create_app
from smartcloudops.domain import ActionRecord, ActionStatus, Anomaly, Severity, utcnow
from smartcloudops.events import EventStore
from smartcloudops.settings import Settings
from smartcloudops.simulator import FleetSimulator
from smartcloudops.sources import SimulatorSource

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    settings = Settings(
        home=tmp_path, chatops_tokens=SecretStr(f"{TOKEN},{OTHER_TOKEN}"), sim_hosts=",".join(HOSTS),
        prometheus_url=None, redis_url=None, llm_model=None, event_store_url=None,
        mlflow_tracking_uri=None,
    )
    now = utcnow()
    source = SimulatorSource(FleetSimulator(tmp_path / "simulator", HOSTS, seed=7))
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    anomalies = [
        Anomaly("web-1", now - timedelta(minutes=1), 0.97, Severity.CRITICAL, "4",
                {"cpu": 0.81, "load": 0.12}, {"cpu": 97.5, "load": 3.2}),
        Anomaly("db-1", now - timedelta(minutes=6), 0.88, Severity.HIGH, "4",
                {"memory": 0.66, "cpu": 0.2}, {"memory": 93.25, "cpu": 41.0}),
        Anomaly("app-1", now - timedelta(minutes=12), 0.74, Severity.MEDIUM, "4",
                {"disk": 0.55}, {"disk": 91.0}),
        Anomaly("web-2", now - timedelta(minutes=50), 0.61, Severity.LOW, "3",
                {"network_in": 0.4}, {"network_in": 8_200_000.0}),
    ]
    store.record_anomalies(anomalies)
    actions = [
        ActionRecord("restart_service", "web-1", ActionStatus.SUCCEEDED, "cpu_high", False,
                     timestamp=now - timedelta(minutes=3), action_id="act-0000done0001",
                     anomaly_id=anomalies[0].anomaly_id, detail="restarted app"),
        ActionRecord("scale_up", "db-1", ActionStatus.PENDING, "memory_high", False,
                     timestamp=now - timedelta(minutes=2), action_id="act-0000pend0002"),
    ]
    for record in actions:
        store.record_action(record)
    log_dir = tmp_path / "logs"
    write_log_lines(log_dir, [
        {"timestamp": (now - timedelta(minutes=m)).isoformat(), "level": lvl, "component": comp,
         "logger": comp, "message": msg}
        for m, lvl, comp, msg in LOG_LINES
    ])
    # a torn line, as a crash mid-write could leave: the reader must skip it
    with open(log_dir / f"smartcloudops-{now.strftime('%Y-%m-%d')}.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"timestamp": "2020-01-01T00:00:00+00:00", "lev')
    yield Fleet(tmp_path, settings, source, store, log_dir, now, anomalies, actions)
    store.close()


@pytest.fixture
def make_app(fleet: Fleet) -> Iterator[AppFactory]:
    apps: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        config: dict[str, Any] = {
            "TESTING": True,
            "SETTINGS": fleet.settings,
            "METRIC_SOURCE": fleet.source,
            "EVENT_STORE": fleet.store,
            "REMEDIATION_ENGINE": FakeEngine(fleet.store),
            "MODEL_STATUS": champion_status,
            "LOG_DIR": fleet.log_dir,
        }
        config.update(overrides)
        app = create_app(config)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        close_app(app)


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


