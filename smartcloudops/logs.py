"""Structured JSON logs: every component writes one JSON object per line into
``<log_dir>/smartcloudops-YYYY-MM-DD.jsonl`` (UTC date; a new file each day).

Each line is written with a single ``write`` on an ``O_APPEND`` descriptor, which keeps lines
from different processes whole on a local filesystem. Values under keys that look like secrets
are redacted before they reach the file, so a token passed as ``extra=`` never lands on disk.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartcloudops.errors import InputError

if TYPE_CHECKING:
    from smartcloudops.settings import Settings

LOG_FILE_PREFIX = "smartcloudops-"
LEVEL_ORDER = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_SECRET_KEY = re.compile(r"token|secret|password|passwd|authorization|api_key|apikey|credential", re.I)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.I)
# "token=abc", "password: hunter2", "api_key='x'" written into a message by hand
_KEY_VALUE = re.compile(
    r"((?:token|secret|password|passwd|api_key|apikey)[\"']?\s*[=:]\s*[\"']?)[^\s\"',;&]+", re.I
)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@/\s]+(@)")
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _as_utc(value: datetime) -> datetime:
    # A naive time is UTC here (the files are UTC); comparing naive with aware would raise.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def redact(value: Any, key: str = "") -> Any:
    if key and _SECRET_KEY.search(key):
        return "***"
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        value = _BEARER.sub(r"\1***", value)
        return _URL_PASSWORD.sub(r"\1***\2", _KEY_VALUE.sub(r"\1***", value))
    return value


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "component": getattr(record, "component", self.component),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key != "component" and not key.startswith("_"):
                entry[key] = redact(value, key)
        if record.exc_info:
            # an exception message can quote a request header or a connection string
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class DailyJsonFileHandler(logging.Handler):
    """Appends to the file of the record's UTC date; switches files at midnight by itself."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = Path(directory)
        self._fd: int | None = None
        self._day: str | None = None
        self._lock_io = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode()
            day = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%d")
            with self._lock_io:
                if day != self._day or self._fd is None:
                    self._close_fd()
                    self.directory.mkdir(parents=True, exist_ok=True)
                    path = self.directory / f"{LOG_FILE_PREFIX}{day}.jsonl"
                    self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                    self._day = day
                os.write(self._fd, line)
        except Exception:  # noqa: BLE001 - logging must never take the program down (stdlib idiom)
            self.handleError(record)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._lock_io:
            self._close_fd()
        super().close()


def configure_logging(component: str, settings: Settings | None = None, *, console: bool = False) -> None:
    """Route the root logger to the daily JSON file (and optionally stderr). Idempotent."""
    if settings is None:
        from smartcloudops.settings import get_settings

        settings = get_settings()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_smartcloudops", False):
            root.removeHandler(handler)
            handler.close()
    file_handler = DailyJsonFileHandler(settings.log_dir)
    file_handler.setFormatter(JsonFormatter(component))
    file_handler._smartcloudops = True  # type: ignore[attr-defined]
    root.addHandler(file_handler)
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(JsonFormatter(component))
        stream._smartcloudops = True  # type: ignore[attr-defined]
        root.addHandler(stream)
    root.setLevel(settings.log_level.upper())


@dataclass(frozen=True)
class LogQuery:
    """A validated log filter and the day files that can hold its matches, newest first.

    One place for the filter's rules, shared by :func:`read_logs` and ChatOps' incremental
    reader, so the two cannot drift apart on what a filter means.
    """

    since: datetime | None
    floor: int  # the lowest LEVEL_ORDER value kept
    needle: str | None  # lower-cased substring, or None
    limit: int
    files: list[Path]

    @classmethod
    def plan(
        cls,
        log_dir: Path,
        *,
        since: datetime | None = None,
        level: str | None = None,
        contains: str | None = None,
        limit: int = 100,
    ) -> LogQuery:
        if level is not None and level.lower() not in LEVEL_ORDER:
            raise InputError(f"unknown level {level!r}; valid: {', '.join(LEVEL_ORDER)}")
        since = _as_utc(since) if since is not None else None
        floor = LEVEL_ORDER[level.lower()] if level else 0
        needle = contains.lower() if contains else None
        directory = Path(log_dir)
        files: list[Path] = []
        if directory.exists() and limit > 0:
            files = sorted(directory.glob(f"{LOG_FILE_PREFIX}*.jsonl"), reverse=True)
            if since is not None:
                # Day files are named by UTC date: older days cannot hold a newer record.
                first_day = since.strftime("%Y-%m-%d")
                files = [f for f in files if f.stem.removeprefix(LOG_FILE_PREFIX) >= first_day]
        return cls(since=since, floor=floor, needle=needle, limit=limit, files=files)


def read_logs(
    log_dir: Path,
    *,
    since: datetime | None = None,
    level: str | None = None,
    contains: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest-first records matching the filters; torn or non-JSON lines are skipped."""
    query = LogQuery.plan(log_dir, since=since, level=level, contains=contains, limit=limit)
    since, floor, needle = query.since, query.floor, query.needle
    out: list[dict[str, Any]] = []
    for path in query.files:
        matches = []
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(record, dict):
                    continue
                if LEVEL_ORDER.get(str(record.get("level", "info")).lower(), 20) < floor:
                    continue
                if since is not None:
                    try:
                        when = _as_utc(datetime.fromisoformat(str(record.get("timestamp"))))
                    except ValueError:
                        continue
                    if when < since:
                        continue
                if needle and needle not in json.dumps(record).lower():
                    continue
                matches.append(record)
        matches.sort(key=lambda r: str(r.get("timestamp", "")), reverse=True)
        out.extend(matches)
        if len(out) >= limit:
            break
    return out[:limit]
