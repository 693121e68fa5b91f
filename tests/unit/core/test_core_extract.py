"""The extract stage: one data interval from a source into hour partitions, idempotently."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from smartcloudops.errors import InputError
from smartcloudops.extract import extract_interval
from smartcloudops.settings import Settings, get_settings
from smartcloudops.simulator import FleetSimulator
from smartcloudops.sources import SimulatorSource
from smartcloudops.store import LocalMetricStore

T0 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)
HOSTS = ["web-1", "web-2", "app-1", "db-1", "db-2"]


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def test_interval_becomes_hour_partitions(tmp_path: Path) -> None:
    sim = FleetSimulator(tmp_path / "sim", HOSTS)
    store = LocalMetricStore(tmp_path / "data")
    settings = Settings(home=tmp_path)
    start, end = T0, T0 + timedelta(hours=2)
    result = extract_interval(start, end, settings=settings, source=SimulatorSource(sim), store=store)
    assert result.rows == 2 * 60 * len(HOSTS) * 6
    assert result.hosts == len(HOSTS)
    assert (result.start, result.end) == (start.isoformat(), end.isoformat())
    assert [Path(p).relative_to(tmp_path / "data").as_posix() for p in result.partitions] == [
        "metrics/date=2024-05-06/hour=10/metrics.parquet",
        "metrics/date=2024-05-06/hour=11/metrics.parquet",
    ]
    back = store.read(start, end + timedelta(hours=1))
    # the sample at ``end`` belongs to the next interval, not this one
    assert back["timestamp"].max() == pd.Timestamp(end - timedelta(minutes=1))
    pd.testing.assert_frame_equal(back, sim.values(start, end))
    assert result.to_dict()["rows"] == result.rows


def test_rerunning_is_idempotent(tmp_path: Path) -> None:
    sim = FleetSimulator(tmp_path / "sim", HOSTS)
    store = LocalMetricStore(tmp_path / "data")
    settings = Settings(home=tmp_path)
    start, end = T0, T0 + timedelta(hours=1)
    first = extract_interval(start, end, settings=settings, source=SimulatorSource(sim), store=store)
    files = _files(tmp_path / "data")
    second = extract_interval(start, end, settings=settings, source=SimulatorSource(sim), store=store)
    assert second == first
    assert _files(tmp_path / "data") == files
    back = store.read(start, end)
    assert len(back) == first.rows
    assert not back.duplicated(["timestamp", "host", "metric"]).any()


def test_unaligned_intervals_lose_nothing(tmp_path: Path) -> None:
    """`smartcloudops extract --start 10:30 --end 12:30` runs 10:30-11:30, then 11:30-12:30."""
    sim = FleetSimulator(tmp_path / "sim", HOSTS)
    store = LocalMetricStore(tmp_path / "data")
    settings = Settings(home=tmp_path)
    cursor = T0 + timedelta(minutes=30)
    for _ in range(2):
        extract_interval(
            cursor, cursor + timedelta(hours=1), settings=settings, source=SimulatorSource(sim), store=store
        )
        cursor += timedelta(hours=1)
    start, end = T0 + timedelta(minutes=30), T0 + timedelta(minutes=150)
    pd.testing.assert_frame_equal(store.read(T0, T0 + timedelta(hours=3)), sim.values(start, end))


def test_defaults_come_from_settings(isolated_home: Path) -> None:
    result = extract_interval(T0, T0 + timedelta(minutes=30))  # simulator + local store under home
    assert result.rows == 30 * len(HOSTS) * 6
    assert Path(result.partitions[0]).is_relative_to(isolated_home / "data")
    assert get_settings().metrics_dir == isolated_home / "data"


@pytest.mark.parametrize(
    ("start", "end"),
    [(datetime(2024, 5, 6, 10), datetime(2024, 5, 6, 11)), (T0, T0), (T0, T0 - timedelta(minutes=1))],
)
def test_bad_intervals_are_input_errors(tmp_path: Path, start: datetime, end: datetime) -> None:
    with pytest.raises(InputError):
        extract_interval(start, end, settings=Settings(home=tmp_path))
    assert not (tmp_path / "data").exists()
