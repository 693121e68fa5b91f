"""train_validate_deploy run for real on a small fleet: MLflow runs, registry, gate decision."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

END = datetime(2026, 3, 3, 0, tzinfo=UTC)


def _small_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    from smartcloudops.settings import get_settings

    monkeypatch.setenv("SMARTCLOUDOPS_TRAIN_DAYS", "2")
    get_settings.cache_clear()


def test_dataset_reads_the_store_and_fills_its_gaps_from_the_source(
    sc_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml.pipeline import load_dataset, prepare_dataset, write_labels
    from smartcloudops.extract import extract_interval
    from smartcloudops.settings import get_settings

    _small_fleet(monkeypatch)
    extract_interval(END - timedelta(hours=3), END - timedelta(hours=1))  # 2 of the 48 hours
    path = prepare_dataset(END)
    assert path == prepare_dataset(END)  # same interval, same dataset (rewritten in place)
    labels = write_labels(path)
    history, windows, manifest = load_dataset(path)
    assert (manifest["hours"], manifest["hours_from_store"], manifest["hours_from_source"]) == (48, 2, 46)
    assert len(history) == 48 * 60 * 2 * 6  # every minute of every metric of both hosts, once
    assert history.duplicated(["timestamp", "host", "metric"]).sum() == 0
    assert set(windows) == {f"{h}/{m}" for h in ("web-1", "db-1")
                            for m in ("cpu", "memory", "disk", "load", "network_in", "network_out")}
    assert json.loads(Path(labels).read_text()) == json.loads(get_settings().labels_file.read_text())


def _check_run(outcome: Any, settings: Any) -> dict[str, Any]:
    from ml.training import CANDIDATES

    assert outcome.state == "success", outcome.task_states
    results = outcome.returns["train"]
    assert sorted(r["candidate"] for r in results) == sorted(CANDIDATES)
    for r in results:
        assert r["run_id"] and r["version"]
        assert 0.0 <= r["event_f1"] <= 1.0 and r["windows"] >= 2
        assert r["passes_gate"] == (r["event_f1"] >= settings.f1_gate)
        assert len(json.dumps(r)) < 4000  # XCom carries small dicts, never data
    decision = outcome.returns["promote"]
    assert isinstance(decision["promoted"], bool) and decision["reason"]
    assert decision["gate"] == settings.f1_gate
    best = max(results, key=lambda r: (r["passes_gate"], r["event_f1"], -r["fp_per_day"]))
    assert decision["event_f1"] == best["event_f1"]
    if not best["passes_gate"]:
        assert decision["promoted"] is False
    return decision


def test_train_validate_deploy_registers_models_and_gates_the_champion(
    airflow_home: Path, sc_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from ml.training import CANDIDATES
    from smartcloudops.cli import airflow_runner
    from smartcloudops.settings import get_settings
    from smartcloudops.simulator import FleetSimulator

    _small_fleet(monkeypatch)
    settings = get_settings()
    sim = FleetSimulator.from_settings(settings)
    # Incidents inside each day's validation part (its last 30 %) give the gate windows.
    day1, day2 = END + timedelta(days=1), END + timedelta(days=2)
    for kind, host, start, minutes in [
        ("cpu_hog", "web-1", END - timedelta(hours=6), 45),
        ("memory_leak", "db-1", END - timedelta(hours=11), 60),
        ("disk_fill", "web-1", day1 - timedelta(hours=11), 60),
        ("cpu_hog", "db-1", day1 - timedelta(hours=6), 45),
        ("memory_leak", "web-1", day2 - timedelta(hours=9), 60),
        ("cpu_hog", "db-1", day2 - timedelta(hours=4), 45),
    ]:
        sim.inject(kind, host, start=start, duration_minutes=minutes)
    client = MlflowClient(tracking_uri=settings.resolved_tracking_uri)

    # retries=0: a failure shows at once instead of after the DAG's retry delays.
    first = _check_run(airflow_runner.run_dag_outcome("train_validate_deploy", day1, retries=0), settings)
    versions = client.search_model_versions(f"name='{settings.registered_model}'")
    assert len(versions) == len(CANDIDATES)
    challenger = client.get_model_version_by_alias(settings.registered_model, "challenger")
    assert str(challenger.version) == first["version"]
    run = client.get_run(challenger.run_id)
    assert "event_f1" in run.data.metrics and run.data.tags["promotion_reason"] == first["reason"]
    champion_after_first = first["version"] if first["promoted"] else None
    if first["promoted"]:
        champion = client.get_model_version_by_alias(settings.registered_model, "champion")
        assert str(champion.version) == first["version"]

    # The next day: a new champion must beat the current one on the new validation data.
    second = _check_run(airflow_runner.run_dag_outcome("train_validate_deploy", day2, retries=0), settings)
    assert second["previous_champion"] == champion_after_first
    if champion_after_first is not None and second["event_f1"] >= settings.f1_gate:
        assert second["champion_event_f1"] is not None  # the champion was re-evaluated on day 2's data
        assert second["promoted"] == (second["event_f1"] > second["champion_event_f1"])
    expected = second["version"] if second["promoted"] else champion_after_first
    if expected is not None:
        champion = client.get_model_version_by_alias(settings.registered_model, "champion")
        assert str(champion.version) == expected
