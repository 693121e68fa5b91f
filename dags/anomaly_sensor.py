"""anomaly_sensor: wait for new samples or a crossed threshold, then score and remediate.

Continuous: a new run starts as soon as the previous one ends (``max_active_runs=1``, as
Airflow requires for ``@continuous``). Each run:

1. ``wait_for_work`` — a deferrable sensor. Its trigger (``remediation.triggers``) polls every
   2 s in the triggerer, holding no worker slot, and fires when a host has samples newer than
   the last pass scored or a rule's threshold is crossed on a host the last pass did not see
   crossed. It tests the current state against the last pass's cursor, not an edge between
   two polls, so nothing that happened between two runs is missed. Ten idle minutes -> the
   run ends with the sensor skipped.
2. ``sense_and_act`` — one pass of ``remediation.sensor.sense_and_act``: the newest row per host
   through the scoring service, anomalies into the event store, the rule engine (cooldowns,
   exactly-once claims, dry-run, audit log). With the scoring service down the threshold
   rules still run.

Nothing heavy is imported at module level; the sensor and trigger module import only Airflow.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import dag, task

from remediation.triggers import CurrentStateSensor


@dag(
    dag_id="anomaly_sensor",
    description="Continuous: fresh metrics -> scoring service -> anomalies -> rule engine -> actions",
    schedule="@continuous",
    max_active_runs=1,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    dagrun_timeout=timedelta(minutes=30),
    default_args={
        "owner": "smartcloudops",
        "retries": 2,
        "retry_delay": timedelta(seconds=5),
        "execution_timeout": timedelta(minutes=5),
    },
    tags=["smartcloudops", "detect", "act"],
    doc_md=__doc__,
)
def anomaly_sensor() -> None:
    idle_after = timedelta(minutes=10)
    wait = CurrentStateSensor(
        task_id="wait_for_work",
        poll_interval=2.0,
        idle_after=idle_after,
        # execution_timeout also caps a deferral; it must outlast the idle wait.
        execution_timeout=idle_after + timedelta(minutes=5),
    )

    @task
    def sense_and_act() -> dict[str, Any]:
        """Score the newest samples, record anomalies, run the rules; returns a small summary."""
        from remediation.sensor import sense_and_act as one_pass

        return one_pass()

    wait >> sense_and_act()


anomaly_sensor()
