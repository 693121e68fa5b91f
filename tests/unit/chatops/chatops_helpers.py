"""Helpers shared by the ChatOps tests (constants, fakes, request shortcuts)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from smartcloudops.domain import ActionRecord, ActionStatus, Anomaly
from smartcloudops.errors import InputError
from smartcloudops.events import EventStore
from smartcloudops.settings import Settings
from smartcloudops.sources import SimulatorSource

TOKEN = "token-alpha-0123456789"
OTHER_TOKEN = "token-bravo-9876543210"
HOSTS = ["web-1", "web-2", "app-1", "db-1", "db-2"]

#: (minutes ago, level, component, message) written into the fleet's log dir.
LOG_LINES = [
    (2, "ERROR", "remediation", "restart_service on web-1 failed: timeout after 30s"),
    (4, "INFO", "serving", "scored 5 instances"),
    (7, "WARNING", "sensor", "db-1 memory above 90% for 3 minutes"),
    (9, "INFO", "chatops", "chatops query"),
    (25, "ERROR", "serving", "model reload failed: connection refused"),
    (70, "INFO", "extract", "wrote partition date=x hour=y"),
]


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Fleet:
    home: Path
    settings: Settings
    source: SimulatorSource
    store: EventStore
    log_dir: Path
    now: datetime
    anomalies: list[Anomaly]
    actions: list[ActionRecord]


def write_log_lines(log_dir: Path, records: list[dict[str, Any]]) -> None:
    """JSON lines in the layout smartcloudops.logs writes (one file per UTC day)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for record in records:
        day = str(record["timestamp"])[:10]
        with open(log_dir / f"smartcloudops-{day}.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


@dataclass
class FakeEngine:
    """Stands in for remediation's engine: records calls, answers like the real one."""

    store: EventStore
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def _decide(self, verb: str, action_id: str, by: str, status: ActionStatus) -> ActionRecord:
        self.calls.append((verb, action_id, by))
        record = self.store.get_action(action_id)
        if record is None:
            raise InputError(f"no remediation action {action_id!r}")
        if record.result is not ActionStatus.PENDING:
            raise InputError(f"action {action_id} is {record.result.value}, not pending approval")
        done = replace(record, result=status, approved_by=by)
        self.store.record_action(done)
        return done

    def approve(self, action_id: str, by: str) -> ActionRecord:
        return self._decide("approve", action_id, by, ActionStatus.DRY_RUN)

    def reject(self, action_id: str, by: str, reason: str = "") -> ActionRecord:
        self.reasons.append(reason)
        return self._decide("reject", action_id, by, ActionStatus.REJECTED)


def champion_status() -> dict[str, Any]:
    return {"model": "smartcloudops-anomaly-detector", "alias": "champion", "version": "4",
            "run_id": "run123", "f1": 0.912, "f1_metric": "event_f1",
            "registered_at": None, "trained_at": "2026-01-02T03:04:05Z", "metrics": {"event_f1": 0.912}}


AppFactory = Callable[..., Flask]


def ask(
    client: FlaskClient, query: str, session_id: str | None = "s-1", token: str = TOKEN
) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query}
    if session_id is not None:
        body["session_id"] = session_id
    response = client.post("/query", json=body, headers=auth(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    data = response.get_json()
    assert set(data) == {"intent", "params", "answer", "evidence", "session_id", "llm"}
    return data  # type: ignore[no-any-return]
