"""Structured JSON logs: daily files, redaction, and reading them back with filters."""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smartcloudops.errors import InputError
from smartcloudops.logs import DailyJsonFileHandler, JsonFormatter, configure_logging, read_logs
from smartcloudops.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """configure_logging changes the root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield Settings(home=tmp_path / "home")
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def _today_file(settings: Settings) -> Path:
    return settings.log_dir / f"smartcloudops-{datetime.now(UTC):%Y-%m-%d}.jsonl"


def test_json_lines_in_a_daily_file(settings: Settings) -> None:
    configure_logging("chatops", settings)
    logging.getLogger("chatops.app").info("answered %s", "query", extra={"host": "web-1", "latency_ms": 12.5})
    logging.getLogger("chatops.app").debug("not at INFO")
    path = _today_file(settings)
    [line] = path.read_text().splitlines()
    record = json.loads(line)
    assert record["level"] == "info"
    assert record["component"] == "chatops"
    assert record["logger"] == "chatops.app"
    assert record["message"] == "answered query"
    assert record["host"] == "web-1" and record["latency_ms"] == 12.5
    when = datetime.fromisoformat(record["timestamp"])
    assert when.tzinfo is not None and abs(datetime.now(UTC) - when) < timedelta(minutes=1)


def test_configure_twice_does_not_duplicate_lines(settings: Settings) -> None:
    configure_logging("a", settings)
    configure_logging("b", settings)
    logging.getLogger("x").warning("once")
    records = [json.loads(line) for line in _today_file(settings).read_text().splitlines()]
    assert [(r["component"], r["message"]) for r in records] == [("b", "once")]


def test_secrets_never_reach_the_file(settings: Settings) -> None:
    configure_logging("chatops", settings)
    log = logging.getLogger("chatops.auth")
    log.info("request with Bearer xyz-secret-1", extra={"token": "abc-secret-2"})
    log.info("login", extra={"headers": {"Authorization": "Basic abc-secret-3", "Accept": "json"}})
    log.info("connecting password=abc-secret-4 to postgresql://u:abc-secret-5@db/x", extra={"api_key": "k"})
    try:
        raise RuntimeError("upstream said: Bearer abc-secret-6")
    except RuntimeError:
        log.exception("call failed")
    text = _today_file(settings).read_text()
    for n in range(1, 7):
        assert f"secret-{n}" not in text
    records = [json.loads(line) for line in text.splitlines()]
    assert records[0]["token"] == "***" and "Bearer ***" in records[0]["message"]
    assert records[1]["headers"] == {"Authorization": "***", "Accept": "json"}
    assert "password=***" in records[2]["message"] and "u:***@db" in records[2]["message"]
    assert "RuntimeError" in records[3]["exception"]


def test_the_records_day_picks_the_file(tmp_path: Path) -> None:
    handler = DailyJsonFileHandler(tmp_path)
    handler.setFormatter(JsonFormatter("test"))
    for day in (datetime(2024, 5, 6, 23, 59, 59, tzinfo=UTC), datetime(2024, 5, 7, 0, 0, 1, tzinfo=UTC)):
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "at %s", (day.isoformat(),), None)
        record.created = day.timestamp()
        handler.emit(record)
    handler.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "smartcloudops-2024-05-06.jsonl",
        "smartcloudops-2024-05-07.jsonl",
    ]


def _log_many(home: str, writer: int) -> None:
    configure_logging(f"writer-{writer}", Settings(home=Path(home)))
    log = logging.getLogger("load")
    for i in range(200):
        log.info("line %d %s", i, "x" * (i % 5) * 300, extra={"writer": writer})


def test_two_processes_share_the_file_with_whole_lines(settings: Settings) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_log_many, args=(str(settings.home), w)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    records = [json.loads(line) for line in _today_file(settings).read_text().splitlines()]
    assert len(records) == 400
    assert {r["component"] for r in records} == {"writer-1", "writer-2"}


# -- reading -------------------------------------------------------------------------------


def _write(directory: Path, day: str, lines: list[object]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"smartcloudops-{day}.jsonl", "a") as fh:
        for line in lines:
            fh.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def _entry(ts: str, level: str, message: str) -> dict[str, str]:
    return {"timestamp": ts, "level": level, "component": "t", "logger": "t", "message": message}


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "logs"
    _write(directory, "2024-05-06", [
        _entry("2024-05-06T10:00:00+00:00", "info", "scrape ok"),
        "{torn line without an end",
        _entry("2024-05-06T10:05:00+00:00", "error", "Scoring service DOWN"),
        "not json at all",
        '["a", "list"]',
        _entry("2024-05-06T10:10:00+00:00", "warning", "slow scrape"),
    ])
    _write(directory, "2024-05-07", [
        _entry("2024-05-07T09:00:00+00:00", "debug", "tick"),
        _entry("2024-05-07T09:01:00+00:00", "info", "scoring service up"),
        _entry("2024-05-07T09:02:00+00:00", "critical", "disk full"),
    ])
    (directory / "unrelated.txt").write_text("ignored")
    return directory


def test_read_logs_newest_first_skipping_junk(log_dir: Path) -> None:
    messages = [r["message"] for r in read_logs(log_dir)]
    assert messages == [
        "disk full", "scoring service up", "tick", "slow scrape", "Scoring service DOWN", "scrape ok",
    ]


def test_read_logs_filters(log_dir: Path) -> None:
    def msgs(**kw: object) -> list[str]:
        return [r["message"] for r in read_logs(log_dir, **kw)]  # type: ignore[arg-type]

    assert msgs(level="warning") == ["disk full", "slow scrape", "Scoring service DOWN"]
    assert msgs(level="ERROR") == ["disk full", "Scoring service DOWN"]
    assert msgs(contains="SCORING") == ["scoring service up", "Scoring service DOWN"]
    assert msgs(limit=2) == ["disk full", "scoring service up"]
    assert msgs(limit=0) == []
    since = datetime(2024, 5, 6, 10, 5, tzinfo=UTC)
    assert msgs(since=since, level="info") == [
        "disk full", "scoring service up", "slow scrape", "Scoring service DOWN",
    ]
    # a naive "since" is UTC, not a crash
    assert msgs(since=datetime(2024, 5, 7, 9, 1)) == ["disk full", "scoring service up"]
    assert msgs(contains="scoring", level="error", since=since) == ["Scoring service DOWN"]


def test_read_logs_bad_level_and_missing_dir(tmp_path: Path, log_dir: Path) -> None:
    with pytest.raises(InputError, match="unknown level 'loud'; valid: debug, info"):
        read_logs(log_dir, level="loud")
    assert read_logs(tmp_path / "nowhere") == []
