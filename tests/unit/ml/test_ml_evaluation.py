"""Evaluation: hand-computed figures, gate behaviour of trivial detectors, NAB label files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.evaluation import (
    evaluate,
    load_nab_windows,
    merge_windows,
    parse_windows,
    passes_gate,
    windows_to_json,
)
from smartcloudops.errors import InputError

DAY = pd.date_range("2024-01-01 00:00", "2024-01-01 23:50", freq="10min", tz="UTC")


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(f"2024-01-01 {text}", tz="UTC")


def alarms_at(*times: str, index: pd.DatetimeIndex = DAY) -> pd.Series:
    flags = pd.Series(False, index=index)
    for t in times:
        flags[ts(t)] = True
    return flags


# Series "a": window 1 found (alarm 02:30), window 2 missed, two false-positive hour
# buckets (05:10 + 05:40 share the 05:00 bucket; 07:00 is another).
A_WINDOWS = [(ts("02:00"), ts("03:00")), (ts("10:00"), ts("10:30"))]
A_ALARMS = alarms_at("02:30", "05:10", "05:40", "07:00")


def test_hand_computed_single_series() -> None:
    report = evaluate({"a": A_ALARMS}, {"a": A_WINDOWS})
    assert (report.tp, report.fn, report.fp) == (1, 1, 2)
    assert report.event_f1 == pytest.approx(2 / 5)
    assert report.event_precision == pytest.approx(1 / 3)
    assert report.event_recall == pytest.approx(1 / 2)
    # 11 labelled points (7 in 02:00-03:00, 4 in 10:00-10:30), 4 alarms, 1 inside.
    assert report.point_precision == pytest.approx(1 / 4)
    assert report.point_recall == pytest.approx(1 / 11)
    assert report.point_f1 == pytest.approx(2 / 15)
    assert report.fc1 == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    assert report.days == pytest.approx(1.0)  # 00:00..23:50 plus one 10-minute step
    assert report.fp_per_day == pytest.approx(2.0)
    assert report.delay_seconds == pytest.approx(1800.0)
    assert report.windows == 2 and report.alarms == 4


def test_micro_average_over_series() -> None:
    b_windows = [(ts("00:00"), ts("01:00"))]
    report = evaluate({"a": A_ALARMS, "b": alarms_at("00:00")}, {"a": A_WINDOWS, "b": b_windows})
    assert (report.tp, report.fn, report.fp) == (2, 1, 2)
    assert report.event_f1 == pytest.approx(4 / 7)
    assert report.fp_per_day == pytest.approx(1.0)  # 2 FP over 2 series-days
    assert report.delay_seconds == pytest.approx(900.0)  # mean of 1800 s and 0 s
    assert report.per_series["b"].tp == 1 and report.per_series["b"].event_f1 == 1.0


def test_alarm_on_window_edges_counts_as_inside() -> None:
    report = evaluate({"a": alarms_at("02:00", "10:30")}, {"a": A_WINDOWS})
    assert (report.tp, report.fn, report.fp) == (2, 0, 0)
    assert report.event_f1 == 1.0


def test_windows_outside_the_evaluated_span_are_ignored_not_missed() -> None:
    later = [(pd.Timestamp("2024-02-01", tz="UTC"), pd.Timestamp("2024-02-02", tz="UTC"))]
    report = evaluate({"a": A_ALARMS}, {"a": A_WINDOWS + later})
    assert report.windows == 2
    assert report.per_series["a"].windows_outside == 1


def test_series_without_alarms_are_listed_as_skipped() -> None:
    report = evaluate({"a": A_ALARMS}, {"a": A_WINDOWS, "ghost": A_WINDOWS})
    assert report.skipped_series == ("ghost",)
    assert report.windows == 2


def test_no_alarms_no_windows_is_perfect_but_never_passes_the_gate() -> None:
    report = evaluate({"a": pd.Series(False, index=DAY)}, {})
    assert report.event_f1 == 1.0 and report.fp == 0
    assert not passes_gate(report, 0.85)


def test_naive_alarm_index_is_taken_as_utc() -> None:
    naive = pd.Series(A_ALARMS.to_numpy(), index=DAY.tz_localize(None))
    assert evaluate({"a": naive}, {"a": A_WINDOWS}).event_f1 == pytest.approx(0.4)


def _labelled_month() -> tuple[pd.DatetimeIndex, list[tuple[pd.Timestamp, pd.Timestamp]]]:
    index = pd.date_range("2024-01-01", periods=30 * 288, freq="5min", tz="UTC")
    starts = [index[i] for i in range(1000, len(index), 1700)]
    return index, [(s, s + pd.Timedelta("6h")) for s in starts]


def test_random_scores_fail_the_gate() -> None:
    index, windows = _labelled_month()
    rng = np.random.default_rng(0)
    scores = rng.random(len(index))
    flags = pd.Series(scores > np.quantile(scores, 0.99), index=index)
    report = evaluate({"s": flags}, {"s": windows})
    assert not passes_gate(report, 0.85)
    assert report.event_f1 < 0.3


def test_always_alarm_fails_the_gate() -> None:
    index, windows = _labelled_month()
    report = evaluate({"s": pd.Series(True, index=index)}, {"s": windows})
    assert report.event_recall == 1.0
    assert not passes_gate(report, 0.85)
    assert report.event_f1 < 0.1


def test_alarming_only_inside_windows_passes_the_gate() -> None:
    index, windows = _labelled_month()
    inside = np.zeros(len(index), dtype=bool)
    for start, end in windows:
        inside |= (index >= start) & (index <= end)
    report = evaluate({"s": pd.Series(inside, index=index)}, {"s": windows})
    assert report.event_f1 == 1.0 and report.fp == 0
    assert passes_gate(report, 0.85)


def test_report_to_dict_is_json_serialisable() -> None:
    report = evaluate({"a": A_ALARMS}, {"a": A_WINDOWS})
    data = json.loads(json.dumps(report.to_dict()))
    assert data["event_f1"] == pytest.approx(0.4)
    assert data["per_series"]["a"]["delays_seconds"] == [1800.0]


def test_load_nab_windows(tmp_path: Path) -> None:
    path = tmp_path / "combined_windows.json"
    path.write_text(
        json.dumps(
            {
                "realAWSCloudwatch/x.csv": [["2014-02-26 22:05:00.000000", "2014-02-27 01:00:00.000000"]],
                "realAWSCloudwatch/empty.csv": [],
            }
        )
    )
    windows = load_nab_windows(path)
    start, end = windows["realAWSCloudwatch/x.csv"][0]
    assert start == pd.Timestamp("2014-02-26 22:05", tz="UTC")
    assert end == pd.Timestamp("2014-02-27 01:00", tz="UTC")
    assert windows["realAWSCloudwatch/empty.csv"] == []
    assert parse_windows(windows_to_json(windows)) == windows


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "JSON object"),
        ('{"s": [["2014-01-02", "2014-01-01"]]}', "ends before it starts"),
        ('{"s": [["2014-01-01"]]}', "pair"),
        ('{"s": [["yesterday-ish", "2014-01-01"]]}', "unparseable timestamp"),
    ],
)
def test_load_nab_windows_rejects_bad_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "labels.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        load_nab_windows(path)


def test_load_nab_windows_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_nab_windows(tmp_path / "nope.json")


def test_merge_windows() -> None:
    merged = merge_windows(
        [(ts("03:00"), ts("04:00")), (ts("01:00"), ts("02:00")), (ts("01:30"), ts("02:30"))]
    )
    assert merged == [(ts("01:00"), ts("02:30")), (ts("03:00"), ts("04:00"))]
