"""Extract into S3: settings -> S3MetricStore -> moto's server mode over HTTP on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pandas as pd
import pytest
from helpers import aws_test_credentials, moto_server

from smartcloudops.extract import extract_interval
from smartcloudops.settings import get_settings
from smartcloudops.simulator import FleetSimulator
from smartcloudops.store import S3MetricStore, get_metric_store

pytestmark = pytest.mark.integration

BUCKET = "scops-metrics-integration"  # a valid DNS name, as S3 requires
T0 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in aws_test_credentials().items():
            mp.setenv(name, value)
        with moto_server(tmp_path_factory.mktemp("moto")) as url:
            boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=BUCKET)
            yield url


@pytest.fixture
def s3_settings(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # configured the way an operator would: environment variables only
    monkeypatch.setenv("SMARTCLOUDOPS_METRICS_BUCKET", BUCKET)
    monkeypatch.setenv("SMARTCLOUDOPS_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("SMARTCLOUDOPS_METRICS_PREFIX", "fleet/metrics")
    get_settings.cache_clear()


def _objects(endpoint: str) -> dict[str, str]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix="fleet/metrics/")
    return {o["Key"]: o["ETag"] for o in listing.get("Contents", [])}


@pytest.mark.usefixtures("s3_settings")
def test_extract_writes_partitions_to_s3_and_rerun_replaces(endpoint: str, isolated_home: Path) -> None:
    start, end = T0, T0 + timedelta(hours=2)
    result = extract_interval(start, end)  # source: the simulator; store: from settings
    keys = [
        "fleet/metrics/date=2024-05-06/hour=10/metrics.parquet",
        "fleet/metrics/date=2024-05-06/hour=11/metrics.parquet",
    ]
    assert result.partitions == [f"s3://{BUCKET}/{k}" for k in keys]
    assert result.rows == 2 * 60 * 5 * 6 and result.hosts == 5
    objects = _objects(endpoint)
    assert sorted(objects) == keys

    store = get_metric_store(get_settings())
    assert isinstance(store, S3MetricStore)
    assert store.partitions() == keys
    sim = FleetSimulator.from_settings(get_settings())
    pd.testing.assert_frame_equal(store.read(start, end), sim.values(start, end))
    assert not (isolated_home / "data").exists()  # nothing went to the local store

    again = extract_interval(start, end)
    assert again == result
    assert _objects(endpoint) == objects  # same keys, byte-identical content (same ETags)
    back = store.read(start, end)
    assert len(back) == result.rows
    assert not back.duplicated(["timestamp", "host", "metric"]).any()


@pytest.mark.usefixtures("s3_settings")
def test_rerun_after_an_incident_replaces_values(endpoint: str) -> None:
    start, end = T0 + timedelta(days=1), T0 + timedelta(days=1, hours=1)
    extract_interval(start, end)
    before = _objects(endpoint)
    # the world changed for that hour (an incident injected into it): a re-run rewrites it
    FleetSimulator.from_settings(get_settings()).inject("cpu_hog", "app-1", start=start, duration_minutes=60)
    extract_interval(start, end)
    after = _objects(endpoint)
    assert sorted(after) == sorted(before)
    key = "fleet/metrics/date=2024-05-07/hour=10/metrics.parquet"
    assert after[key] != before[key]
    frame = get_metric_store(get_settings()).read(start, end, hosts=["app-1"], metrics=["cpu"])
    assert len(frame) == 60 and frame["value"].min() > 85
