"""The `make demo` path as a smoke test: the real CLI, in a fresh home, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SMARTCLOUDOPS_HOME": str(tmp_path / "home"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    cli = Path(sys.executable).parent / "smartcloudops"
    proc = subprocess.run(
        [str(cli), "demo", "--days", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "champion →" in output
    assert "remediation: restart_service on web-1" in output
    assert "Q: What's current CPU?" in output
    assert "intent: metric.current" in output
    assert "intent: anomaly.summary" in output
    assert "intent: logs.search" in output

    home = tmp_path / "home" / "demo"
    audit = sorted((home / "logs" / "remediation").glob("remediation-*.jsonl"))
    assert audit, "the demo must leave an audit record"
    verify = subprocess.run(
        [str(cli), "audit", "verify", "--dir", str(home / "logs" / "remediation")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # It stopped everything it started.
    from smartcloudops.cli.processes import marked_pids

    assert marked_pids(f"demo:{home.resolve()}") == []
