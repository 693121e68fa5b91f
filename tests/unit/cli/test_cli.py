"""The CLI's contract with users: clear messages and exit codes, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from smartcloudops.cli import main


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from smartcloudops.settings import get_settings

    monkeypatch.setenv("SMARTCLOUDOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PROMETHEUS_URL", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["detect", "--input", "x.csv", "--output", "y.csv", "--train-fraction", "1.5"], "between 0 and 1"),
        (["detect", "--input", "x.csv"], "--output"),
        (["serve", "--port", "99999"], "port out of range"),
        (["simulate", "--history-days", "-1"], "must be > 0"),
        (["audit", "rewrite"], "invalid choice"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_detect_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["detect", "--input", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "o.csv")])
    assert code == 2
    assert "no such file" in capsys.readouterr().err


def test_inject_needs_a_known_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--inject", "cpu_hog"]) == 2
    assert "--inject needs --host" in capsys.readouterr().err
    assert main(["simulate", "--inject", "cpu_hog", "--host", "nope-9"]) == 2
    assert "unknown host 'nope-9'" in capsys.readouterr().err
    assert main(["simulate", "--inject", "meteor", "--host", "web-1"]) == 2
    assert "unknown incident kind" in capsys.readouterr().err


def test_inject_persists_an_incident(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--inject", "memory_leak", "--host", "db-1", "--duration", "10"]) == 0
    incident = json.loads(capsys.readouterr().out)
    assert incident["kind"] == "memory_leak"
    assert incident["host"] == "db-1"


def test_history_writes_samples_and_labels(tmp_path: Path) -> None:
    out = tmp_path / "hist.csv"
    assert main(["simulate", "--history-days", "0.5", "--output", str(out)]) == 0
    frame = pd.read_csv(out)
    assert set(frame.columns) == {"timestamp", "host", "metric", "value"}
    assert frame["host"].nunique() == 5
    assert len(frame) == 5 * 6 * 12 * 60
    labels = json.loads(out.with_suffix(".labels.json").read_text())
    assert "web-1/cpu" in labels


def test_extract_then_audit_verify_on_empty_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", "--start", "2026-11-01T00:00:00Z", "--end", "2026-11-01T02:00:00Z"]) == 0
    assert "extracted 3,600 samples" in capsys.readouterr().out
    assert main(["extract", "--start", "yesterday"]) == 2
    assert "not an ISO 8601 time" in capsys.readouterr().err
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    assert main(["audit", "verify", "--dir", str(audit_dir)]) == 0
    assert "OK: 0 records" in capsys.readouterr().out
