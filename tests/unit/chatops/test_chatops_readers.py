"""The read caches: the incremental log reader answers exactly as ``read_logs`` does, and the
metric-source cache keeps results for its TTL only."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatops.readers import CachedMetricSource, IncrementalLogReader
from smartcloudops.errors import InputError
from smartcloudops.logs import read_logs

NOW = datetime(2026, 5, 17, 12, 0, tzinfo=UTC)
LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "weird"]


def line(minutes_ago: float, level: str, message: str, **extra: Any) -> str:
    return json.dumps({"timestamp": (NOW - timedelta(minutes=minutes_ago)).isoformat(), "level": level,
                       "component": "t", "logger": "t", "message": message, **extra}) + "\n"


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def both(reader: IncrementalLogReader, log_dir: Path, **kw: Any) -> list[dict[str, Any]]:
    want = read_logs(log_dir, **kw)
    got = reader(log_dir, **kw)
    assert got == want, kw
    return got


def test_same_answers_as_read_logs_while_the_file_grows(tmp_path: Path) -> None:
    day = tmp_path / f"smartcloudops-{NOW:%Y-%m-%d}.jsonl"
    prev = tmp_path / f"smartcloudops-{NOW - timedelta(days=1):%Y-%m-%d}.jsonl"
    append(prev, line(60 * 13, "ERROR", "yesterday's timeout"))
    append(day, line(30, "INFO", "started") + line(20, "ERROR", "timeout on web-1") + "not json\n")
    reader = IncrementalLogReader()
    queries: list[dict[str, Any]] = [
        {}, {"level": "error"}, {"level": "WARNING"}, {"contains": "TIMEOUT"}, {"limit": 1},
        {"since": NOW - timedelta(minutes=25)}, {"since": NOW - timedelta(days=2), "contains": "timeout"},
        {"since": (NOW - timedelta(minutes=25)).replace(tzinfo=None)}, {"limit": 0},
    ]
    for kw in queries:
        both(reader, tmp_path, **kw)
    # A line being written (no newline yet), then completed; then a torn line.
    append(day, line(5, "ERROR", "half written")[:-20])
    for kw in queries:
        both(reader, tmp_path, **kw)
    append(day, line(5, "ERROR", "half written")[-20:] + line(1, "WARNING", "late, out of order"))
    append(day, line(50, "INFO", "an older line appended late"))
    for kw in queries:
        both(reader, tmp_path, **kw)
    assert both(reader, tmp_path, contains="half written")[0]["message"] == "half written"


def test_replaced_or_truncated_files_are_read_again(tmp_path: Path) -> None:
    day = tmp_path / f"smartcloudops-{NOW:%Y-%m-%d}.jsonl"
    append(day, line(3, "ERROR", "first") + line(2, "ERROR", "second"))
    reader = IncrementalLogReader()
    assert len(both(reader, tmp_path)) == 2
    day.write_text(line(1, "INFO", "after truncation"))
    assert [r["message"] for r in both(reader, tmp_path)] == ["after truncation"]
    other = tmp_path / "new.jsonl"
    other.write_text(line(1, "INFO", "replaced") + line(0.5, "INFO", "file"))
    os.replace(other, day)
    assert [r["message"] for r in both(reader, tmp_path)] == ["file", "replaced"]
    day.unlink()
    assert both(reader, tmp_path) == []


def test_big_files_are_scanned_not_kept(tmp_path: Path) -> None:
    day = tmp_path / f"smartcloudops-{NOW:%Y-%m-%d}.jsonl"
    append(day, "".join(line(m, "ERROR" if m % 2 else "INFO", f"m{m}") for m in range(50)))
    reader = IncrementalLogReader(max_file_bytes=100)
    for kw in ({}, {"level": "error", "limit": 5}, {"contains": "m1"}):
        both(reader, tmp_path, **kw)
    assert not reader._files


def test_bad_level_and_missing_dir(tmp_path: Path) -> None:
    reader = IncrementalLogReader()
    with pytest.raises(InputError, match="unknown level"):
        reader(tmp_path, level="loud")
    assert reader(tmp_path / "nowhere") == []


records = st.lists(
    # Few distinct minutes too, so equal timestamps (ties: file order must hold) are common.
    st.tuples(st.one_of(st.integers(0, 4).map(float), st.floats(0, 3000)), st.sampled_from(LEVELS),
              st.sampled_from(["timeout", "ok", "Disk full", "web-1 restart", "<x> & y"])),
    max_size=40,
)


@settings(max_examples=80, deadline=None)
@given(first=records, second=records, third=records,
       level=st.sampled_from([None, "debug", "info", "warning", "error"]),
       contains=st.sampled_from([None, "timeout", "WEB-1", "&", "zzz"]), limit=st.integers(1, 50),
       since=st.one_of(st.none(), st.floats(1, 4000)))
def test_property_equivalent_to_read_logs(first: list[tuple[float, str, str]],
                                          second: list[tuple[float, str, str]],
                                          third: list[tuple[float, str, str]], level: str | None,
                                          contains: str | None, limit: int, since: float | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        reader = IncrementalLogReader()
        kw = {"level": level, "contains": contains, "limit": limit,
              "since": NOW - timedelta(minutes=since) if since is not None else None}
        for batch in (first, second, third):  # each appended after a read of the ones before
            for minutes, lvl, msg in batch:
                at = NOW - timedelta(minutes=minutes)
                append(log_dir / f"smartcloudops-{at:%Y-%m-%d}.jsonl", line(minutes, lvl, msg))
            both(reader, log_dir, **kw)


# -- metrics -------------------------------------------------------------------------------

class CountingSource:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def latest(self, hosts: list[str] | None = None) -> pd.DataFrame:
        self.calls.append("latest")
        return pd.DataFrame({"timestamp": [NOW], "host": ["web-1"], "metric": ["cpu"], "value": [50.0]})

    def query_range(self, start: datetime, end: datetime, step_seconds: int = 60,
                    hosts: list[str] | None = None) -> pd.DataFrame:
        self.calls.append("range")
        stamps = pd.date_range(start.replace(second=0, microsecond=0), end, freq=f"{step_seconds}s")
        return pd.DataFrame({"timestamp": stamps, "host": "web-1", "metric": "cpu",
                             "value": range(len(stamps))})

    def hosts(self) -> list[str]:
        return ["web-1"]


def test_metric_cache_keeps_results_for_the_ttl() -> None:
    tick = [0.0]
    inner = CountingSource()
    source = CachedMetricSource(inner, ttl_seconds=5, clock=lambda: tick[0])
    assert source.wrapped_name == "CountingSource"
    source.latest()
    source.latest()
    source.latest(hosts=["web-1"])  # another question, another entry
    assert inner.calls == ["latest", "latest"]
    tick[0] = 5.1
    source.latest()
    assert inner.calls.count("latest") == 3

    start, end = NOW - timedelta(minutes=60), NOW
    first = source.query_range(start, end, 60)
    # The same window a few seconds later is served from the cache, trimmed to its start.
    later = source.query_range(start + timedelta(seconds=3), end + timedelta(seconds=3), 60)
    assert inner.calls.count("range") == 1
    assert later["timestamp"].min() >= start + timedelta(seconds=3)
    assert len(later) == len(first) - 1
    # Another length, another step, a window that ends earlier, or past the TTL: fetched.
    source.query_range(start, end + timedelta(minutes=1), 60)
    source.query_range(start, end, 120)
    source.query_range(start - timedelta(seconds=1), end - timedelta(seconds=1), 60)
    assert inner.calls.count("range") == 4
    tick[0] = 20
    source.query_range(start, end, 60)
    assert inner.calls.count("range") == 5
    assert source.hosts() == ["web-1"]
