"""train_validate_deploy: train every candidate host by host, gate on event-F1, move the champion.

Daily. Keyed on the data interval: a run for midnight trains on the ``train_days`` before
midnight, so re-running a day rebuilds the same dataset and evaluates on the same labels.

    gather_metrics ─> write_labels ─> split ─┐
    candidates ──────────────────────────────┴─> fit[candidate × host] ─> evaluate[candidate] ─> promote

- ``gather_metrics``: the history from the metric store; hours the store lacks are read from
  the metric source (see ``ml.pipeline.prepare_dataset``). Returns the dataset directory.
- ``write_labels``: the simulator's incident windows for the same range united with the
  incidents operators confirmed (NAB format).
- ``split``: the training and validation rows every candidate sees (anomalies are injected
  into the validation rows only when no label covers them); returns the fit keys: each
  training host and ``(pooled)``, the fleet-wide fallback.
- ``fit``: dynamic task mapping over the cross product of ``ml.training.CANDIDATES`` and the
  fit keys: one detector each, written to a file keyed by dataset, candidate and host. A new
  host adds tasks, a new challenger is a line in ``CANDIDATES``; this file does not change.
  Airflow caps one mapping at ``[core] max_map_length`` (1024) instances: a fleet of more than
  ``1024 / len(CANDIDATES) - 1`` hosts needs that raised.
- ``evaluate``: one mapped task per candidate assembles its fleet model from the parts,
  evaluates it (event-F1, point-F1, Fc1, FP/day, delay), logs an MLflow run and registers a
  version.
- ``promote``: the gate (event-F1 >= ``SMARTCLOUDOPS_F1_GATE``) and "beats the champion on the
  same validation data"; returns the decision, also when nothing is promoted.

Every mapped task instance retries on its own. Re-running an interval rewrites the same files;
a candidate whose detectors and validation data come out the same finds the MLflow run and
model version the earlier run registered instead of adding new ones. XCom carries paths and
small dicts only. The schedule is an explicit ``CronTriggerTimetable`` with a one-day interval
(Airflow 3's plain ``"@daily"`` has an empty data interval).
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

    # labels_path only orders this after write_labels: the split reads the dataset directory.
    @task
    def split(dataset_path: str, labels_path: str) -> list[str]:
        from ml.pipeline import prepare_split

        return prepare_split(dataset_path)

    @task
    def candidates() -> list[str]:
        from ml.pipeline import candidate_names

        return candidate_names()

    # The UI names each mapped instance "candidate/host" instead of 0, 1, 2 ...
    @task(map_index_template="{{ fit_name }}")
    def fit(candidate: str, host: str, dataset_path: str) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from ml.pipeline import fit_part

        get_current_context()["fit_name"] = f"{candidate}/{host}"  # type: ignore[typeddict-unknown-key]
        return fit_part(candidate, host, dataset_path)

    @task(map_index_template="{{ candidate_name }}")
    def evaluate(
        candidate: str, parts: list[dict[str, Any]], dataset_path: str, labels_path: str
    ) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from ml.pipeline import evaluate_and_log

        get_current_context()["candidate_name"] = candidate  # type: ignore[typeddict-unknown-key]
        # One slice request; iterating the lazy sequence probes past its end (a logged 404).
        return evaluate_and_log(candidate, dataset_path, list(parts[:]), tags={"labels": labels_path})

    @task
    def promote(results: list[dict[str, Any]]) -> dict[str, Any]:
        from ml.pipeline import promote_best

        return promote_best(list(results[:]))

    # TaskFlow passes XComArgs where the functions declare their runtime types.
    dataset = gather_metrics()
    labels = write_labels(dataset)  # type: ignore[arg-type]
    names = candidates()
    fit_keys = split(dataset, labels)  # type: ignore[arg-type]
    parts = fit.partial(dataset_path=dataset).expand(candidate=names, host=fit_keys)
    results = evaluate.partial(parts=parts, dataset_path=dataset, labels_path=labels).expand(candidate=names)
    promote(results)  # type: ignore[arg-type]


train_validate_deploy()
