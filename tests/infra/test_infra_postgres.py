"""deploy/postgres/init-databases.sh and the Grafana SQL panels, on a real PostgreSQL.

A throwaway cluster (initdb on a free loopback port, stopped by PID at the end) runs the
compose stack's init script exactly as the postgres image would. Then the event store creates
its tables as the ``smartcloudops`` role, and every SQL panel of the dashboards runs as
``grafana_reader``, which must be able to read those later-created tables and write nothing.
Passwords are checked (scram over TCP), so the script's password handling is tested too.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import free_port
from infra_helpers import REPO

INIT_SCRIPT = REPO / "deploy" / "postgres" / "init-databases.sh"
PASSWORDS = {
    "AIRFLOW_DB_PASSWORD": "airflow-pw-1",
    "MLFLOW_DB_PASSWORD": "mlflow-pw-2",
    "EVENTS_DB_PASSWORD": "events-pw-3",
    "GRAFANA_DB_READER_PASSWORD": "reader pw 'quoted' 4",  # quotes must survive the script
}


@dataclass
class Cluster:
    port: int
    socket_dir: Path

    def url(self, user: str, password: str, db: str) -> str:
        from urllib.parse import quote

        return f"postgresql+psycopg2://{user}:{quote(password, safe='')}@127.0.0.1:{self.port}/{db}"


def _pg_bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    found = candidates[-1] if candidates else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: apt-get install postgresql (the server binaries)")
    return found


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; CI and these machines run tests as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Not under pytest's tmp dir: that one is private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="scops-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    pwfile = base / "pw"
    pwfile.write_text("superpw\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres")
    init = subprocess.run(
        _as_postgres(
            [
                _pg_bin("initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-sync",
            ]
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stderr
    port = free_port()
    log = base / "postgres.log"
    proc = subprocess.Popen(
        _as_postgres(
            [
                _pg_bin("postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(sock),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ]
        ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        isready = _pg_bin("pg_isready")
        for _ in range(100):
            if (
                subprocess.run([isready, "-h", str(sock), "-p", str(port)], capture_output=True).returncode
                == 0
            ):
                break
            if proc.poll() is not None:
                pytest.fail(f"postgres exited: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        else:
            pytest.fail(f"postgres did not start: {log.read_text()[-2000:]}")
        yield Cluster(port=port, socket_dir=sock)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def initialised(cluster: Cluster) -> Cluster:
    env = {
        **os.environ,
        **PASSWORDS,
        "PGHOST": str(cluster.socket_dir),
        "PGPORT": str(cluster.port),
        "POSTGRES_USER": "postgres",
        "PATH": f"{Path(_pg_bin('psql')).parent}:{os.environ['PATH']}",
    }
    run = subprocess.run(
        _as_postgres_env(["bash", str(INIT_SCRIPT)], env),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "created databases" in run.stdout
    return cluster


def _as_postgres_env(argv: list[str], env: dict[str, str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    keep = ",".join(sorted(set(PASSWORDS) | {"PGHOST", "PGPORT", "POSTGRES_USER", "PATH"}))
    return ["runuser", "-u", "postgres", f"--whitelist-environment={keep}", "--", *argv]


def test_the_init_script_refuses_to_run_without_its_passwords(cluster: Cluster) -> None:
    env = {"PATH": os.environ["PATH"], "PGHOST": str(cluster.socket_dir), "PGPORT": str(cluster.port)}
    run = subprocess.run(["bash", str(INIT_SCRIPT)], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode != 0
    assert "AIRFLOW_DB_PASSWORD" in run.stderr


def test_each_component_logs_in_to_its_own_database_only(initialised: Cluster) -> None:
    import sqlalchemy as sa

    def can_connect(user: str, password: str, db: str) -> bool:
        engine = sa.create_engine(initialised.url(user, password, db))
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.OperationalError:
            return False
        finally:
            engine.dispose()

    assert can_connect("airflow", PASSWORDS["AIRFLOW_DB_PASSWORD"], "airflow")
    assert can_connect("mlflow", PASSWORDS["MLFLOW_DB_PASSWORD"], "mlflow")
    assert can_connect("smartcloudops", PASSWORDS["EVENTS_DB_PASSWORD"], "smartcloudops")
    assert can_connect("grafana_reader", PASSWORDS["GRAFANA_DB_READER_PASSWORD"], "smartcloudops")
    assert not can_connect("grafana_reader", PASSWORDS["GRAFANA_DB_READER_PASSWORD"], "airflow")
    assert not can_connect("mlflow", PASSWORDS["MLFLOW_DB_PASSWORD"], "smartcloudops")
    assert not can_connect("airflow", "wrong-password", "airflow")


def _macros(sql: str, start: datetime, end: datetime) -> str:
    """What Grafana's PostgreSQL data source does with the macros the panels use."""
    sql = re.sub(
        r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'", sql
    )
    return re.sub(
        r"\$__timeGroupAlias\((\w+),\s*'(\d+)m'\)",
        lambda m: (
            f"to_timestamp(floor(extract(epoch from {m.group(1)}) / {int(m.group(2)) * 60}) * "
            f'{int(m.group(2)) * 60}) AS "time"'
        ),
        sql,
    )


def test_every_sql_panel_runs_as_grafana_reader_and_it_cannot_write(initialised: Cluster) -> None:
    import sqlalchemy as sa

    from smartcloudops.domain import ActionRecord, ActionStatus, Anomaly, Severity
    from smartcloudops.events import EventStore

    now = datetime.now(UTC)
    store = EventStore(initialised.url("smartcloudops", PASSWORDS["EVENTS_DB_PASSWORD"], "smartcloudops"))
    try:
        store.record_anomalies(
            [Anomaly("web-1", now, 0.97, Severity.CRITICAL, "3", {"cpu": 0.9}, {"cpu": 97.0})]
        )
        store.record_action(
            ActionRecord("restart_service", "web-1", ActionStatus.SUCCEEDED, "cpu_high", False, timestamp=now)
        )
        store.record_action(
            ActionRecord("scale_up", "web-2", ActionStatus.PENDING, "load_high", False, timestamp=now)
        )
    finally:
        store.close()

    reader = sa.create_engine(
        initialised.url("grafana_reader", PASSWORDS["GRAFANA_DB_READER_PASSWORD"], "smartcloudops")
    )
    ran = 0
    try:
        with reader.connect() as conn:
            for path in sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json")):
                for panel in json.loads(path.read_text())["panels"]:
                    for target in panel["targets"]:
                        if target["datasource"]["uid"] != "events":
                            continue
                        sql = _macros(target["rawSql"], now - timedelta(hours=1), now + timedelta(minutes=1))
                        rows = conn.execute(sa.text(sql)).fetchall()
                        assert rows, f"{panel['title']}: no rows from {sql!r}"
                        ran += 1
                        if panel["title"] == "Pending approvals":
                            assert rows[0][0] == 1
                        if panel["title"] == "Recent anomalies":
                            assert rows[0]._mapping["severity"] == "critical"
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text("DELETE FROM actions"))
    finally:
        reader.dispose()
    assert ran >= 4
