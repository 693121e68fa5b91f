"""Evidence tools: the MLflow model status (real SQLite registry and fakes) and evidence shape."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from chatops_helpers import AppFactory, ask

from chatops.tools import MlflowModelStatus
from smartcloudops.errors import ModelError

KEYS = {"source", "query", "window_start", "window_end", "values"}


def test_real_mlflow_registry(tmp_path: Path, make_app: AppFactory) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("smartcloudops-anomaly", artifact_location=str(tmp_path / "art"))
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "event_f1", 0.9123)
    client.log_metric(run.info.run_id, "point_f1", 0.5)
    client.set_terminated(run.info.run_id)
    client.create_registered_model("smartcloudops-anomaly-detector")
    version = client.create_model_version("smartcloudops-anomaly-detector", source=str(tmp_path / "art"),
                                          run_id=run.info.run_id)
    client.set_registered_model_alias("smartcloudops-anomaly-detector", "champion", version.version)

    status = MlflowModelStatus(uri, "smartcloudops-anomaly-detector", timeout_seconds=30)
    got = status()
    status.close()
    assert got["version"] == "1" and got["run_id"] == run.info.run_id
    assert got["f1"] == 0.912 and got["f1_metric"] == "event_f1"
    assert got["trained_at"] and got["trained_at"].endswith("Z")

    app_client = make_app(MODEL_STATUS=MlflowModelStatus(uri, "smartcloudops-anomaly-detector",
                                                         timeout_seconds=30)).test_client()
    data = ask(app_client, "what's the F1 of the champion?")
    assert "version 1, event_f1 0.912" in data["answer"]


def test_missing_sqlite_registry_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "mlflow" / "mlflow.db"
    status = MlflowModelStatus(f"sqlite:///{db}", "m")
    with pytest.raises(ModelError, match="no MLflow registry yet"):
        status()
    assert not db.exists()


class _FakeClient:
    def __init__(self, delay: float = 0.0, alias_missing: bool = False) -> None:
        self.delay = delay
        self.alias_missing = alias_missing
        self.calls = 0

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        self.calls += 1
        time.sleep(self.delay)
        if self.alias_missing:
            raise RuntimeError("RESOURCE_DOES_NOT_EXIST: alias champion not found")
        return SimpleNamespace(version=7, run_id="r1", creation_timestamp=1_700_000_000_000)

    def get_run(self, run_id: str) -> Any:
        return SimpleNamespace(data=SimpleNamespace(metrics={"val_event_f1": 0.88}),
                               info=SimpleNamespace(start_time=1_700_000_000_000, end_time=1_700_000_060_000))


def test_fake_client_status_and_cache() -> None:
    fake = _FakeClient()
    status = MlflowModelStatus("http://mlflow.invalid", "m", client_factory=lambda uri: fake)
    first, second = status(), status()
    assert first == second and fake.calls == 1  # cached
    assert first["version"] == "7" and first["f1"] == 0.88 and first["f1_metric"] == "val_event_f1"
    assert first["trained_at"] == "2023-11-14T22:14:20Z"
    status.close()


def test_no_champion_and_timeout() -> None:
    status = MlflowModelStatus("http://x", "m", client_factory=lambda uri: _FakeClient(alias_missing=True))
    with pytest.raises(ModelError, match="no champion"):
        status()
    slow = MlflowModelStatus("http://x", "m", timeout_seconds=0.2,
                             client_factory=lambda uri: _FakeClient(delay=1.0))
    started = time.perf_counter()
    with pytest.raises(ModelError, match=r"did not answer within 0\.2s"):
        slow()
    assert time.perf_counter() - started < 0.9
    slow.close()


@pytest.mark.parametrize("question", [
    "What's current CPU?", "cpu history on web-1", "Summarize last 3 anomalies", "why is db-1 anomalous",
    "Show logs from 10 minutes ago", "remediation history", "model status", "status",
])
def test_every_evidence_item_has_the_contract_fields(make_app: AppFactory, question: str) -> None:
    data = ask(make_app().test_client(), question)
    assert data["evidence"]
    for ev in data["evidence"]:
        assert set(ev) >= KEYS
        assert isinstance(ev["values"], list)
        for key in ("window_start", "window_end"):
            assert ev[key] is None or ev[key].endswith("Z")
