"""The metric store: hour partitions, atomic and replacing, locally and on S3 (moto server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import aws_test_credentials, free_port, moto_server

from smartcloudops.domain import normalize_long
from smartcloudops.errors import InputError, StoreError
from smartcloudops.settings import Settings
from smartcloudops.simulator import FleetSimulator
from smartcloudops.store import LocalMetricStore, S3MetricStore, get_metric_store

T0 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)
HOSTS = ["web-1", "db-1"]


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Three hours of simulated samples, T0 .. T0+3h."""
    sim = FleetSimulator(tmp_path_factory.mktemp("sim"), HOSTS, schedule=False)
    return sim.values(T0, T0 + timedelta(hours=3))


def _between(frame: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    inside = frame[(frame["timestamp"] >= start) & (frame["timestamp"] < end)]
    return normalize_long(inside)


# -- local -----------------------------------------------------------------------------------


def test_local_write_and_read(tmp_path: Path, samples: pd.DataFrame) -> None:
    store = LocalMetricStore(tmp_path / "data")
    written = store.write_interval(samples, T0, T0 + timedelta(hours=3))
    expected = [f"metrics/date=2024-05-06/hour={h}/metrics.parquet" for h in ("10", "11", "12")]
    assert written == [str(tmp_path / "data" / key) for key in expected]
    assert store.partitions() == expected
    pd.testing.assert_frame_equal(store.read(T0, T0 + timedelta(hours=3)), samples)
    # a read inside one hour, filtered
    got = store.read(T0 + timedelta(minutes=90), T0 + timedelta(minutes=100), hosts=["db-1"], metrics=["cpu"])
    assert len(got) == 10
    assert set(got["host"]) == {"db-1"} and set(got["metric"]) == {"cpu"}
    assert list(got.columns) == ["timestamp", "host", "metric", "value"]
    assert str(got["timestamp"].dt.tz) == "UTC"


def test_rerunning_an_interval_replaces_it(tmp_path: Path, samples: pd.DataFrame) -> None:
    store = LocalMetricStore(tmp_path / "data")
    start, end = T0, T0 + timedelta(hours=2)
    first = store.write_interval(samples, start, end)
    rows = len(store.read(start, end))
    files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "data").rglob("*") if p.is_file())
    second = store.write_interval(samples, start, end)
    assert second == first
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "data").rglob("*") if p.is_file()) == files
    assert len(store.read(start, end)) == rows == 2 * 60 * len(HOSTS) * 6
    assert not store.read(start, end).duplicated(["timestamp", "host", "metric"]).any()
    # a re-run with corrected data replaces the values, it does not add to them
    corrected = samples.assign(value=samples["value"] + 1.0)
    store.write_interval(corrected, start, end)
    pd.testing.assert_frame_equal(store.read(start, end), _between(corrected, start, end))


def test_empty_hours_are_written_so_reruns_clear_stale_data(tmp_path: Path, samples: pd.DataFrame) -> None:
    store = LocalMetricStore(tmp_path / "data")
    start, end = T0, T0 + timedelta(hours=3)
    store.write_interval(samples, start, end)
    # the source had nothing for 11:00-12:00 this time
    gap = samples[samples["timestamp"].dt.hour != 11]
    written = store.write_interval(gap, start, end)
    assert len(written) == 3
    back = store.read(start, end)
    assert set(back["timestamp"].dt.hour) == {10, 12}
    assert store.read(T0 + timedelta(hours=1), T0 + timedelta(hours=2)).empty
    # an interval with no samples at all still writes (empty) partitions
    assert len(store.write_interval(samples.iloc[0:0], start, end)) == 3
    assert store.read(start, end).empty


def test_samples_outside_the_interval_are_not_written(tmp_path: Path, samples: pd.DataFrame) -> None:
    store = LocalMetricStore(tmp_path / "data")
    store.write_interval(samples, T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    assert store.partitions() == ["metrics/date=2024-05-06/hour=11/metrics.parquet"]
    back = store.read(T0, T0 + timedelta(hours=3))
    assert back["timestamp"].min() == pd.Timestamp(T0 + timedelta(hours=1))
    assert back["timestamp"].max() == pd.Timestamp(T0 + timedelta(hours=2) - timedelta(minutes=1))


def test_partial_hours_replace_only_their_part(tmp_path: Path, samples: pd.DataFrame) -> None:
    """Extracting 10:30-11:30 after 10:00-11:00 keeps 10:00-10:30 (and never duplicates)."""
    store = LocalMetricStore(tmp_path / "data")
    store.write_interval(samples, T0, T0 + timedelta(hours=1))
    shifted = samples.assign(value=samples["value"] + 100.0)
    a, b = T0 + timedelta(minutes=30), T0 + timedelta(minutes=90)
    store.write_interval(shifted, a, b)
    store.write_interval(shifted, a, b)  # and a re-run of the same partial interval
    back = store.read(T0, T0 + timedelta(hours=2))
    expected = normalize_long(pd.concat([_between(samples, T0, a), _between(shifted, a, b)]))
    pd.testing.assert_frame_equal(back, expected)


def test_unreadable_partition_is_a_store_error(tmp_path: Path, samples: pd.DataFrame) -> None:
    store = LocalMetricStore(tmp_path / "data")
    [path] = store.write_interval(samples, T0, T0 + timedelta(hours=1))
    Path(path).write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(StoreError, match=r"hour=10/metrics\.parquet is unreadable"):
        store.read(T0, T0 + timedelta(hours=1))
    # other hours still read
    assert store.read(T0 + timedelta(hours=1), T0 + timedelta(hours=2)).empty


def test_write_failure_is_a_store_error_and_leaves_no_temp_files(
    tmp_path: Path, samples: pd.DataFrame
) -> None:
    (tmp_path / "data").write_text("a file where a directory should be")
    store = LocalMetricStore(tmp_path / "data")
    with pytest.raises(StoreError, match="cannot write partition"):
        store.write_interval(samples, T0, T0 + timedelta(hours=1))
    good = LocalMetricStore(tmp_path / "ok")
    good.write_interval(samples, T0, T0 + timedelta(hours=3))
    assert [p for p in (tmp_path / "ok").rglob("*") if ".tmp" in p.name] == []


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (datetime(2024, 5, 6, 10), datetime(2024, 5, 6, 11), "timezone-aware"),
        (T0, T0, "empty interval"),
        (T0 + timedelta(hours=1), T0, "empty interval"),
    ],
)
def test_bad_intervals(
    tmp_path: Path, samples: pd.DataFrame, start: datetime, end: datetime, message: str
) -> None:
    store = LocalMetricStore(tmp_path / "data")
    with pytest.raises(InputError, match=message):
        store.write_interval(samples, start, end)
    with pytest.raises(InputError, match=message):
        store.read(start, end)


