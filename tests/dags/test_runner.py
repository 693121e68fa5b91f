"""The in-process DAG runner: its environment, its failure path, its bookkeeping."""

from __future__ import annotations

import os
import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

END = datetime(2026, 3, 2, 12, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_environment_keeps_deployment_knobs_and_forces_the_project_dags(tmp_path: Path) -> None:
    from smartcloudops.cli.airflow_runner import DAGS_FOLDER, REPO_ROOT, airflow_env, configure_environment
    from smartcloudops.settings import Settings

    settings = Settings(home=tmp_path / "home")
    env = airflow_env(settings)
    assert env["SMARTCLOUDOPS_HOME"] == str((tmp_path / "home").resolve())  # for child processes
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert env["AIRFLOW__LOGGING__LOGGING_LEVEL"] == "ERROR"
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) <= 4
    # `airflow standalone` on another port: workers must find the execution API there.
    service = airflow_env(settings, quiet=False, api_port=8123)
    assert service["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8123/execution/"
    assert service["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)

    given = {"AIRFLOW_HOME": str(tmp_path / "af"), "AIRFLOW__CORE__DAGS_FOLDER": "/elsewhere",
             "AIRFLOW__CORE__PARALLELISM": "3", "PYTHONPATH": "/opt/lib"}
    effective = configure_environment(settings, given)
    assert effective["AIRFLOW_HOME"] == str(tmp_path / "af")
    assert effective["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'af' / 'airflow.db'}"
    assert given["AIRFLOW__CORE__DAGS_FOLDER"] == str(DAGS_FOLDER)  # always the project's DAGs
    assert given["AIRFLOW__CORE__PARALLELISM"] == "3"  # a deployment knob: the caller's value wins
    assert given["PYTHONPATH"].split(os.pathsep)[0] == str(REPO_ROOT) and "/opt/lib" in given["PYTHONPATH"]
    assert "SMARTCLOUDOPS_HOME" not in given  # the process's own settings are not pinned


def test_a_failing_task_fails_the_run_and_run_many_can_stop(
    airflow_home: Path, sc_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smartcloudops.cli import airflow_runner
    from smartcloudops.settings import get_settings

    # Prometheus on a closed port: the extract task raises SourceError.
    monkeypatch.setenv("PROMETHEUS_URL", f"http://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    seen: list[tuple[int, int, str]] = []
    dates = [END, END + timedelta(hours=1)]
    states = airflow_runner.run_many(
        "metrics_extract", dates, retries=0, stop_on_failure=True,
        progress=lambda i, n, outcome: seen.append((i, n, outcome.task_states["extract"])),
    )
    assert states == ["failed"]
    assert seen == [(1, 2, "failed")]
    assert not get_settings().metrics_dir.exists()  # nothing half-written
