"""Per-process read caches in front of the metric source and the JSON logs.

Why: a question costs what its evidence costs to read. ``read_logs`` re-reads and re-parses
every line of the day's files on each call, and a metric source answers "latest" with a
fresh query (Prometheus over HTTP, or the simulator's computation) although samples only
change once a scrape step. Under 16 concurrent clients those reads were most of the time.

- :class:`IncrementalLogReader` -- the same answers as ``smartcloudops.logs.read_logs``
  (same filters, same order), but each file is parsed once and then only its appended bytes
  are read (files are append-only, one JSON object a line; a truncated or replaced file is
  re-read from the start). Files above ``max_file_bytes`` are scanned each time, as before.
- :class:`CachedMetricSource` -- ``latest`` and ``query_range`` results kept for
  ``ttl_seconds`` (default 5 s, well under the scrape step): answers lag new samples by at
  most that. Range results are reused for a window of the same length ending at most
  ``ttl_seconds`` later, trimmed to the new start.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartcloudops.logs import LEVEL_ORDER, LogQuery

if TYPE_CHECKING:
    import pandas as pd

# ---------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------


@dataclass
class _Entry:
    timestamp: str  # as written, the sort key read_logs uses
    when: datetime | None  # parsed, for the since filter (None: unparseable -> never matches)
    level: int
    haystack: str  # json.dumps(record).lower(), what ``contains`` searches
    record: dict[str, Any]


def _entry(record: dict[str, Any]) -> _Entry:
    try:
        when: datetime | None = datetime.fromisoformat(str(record.get("timestamp")))
        if when is not None:
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except ValueError:
        when = None
    return _Entry(str(record.get("timestamp", "")), when,
                  LEVEL_ORDER.get(str(record.get("level", "info")).lower(), 20),
                  json.dumps(record).lower(), record)


def _parse_line(line: bytes) -> _Entry | None:
    try:
        record = json.loads(line.decode("utf-8", errors="replace"))
    except ValueError:
        return None  # torn or foreign line: read_logs skips it too
    return _entry(record) if isinstance(record, dict) else None


@dataclass
class _FileState:
    inode: int
    offset: int = 0  # bytes consumed (always just after a newline)
    entries: list[_Entry] = field(default_factory=list)  # whole lines, newest first, ties in file order
    ordered: list[_Entry] | None = None  # entries plus the tail: what a read iterates
    tail: _Entry | None = None  # a complete record not yet followed by a newline


def _matches(entry: _Entry, query: LogQuery) -> bool:
    if entry.level < query.floor:
        return False
    if query.since is not None and (entry.when is None or entry.when < query.since):
        return False
    return not (query.needle and query.needle not in entry.haystack)


class IncrementalLogReader:
    """Drop-in for ``read_logs(log_dir, *, since, level, contains, limit)``."""

    def __init__(self, max_file_bytes: int = 64 * 1024 * 1024, max_files: int = 16) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self._files: OrderedDict[Path, _FileState] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, log_dir: Path, *, since: datetime | None = None, level: str | None = None,
                 contains: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = LogQuery.plan(log_dir, since=since, level=level, contains=contains, limit=limit)
        out: list[dict[str, Any]] = []
        for path in query.files:
            ordered = self._ordered(path)
            if ordered is None:  # too big to keep: the plain reader, same semantics
                out.extend(self._plain(path, query))
            else:
                for e in ordered:
                    if _matches(e, query):
                        out.append(e.record)
                        if len(out) >= limit:
                            break
            if len(out) >= limit:
                break
        return out[:limit]

    @staticmethod
    def _plain(path: Path, query: LogQuery) -> list[dict[str, Any]]:
        # read_logs' loop for one file, for files too big to keep parsed in memory.
        matches: list[_Entry] = []
        with open(path, "rb") as fh:
            for line in fh:
                e = _parse_line(line)
                if e is not None and _matches(e, query):
                    matches.append(e)
        matches.sort(key=lambda e: e.timestamp, reverse=True)
        return [e.record for e in matches]

    def _ordered(self, path: Path) -> list[_Entry] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return []
        if st.st_size > self.max_file_bytes:
            with self._lock:
                self._files.pop(path, None)
            return None
        with self._lock:
            state = self._files.get(path)
            if state is None or state.inode != st.st_ino or st.st_size < state.offset:
                state = _FileState(inode=st.st_ino)  # new, replaced or truncated: from the start
                self._files[path] = state
            self._files.move_to_end(path)
            while len(self._files) > self.max_files:
                self._files.popitem(last=False)
            if st.st_size != state.offset or state.ordered is None:
                self._read_new(path, state)
            assert state.ordered is not None
            return state.ordered

    @staticmethod
    def _read_new(path: Path, state: _FileState) -> None:
        with open(path, "rb") as fh:
            fh.seek(state.offset)
            data = fh.read()
        cut = data.rfind(b"\n") + 1  # consume whole lines only; a line being written waits
        new = [e for e in map(_parse_line, data[:cut].splitlines()) if e is not None]
        state.offset += cut
        # Newest first, ties in file order (what read_logs' stable reverse sort gives). Lines
        # are appended in time order, so the new ones usually all go in front: no re-sort of
        # the whole file on every question of a server that logs each question.
        batch = sorted(new, key=lambda e: e.timestamp, reverse=True)
        base = state.entries  # entries holds the ordered lines (without the tail)
        if not base or not batch or batch[-1].timestamp > base[0].timestamp:
            state.entries = batch + base
        else:
            state.entries = _stable_desc(base, batch)  # a line older than the newest: rare
        # A final line without its newline: counted if it is already a whole record (as
        # read_logs would), but not consumed, so it is parsed again once completed.
        state.tail = _parse_line(data[cut:]) if data[cut:].strip() else None
        state.ordered = state.entries if state.tail is None else _stable_desc(state.entries, [state.tail])


def _stable_desc(older: list[_Entry], newer: list[_Entry]) -> list[_Entry]:
    """Newest first; equal timestamps keep file order (``older`` lines came first). Python's
    sort stays stable with ``reverse=True``, which is what read_logs relies on too."""
    return sorted(older + newer, key=lambda e: e.timestamp, reverse=True)


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------


class CachedMetricSource:
    """Wraps a metric source (``latest`` / ``query_range`` / ``hosts``) with a short TTL."""

    def __init__(self, source: Any, ttl_seconds: float = 5.0, max_entries: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[tuple[Any, ...], tuple[float, Any, datetime | None]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def wrapped_name(self) -> str:
        return type(self.source).__name__

    def _get(self, key: tuple[Any, ...]) -> tuple[Any, datetime | None] | None:
        with self._lock:
            item = self._cache.get(key)
            if item is None:
                return None
            if item[0] <= self._clock():
                del self._cache[key]
                return None
            return item[1], item[2]

    def _put(self, key: tuple[Any, ...], value: Any, end: datetime | None = None) -> None:
        with self._lock:
            self._cache[key] = (self._clock() + self.ttl_seconds, value, end)
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)

    def latest(self, hosts: Sequence[str] | None = None) -> pd.DataFrame:
        key = ("latest", tuple(hosts) if hosts is not None else None)
        hit = self._get(key)
        if hit is not None:
            return hit[0]
        frame = self.source.latest(hosts=hosts)
        self._put(key, frame)
        return frame

    def query_range(self, start: datetime, end: datetime, step_seconds: int = 60,
                    hosts: Sequence[str] | None = None) -> pd.DataFrame:
        key = ("range", round((end - start).total_seconds()), int(step_seconds),
               tuple(hosts) if hosts is not None else None)
        hit = self._get(key)
        if hit is not None and hit[1] is not None and timedelta_ok(hit[1], end, self.ttl_seconds):
            frame = hit[0]
            return frame if frame.empty else frame[frame["timestamp"] >= start]
        frame = self.source.query_range(start, end, step_seconds, hosts=hosts)
        self._put(key, frame, end)
        return frame

    def hosts(self) -> list[str]:
        return list(self.source.hosts())

    def close(self) -> None:
        closer = getattr(self.source, "close", None)
        if callable(closer):
            closer()


def timedelta_ok(cached_end: datetime, end: datetime, ttl_seconds: float) -> bool:
    """A cached range may serve a window ending at most ``ttl_seconds`` after it (never before)."""
    lag = (end - cached_end).total_seconds()
    return 0 <= lag <= ttl_seconds
