"""DAG tests share one migrated Airflow home per session; each test gets its own state home.

Airflow reads its configuration once, at its first import, so the Airflow environment is set
here, when pytest loads this conftest, before any test module imports Airflow. Each test's
SmartCloudOps state (metric store, event store, simulator, MLflow) lives in its own
``tmp_path``: DAG tasks run in this process and read settings fresh for every run.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
_OWN_AIRFLOW_HOME = "AIRFLOW_HOME" not in os.environ
if _OWN_AIRFLOW_HOME:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="scops-dagtests-airflow-")
    # A DB left over from elsewhere must not leak in.
    os.environ.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
    # At exit, not at fixture teardown: Airflow still writes its logs dir after the last test.
    atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)


def _configure_airflow() -> None:
    from smartcloudops.cli.airflow_runner import configure_environment
    from smartcloudops.settings import Settings

    configure_environment(Settings(home=Path(os.environ["AIRFLOW_HOME"]).parent / "unused"))


_configure_airflow()


@pytest.fixture(scope="session")
def airflow_home() -> Iterator[Path]:
    """The session's Airflow home, configured and migrated once (about 2 s)."""
    from smartcloudops.cli import airflow_runner
    from smartcloudops.settings import Settings

    home = Path(os.environ["AIRFLOW_HOME"])
    airflow_runner.prepare(Settings(home=home.parent / "unused-smartcloudops-home"))
    yield home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sc_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh SMARTCLOUDOPS_HOME with a two-host simulated fleet; scoring points nowhere."""
    from smartcloudops.settings import get_settings

    home = tmp_path / "home"
    monkeypatch.setenv("SMARTCLOUDOPS_HOME", str(home))
    monkeypatch.setenv("SMARTCLOUDOPS_SIM_HOSTS", "web-1,db-1")
    # A closed loopback port: "scoring service down" unless a test starts a fake one.
    monkeypatch.setenv("SMARTCLOUDOPS_SCORING_URL", f"http://127.0.0.1:{free_port()}")
    for name in ("PROMETHEUS_URL", "SMARTCLOUDOPS_PROMETHEUS_URL", "SMARTCLOUDOPS_METRICS_BUCKET",
                 "SMARTCLOUDOPS_MLFLOW_TRACKING_URI", "SMARTCLOUDOPS_EVENT_STORE_URL",
                 "SMARTCLOUDOPS_RULES_FILE", "SMARTCLOUDOPS_DRY_RUN"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()
