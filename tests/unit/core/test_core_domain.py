"""Domain helpers: long <-> wide frames, severities, records."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from smartcloudops.domain import (
    CANONICAL_METRICS,
    ActionRecord,
    ActionStatus,
    Anomaly,
    Severity,
    long_to_wide,
    new_id,
    normalize_long,
    wide_to_long,
)
from smartcloudops.errors import InputError


def _long(n_times: int = 4, hosts: tuple[str, ...] = ("web-1", "db-1")) -> pd.DataFrame:
    times = pd.date_range("2024-05-01", periods=n_times, freq="min", tz="UTC")
    rows = [
        (ts, host, metric, float(i * 10 + j) + (0.5 if host == "db-1" else 0.0))
        for i, ts in enumerate(times)
        for host in hosts
        for j, metric in enumerate(CANONICAL_METRICS)
    ]
    return pd.DataFrame(rows, columns=["timestamp", "host", "metric", "value"])


def test_long_wide_round_trip() -> None:
    long = normalize_long(_long())
    wide = long_to_wide(long)
    assert list(wide.columns) == ["timestamp", "host", *CANONICAL_METRICS]
    assert len(wide) == 4 * 2
    row = wide[(wide["host"] == "db-1") & (wide["timestamp"] == pd.Timestamp("2024-05-01 00:01", tz="UTC"))]
    assert row["memory"].item() == pytest.approx(11.5)
    back = wide_to_long(wide)
    pd.testing.assert_frame_equal(back, long)


def test_missing_metric_becomes_nan_column_and_is_dropped_on_the_way_back() -> None:
    long = normalize_long(_long())
    partial = long[long["metric"] != "disk"]
    wide = long_to_wide(partial)
    assert "disk" in wide.columns
    assert wide["disk"].isna().all()
    back = wide_to_long(wide)
    assert "disk" not in set(back["metric"])
    assert len(back) == len(partial)


def test_empty_long_to_wide_has_the_contract_columns() -> None:
    wide = long_to_wide(normalize_long(_long()).iloc[0:0])
    assert list(wide.columns) == ["timestamp", "host", *CANONICAL_METRICS]
    assert wide.empty


def test_normalize_long_coerces_and_sorts() -> None:
    raw = pd.DataFrame(
        {
            "value": ["2.5", "x", 1],
            "metric": ["cpu", "cpu", "memory"],
            "host": ["b", "a", "a"],
            "timestamp": ["2024-05-01T00:01:00Z", "2024-05-01T00:00:00+02:00", "2024-05-01 00:00:00"],
            "extra": [1, 2, 3],
        }
    )
    out = normalize_long(raw)
    assert list(out.columns) == ["timestamp", "host", "metric", "value"]
    assert str(out["timestamp"].dt.tz) == "UTC"
    assert out["timestamp"].is_monotonic_increasing
    # "+02:00" is two hours earlier in UTC, so it sorts first
    assert out["timestamp"].iloc[0] == pd.Timestamp("2024-04-30 22:00", tz="UTC")
    assert np.isnan(out["value"].iloc[0])  # "x" is not a number: NaN, not a crash


def test_normalize_long_names_missing_columns() -> None:
    with pytest.raises(ValueError, match="missing columns: metric, value"):
        normalize_long(pd.DataFrame({"timestamp": [], "host": []}))


def test_severity_parse_and_order() -> None:
    assert Severity.parse(" High ") is Severity.HIGH
    assert Severity.CRITICAL > Severity.HIGH > Severity.MEDIUM > Severity.LOW
    assert str(Severity.MEDIUM) == "medium"
    with pytest.raises(ValueError, match="valid: low, medium, high, critical"):
        Severity.parse("urgent")


def test_records_serialise() -> None:
    when = datetime(2024, 5, 1, 12, tzinfo=UTC)
    anomaly = Anomaly("web-1", when, 0.97, Severity.HIGH, "3", {"cpu": 0.8, "memory": 0.1}, {"cpu": 97.0})
    assert anomaly.top_metric == "cpu"
    data = anomaly.to_dict()
    assert data["timestamp"] == "2024-05-01T12:00:00+00:00"
    assert data["severity"] == "high"
    record = ActionRecord("restart_service", "web-1", ActionStatus.DRY_RUN, "cpu_high", True, when)
    assert record.to_dict()["result"] == "dry_run"
    assert record.action_id.startswith("act-")
    assert new_id("x") != new_id("x")


def test_unreadable_timestamps_are_input_errors_naming_the_value() -> None:
    stamps = ["2024-05-01T00:00:00Z", "yesterday"]
    frame = pd.DataFrame({"timestamp": stamps, "host": "a", "metric": "cpu", "value": 1})
    with pytest.raises(InputError, match=r"unreadable timestamp.*yesterday"):
        normalize_long(frame)
