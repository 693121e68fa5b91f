"""The metric store: hour partitions of long-format samples, locally or on S3.

Layout ``<prefix>/date=YYYY-MM-DD/hour=HH/metrics.parquet``. A partition's name depends only
on its hour, so re-running a data interval *replaces* its partitions — never duplicates them.
Writes are atomic: temp file + ``os.replace`` locally, a single ``put_object`` on S3. An hour
of the interval with no samples is written as an empty partition so that a re-run also
replaces stale data.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from smartcloudops.domain import CANONICAL_METRICS, empty_long_frame, normalize_long
from smartcloudops.errors import InputError, StoreError

if TYPE_CHECKING:
    from smartcloudops.settings import Settings

PARTITION_FILE = "metrics.parquet"
_PARTITION_RE = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/" + re.escape(PARTITION_FILE) + "$")


class MetricStore(Protocol):
    def write_interval(self, frame: pd.DataFrame, start: datetime, end: datetime) -> list[str]: ...

    def read(
        self,
        start: datetime,
        end: datetime,
        hosts: Sequence[str] | None = None,
        metrics: Sequence[str] | None = None,
    ) -> pd.DataFrame: ...

    def partitions(self) -> list[str]: ...


def _check_interval(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InputError("interval bounds must be timezone-aware (UTC)")
    if end <= start:
        raise InputError(f"empty interval {start.isoformat()} .. {end.isoformat()}")


def _hours(start: datetime, end: datetime) -> Iterator[pd.Timestamp]:
    _check_interval(start, end)
    hour = pd.Timestamp(start).tz_convert("UTC").floor("h")
    while hour < pd.Timestamp(end):
        yield hour
        hour += pd.Timedelta(hours=1)


def partition_key(prefix: str, hour: pd.Timestamp) -> str:
    return f"{prefix}/date={hour:%Y-%m-%d}/hour={hour:%H}/{PARTITION_FILE}"


def _split_by_hour(
    frame: pd.DataFrame, start: datetime, end: datetime
) -> Iterator[tuple[pd.Timestamp, pd.DataFrame]]:
    _check_interval(start, end)  # before comparing: a naive bound must be an InputError
    data = normalize_long(frame) if not frame.empty else empty_long_frame()
    inside = data[(data["timestamp"] >= pd.Timestamp(start)) & (data["timestamp"] < pd.Timestamp(end))]
    hour_of = inside["timestamp"].dt.floor("h")
    for hour in _hours(start, end):
        yield hour, inside[hour_of == hour].reset_index(drop=True)


def _covers_hour(hour: pd.Timestamp, start: datetime, end: datetime) -> bool:
    return bool(hour >= pd.Timestamp(start) and hour + pd.Timedelta(hours=1) <= pd.Timestamp(end))


def _merge_partial(
    existing: pd.DataFrame | None, part: pd.DataFrame, start: datetime, end: datetime
) -> pd.DataFrame:
    """An interval that covers only part of an hour replaces only that part of its partition.

    Without this, extracting 10:30-11:30 and then 11:30-12:30 would leave hour 11 holding
    11:30-12:00 only: each write would wipe the half hour the other one wrote.
    """
    if existing is None or existing.empty:
        return part
    old = normalize_long(existing)
    keep = old[(old["timestamp"] < pd.Timestamp(start)) | (old["timestamp"] >= pd.Timestamp(end))]
    if keep.empty:
        return part
    return normalize_long(pd.concat([keep, part], ignore_index=True))


def _to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _filter(
    frame: pd.DataFrame,
    start: datetime,
    end: datetime,
    hosts: Sequence[str] | None,
    metrics: Sequence[str] | None,
) -> pd.DataFrame:
    if metrics:
        unknown = sorted(set(metrics) - set(CANONICAL_METRICS))
        if unknown:
            raise InputError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(CANONICAL_METRICS)}")
    if frame.empty:
        return empty_long_frame()
    mask = (frame["timestamp"] >= pd.Timestamp(start)) & (frame["timestamp"] < pd.Timestamp(end))
    if hosts:
        mask &= frame["host"].isin(list(hosts))
    if metrics:
        mask &= frame["metric"].isin(list(metrics))
    return normalize_long(frame[mask])


def _parse_partition(source: Path | io.BytesIO, where: object) -> pd.DataFrame:
    try:
        return pd.read_parquet(source)
    except Exception as exc:  # pyarrow raises several unrelated types
        raise StoreError(f"partition {where} is unreadable: {exc}") from exc


def _assemble(
    parts: Iterable[pd.DataFrame | None],
    start: datetime,
    end: datetime,
    hosts: Sequence[str] | None,
    metrics: Sequence[str] | None,
) -> pd.DataFrame:
    """One long frame from the hour partitions that exist, cut to the asked range."""
    frames = [part for part in parts if part is not None]
    whole = pd.concat(frames, ignore_index=True) if frames else empty_long_frame()
    return _filter(whole, start, end, hosts, metrics)


class LocalMetricStore:
    def __init__(self, root: Path, prefix: str = "metrics") -> None:
        self.root = Path(root)
        self.prefix = prefix.strip("/")

    def write_interval(self, frame: pd.DataFrame, start: datetime, end: datetime) -> list[str]:
        written = []
        for hour, part in _split_by_hour(frame, start, end):
            target = self.root / partition_key(self.prefix, hour)
            if not _covers_hour(hour, start, end):
                part = _merge_partial(self._read_partition(target), part, start, end)
            # pid + thread id: two writers in one process must not share a temp file either
            tmp = target.with_name(f".{PARTITION_FILE}.tmp-{os.getpid()}-{threading.get_ident()}")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(_to_parquet_bytes(part))
                os.replace(tmp, target)
            except OSError as exc:
                with contextlib.suppress(OSError):  # its directory may be what failed
                    tmp.unlink(missing_ok=True)
                raise StoreError(f"cannot write partition {target}: {exc}") from exc
            written.append(str(target))
        return written

    @staticmethod
    def _read_partition(path: Path) -> pd.DataFrame | None:
        if not path.exists():
            return None
        return _parse_partition(path, path)

    def read(
        self,
        start: datetime,
        end: datetime,
        hosts: Sequence[str] | None = None,
        metrics: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        parts = (self._read_partition(self.root / partition_key(self.prefix, h)) for h in _hours(start, end))
        return _assemble(parts, start, end, hosts, metrics)

    def partitions(self) -> list[str]:
        base = self.root / self.prefix
        if not base.exists():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.glob(f"date=*/hour=*/{PARTITION_FILE}")
        )


class S3MetricStore:
    """The same layout in an S3 bucket, through boto3 (one ``put_object`` per partition)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "metrics",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._endpoint_url = endpoint_url
        self._region = region

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self._endpoint_url,
                region_name=self._region,
                config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}),
            )
        return self._client

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"S3 {what} failed for s3://{self.bucket}: {exc}") from exc

    def write_interval(self, frame: pd.DataFrame, start: datetime, end: datetime) -> list[str]:
        written = []
        for hour, part in _split_by_hour(frame, start, end):
            key = partition_key(self.prefix, hour)
            if not _covers_hour(hour, start, end):
                part = _merge_partial(self._read_partition(key), part, start, end)
            self._call(
                "put_object", self.client.put_object,
                Bucket=self.bucket, Key=key, Body=_to_parquet_bytes(part),
            )
            written.append(f"s3://{self.bucket}/{key}")
        return written

    def _read_partition(self, key: str) -> pd.DataFrame | None:
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"s3://{self.bucket}/{key}"
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise StoreError(f"S3 get_object failed for {where}: {exc}") from exc
        except BotoCoreError as exc:  # endpoint unreachable, timeouts, ...
            raise StoreError(f"S3 get_object failed for {where}: {exc}") from exc
        return _parse_partition(io.BytesIO(body), where)

    def read(
        self,
        start: datetime,
        end: datetime,
        hosts: Sequence[str] | None = None,
        metrics: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        parts = (self._read_partition(partition_key(self.prefix, h)) for h in _hours(start, end))
        return _assemble(parts, start, end, hosts, metrics)

    def partitions(self) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        keys: list[str] = []
        pages = self._call(
            "list_objects_v2",
            lambda **kw: list(paginator.paginate(**kw)),
            Bucket=self.bucket,
            Prefix=f"{self.prefix}/",
        )
        for page in pages:
            keys.extend(
                obj["Key"] for obj in page.get("Contents", []) if _PARTITION_RE.search(obj["Key"])
            )
        return sorted(keys)


def get_metric_store(settings: Settings) -> MetricStore:
    if settings.metrics_bucket:
        return S3MetricStore(
            settings.metrics_bucket,
            settings.metrics_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.aws_region,
        )
    return LocalMetricStore(settings.metrics_dir, settings.metrics_prefix)


def interval_hours(start: datetime, end: datetime) -> list[datetime]:
    return [h.to_pydatetime() for h in _hours(start, end)]


def day_range(end: datetime, days: float) -> tuple[datetime, datetime]:
    return end - timedelta(days=days), end
