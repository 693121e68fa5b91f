"""Operator labels on SQLite: validation of every field, idempotent adds (also under a race),
NAB windows merged per host, and the ``operator_windows`` contract the training pipeline uses."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from smartcloudops.errors import InputError
from smartcloudops.events import EventStore
from smartcloudops.labels import (
    MAX_NOTE_CHARS,
    LabelError,
    LabelStore,
    merge_windows,
    operator_windows,
    validate_label,
)
from smartcloudops.settings import Settings

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 1, 15, 8, 0, tzinfo=UTC)


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def labels(tmp_path: Path) -> Iterator[LabelStore]:
    store = LabelStore(EventStore(f"sqlite:///{tmp_path / 'db' / 'events.db'}"))
    yield store
    store.close()


def _add(store: LabelStore, host: str, start: float, end: float, kind: str = "incident",
         **kw: Any) -> tuple[Any, bool]:
    return store.add(host, _at(start), _at(end), kind, author=kw.pop("author", "alice"), now=NOW, **kw)


GOOD: dict[str, Any] = {"host": "web-1", "start": "2026-01-15T10:00:00Z", "end": "2026-01-15T10:30:00Z",
                        "kind": "incident", "author": "alice", "note": "", "anomaly_id": None}


@pytest.mark.parametrize(
    ("override", "field", "fragment"),
    [
        ({"host": ""}, "host", "required"),
        ({"host": None}, "host", "required"),
        ({"host": 7}, "host", "required"),
        ({"host": "web 1"}, "host", "host name like web-1"),
        ({"host": "<script>alert(1)</script>"}, "host", "host name"),
        ({"host": "web-1\x00"}, "host", "host name"),
        ({"host": "-web"}, "host", "host name"),
        ({"host": "w" * 129}, "host", "128"),
        ({"start": None}, "start", "required"),
        ({"start": "   "}, "start", "required"),
        ({"start": "yesterday"}, "start", "ISO 8601"),
        ({"start": "2026-13-01T00:00:00"}, "start", "ISO 8601"),
        ({"start": "9" * 500}, "start", "too long"),
        ({"start": 1_700_000_000}, "start", "ISO 8601 string"),
        ({"end": "2026-01-15T10:00:00Z"}, "end", "after start"),
        ({"end": "2026-01-15T09:00:00Z"}, "end", "after start"),
        ({"start": "2026-01-01T00:00:00Z", "end": "2026-01-08T00:00:01Z"}, "end", "7 days"),
        ({"end": "2026-01-15T12:06:00Z"}, "end", "future"),
        ({"kind": "maybe"}, "kind", "incident, false_alarm"),
        ({"kind": None}, "kind", "incident, false_alarm"),
        ({"kind": ["incident"]}, "kind", "incident, false_alarm"),
        ({"author": ""}, "author", "required"),
        ({"author": " \t\n"}, "author", "required"),
        ({"author": "a" * 129}, "author", "limit is 128"),
        ({"note": "n" * (MAX_NOTE_CHARS + 1)}, "note", f"limit is {MAX_NOTE_CHARS}"),
        ({"note": "n" * 100_000}, "note", "longer than"),
        ({"note": {"x": 1}}, "note", "must be a string"),
        ({"anomaly_id": "act-123"}, "anomaly_id", "anom-"),
        ({"anomaly_id": "anom-1; drop table labels"}, "anomaly_id", "anom-"),
        ({"anomaly_id": 12}, "anomaly_id", "anom-"),
    ],
)
def test_bad_labels_are_input_errors_naming_the_field(override: dict[str, Any], field: str,
                                                       fragment: str) -> None:
    values = GOOD | override
    with pytest.raises(LabelError) as info:
        validate_label(values["host"], values["start"], values["end"], values["kind"],
                       author=values["author"], note=values["note"], anomaly_id=values["anomaly_id"], now=NOW)
    assert isinstance(info.value, InputError)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert fragment in str(info.value)


def test_times_are_utc_to_the_second_and_text_is_cleaned() -> None:
    plus2 = timezone(timedelta(hours=2))
    label = validate_label(" Web-1 ", datetime(2026, 1, 15, 12, 0, 0, 999_999, tzinfo=plus2),
                           "2026-01-15T10:30:00", "False-Positive", author="alice",
                           note="disk\nfilled\x1b[31m up\u200b", now=NOW)
    assert (label.host, label.kind) == ("web-1", "false_alarm")
    assert label.start == datetime(2026, 1, 15, 10, 0, tzinfo=UTC)  # +02:00 -> UTC, microseconds dropped
    assert label.end == datetime(2026, 1, 15, 10, 30, tzinfo=UTC)  # naive means UTC
    assert label.note == "disk filled [31m up"  # newline and escape become spaces, zero-width gone
    assert label.to_dict()["start"] == "2026-01-15T10:00:00Z"
    # a small clock skew is allowed: an operator's laptop may run a little ahead
    validate_label("web-1", "2026-01-15T11:50:00Z", "2026-01-15T12:04:00Z", "incident", author="a", now=NOW)


def test_construction_connects_to_nothing(tmp_path: Path) -> None:
    path = tmp_path / "lazy" / "events.db"
    LabelStore(EventStore(f"sqlite:///{path}"))
    assert not path.exists()


def test_add_is_idempotent(labels: LabelStore) -> None:
    first, created = _add(labels, "web-1", 0, 30, note="first")
    assert created
    again, created_again = labels.add("WEB-1", _at(0).isoformat(), _at(30).replace(tzinfo=None), "incident",
                                      author="bob", note="second", now=NOW)
    assert not created_again
    assert again == first  # the stored label: note and author unchanged
    assert [label.label_id for label in labels.find()] == [first.label_id]
    # another kind for the same window is another label (an operator can change their mind;
    # both stay visible until one is deleted)
    assert _add(labels, "web-1", 0, 30, "false_alarm")[1]
    assert len(labels.find()) == 2


def test_same_anomaly_and_kind_is_one_label_even_with_another_end(labels: LabelStore) -> None:
    first, _ = _add(labels, "db-1", 0, 20, anomaly_id="anom-aaaa")
    # asked again later: the window's end (clipped at "now" by ChatOps) has moved on
    again, created = _add(labels, "db-1", 0, 25, anomaly_id="anom-aaaa")
    assert not created and again.label_id == first.label_id
    assert _add(labels, "db-1", 0, 25, "false_alarm", anomaly_id="anom-aaaa")[1]


def test_racing_adds_store_one_label(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    LabelStore(EventStore(url)).find()  # create the schema first: the race is about the row
    barrier = threading.Barrier(4)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def racer() -> None:
        store = LabelStore(EventStore(url))
        try:
            barrier.wait()
            label, created = store.add("web-1", _at(0), _at(30), "incident", author="x", now=NOW)
            results.append((label.label_id, created))
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len({label_id for label_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    check = LabelStore(EventStore(url))
    assert len(check.find()) == 1
    check.close()


def test_windows_are_merged_sorted_and_only_incidents(labels: LabelStore) -> None:
    _add(labels, "web-1", 60, 90)
    _add(labels, "web-1", 0, 30)
    _add(labels, "web-1", 20, 40)  # overlaps 0-30
    _add(labels, "web-1", 40, 50)  # touches 20-40
    _add(labels, "web-1", 120, 130, "false_alarm")  # not a window
    _add(labels, "db-1", 10, 15)
    _add(labels, "db-1", -600, -590)  # outside the span asked for
    got = labels.windows(_at(-60), _at(180))
    assert got == {
        "db-1": [["2026-01-15T08:10:00Z", "2026-01-15T08:15:00Z"]],
        "web-1": [["2026-01-15T08:00:00Z", "2026-01-15T08:50:00Z"],
                  ["2026-01-15T09:00:00Z", "2026-01-15T09:30:00Z"]],
    }
    assert list(got) == sorted(got)
    # labels overlapping the span are returned whole, not clipped (40-50 does not overlap it)
    assert labels.windows(_at(25), _at(26)) == {"web-1": [["2026-01-15T08:00:00Z", "2026-01-15T08:40:00Z"]]}
    assert labels.windows(_at(200), _at(300)) == {}
    with pytest.raises(InputError, match="end"):
        labels.windows(_at(10), _at(10))


def test_merge_windows_keeps_disjoint_apart() -> None:
    a, b, c = _at(0), _at(10), _at(20)
    assert merge_windows([(c, _at(30)), (a, b)]) == [(a, b), (c, _at(30))]
    assert merge_windows([(a, c), (b, _at(15))]) == [(a, c)]
    assert merge_windows([]) == []


def test_find_filters_and_delete(labels: LabelStore) -> None:
    old, _ = _add(labels, "web-1", 0, 10)
    new, _ = _add(labels, "web-1", 100, 110, "false_alarm")
    other, _ = _add(labels, "db-1", 50, 60)
    assert [x.label_id for x in labels.find()] == [new.label_id, other.label_id, old.label_id]
    assert [x.label_id for x in labels.find(host="web-1")] == [new.label_id, old.label_id]
    assert [x.label_id for x in labels.find(kind="false_alarm")] == [new.label_id]
    assert [x.label_id for x in labels.find(since=_at(55))] == [new.label_id, other.label_id]
    assert [x.label_id for x in labels.find(until=_at(5))] == [old.label_id]
    assert len(labels.find(limit=1)) == 1
    assert labels.get(old.label_id) == old
    for bad in ({"limit": 0}, {"limit": True}, {"host": "a b"}, {"kind": "x"}, {"since": "soon"}):
        with pytest.raises(LabelError):
            labels.find(**bad)
    assert labels.delete(old.label_id)
    assert not labels.delete(old.label_id)
    assert labels.get(old.label_id) is None
    with pytest.raises(LabelError, match="label_id"):
        labels.delete("1 or 1=1")


def test_an_existing_database_gets_the_table_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    EventStore(f"sqlite:///{path}").recent_anomalies()  # tables as any version made them
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE labels")  # a database from before labels existed
    store = LabelStore(EventStore(f"sqlite:///{path}"))
    assert store.add("web-1", _at(0), _at(5), "incident", author="a", now=NOW)[1]
    store.close()


def test_operator_windows_reads_the_settings_event_store(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", event_store_url=None)
    assert operator_windows(settings, start=_at(0), end=_at(60)) == {}  # no labels yet: nothing
    store = LabelStore.from_settings(settings)
    store.add("app-1", _at(10), _at(20), "incident", author="a", now=NOW)
    store.add("app-1", _at(15), _at(40), "incident", author="b", now=NOW)
    store.add("app-1", _at(45), _at(50), "false_alarm", author="b", now=NOW)
    store.close()
    assert operator_windows(settings, start=_at(0), end=_at(60)) == {
        "app-1": [["2026-01-15T08:10:00Z", "2026-01-15T08:40:00Z"]]}
    with pytest.raises(InputError):
        operator_windows(settings, start=_at(60), end=_at(0))


def test_operator_windows_defaults_to_get_settings(isolated_home: Path) -> None:
    assert operator_windows(start=_at(0), end=_at(60)) == {}
    assert (isolated_home / "events.db").exists()  # the default event store under HOME
