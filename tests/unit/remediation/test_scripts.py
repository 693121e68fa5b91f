"""The action scripts: same registry and executor as the engine, audited, exit codes 0/1/2.

They run against the simulator under the per-test SMARTCLOUDOPS_HOME (tests/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from remediation_helpers import audit_records

from remediation.scripts import health_check, restart_service, scale_down, scale_up
from smartcloudops.settings import get_settings
from smartcloudops.simulator import FleetSimulator


def _audit() -> list[dict[str, object]]:
    return audit_records(get_settings().audit_dir)


def test_restart_defaults_to_dry_run_and_is_audited(capsys: pytest.CaptureFixture[str]) -> None:
    assert restart_service.main(["--host", "web-1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dry_run: dry run: would run restart_service(service='app') on web-1")
    [entry] = _audit()
    assert entry["dry_run"] is True and entry["rule"] == "manual" and entry["approved_by"]
    # Dry run: the simulator (the adapter) was never called, so it has no state yet.
    assert not (get_settings().simulator_dir / "state.json").exists()


def test_restart_execute_ends_the_incident(capsys: pytest.CaptureFixture[str]) -> None:
    sim = FleetSimulator.from_settings(get_settings())
    sim.inject("cpu_hog", "web-2", start=datetime.now(UTC) - timedelta(minutes=5), duration_minutes=60)
    assert restart_service.main(["--host", "web-2", "--execute", "--by", "alice", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["result"] == "succeeded" and body["approved_by"] == "alice" and body["verified"] is True
    assert _audit()[-1]["action_id"] == body["action_id"]
    assert sim.health("web-2")["healthy"]


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        (restart_service, ["--host", "web-9", "--execute"], "unknown host 'web-9'; known hosts: web-1"),
        (restart_service, ["--host", "web-1", "--service", "app;reboot"], "parameter 'service'"),
        (scale_up, ["--host", "web-1", "--replicas", "0"], "greater than or equal to 1"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], module: object, argv: list[str], message: str
) -> None:
    assert module.main(argv) == 2  # type: ignore[attr-defined]
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert _audit() == []


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        scale_up.main(["--replicas", "x"])
    assert info.value.code == 2
    assert "--host" in capsys.readouterr().err


def test_scale_up_then_bound_then_down(capsys: pytest.CaptureFixture[str]) -> None:
    sim = FleetSimulator.from_settings(get_settings())
    base = sim.capacity("web-1")
    assert scale_up.main(["--host", "web-1", "--execute", "--max-capacity", str(base + 1)]) == 0
    assert sim.capacity("web-1") == base + 1
    assert scale_up.main(["--host", "web-1", "--execute", "--max-capacity", str(base + 1)]) == 0
    assert "already in goal state" in capsys.readouterr().out.splitlines()[-1]
    assert scale_down.main(["--host", "web-1", "--execute"]) == 0
    assert sim.capacity("web-1") == base
    assert [e["result"] for e in _audit()] == ["succeeded", "skipped", "succeeded"]


def test_health_check_runs_without_execute_and_exits_1_when_unhealthy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert health_check.main(["--host", "db-1"]) == 0
    assert "db-1 is healthy" in capsys.readouterr().out
    sim = FleetSimulator.from_settings(get_settings())
    sim.inject("cpu_hog", "db-1", start=datetime.now(UTC) - timedelta(minutes=5), duration_minutes=60)
    assert health_check.main(["--host", "db-1"]) == 1
    out = capsys.readouterr().out
    assert "UNHEALTHY" in out and "verified: false" in out


def test_a_broken_rules_file_does_not_block_manual_actions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules: [\n")
    monkeypatch.setenv("SMARTCLOUDOPS_RULES_FILE", str(bad))
    get_settings.cache_clear()
    assert restart_service.main(["--host", "web-1"]) == 0


def test_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "remediation.scripts.restart_service", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0
    assert "--host" in done.stdout and "exit codes" in done.stdout
