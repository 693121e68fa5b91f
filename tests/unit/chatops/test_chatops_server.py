"""``chatops.server.run`` under gunicorn, on a free loopback port, stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from chatops_helpers import TOKEN

SCRIPT = "import sys; from chatops.server import run; run('127.0.0.1', int(sys.argv[1]), 1)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(home: Path, tokens: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTCLOUDOPS_")}
    env.update({"SMARTCLOUDOPS_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "PROMETHEUS_URL": ""})
    if tokens:
        env["SMARTCLOUDOPS_CHATOPS_TOKENS"] = tokens
    return env


def test_serves_under_gunicorn_and_stops(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(port)], env=_env(tmp_path, TOKEN),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "gunicorn did not answer /healthz within 30 s"
            time.sleep(0.2)
        r = httpx.post(f"{base}/query", json={"query": "What's current CPU?"},
                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert r.status_code == 200 and r.json()["intent"] == "metric.current"
        assert httpx.post(f"{base}/query", json={"query": "x"}, timeout=10).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"gthread" in err or b"Booting worker" in err
    logs = list((tmp_path / "logs").glob("smartcloudops-*.jsonl"))
    assert logs and '"component": "chatops"' in logs[0].read_text()
    assert TOKEN not in logs[0].read_text()


def test_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(_free_port())], env=_env(tmp_path, None),
                          capture_output=True, timeout=60, cwd=tmp_path)
    assert proc.returncode != 0
    assert b"no ChatOps bearer tokens configured" in proc.stderr
