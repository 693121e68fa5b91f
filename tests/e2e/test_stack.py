"""`make up` / `make down`: every service answers on loopback, and down leaves nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from smartcloudops.cli.processes import marked_pids

pytestmark = pytest.mark.e2e


def _cli(home: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SMARTCLOUDOPS_HOME": str(home),
        # Free ports so a developer's own stack on the default ports is not disturbed.
        "SMARTCLOUDOPS_SIM_PORT": os.environ.get("TEST_STACK_SIM_PORT", "19201"),
        "SMARTCLOUDOPS_SCORING_PORT": "18080",
        "SMARTCLOUDOPS_SCORING_URL": "http://127.0.0.1:18080",
        "SMARTCLOUDOPS_CHATOPS_PORT": "18090",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    cli = Path(sys.executable).parent / "smartcloudops"
    return subprocess.run(
        [str(cli), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_up_serves_everything_and_down_stops_it_all(tmp_path: Path) -> None:
    home = tmp_path / "stack"
    try:
        up = _cli(home, "up", "--no-airflow", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "chatops" in up.stdout and "scoring" in up.stdout and "mlflow" in up.stdout
        token = (home / "run" / "chatops.token").read_text().strip()
        answer = httpx.post(
            "http://127.0.0.1:18090/query",
            json={"query": "What's current CPU?"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.status_code == 200
        assert answer.json()["intent"] == "metric.current"
        assert httpx.get("http://127.0.0.1:18090/query", timeout=5).status_code in (401, 405)
        assert httpx.get("http://127.0.0.1:18080/healthz", timeout=5).status_code == 200
        # No champion yet: not ready, and it says why.
        ready = httpx.get("http://127.0.0.1:18080/readyz", timeout=5)
        assert ready.status_code == 503 and "champion" in ready.text
        assert marked_pids(str(home.resolve())), "up must leave its services running"
    finally:
        down = _cli(home, "down", timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "nothing left running" in down.stdout
    assert marked_pids(str(home.resolve())) == []
