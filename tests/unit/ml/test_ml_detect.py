"""``smartcloudops detect`` engine: contract, bad-input table, documented handling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ml_helpers import make_series

from ml.detect import MIN_TRAIN_ROWS, detect_series, read_series_csv, write_detect_csv
from smartcloudops.errors import InputError

GOOD_ROWS = "\n".join(
    f"2024-03-04 {h:02d}:{m:02d}:00,{50 + (h * 60 + m) % 7}" for h in range(24) for m in range(0, 60, 5)
)


def write(tmp_path: Path, text: str, name: str = "series.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("timestamp,value\n", "no data rows"),
        ("time,val\n2024-01-01,1\n", "lacks column"),
        (
            "timestamp,value\n2024-03-04 00:00:00,1\n2024-03-04 00:05:00,abc\n",
            r"non-numeric value\(s\).*line 3 \('abc'\)",
        ),
        ("timestamp,value\n2024-03-04 00:00:00,1\nnot-a-time,2\n", r"unparseable timestamp\(s\).*line 3"),
        ("timestamp,value\n2024-03-04 00:00:00,1\n,2\n", r"missing or unparseable timestamp\(s\).*line 3"),
        ("timestamp,value\n2024-03-04 00:00:00,inf\n", "infinite"),
    ],
    ids=["empty", "header-only", "wrong-columns", "non-numeric", "bad-timestamp", "missing-timestamp", "inf"],
)
def test_read_series_csv_rejects_bad_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        read_series_csv(write(tmp_path, text))


def test_read_series_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_series_csv(tmp_path / "absent.csv")


def test_read_series_csv_parses_and_keeps_extra_columns(tmp_path: Path) -> None:
    frame = read_series_csv(
        write(tmp_path, "timestamp,value,note\n2024-03-04 00:00:00,1.5,a\n2024-03-04 00:05:00,,b\n")
    )
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert frame["value"].iloc[0] == 1.5 and np.isnan(frame["value"].iloc[1])
    assert frame["note"].tolist() == ["a", "b"]


@pytest.mark.parametrize(
    ("frame", "fraction", "message"),
    [
        (make_series(100), 0.15, "series too short"),
        (make_series(500).assign(value=np.nan), 0.15, "no values"),
        (make_series(500), 0.0, "train fraction"),
        (make_series(500), 1.0, "train fraction"),
        (pd.DataFrame({"timestamp": [], "value": []}), 0.5, "empty"),
        (pd.DataFrame({"value": [1.0]}), 0.5, "lacks column"),
    ],
    ids=["too-short", "all-missing", "fraction-0", "fraction-1", "empty", "no-timestamp"],
)
def test_detect_series_rejects_bad_input(frame: pd.DataFrame, fraction: float, message: str) -> None:
    with pytest.raises(InputError, match=message):
        detect_series(frame, fraction)


def test_detect_series_contract_and_spike() -> None:
    frame = make_series(2000)
    frame.loc[1500, "value"] += 40.0
    out = detect_series(frame, 0.15)
    assert len(out) == len(frame)
    assert list(out.columns) == ["timestamp", "value", "score", "is_anomaly"]
    assert out["is_anomaly"].dtype == bool
    assert out["is_anomaly"].iloc[1495:1505].any()
    assert out["is_anomaly"].sum() <= 5


def test_detect_series_never_sees_the_future_when_fitting() -> None:
    frame = make_series(2000)
    changed = frame.copy()
    changed.loc[1900:, "value"] += 1000.0  # only after the training part
    a = detect_series(frame, 0.2)["score"].to_numpy()
    b = detect_series(changed, 0.2)["score"].to_numpy()
    np.testing.assert_allclose(a[:1800], b[:1800])


def test_unsorted_input_keeps_input_order() -> None:
    frame = make_series(1000)
    shuffled = frame.sample(frac=1.0, random_state=3)
    out = detect_series(shuffled, 0.2)
    assert out.index.equals(shuffled.index)
    ordered = detect_series(frame, 0.2)
    np.testing.assert_allclose(out.loc[frame.index, "score"].to_numpy(), ordered["score"].to_numpy())


def test_duplicate_timestamps_give_one_row_each() -> None:
    frame = make_series(600)
    dupes = pd.concat([frame, frame.iloc[[300, 301]]]).reset_index(drop=True)
    out = detect_series(dupes, 0.2)
    assert len(out) == len(dupes)


def test_nan_gap_rows_are_kept_without_a_claim() -> None:
    frame = make_series(800)
    frame.loc[400:410, "value"] = np.nan
    out = detect_series(frame, 0.2)
    assert len(out) == 800
    assert out.loc[400:410, "score"].isna().all()
    assert not out.loc[400:410, "is_anomaly"].any()
    assert out["score"].drop(range(400, 411)).notna().all()


def test_constant_series_flags_nothing() -> None:
    frame = make_series(600).assign(value=5.0)
    out = detect_series(frame, 0.2)
    assert not out["is_anomaly"].any()
    assert (out["score"] == 0).all()


def test_minimum_length_is_documented_in_the_message() -> None:
    rows = int(MIN_TRAIN_ROWS / 0.15)
    with pytest.raises(InputError, match=f"need at least {MIN_TRAIN_ROWS}"):
        detect_series(make_series(rows - 10), 0.15)


def test_file_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp,value\n" + GOOD_ROWS + "\n")
    out = detect_series(read_series_csv(path), 0.3)
    target = tmp_path / "out.csv"
    write_detect_csv(out, target)
    text = target.read_text().splitlines()
    assert text[0] == "timestamp,value,score,is_anomaly"
    assert text[1].startswith("2024-03-04 00:00:00,50.0,")
    assert len(text) == 1 + 24 * 12
