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
    from ml.pipeline import POOLED
    from ml.training import CANDIDATES

    assert outcome.state == "success", outcome.task_states
    # One fit per candidate and host (plus the pooled fallback), named "candidate/host".
    keys = outcome.returns["split"]
    assert sorted(keys) == sorted(["web-1", "db-1", POOLED])
    parts = outcome.returns["fit"]
    assert sorted((p["candidate"], p["host"]) for p in parts) == sorted(
        (c, k) for c in CANDIDATES for k in keys
    )
    assert all(p["fitted"] and Path(p["path"]).is_file() and len(json.dumps(p)) < 1000 for p in parts)
    assert _map_names(outcome, "fit") == {f"{c}/{k}" for c in CANDIDATES for k in keys}
    assert _map_names(outcome, "evaluate") == set(CANDIDATES)
    results = outcome.returns["evaluate"]
    assert sorted(r["candidate"] for r in results) == sorted(CANDIDATES)
    for r in results:
        assert r["run_id"] and r["version"]
        assert 0.0 <= r["event_f1"] <= 1.0 and r["windows"] >= 2
        assert r["passes_gate"] == (r["event_f1"] >= settings.f1_gate)
        assert r["train_seconds"] == pytest.approx(
            sum(p["seconds"] for p in parts if p["candidate"] == r["candidate"]), abs=0.01
        )
        assert len(json.dumps(r)) < 4000  # XCom carries small dicts, never data
    decision = outcome.returns["promote"]
    assert isinstance(decision["promoted"], bool) and decision["reason"]
    assert decision["gate"] == settings.f1_gate
    best = max(results, key=lambda r: (r["passes_gate"], r["event_f1"], -r["fp_per_day"]))
    assert decision["event_f1"] == best["event_f1"]
    if not best["passes_gate"]:
        assert decision["promoted"] is False
    return decision


def _map_names(outcome: Any, task_id: str) -> set[str]:
    """What the Airflow UI shows for each mapped instance (``map_index_template``)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(TaskInstance.rendered_map_index).where(
            TaskInstance.dag_id == outcome.dag_id,
            TaskInstance.run_id == outcome.run_id,
            TaskInstance.task_id == task_id,
        )
        return {str(name) for name in session.scalars(query)}


def _model_files(home: Path) -> dict[str, int]:
    return {str(p.relative_to(home)): p.stat().st_ino for p in sorted(home.glob("datasets/*/models/**/*"))}


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
    # The registry explicitly: an earlier test in this process may have set MLflow's global one.
    uri = settings.resolved_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def registered() -> tuple[int, int]:
        experiment = client.get_experiment_by_name(settings.mlflow_experiment)
        return (
            len(client.search_model_versions(f"name='{settings.registered_model}'")),
            len(client.search_runs([experiment.experiment_id])),
        )

    # retries=0: a failure shows at once instead of after the DAG's retry delays.
    initial = airflow_runner.run_dag_outcome("train_validate_deploy", day1, retries=0)
    first = _check_run(initial, settings)
    assert registered() == (len(CANDIDATES), len(CANDIDATES))
    challenger = client.get_model_version_by_alias(settings.registered_model, "challenger")
    assert str(challenger.version) == first["version"]
    run = client.get_run(challenger.run_id)
    assert "event_f1" in run.data.metrics and run.data.tags["promotion_reason"] == first["reason"]
    champion_after_first = first["version"] if first["promoted"] else None
    if first["promoted"]:
        champion = client.get_model_version_by_alias(settings.registered_model, "champion")
        assert str(champion.version) == first["version"]
    files = _model_files(sc_home)
    assert len(files) == len(CANDIDATES) * 4  # 3 directories + (2 hosts + pooled) each

    # The same interval again: every file replaced in place (new inodes, same names), the same
    # models found in MLflow (no new run or version), the same decision.
    rerun = airflow_runner.run_dag_outcome("train_validate_deploy", day1, retries=0)
    again = _check_run(rerun, settings)
    assert registered() == (len(CANDIDATES), len(CANDIDATES))
    logged = sorted((r["candidate"], r["run_id"], r["version"]) for r in initial.returns["evaluate"])
    assert sorted((r["candidate"], r["run_id"], r["version"]) for r in rerun.returns["evaluate"]) == logged
    assert again["version"] == first["version"] and again["promoted"] == first["promoted"]
    refreshed = _model_files(sc_home)
    assert refreshed.keys() == files.keys()
    assert all(refreshed[k] != files[k] for k in files if k.endswith(".pkl"))

    # The next day: a new champion must beat the current one on the new validation data.
    second = _check_run(airflow_runner.run_dag_outcome("train_validate_deploy", day2, retries=0), settings)
    assert second["previous_champion"] == champion_after_first
    assert registered() == (2 * len(CANDIDATES), 2 * len(CANDIDATES))
    if champion_after_first is not None and second["event_f1"] >= settings.f1_gate:
        assert second["champion_event_f1"] is not None  # the champion was re-evaluated on day 2's data
        assert second["promoted"] == (second["event_f1"] > second["champion_event_f1"])
    expected = second["version"] if second["promoted"] else champion_after_first
    if expected is not None:
        champion = client.get_model_version_by_alias(settings.registered_model, "champion")
        assert str(champion.version) == expected
