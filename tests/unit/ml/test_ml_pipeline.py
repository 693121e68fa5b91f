"""Pipeline steps the train_validate_deploy DAG calls, with a fake store and source."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from ml_helpers import make_fleet

from ml import pipeline
from ml.training import train_candidate
from smartcloudops.errors import InputError, ModelError
from smartcloudops.settings import Settings

END = datetime(2024, 3, 8, tzinfo=UTC)


class FakeStore:
    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def read(self, start: datetime, end: datetime) -> pd.DataFrame:
        ts = pd.to_datetime(self.frame["timestamp"], utc=True)
        return self.frame[(ts >= start) & (ts < end)]


class FakeSource:
    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.calls: list[tuple[datetime, datetime]] = []

    def query_range(self, start: datetime, end: datetime, step_seconds: int = 60) -> pd.DataFrame:
        self.calls.append((start, end))
        ts = pd.to_datetime(self.frame["timestamp"], utc=True)
        return self.frame[(ts >= start) & (ts <= end)]  # inclusive end, like the real sources


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", train_days=2, sim_hosts="web-1,db-1")


def test_prepare_dataset_merges_store_and_source(settings: Settings) -> None:
    history, _ = make_fleet(hosts=("web-1", "db-1"), days=4, freq="5min", incidents_per_host=0)
    ts = pd.to_datetime(history["timestamp"], utc=True)
    in_store = history[(ts >= END - timedelta(hours=5)) & (ts < END - timedelta(hours=2))]
    source = FakeSource(history)
    path = pipeline.prepare_dataset(END, settings=settings, store=FakeStore(in_store), source=source)
    frame, windows, manifest = pipeline.load_dataset(path)
    assert (manifest["hours"], manifest["hours_from_store"], manifest["hours_from_source"]) == (48, 3, 45)
    assert len(source.calls) == 2  # the two runs of missing hours around the stored ones
    assert len(frame) == 48 * 12 * 2 * 6 and not frame.duplicated(["timestamp", "host", "metric"]).any()
    assert windows == {}
    again = pipeline.prepare_dataset(
        END, settings=settings, store=FakeStore(in_store), source=FakeSource(history)
    )
    assert again == path  # keyed on the interval: re-running replaces, never duplicates


def test_prepare_dataset_rejects_naive_ends_and_empty_ranges(settings: Settings) -> None:
    empty = pd.DataFrame(columns=["timestamp", "host", "metric", "value"])
    with pytest.raises(InputError, match="timezone-aware"):
        pipeline.prepare_dataset(datetime(2024, 3, 8), settings=settings, store=FakeStore(empty))
    with pytest.raises(InputError, match="no metrics"):
        pipeline.prepare_dataset(END, settings=settings, store=FakeStore(empty), source=FakeSource(empty))


def test_load_dataset_of_a_non_dataset_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a dataset"):
        pipeline.load_dataset(str(tmp_path))


def test_train_log_and_promote_best(settings: Settings) -> None:
    history, labels = make_fleet(hosts=("web-1", "db-1"), days=3, freq="5min", incidents_per_host=2, seed=3)
    path = pipeline.prepare_dataset(
        END,
        settings=settings.model_copy(update={"train_days": 3}),
        store=FakeStore(history),
        source=FakeSource(history),
    )
    (Path(path) / "labels.json").write_text(json.dumps(labels))
    gate = settings.model_copy(update={"f1_gate": 0.0})
    result = pipeline.train_and_log("robust_baseline", path, tags={"t": "1"}, settings=gate)
    assert result["run_id"] and result["version"] == "1"
    assert len(json.dumps(result)) < 4000
    # Fitted host by host (what the DAG does) = fitted in one go.
    train, valid, windows, _ = pipeline.validation_data(path)
    whole = train_candidate("robust_baseline", train, valid, windows)
    assert (result["event_f1"], result["tp"], result["fn"], result["fp"]) == (
        whole.report.event_f1, whole.report.tp, whole.report.fn, whole.report.fp
    )
    assert result["validation_key"] == whole.validation_key
    decision = pipeline.promote_best([result], settings=gate)
    assert decision["promoted"] is (result["windows"] > 0)
    assert decision["candidate"] == "robust_baseline"
    if decision["promoted"]:
        assert pipeline.champion_event_f1_on(path, settings=gate) == ("1", pytest.approx(result["event_f1"]))
    with pytest.raises(InputError):
        pipeline.promote_best([], settings=gate)


def test_a_rerun_replaces_the_parts_and_reuses_the_registered_version(settings: Settings) -> None:
    from mlflow import MlflowClient

    history, labels = make_fleet(hosts=("web-1", "db-1"), days=4, freq="5min", incidents_per_host=2, seed=5)
    three_days = settings.model_copy(update={"train_days": 3})
    path = pipeline.prepare_dataset(
        END, settings=three_days, store=FakeStore(history), source=FakeSource(history)
    )
    (Path(path) / "labels.json").write_text(json.dumps(labels))
    keys = pipeline.prepare_split(path)
    assert keys == ["db-1", "web-1", pipeline.POOLED]  # the training hosts, then the fallback
    parts = [pipeline.fit_part("isolation_forest", key, path) for key in keys]
    assert all(p["fitted"] and len(json.dumps(p)) < 1000 for p in parts)
    first = pipeline.evaluate_and_log("isolation_forest", path, parts, settings=settings)

    again = [pipeline.fit_part("isolation_forest", key, path) for key in pipeline.prepare_split(path)]
    assert [(p["path"], p["sha256"]) for p in again] == [(p["path"], p["sha256"]) for p in parts]
    files = sorted(f.name for f in (Path(path) / "models" / "isolation_forest").iterdir())
    assert files == sorted(Path(p["path"]).name for p in parts)  # replaced in place, no temp files left
    second = pipeline.evaluate_and_log("isolation_forest", path, again, settings=settings)
    assert (second["run_id"], second["version"]) == (first["run_id"], first["version"])
    uri = settings.resolved_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not MLflow's process-wide registry
    assert len(client.search_model_versions(f"name='{settings.registered_model}'")) == 1
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    assert len(client.search_runs([experiment.experiment_id])) == 1

    # New data for the same interval makes a different model: that one is logged anew.
    (Path(path) / "labels.json").write_text(json.dumps({}))
    changed = [pipeline.fit_part("isolation_forest", key, path) for key in pipeline.prepare_split(path)]
    third = pipeline.evaluate_and_log("isolation_forest", path, changed, settings=settings)
    assert third["version"] == "2" and third["injected_anomalies"] > 0
    # A part rewritten after its fit (another run of the interval) is refused, not mixed in.
    with pytest.raises(ModelError, match="changed after it was fitted"):
        pipeline.evaluate_and_log("isolation_forest", path, parts, settings=settings)
    with pytest.raises(InputError, match="lacks fitted parts"):
        pipeline.evaluate_and_log("isolation_forest", path, changed[:1], settings=settings)


def test_operator_labels_join_the_validation_labels(settings: Settings) -> None:
    from smartcloudops.labels import LabelStore

    history, _ = make_fleet(hosts=("web-1", "db-1"), days=4, freq="5min", incidents_per_host=0, seed=6)
    # A real Prometheus and no labels file: without operator labels, validation is injected.
    real = settings.model_copy(update={"train_days": 3, "prometheus_url": "http://127.0.0.1:9"})
    path = pipeline.prepare_dataset(END, settings=real, store=FakeStore(history), source=FakeSource(history))
    assert json.loads(Path(pipeline.write_labels(path, settings=real)).read_text()) == {}
    assert pipeline.validation_data(path)[3]["injected"] > 0

    incident = (END - timedelta(hours=10), END - timedelta(hours=9))  # inside the last 30 %
    labels = LabelStore.from_settings(real)
    try:
        labels.add("web-1", *incident, "incident", author="oncall", now=END)
        # Outside the dataset's span: not one of its windows.
        old = (END - timedelta(days=9), END - timedelta(days=8))
        labels.add("db-1", *old, "incident", author="oncall", now=END)
    finally:
        labels.close()
    window = [pd.Timestamp(t).isoformat().replace("+00:00", "Z") for t in incident]
    assert json.loads(Path(pipeline.write_labels(path, settings=real)).read_text()) == {"web-1": [window]}
    _, _, windows, manifest = pipeline.validation_data(path)
    assert (manifest["injected"], manifest["operator_windows"]) == (0, 1)
    assert windows == {"web-1": [window]}
    assert manifest["label_windows"] == {"source": "none", "source_windows": 0, "operator_windows": 1}

    # With the simulator, operator windows are added to its own (union per host).
    path = pipeline.prepare_dataset(
        END, settings=settings.model_copy(update={"train_days": 3}), store=FakeStore(history)
    )
    merged = json.loads(Path(pipeline.write_labels(path, settings=settings)).read_text())
    simulated = json.loads(settings.labels_file.read_text())
    assert merged == {**simulated, "web-1": [window]}
    counts = pipeline.validation_data(path)[3]["label_windows"]
    assert counts == {
        "source": "simulator", "source_windows": sum(map(len, simulated.values())), "operator_windows": 1
    }


def test_validation_without_labels_gets_injected_anomalies(settings: Settings) -> None:
    history, labels = make_fleet(hosts=("web-1", "db-1"), days=4, freq="5min", incidents_per_host=3, seed=4)
    path = pipeline.prepare_dataset(
        END,
        settings=settings.model_copy(update={"train_days": 3}),
        store=FakeStore(history),
        source=FakeSource(history),
    )
    train, valid, windows, manifest = pipeline.validation_data(path)
    assert manifest["injected"] == 4 and windows  # two metrics per host
    assert {key.split("/")[0] for key in windows} == {"web-1", "db-1"}
    again = pipeline.validation_data(path)  # every candidate and the champion see the same
    pd.testing.assert_frame_equal(again[1], valid)
    assert again[2] == windows
    # With labels in the validation period nothing is injected.
    (Path(path) / "labels.json").write_text(json.dumps(labels))
    _, labelled_valid, labelled_windows, labelled_manifest = pipeline.validation_data(path)
    if any(end >= str(valid["timestamp"].min())[:19] for wins in labels.values() for _, end in wins):
        assert labelled_manifest["injected"] == 0 and labelled_windows == labels
    assert len(train) + len(labelled_valid) == len(train) + len(valid)
