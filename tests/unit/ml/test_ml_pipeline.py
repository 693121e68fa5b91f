"""Pipeline steps the train_validate_deploy DAG calls, with a fake store and source."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from ml_helpers import make_fleet

from ml import pipeline
from smartcloudops.errors import InputError
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
    decision = pipeline.promote_best([result], settings=gate)
    assert decision["promoted"] is (result["windows"] > 0)
    assert decision["candidate"] == "robust_baseline"
    if decision["promoted"]:
        assert pipeline.champion_event_f1_on(path, settings=gate) == ("1", pytest.approx(result["event_f1"]))
    with pytest.raises(InputError):
        pipeline.promote_best([], settings=gate)


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
