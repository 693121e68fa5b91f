"""train_validate_deploy: train every candidate detector, gate on event-F1, move the champion.

Daily. Keyed on the data interval: a run for midnight trains on the ``train_days`` before
midnight, so re-running a day rebuilds the same dataset and evaluates on the same labels.

    gather_metrics ─> write_labels ─┐
    candidates ─────────────────────┴─> train[candidate] (one mapped task each) ─> promote

- ``gather_metrics``: the history from the metric store; hours the store lacks are read from
  the metric source (see ``ml.pipeline.prepare_dataset``). Returns the dataset directory.
- ``write_labels``: the simulator's incident windows for the same range (NAB format).
- ``train``: dynamic task mapping over ``ml.training.CANDIDATES`` — fit, evaluate (event-F1,
  point-F1, Fc1, FP/day, delay), log an MLflow run, register a version. A new challenger is a
  line in ``CANDIDATES``; this file does not change. Each mapped task retries on its own.
- ``promote``: the gate (event-F1 >= ``SMARTCLOUDOPS_F1_GATE``) and "beats the champion on the
  same validation data"; returns the decision, also when nothing is promoted.

XCom carries paths and small dicts only. The schedule is an explicit ``CronTriggerTimetable``
with a one-day interval (Airflow 3's plain ``"@daily"`` has an empty data interval).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import CronTriggerTimetable, dag, task


@dag(
    dag_id="train_validate_deploy",
    description="Daily: candidates -> event-F1 on labelled validation -> MLflow -> champion past the gate",
    schedule=CronTriggerTimetable("0 0 * * *", timezone="UTC", interval=timedelta(days=1)),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    default_args={
        "owner": "smartcloudops",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=45),
    },
    tags=["smartcloudops", "learn"],
    doc_md=__doc__,
)
def train_validate_deploy() -> None:
    @task
    def gather_metrics(data_interval_end: datetime | None = None) -> str:
        from ml.pipeline import prepare_dataset

        assert data_interval_end is not None
        return prepare_dataset(data_interval_end)

    @task
    def write_labels(dataset_path: str) -> str:
        from ml.pipeline import write_labels as write

        return write(dataset_path)

    @task
    def candidates() -> list[str]:
        from ml.pipeline import candidate_names

        return candidate_names()

    # The UI names each mapped instance after its candidate instead of 0, 1, 2.
    @task(map_index_template="{{ candidate_name }}")
    def train(candidate: str, dataset_path: str, labels_path: str) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from ml.pipeline import train_and_log

        get_current_context()["candidate_name"] = candidate  # type: ignore[typeddict-unknown-key]
        return train_and_log(candidate, dataset_path, tags={"labels": labels_path})

    @task
    def promote(results: list[dict[str, Any]]) -> dict[str, Any]:
        from ml.pipeline import promote_best

        # One slice request; iterating the lazy sequence probes past its end (a logged 404).
        return promote_best(list(results[:]))

    dataset = gather_metrics()
    # TaskFlow passes XComArgs where the functions declare their runtime types.
    labels = write_labels(dataset)  # type: ignore[arg-type]
    results = train.partial(dataset_path=dataset, labels_path=labels).expand(candidate=candidates())
    promote(results)  # type: ignore[arg-type]


train_validate_deploy()
