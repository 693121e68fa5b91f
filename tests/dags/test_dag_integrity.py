"""Every DAG file imports cleanly, declares what we expect, and parses without side effects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS = REPO_ROOT / "dags"
EXPECTED = {"metrics_extract", "train_validate_deploy", "anomaly_sensor"}


@pytest.fixture(scope="module")
def dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors_and_expected_dags(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == EXPECTED


def test_every_task_retries_with_a_delay(dagbag: Any) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tasks, dag_id
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"
            assert task.retry_delay >= timedelta(seconds=5), f"{dag_id}.{task.task_id}"
            assert task.execution_timeout is not None, f"{dag_id}.{task.task_id} can hang forever"
        assert dag.catchup is False, dag_id
        assert "smartcloudops" in dag.tags, dag_id


def test_metrics_extract_is_hourly_with_an_hour_long_data_interval(dagbag: Any) -> None:
    from airflow.sdk import CronTriggerTimetable

    dag = dagbag.dags["metrics_extract"]
    assert isinstance(dag.timetable, CronTriggerTimetable)
    assert dag.timetable.expression == "0 * * * *"
    assert dag.timetable.interval == timedelta(hours=1)
    assert [t.task_id for t in dag.tasks] == ["extract"]


def test_train_validate_deploy_is_daily_and_maps_over_candidates_and_hosts(dagbag: Any) -> None:
    from airflow.sdk import CronTriggerTimetable

    dag = dagbag.dags["train_validate_deploy"]
    assert isinstance(dag.timetable, CronTriggerTimetable)
    assert dag.timetable.expression == "0 0 * * *"
    assert dag.timetable.interval == timedelta(days=1)
    task_ids = {t.task_id for t in dag.tasks}
    assert task_ids == {"gather_metrics", "write_labels", "split", "candidates", "fit", "evaluate", "promote"}
    fit, evaluate = dag.get_task("fit"), dag.get_task("evaluate")
    # Dynamic task mapping: fit over candidate x host (a cross product), evaluate per candidate.
    assert "MappedOperator" in type(fit).__name__ and "MappedOperator" in type(evaluate).__name__
    expanded = {name: arg.operator.task_id for name, arg in fit.op_kwargs_expand_input.value.items()}
    assert expanded == {"candidate": "candidates", "host": "split"}
    assert set(evaluate.op_kwargs_expand_input.value) == {"candidate"}
    assert evaluate.partial_kwargs["op_kwargs"]["parts"].operator is fit  # all of fit's parts
    assert fit.upstream_task_ids == {"gather_metrics", "split", "candidates"}
    assert evaluate.upstream_task_ids == {"fit", "gather_metrics", "write_labels", "candidates"}
    assert dag.get_task("split").upstream_task_ids == {"gather_metrics", "write_labels"}
    assert dag.get_task("promote").upstream_task_ids == {"evaluate"}
    assert fit.map_index_template and evaluate.map_index_template


def test_anomaly_sensor_is_continuous_and_deferrable(dagbag: Any) -> None:
    from remediation.triggers import CurrentStateSensor

    dag = dagbag.dags["anomaly_sensor"]
    assert "continuous" in type(dag.timetable).__name__.lower()
    assert dag.max_active_runs == 1
    sensor = dag.get_task("wait_for_work")
    assert isinstance(sensor, CurrentStateSensor)
    assert sensor.poll_interval <= 5
    # execution_timeout caps a deferral too: it must outlast the trigger's idle wait
    assert sensor.execution_timeout > sensor.idle_after
    assert dag.get_task("sense_and_act").upstream_task_ids == {"wait_for_work"}


_PARSE_PROBE = r"""
import importlib.util, json, socket, sys, time
sys.path.insert(0, sys.argv[1])
import airflow.sdk  # the scheduler has this loaded already; only the DAG files are measured
import sqlalchemy.engine

touched = []
def refuse(what):
    def _refuse(*args, **kwargs):
        touched.append(what)
        raise OSError(f"{what} at parse time")
    return _refuse
socket.socket.connect = refuse("socket.connect")
socket.socket.connect_ex = refuse("socket.connect_ex")
socket.create_connection = refuse("socket.create_connection")
socket.getaddrinfo = refuse("socket.getaddrinfo")
sqlalchemy.create_engine = refuse("sqlalchemy.create_engine")
sqlalchemy.engine.Engine.connect = refuse("Engine.connect")

before = set(sys.modules)
started = time.perf_counter()
for path in sys.argv[2:]:
    spec = importlib.util.spec_from_file_location("dagfile_" + path.rsplit("/", 1)[-1][:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
seconds = time.perf_counter() - started
new = sorted({m.split(".")[0] for m in set(sys.modules) - before})
print(json.dumps({"touched": touched, "new_modules": new, "seconds": seconds}))
"""

HEAVY = {"pandas", "numpy", "pyarrow", "mlflow", "sklearn", "prophet", "litellm", "matplotlib", "boto3",
         "scipy"}


def test_parsing_touches_no_db_network_or_heavy_import(tmp_path: Path) -> None:
    env = dict(os.environ)
    # An unreachable metadata DB: parsing must not need it.
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow")
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp_path}/missing-dir/airflow.db"
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    files = [str(p) for p in sorted(DAGS.glob("*.py")) if p.name != "__init__.py"]
    assert len(files) == 3
    proc = subprocess.run(
        [sys.executable, "-c", _PARSE_PROBE, str(REPO_ROOT), *files],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["touched"] == [], f"parsing the DAG files connected: {report['touched']}"
    heavy = HEAVY & set(report["new_modules"])
    assert not heavy, f"heavy imports at parse time: {heavy}"
    assert not (tmp_path / "missing-dir").exists()
