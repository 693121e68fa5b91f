"""The extract stage: read one data interval from the metric source into the metric store.

This is the body of the ``metrics_extract`` DAG's task and of ``smartcloudops extract``. It
is idempotent by construction: the store keys partitions on the interval's hours and
replaces them, so re-running an interval rewrites the same files.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from smartcloudops.errors import InputError

if TYPE_CHECKING:
    from smartcloudops.settings import Settings
    from smartcloudops.sources import MetricSource
    from smartcloudops.store import MetricStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractResult:
    start: str
    end: str
    rows: int
    hosts: int
    partitions: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def extract_interval(
    start: datetime,
    end: datetime,
    *,
    settings: Settings | None = None,
    source: MetricSource | None = None,
    store: MetricStore | None = None,
) -> ExtractResult:
    """Copy ``[start, end)`` from the source into hour partitions of the store."""
    if start.tzinfo is None or end.tzinfo is None:
        raise InputError("interval bounds must be timezone-aware (UTC)")
    if end <= start:
        raise InputError(f"empty interval {start.isoformat()} .. {end.isoformat()}")
    if settings is None:
        from smartcloudops.settings import get_settings

        settings = get_settings()
    if source is None:
        from smartcloudops.sources import get_metric_source

        source = get_metric_source(settings)
    if store is None:
        from smartcloudops.store import get_metric_store

        store = get_metric_store(settings)
    frame = source.query_range(start, end, settings.step_seconds)
    # query_range includes ``end``; that sample belongs to the next interval.
    frame = frame[frame["timestamp"] < end]
    partitions = store.write_interval(frame, start, end)
    result = ExtractResult(
        start=start.isoformat(),
        end=end.isoformat(),
        rows=len(frame),
        hosts=int(frame["host"].nunique()) if len(frame) else 0,
        partitions=partitions,
    )
    summary = {k: v for k, v in result.to_dict().items() if k != "partitions"}
    log.info("extracted interval", extra={"stage": "extract", **summary, "partition_count": len(partitions)})
    return result
