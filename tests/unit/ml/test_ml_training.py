"""Training stage: history split, label handling, candidates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.training import (
    CANDIDATES,
    host_windows,
    in_windows,
    inject_validation,
    make_candidate,
    split_history,
    train_candidate,
    validation_fingerprint,
)
from smartcloudops.errors import InputError


def test_split_history_cuts_once_in_time(
    small_fleet: tuple[pd.DataFrame, dict[str, list[list[str]]]],
) -> None:
    history, _ = small_fleet
    train, valid = split_history(history, 0.25)
    assert {"timestamp", "host", "cpu", "network_out"} <= set(train.columns)
    assert train["timestamp"].max() < valid["timestamp"].min()
    assert set(train["host"]) == set(valid["host"]) == {"web-1", "web-2", "db-1"}
    share = len(valid) / (len(train) + len(valid))
    assert 0.2 < share < 0.3


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_history_rejects_bad_fractions(small_fleet, fraction: float) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="validation_fraction"):
        split_history(small_fleet[0], fraction)


def test_split_history_rejects_empty_and_malformed_input() -> None:
    with pytest.raises(InputError, match="empty"):
        split_history(pd.DataFrame(columns=["timestamp", "host", "metric", "value"]), 0.3)
    with pytest.raises(InputError, match="missing columns"):
        split_history(pd.DataFrame({"timestamp": ["2024-01-01"], "value": [1.0]}), 0.3)


def test_host_windows_union_per_host() -> None:
    windows = host_windows(
        {
            "web-1/cpu": [["2024-01-01 01:00", "2024-01-01 02:00"]],
            "web-1/load": [["2024-01-01 01:30", "2024-01-01 02:30"]],
            "db-1/disk": [["2024-01-02 00:00", "2024-01-02 01:00"]],
            "app-1": [],
        }
    )
    utc = lambda text: pd.Timestamp(text, tz="UTC")  # noqa: E731
    assert windows["web-1"] == [(utc("2024-01-01 01:00"), utc("2024-01-01 02:30"))]
    assert windows["db-1"] == [(utc("2024-01-02 00:00"), utc("2024-01-02 01:00"))]
    assert windows["app-1"] == []


def test_in_windows_marks_only_the_labelled_host() -> None:
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(
                ["2024-01-01 01:10", "2024-01-01 01:10", "2024-01-01 05:00"], utc=True
            ),
            "host": ["web-1", "db-1", "web-1"],
        }
    )
    marks = in_windows(frame, host_windows({"web-1/cpu": [["2024-01-01 01:00", "2024-01-01 02:00"]]}))
    assert marks.tolist() == [True, False, False]


def test_candidates_registry() -> None:
    assert {"isolation_forest", "prophet", "robust_baseline"} <= set(CANDIDATES)
    for name in CANDIDATES:
        model = make_candidate(name)
        assert model.name == name
    with pytest.raises(InputError, match="valid: isolation_forest, prophet, robust_baseline"):
        make_candidate("magic")


def test_train_candidate_reports_host_level_evaluation(small_fleet) -> None:  # type: ignore[no-untyped-def]
    history, labels = small_fleet
    train, valid = split_history(history, 0.4)
    result = train_candidate("robust_baseline", train, valid, labels)
    assert result.name == "robust_baseline"
    assert result.train_seconds > 0
    assert set(result.report.per_series) == {"web-1", "web-2", "db-1"}
    assert result.report.windows >= 1  # the fixture puts incidents in the validation part
    assert 0.0 <= result.report.event_f1 <= 1.0
    assert {"score", "anomaly", "severity"} <= set(result.validation.columns)
    assert len(result.validation) == len(valid)
    assert result.params["detector__n_bins"] == 24
    assert result.validation_key == validation_fingerprint(valid, result.windows)
    assert result.model._state == {}  # evaluation leaves no live state behind


def test_validation_fingerprint_changes_with_data(small_fleet) -> None:  # type: ignore[no-untyped-def]
    _, valid = split_history(small_fleet[0], 0.3)
    key = validation_fingerprint(valid, {})
    changed = valid.copy()
    changed.loc[changed.index[0], "cpu"] = np.float64(changed["cpu"].iloc[0]) + 1
    assert validation_fingerprint(changed, {}) != key
    assert validation_fingerprint(valid, {}) == key


def test_inject_validation_labels_real_rows_per_host(small_fleet) -> None:  # type: ignore[no-untyped-def]
    history, _ = small_fleet
    _, valid = split_history(history, 0.4)
    injected, windows = inject_validation(valid, per_host=2, seed=5)
    assert injected.shape == valid.shape and injected.index.equals(valid.index)
    assert {key.split("/")[0] for key in windows} == {"web-1", "web-2", "db-1"}
    assert sum(len(v) for v in windows.values()) == 6
    for key in windows:
        host, metric = key.split("/")
        rows = valid["host"] == host
        assert not np.allclose(injected.loc[rows, metric], valid.loc[rows, metric])
    assert injected[["cpu", "memory", "disk"]].le(100).all().all()
    again, same = inject_validation(valid, per_host=2, seed=5)
    pd.testing.assert_frame_equal(again, injected)
    assert same == windows
    # The injected windows are real labels to the evaluation: a model finds some of them.
    train, _ = split_history(history, 0.4)
    result = train_candidate("robust_baseline", train, injected, windows)
    assert 3 <= result.report.windows <= 6  # a host's overlapping windows merge
    assert result.report.tp >= 1
