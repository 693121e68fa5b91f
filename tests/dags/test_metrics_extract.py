"""metrics_extract run for real (dag.test in-process): partitions per hour, re-runs replace them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

END = datetime(2026, 3, 2, 12, tzinfo=UTC)


def _partition_files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*.parquet"))}


def test_extract_writes_hour_partitions_and_a_rerun_replaces_them(airflow_home: Path, sc_home: Path) -> None:
    from smartcloudops.cli import airflow_runner
    from smartcloudops.settings import get_settings
    from smartcloudops.store import get_metric_store

    dates = airflow_runner.hourly_logical_dates(END - timedelta(hours=2), END)
    assert dates == [END - timedelta(hours=1), END]

    outcomes = [airflow_runner.run_dag_outcome("metrics_extract", d) for d in dates]
    assert [o.state for o in outcomes] == ["success", "success"]
    first = outcomes[0].returns["extract"]
    # logical date 11:00 -> data interval 10:00-11:00 -> the hour=10 partition
    assert first["start"] == "2026-03-02T10:00:00+00:00" and first["end"] == "2026-03-02T11:00:00+00:00"
    assert first["rows"] == 60 * 2 * 6  # minutes x hosts x metrics
    assert first["hosts"] == 2

    root = get_settings().metrics_dir
    files = _partition_files(root)
    assert sorted(files) == [
        "metrics/date=2026-03-02/hour=10/metrics.parquet",
        "metrics/date=2026-03-02/hour=11/metrics.parquet",
    ]
    store = get_metric_store(get_settings())
    rows_before = len(store.read(END - timedelta(hours=2), END))
    assert rows_before == 2 * 720

    again = airflow_runner.run_dag_outcome("metrics_extract", dates[1])
    assert again.state == "success"
    assert again.run_id != outcomes[1].run_id  # a new run of the same interval...
    after = _partition_files(root)
    assert sorted(after) == sorted(files)  # ...same partitions, no new files
    hour10, hour11 = (f"metrics/date=2026-03-02/hour={h}/metrics.parquet" for h in ("10", "11"))
    assert after[hour11] > files[hour11]  # rewritten
    assert after[hour10] == files[hour10]  # another interval's partition is untouched
    assert len(store.read(END - timedelta(hours=2), END)) == rows_before  # replaced, not duplicated


def test_an_off_hour_logical_date_still_extracts_one_whole_hour(airflow_home: Path, sc_home: Path) -> None:
    from smartcloudops.cli import airflow_runner

    outcome = airflow_runner.run_dag_outcome("metrics_extract", END + timedelta(minutes=25))
    assert outcome.state == "success"
    result = outcome.returns["extract"]
    assert (result["start"], result["end"]) == ("2026-03-02T11:00:00+00:00", "2026-03-02T12:00:00+00:00")
    assert len(result["partitions"]) == 1


def test_runner_rejects_bad_input(airflow_home: Path, sc_home: Path) -> None:
    from smartcloudops.cli import airflow_runner
    from smartcloudops.errors import InputError

    with pytest.raises(InputError, match="timezone-aware"):
        airflow_runner.run_dag("metrics_extract", datetime(2026, 3, 2, 12))
    with pytest.raises(InputError, match=r"no DAG 'nope'.*metrics_extract"):
        airflow_runner.run_dag("nope", END)
    with pytest.raises(InputError, match="empty range"):
        airflow_runner.hourly_logical_dates(END, END)
