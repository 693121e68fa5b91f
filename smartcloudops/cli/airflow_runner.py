"""Run the project's DAGs for real, in this process, without a scheduler.

The demo, the CLI and the DAG tests use this instead of ``airflow dags test`` in a subprocess:
that costs about 10 s a run, almost all of it imports, while a second ``dag.test()`` in a
process that has already imported Airflow costs a fraction of a second (the first one pays
about 4 s to start the in-process execution API). Each run is still a real DAG run: a
``DagRun`` row in the metadata DB, task instances, XCom, the deferrable sensor's trigger, the
data interval from the DAG's timetable.

Usage::

    from smartcloudops.cli import airflow_runner
    airflow_runner.prepare(settings)                      # embedded home + `airflow db migrate`, once
    airflow_runner.run_many("metrics_extract", airflow_runner.hourly_logical_dates(start, end))
    airflow_runner.run_dag("train_validate_deploy", end_hour)   # -> "success" | "failed"

**Logical dates are the END of the data interval.** The DAGs use Airflow 3's
``CronTriggerTimetable`` with an ``interval``, and a run triggered for ``L`` covers
``[L - interval, L)``: ``metrics_extract`` at 10:00 extracts 09:00-10:00, ``train_validate_deploy``
at midnight trains on the days before midnight.

Airflow is configured entirely through environment variables set *before* its first import
(its configuration is read once, at import). Deployment knobs already present in the
environment win (``AIRFLOW_HOME``, ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, executor,
parallelism), so a service-mode run (PostgreSQL metadata DB) or a test (one shared
``AIRFLOW_HOME``) can override them; the DAGs folder is always the repository's ``dags/``.
The first :func:`prepare` in a process decides its Airflow home for the rest of its life.
This module imports Airflow only inside functions.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartcloudops.errors import ConfigError, InputError

if TYPE_CHECKING:
    from smartcloudops.settings import Settings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "dags"
DAG_IDS = ("metrics_extract", "train_validate_deploy", "anomaly_sensor")
_MIGRATED_MARKER = ".smartcloudops-migrated"
#: Not deployment knobs: the runner runs *these* DAGs, and litellm must never fetch at import.
_FORCED = ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__LOAD_EXAMPLES", "LITELLM_LOCAL_MODEL_COST_MAP")


def airflow_home(settings: Settings) -> Path:
    return (settings.home / "airflow").resolve()


def airflow_env(
    settings: Settings, *, quiet: bool = True, parallelism: int = 2, api_port: int | None = None
) -> dict[str, str]:
    """The environment an embedded Airflow needs (for this process or a child process).

    ``quiet`` keeps Airflow's own log lines (INFO chatter of every task run) off the console;
    errors still show. Long-running services (``airflow standalone`` for ``make up``) pass
    ``quiet=False`` and ``api_port``: workers then reach the execution API on that port (its
    default is localhost:8080, here the scoring service's port), and ``PATH`` starts with the
    venv's ``bin/`` because ``airflow standalone`` starts its components as ``airflow ...`` by name.
    """
    home = Path(os.environ.get("AIRFLOW_HOME") or airflow_home(settings))
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        # dag.test() runs tasks in this process and needs no executor; LocalExecutor is what
        # `airflow standalone` uses on SQLite. NOTES.md: its default parallelism (32) starts
        # 32 workers on a 2-core machine.
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__SCHEDULER__CATCHUP_BY_DEFAULT": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR" if quiet else "INFO",
        # Tasks import the project's packages; the repo may not be pip-installed.
        "PYTHONPATH": python_path,
        "SMARTCLOUDOPS_HOME": str(settings.home.resolve()),
        # NOTES.md: without it litellm's import can deadlock MLflow (no internet here).
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    if api_port is not None:
        env.update(
            {
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(api_port),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
                "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))),
            }
        )
    return env


def configure_environment(
    settings: Settings, env: MutableMapping[str, str] | None = None, *, quiet: bool = True
) -> dict[str, str]:
    """Put :func:`airflow_env` (less ``SMARTCLOUDOPS_HOME``) into ``env`` (default
    ``os.environ``); values already present win.

    Returns the effective values. Safe to call before or after Airflow's import, but only a
    call *before* the first import decides which Airflow home this process uses.
    """
    target = os.environ if env is None else env
    wanted = airflow_env(settings, quiet=quiet)
    home = Path(target.get("AIRFLOW_HOME") or wanted["AIRFLOW_HOME"])
    # The DB follows the effective home unless a connection was given explicitly.
    wanted["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
    wanted["AIRFLOW_HOME"] = str(home)
    # This process already has its settings; pinning SMARTCLOUDOPS_HOME here would stop a
    # later change of the environment (a test, the demo) from reaching the in-process tasks.
    wanted.pop("SMARTCLOUDOPS_HOME")
    wanted.pop("PATH", None)
    effective: dict[str, str] = {}
    for key, value in wanted.items():
        if key in _FORCED:
            target[key] = value
        elif key == "PYTHONPATH":
            current = target.get(key, "")
            if str(REPO_ROOT) not in current.split(os.pathsep):
                target[key] = os.pathsep.join(p for p in (str(REPO_ROOT), current) if p)
        else:
            target.setdefault(key, value)
        effective[key] = target[key]
    return effective


# -- the one Airflow this process uses ------------------------------------------------------


@dataclass
class _State:
    home: Path | None = None
    conn: str | None = None
    migrated: bool = False


_STATE = _State()


@contextlib.contextmanager
def _keep_our_logging() -> Iterator[None]:
    """Airflow's import replaces the root logger's handlers and level; put ours back.

    Its own stdout handler keeps its ERROR level, so the console shows only errors while the
    project's JSON log file keeps receiving the tasks' INFO records.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


def _import_airflow(settings: Settings) -> None:
    effective = configure_environment(settings)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    already = "airflow.configuration" in sys.modules
    Path(effective["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    with _keep_our_logging():
        import airflow  # noqa: F401 - configures itself from the environment, once
        from airflow.configuration import conf

    from airflow import settings as airflow_settings

    if Path(airflow_settings.DAGS_FOLDER).resolve() != DAGS_FOLDER:
        # Airflow was imported before this module configured it (a test's DagBag, a plugin):
        # point it at the project's DAGs; dag.test() resolves the bundle path at call time.
        conf.set("core", "dags_folder", str(DAGS_FOLDER))
        airflow_settings.DAGS_FOLDER = str(DAGS_FOLDER)
    conn = conf.get("database", "sql_alchemy_conn")
    if already and _STATE.conn is None and conn != effective["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]:
        # Airflow reads its configuration once, at import: its database cannot be switched.
        log.warning(
            "airflow was configured before the runner; using its metadata database",
            extra={"airflow_conn": conn},
        )
    if _STATE.conn is not None and _STATE.conn != conn:
        raise ConfigError(f"this process already runs Airflow on {_STATE.conn}; cannot switch to {conn}")
    _STATE.conn = conn
    _STATE.home = Path(os.environ["AIRFLOW_HOME"])


def prepare(settings: Settings | None = None) -> Path:
    """Configure the embedded Airflow home and migrate its DB once; returns ``AIRFLOW_HOME``.

    Idempotent and cheap after the first call. The migration is skipped when a marker in the
    home says this Airflow version already migrated this database (a file lock keeps two
    processes from migrating at once).
    """
    if settings is None:
        from smartcloudops.settings import get_settings

        settings = get_settings()
    _import_airflow(settings)
    assert _STATE.home is not None and _STATE.conn is not None
    if _STATE.migrated:
        return _STATE.home
    from airflow import __version__ as airflow_version

    home = _STATE.home
    home.mkdir(parents=True, exist_ok=True)
    marker = home / _MIGRATED_MARKER
    stamp = f"{airflow_version} {_STATE.conn}\n"
    with open(home / ".migrate.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        db_file = _sqlite_path(_STATE.conn)
        fresh = marker.exists() and marker.read_text() == stamp and (db_file is None or db_file.exists())
        if not fresh:
            t0 = time.monotonic()
            with _keep_our_logging():
                from airflow.utils import db

                db.upgradedb()  # what `airflow db migrate` runs
            marker.write_text(stamp)
            seconds = round(time.monotonic() - t0, 2)
            log.info("airflow db migrated", extra={"airflow_home": str(home), "seconds": seconds})
    _STATE.migrated = True
    return home


def _sqlite_path(conn: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(conn[len(prefix) :]) if conn.startswith(prefix) else None


# -- running DAGs ----------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What one DAG run did: its state, per-task states and the tasks' (small) return values."""

    dag_id: str
    run_id: str
    logical_date: datetime
    state: str
    seconds: float
    task_states: dict[str, str] = field(default_factory=dict)
    returns: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "success"


def _load_dag(dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    with _keep_our_logging():
        bag = DagBag(dag_folder=str(DAGS_FOLDER))
    dag = bag.dags.get(dag_id)
    if dag is None:
        problems = "; ".join(
            f"{path}: {err.strip().splitlines()[-1]}" for path, err in bag.import_errors.items()
        )
        known = ", ".join(sorted(bag.dags)) or "none"
        raise InputError(
            f"no DAG {dag_id!r} in {DAGS_FOLDER} (known: {known})"
            + (f"; import errors: {problems}" if problems else "")
        )
    return dag


def _aware(logical_date: datetime) -> datetime:
    if not isinstance(logical_date, datetime):
        raise InputError(f"logical_date must be a datetime, got {type(logical_date).__name__}")
    if logical_date.tzinfo is None:
        raise InputError(f"logical_date {logical_date.isoformat()} must be timezone-aware (UTC)")
    return logical_date


def run_dag_outcome(
    dag_id: str,
    logical_date: datetime,
    conf: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    retries: int | None = None,
) -> RunOutcome:
    """Run one DAG run with ``dag.test()`` in this process; see :func:`run_dag`."""
    logical_date = _aware(logical_date)
    prepare(settings)
    from smartcloudops.settings import get_settings

    # A worker process would read settings fresh; the in-process tasks do the same.
    get_settings.cache_clear()
    dag = _load_dag(dag_id)
    if retries is not None:
        for task in dag.tasks:
            task.retries = retries
    t0 = time.monotonic()
    with _keep_our_logging():
        dag_run = dag.test(logical_date=logical_date, run_conf=dict(conf) if conf else None)
    seconds = time.monotonic() - t0
    state = str(getattr(dag_run.state, "value", dag_run.state))
    task_states, returns = _collect(dag_run)
    outcome = RunOutcome(dag_id, dag_run.run_id, logical_date, state, seconds, task_states, returns)
    level = logging.INFO if outcome.ok else logging.ERROR
    log.log(
        level,
        "dag run finished",
        extra={
            "dag_id": dag_id,
            "run_id": dag_run.run_id,
            "state": state,
            "seconds": round(seconds, 3),
            "logical_date": logical_date.isoformat(),
            "failed_tasks": sorted(k for k, v in task_states.items() if v not in ("success", "skipped")),
        },
    )
    return outcome


def run_dag(
    dag_id: str,
    logical_date: datetime,
    conf: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    retries: int | None = None,
) -> str:
    """Run ``dag_id`` for ``logical_date`` (the END of its data interval); return the run's state.

    ``"success"`` or ``"failed"``. A failing task is retried as its DAG says, after its
    retry delay (``dag.test()`` waits it out); ``retries=0`` turns that off for this run.
    """
    return run_dag_outcome(dag_id, logical_date, conf, settings=settings, retries=retries).state


def run_many(
    dag_id: str,
    logical_dates: Sequence[datetime],
    conf: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    retries: int | None = None,
    stop_on_failure: bool = False,
    progress: Callable[[int, int, RunOutcome], None] | None = None,
) -> list[str]:
    """Run ``dag_id`` once per logical date, in order, in this one process; return the states.

    One process, one Airflow import, one parse per run: a backfill of a few days of hourly
    runs takes seconds, not the minutes separate ``airflow dags test`` calls would.
    """
    dates = [_aware(d) for d in logical_dates]
    states: list[str] = []
    for index, when in enumerate(dates, start=1):
        outcome = run_dag_outcome(dag_id, when, conf, settings=settings, retries=retries)
        states.append(outcome.state)
        if progress is not None:
            progress(index, len(dates), outcome)
        if stop_on_failure and not outcome.ok:
            break
    return states


def hourly_logical_dates(start: datetime, end: datetime) -> list[datetime]:
    """Logical dates of the hourly runs that together cover ``[start, end)`` in whole hours.

    Each date is the end of its hour: ``start`` is rounded down and ``end`` up to the hour.
    """
    start, end = _aware(start), _aware(end)
    if end <= start:
        raise InputError(f"empty range {start.isoformat()} .. {end.isoformat()}")
    first = start.replace(minute=0, second=0, microsecond=0)
    last = end.replace(minute=0, second=0, microsecond=0)
    if last < end:
        last += timedelta(hours=1)
    count = int((last - first) / timedelta(hours=1))
    return [first + timedelta(hours=h) for h in range(1, count + 1)]


def _collect(dag_run: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """Per-task states and ``return_value`` XComs of a finished run (mapped: a list)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    task_states: dict[str, str] = {}
    returns: dict[str, Any] = {}
    with create_session() as session:
        for ti in dag_run.get_task_instances(session=session):
            key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            task_states[key] = str(getattr(ti.state, "value", ti.state))
        query = XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, key="return_value")
        rows: list[Any] = list(session.scalars(query))  # XComModel rows (the stub types say tuples)
        mapped: dict[str, dict[int, Any]] = {}
        for row in rows:
            value = XComModel.deserialize_value(row)
            if row.map_index < 0:
                returns[row.task_id] = value
            else:
                mapped.setdefault(row.task_id, {})[row.map_index] = value
        for task_id, by_index in mapped.items():
            returns[task_id] = [by_index[i] for i in sorted(by_index)]
    return task_states, returns
