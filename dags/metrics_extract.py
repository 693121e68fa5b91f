"""metrics_extract: copy each hour of fleet metrics from the metric source into the store.

Hourly. One task, keyed on the run's data interval: it reads ``[start, end)`` from
Prometheus (or the built-in simulator when ``PROMETHEUS_URL`` is unset) and writes the hour
partitions ``metrics/date=YYYY-MM-DD/hour=HH/metrics.parquet`` to a local directory or to S3
(``SMARTCLOUDOPS_METRICS_BUCKET``). Re-running an interval replaces its partitions, so retries,
clears and backfills never duplicate data.

Schedule: Airflow 3 maps ``"@hourly"`` to a ``CronTriggerTimetable`` whose data interval is
empty (start == end), which leaves nothing to key a partition on. The explicit timetable
below keeps the same hourly trigger with a one-hour data interval ending at the run's
logical date; a run for 10:00 extracts 09:00-10:00. Catchup is off: backfill with
``airflow backfill create`` or ``smartcloudops.cli.airflow_runner.run_many``.

This file is parsed by the scheduler all the time: it imports nothing heavy and touches no
network, DB or file at module level. The work happens in ``smartcloudops.extract``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import CronTriggerTimetable, dag, task

HOUR = timedelta(hours=1)


def whole_hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """Round the interval down to whole hours: a partition must never hold a partial hour.

    A manual run at 10:25 gets ``[09:25, 10:25)`` from the timetable; writing that would
    replace the 09:00 and 10:00 partitions with fragments. It extracts 09:00-10:00 instead.
    """
    end = end.replace(minute=0, second=0, microsecond=0)
    start = min(start.replace(minute=0, second=0, microsecond=0), end - HOUR)
    return start, end


@dag(
    dag_id="metrics_extract",
    description="Hourly: metric source -> metric store partitions (idempotent per interval)",
    schedule=CronTriggerTimetable("0 * * * *", timezone="UTC", interval=HOUR),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=4,
    dagrun_timeout=timedelta(minutes=30),
    default_args={
        "owner": "smartcloudops",
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=15),
    },
    tags=["smartcloudops", "observe"],
    doc_md=__doc__,
)
def metrics_extract() -> None:
    @task
    def extract(
        data_interval_start: datetime | None = None, data_interval_end: datetime | None = None
    ) -> dict[str, Any]:
        """Extract the run's data interval; returns counts and partition keys (small)."""
        from smartcloudops.extract import extract_interval

        assert data_interval_start is not None and data_interval_end is not None
        return extract_interval(*whole_hours(data_interval_start, data_interval_end)).to_dict()

    extract()


metrics_extract()