def test_unknown_metric_filter(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"unknown metric.*cpu_temp"):
        LocalMetricStore(tmp_path).read(T0, T0 + timedelta(hours=1), metrics=["cpu_temp"])


def test_get_metric_store_follows_settings(tmp_path: Path) -> None:
    local = get_metric_store(Settings(home=tmp_path))
    assert isinstance(local, LocalMetricStore) and local.root == tmp_path / "data"
    s3 = get_metric_store(Settings(home=tmp_path, metrics_bucket="my-bucket", s3_endpoint_url="http://x:1"))
    assert isinstance(s3, S3MetricStore) and s3.bucket == "my-bucket"


# -- S3 through moto's server mode -------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in aws_test_credentials().items():
            mp.setenv(name, value)
        with moto_server(tmp_path_factory.mktemp("moto")) as url:
            yield url


@pytest.fixture
def bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    import boto3

    # valid DNS name: lowercase, digits and hyphens, 3-63 characters
    name = f"scops-{request.node.name.replace('_', '-').lower()}"[:50] + f"-{os.getpid() % 10000}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name


def _s3(s3_endpoint: str, bucket: str) -> S3MetricStore:
    return S3MetricStore(bucket, endpoint_url=s3_endpoint)


def _keys(store: S3MetricStore) -> list[dict[str, Any]]:
    return sorted(
        store.client.list_objects_v2(Bucket=store.bucket).get("Contents", []), key=lambda o: o["Key"]
    )


def test_s3_write_read_and_rerun(s3_endpoint: str, bucket: str, samples: pd.DataFrame) -> None:
    store = _s3(s3_endpoint, bucket)
    start, end = T0, T0 + timedelta(hours=2)
    written = store.write_interval(samples, start, end)
    assert written == [
        f"s3://{bucket}/metrics/date=2024-05-06/hour=10/metrics.parquet",
        f"s3://{bucket}/metrics/date=2024-05-06/hour=11/metrics.parquet",
    ]
    assert store.partitions() == [w.removeprefix(f"s3://{bucket}/") for w in written]
    pd.testing.assert_frame_equal(store.read(start, end), _between(samples, start, end))
    before = [o["Key"] for o in _keys(store)]
    # re-run with corrected values: same keys, same row count, the new values
    corrected = samples.assign(value=samples["value"] * 2)
    assert store.write_interval(corrected, start, end) == written
    assert [o["Key"] for o in _keys(store)] == before
    back = store.read(start, end)
    pd.testing.assert_frame_equal(back, _between(corrected, start, end))
    # hours with nothing stored read as empty, not as an error
    assert store.read(T0 + timedelta(days=1), T0 + timedelta(days=1, hours=1)).empty


def test_s3_partial_hour_and_empty_hour(s3_endpoint: str, bucket: str, samples: pd.DataFrame) -> None:
    store = _s3(s3_endpoint, bucket)
    store.write_interval(samples, T0, T0 + timedelta(hours=1))
    store.write_interval(samples.iloc[0:0], T0 + timedelta(minutes=30), T0 + timedelta(hours=1))
    back = store.read(T0, T0 + timedelta(hours=1))
    assert back["timestamp"].max() == pd.Timestamp(T0 + timedelta(minutes=29))


def test_s3_corrupt_object_is_a_store_error(s3_endpoint: str, bucket: str, samples: pd.DataFrame) -> None:
    store = _s3(s3_endpoint, bucket)
    store.write_interval(samples, T0, T0 + timedelta(hours=1))
    key = "metrics/date=2024-05-06/hour=10/metrics.parquet"
    store.client.put_object(Bucket=bucket, Key=key, Body=b"not parquet")
    with pytest.raises(StoreError, match="is unreadable"):
        store.read(T0, T0 + timedelta(hours=1))


def test_s3_missing_bucket_and_unreachable_endpoint(s3_endpoint: str, samples: pd.DataFrame) -> None:
    missing = _s3(s3_endpoint, "scops-no-such-bucket")
    with pytest.raises(StoreError, match="put_object failed for s3://scops-no-such-bucket"):
        missing.write_interval(samples, T0, T0 + timedelta(hours=1))
    with pytest.raises(StoreError):
        missing.partitions()
    nowhere = S3MetricStore("scops-any", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreError):
        nowhere.read(T0, T0 + timedelta(hours=1))
    with pytest.raises(StoreError):
        nowhere.write_interval(samples, T0, T0 + timedelta(hours=1))
