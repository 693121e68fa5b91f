"""serving.server.run: argument checks, and a real process under uvicorn."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving import server
from smartcloudops.errors import ConfigError, InputError
from smartcloudops.settings import Settings

REPO = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"workers": 0}, "--workers"),
    ({"port": 70000}, "--port"),
])  # fmt: skip
def test_run_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        server.run("127.0.0.1", **{"port": 8080, **kwargs}, settings=Settings(home=tmp_path))


def test_run_reports_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            server.run("127.0.0.1", port, settings=Settings(home=tmp_path))


def test_server_process_answers_health_and_readiness_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "SMARTCLOUDOPS_HOME": str(tmp_path),
        "SMARTCLOUDOPS_MODEL_POLL_SECONDS": "0.5",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PYTHONPATH": str(REPO),
    }
    code = f"from serving.server import run; run('127.0.0.1', {port}, 1, None)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                output = proc.stdout.read().decode() if proc.stdout else ""  # type: ignore[union-attr]
                pytest.fail(f"server did not come up (exit {proc.poll()}):\n{output}")
            time.sleep(0.1)
        # No model has ever been trained in this home: alive, but not ready, and it says why.
        deadline = time.monotonic() + 10
        while True:
            ready = httpx.get(f"{base}/readyz", timeout=2)
            if ready.json()["last_error"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert ready.status_code == 503
        assert "no MLflow database" in ready.json()["reason"]
        refused = httpx.post(f"{base}/v1/score", json={"host": "a", "metrics": {"cpu": 1}}, timeout=2)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_not_ready"
        assert "smartcloudops_scoring_model_loaded 0.0" in httpx.get(f"{base}/metrics", timeout=2).text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells the truth.
    assert proc.returncode in (0, -signal.SIGTERM)
    # Structured logs: JSON lines from the serving component in the day's file.
    (log_file,) = (tmp_path / "logs").glob("smartcloudops-*.jsonl")
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert records and all(r["component"] == "serving" for r in records)
    assert any("no MLflow database" in r["message"] for r in records)
    assert any("Application shutdown complete" in r["message"] for r in records)  # lifespan ran
