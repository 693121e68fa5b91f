"""Operator labels: time windows an operator marked as a real incident or a false alarm.

The training pipeline validates on labelled windows; the simulator labels the incidents it
injects, and operators add labels for real fleets (ChatOps feedback, ``POST /labels``,
``smartcloudops labels add``). A label is one host's window ``[start, end]`` (UTC, NAB's
inclusive convention) of one ``kind``:

- ``incident``: something happened that the detector should catch -- these become NAB
  windows (:func:`operator_windows`);
- ``false_alarm``: an alarm that was not an incident. Kept for the record and for review;
  it is not a window (an alarm outside every window already counts as a false positive).

Labels live in the event store's database (table ``labels``), so SQLite by default and
PostgreSQL in service mode, created on first use; nothing connects at import. Adding the same
host/start/end/kind twice stores one label (a unique constraint decides, so concurrent adds
are safe too). Bad input raises :class:`LabelError`, an :class:`~smartcloudops.errors.InputError`
whose message starts with the field's name.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from smartcloudops.domain import new_id, utcnow
from smartcloudops.errors import InputError, StoreError

if TYPE_CHECKING:
    from smartcloudops.events import EventStore
    from smartcloudops.settings import Settings

LABEL_KINDS: tuple[str, ...] = ("incident", "false_alarm")
#: A label longer than this is almost surely a typo in a date; the evaluation would also
#: treat a week-long window as "found" by any single alarm in it.
MAX_LABEL_LENGTH = timedelta(days=7)
#: Clocks disagree a little (an operator's laptop, the server); more than this in the future
#: is a mistake, since nobody can have seen it yet.
FUTURE_SKEW = timedelta(minutes=5)
MAX_NOTE_CHARS = 500
MAX_AUTHOR_CHARS = 128
MAX_LIST_LIMIT = 10_000
HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ANOMALY_ID_RE = re.compile(r"anom-[A-Za-z0-9_]{1,59}")
LABEL_ID_RE = re.compile(r"lbl-[A-Za-z0-9_]{1,60}")


class LabelError(InputError):
    """A label field is invalid; ``field`` names it (the REST endpoint echoes it)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class Label:
    host: str
    start: datetime
    end: datetime
    kind: str
    author: str
    note: str = ""
    anomaly_id: str | None = None
    label_id: str = field(default_factory=lambda: new_id("lbl"))
    created_at: datetime = field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("start", "end", "created_at"):
            out[key] = iso_utc(out[key])
        return out


def iso_utc(value: datetime) -> str:
    """``2026-01-15T10:00:00Z``: the form every label time is shown and returned in."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------
# Validation (pure: no database)
# ---------------------------------------------------------------------------------------

def parse_time(value: datetime | str | None, field_name: str) -> datetime:
    """An aware UTC datetime from a datetime or an ISO 8601 string; naive means UTC."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise LabelError(field_name, "is required (ISO 8601, e.g. 2026-01-15T10:00:00Z)")
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 40:
            raise LabelError(field_name, "is not an ISO 8601 time (too long)")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise LabelError(field_name, f"is not an ISO 8601 time: {text[:40]!r} "
                                         "(e.g. 2026-01-15T10:00:00Z)") from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise LabelError(field_name, f"must be an ISO 8601 string, not {type(value).__name__}")
    try:
        utc = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise LabelError(field_name, "is out of range") from None
    # Whole seconds: the same window typed twice must be the same key for idempotency.
    return utc.replace(microsecond=0)


def _text(value: Any, field_name: str, limit: int, *, required: bool) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise LabelError(field_name, f"must be a string, not {type(value).__name__}")
    if len(value) > limit * 4:
        raise LabelError(field_name, f"is longer than {limit} characters")
    # Control and invisible format characters out: a note is shown in terminals and Slack.
    cleaned = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch
        for ch in unicodedata.normalize("NFKC", value)
        if unicodedata.category(ch) not in ("Cf", "Cs", "Co", "Cn")
    )
    cleaned = re.sub(r"\s+", " ", cleaned).strip()
    if required and not cleaned:
        raise LabelError(field_name, "is required")
    if len(cleaned) > limit:
        raise LabelError(field_name, f"is {len(cleaned)} characters; the limit is {limit}")
    return cleaned


def validate_host(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LabelError("host", "is required (a host name like web-1)")
    host = value.strip()
    if not HOST_RE.fullmatch(host):
        raise LabelError("host", "must be a host name like web-1 (letters, digits, '.', '_', '-'; "
                                 "at most 128 characters)")
    return host.lower()


def validate_kind(value: Any) -> str:
    if not isinstance(value, str):
        raise LabelError("kind", f"must be one of {', '.join(LABEL_KINDS)}")
    kind = value.strip().lower().replace("-", "_").replace(" ", "_")
    kind = {"false_positive": "false_alarm", "fp": "false_alarm", "tp": "incident"}.get(kind, kind)
    if kind not in LABEL_KINDS:
        raise LabelError("kind", f"must be one of {', '.join(LABEL_KINDS)}, not {str(value)[:40]!r}")
    return kind


def validate_label(
    host: Any,
    start: datetime | str | None,
    end: datetime | str | None,
    kind: Any,
    *,
    author: Any,
    note: Any = "",
    anomaly_id: Any = None,
    now: datetime | None = None,
) -> Label:
    """A checked :class:`Label` (not stored). Every problem names its field."""
    host = validate_host(host)
    kind = validate_kind(kind)
    begin = parse_time(start, "start")
    finish = parse_time(end, "end")
    if begin >= finish:
        raise LabelError("end", f"must be after start ({iso_utc(finish)} is not after {iso_utc(begin)})")
    if finish - begin > MAX_LABEL_LENGTH:
        raise LabelError("end", f"the window is longer than {MAX_LABEL_LENGTH.days} days")
    now = (now or utcnow()).astimezone(UTC)
    if finish > now + FUTURE_SKEW:
        raise LabelError("end", f"{iso_utc(finish)} is in the future "
                                f"(now {iso_utc(now.replace(microsecond=0))})")
    author_text = _text(author, "author", MAX_AUTHOR_CHARS, required=True)
    note_text = _text(note, "note", MAX_NOTE_CHARS, required=False)
    if anomaly_id is not None:
        if not isinstance(anomaly_id, str) or not ANOMALY_ID_RE.fullmatch(anomaly_id.strip()):
            raise LabelError("anomaly_id", "must be an anomaly id like anom-1a2b3c4d5e6f")
        anomaly_id = anomaly_id.strip().lower()
    return Label(host, begin, finish, kind, author_text, note_text, anomaly_id)


def merge_windows(windows: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Sorted, with overlapping (or touching) windows joined: NAB windows of one series never
    overlap, or one alarm would "find" two of them."""
    merged: list[list[datetime]] = []
    for begin, finish in sorted(windows):
        if merged and begin <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], finish)
        else:
            merged.append([begin, finish])
    return [(b, f) for b, f in merged]


# ---------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------

class LabelStore:
    """Labels in the event store's database; shares its engine (one pool, one schema)."""

    def __init__(self, events: EventStore) -> None:
        self.events = events

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelStore:
        from smartcloudops.events import EventStore

        return cls(EventStore.from_settings(settings))

    def close(self) -> None:
        self.events.close()

    # The event store owns the schema and the error translation; labels reuse both rather
    # than opening a second engine on the same database.
    def _table(self) -> Any:
        return self.events.table("labels")

    def add(
        self,
        host: Any,
        start: datetime | str | None,
        end: datetime | str | None,
        kind: Any,
        *,
        author: Any,
        note: Any = "",
        anomaly_id: Any = None,
        now: datetime | None = None,
    ) -> tuple[Label, bool]:
        """Store a label; returns ``(label, created)``. The same host/start/end/kind again
        (or the same ``anomaly_id`` and kind) returns the label already stored, with
        ``created`` False; its note and author are not changed."""
        import sqlalchemy as sa

        label = validate_label(host, start, end, kind, author=author, note=note,
                               anomaly_id=anomaly_id, now=now)
        existing = self._already_stored(label)
        if existing is not None:
            return existing, False
        row = {
            "label_id": label.label_id,
            "host": label.host,
            "window_start": label.start,
            "window_end": label.end,
            "kind": label.kind,
            "author": label.author,
            "note": label.note,
            "anomaly_id": label.anomaly_id,
            "created_at": label.created_at,
        }
        try:
            with self.events.begin() as conn:
                conn.execute(self._table().insert(), [row])
        except sa.exc.IntegrityError as exc:
            # Someone stored the same window between our read and our insert.
            existing = self._already_stored(label)
            if existing is None:
                raise StoreError(f"labels: {exc}") from exc
            return existing, False
        return label, True

    def _already_stored(self, label: Label) -> Label | None:
        """The same window and kind; or, for a label about one anomaly, that anomaly with the
        same kind (its window is clipped at "now", so asking twice can give two ends)."""
        import sqlalchemy as sa

        table = self._table()
        same = sa.and_(table.c.host == label.host, table.c.window_start == label.start,
                       table.c.window_end == label.end)
        if label.anomaly_id is not None:
            same = sa.or_(same, table.c.anomaly_id == label.anomaly_id)
        query = sa.select(table).where(same, table.c.kind == label.kind).limit(1)
        with self.events.connect() as conn:
            row = conn.execute(query).first()
        return _label(row._mapping) if row else None

    def get(self, label_id: str) -> Label | None:
        import sqlalchemy as sa

        table = self._table()
        with self.events.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.label_id == label_id)).first()
        return _label(row._mapping) if row else None

    def find(
        self,
        *,
        host: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        kind: str | None = None,
        limit: int = 100,
    ) -> list[Label]:
        """Labels newest window first; ``since``/``until`` keep those overlapping that span."""
        import sqlalchemy as sa

        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise LabelError("limit", f"must be a whole number from 1 to {MAX_LIST_LIMIT}")
        table = self._table()
        query = sa.select(table).order_by(table.c.window_start.desc(), table.c.label_id).limit(limit)
        if host is not None:
            query = query.where(table.c.host == validate_host(host))
        if kind is not None:
            query = query.where(table.c.kind == validate_kind(kind))
        if since is not None:
            query = query.where(table.c.window_end >= parse_time(since, "since"))
        if until is not None:
            query = query.where(table.c.window_start <= parse_time(until, "until"))
        with self.events.connect() as conn:
            return [_label(row._mapping) for row in conn.execute(query)]

    def delete(self, label_id: str) -> bool:
        import sqlalchemy as sa

        if not isinstance(label_id, str) or not LABEL_ID_RE.fullmatch(label_id.strip()):
            raise LabelError("label_id", "must be a label id like lbl-1a2b3c4d5e6f")
        table = self._table()
        with self.events.begin() as conn:
            result = conn.execute(sa.delete(table).where(table.c.label_id == label_id.strip()))
        return bool(result.rowcount)

    def windows(self, start: datetime, end: datetime, kind: str = "incident") -> dict[str, list[list[str]]]:
        """NAB windows (host -> sorted, merged ``[[start, end], ...]``) of ``kind`` labels
        overlapping ``[start, end]``. Windows are returned whole, not clipped to the span."""
        import sqlalchemy as sa

        begin = parse_time(start, "start")
        finish = parse_time(end, "end")
        if begin >= finish:
            raise LabelError("end", "must be after start")
        table = self._table()
        query = sa.select(table.c.host, table.c.window_start, table.c.window_end).where(
            table.c.kind == validate_kind(kind),
            table.c.window_start <= finish,
            table.c.window_end >= begin,
        )
        spans: dict[str, list[tuple[datetime, datetime]]] = {}
        with self.events.connect() as conn:
            for host, win_start, win_end in conn.execute(query):
                spans.setdefault(host, []).append((_aware(win_start), _aware(win_end)))
        return {
            host: [[iso_utc(b), iso_utc(f)] for b, f in merge_windows(items)]
            for host, items in sorted(spans.items())
        }


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _label(row: Any) -> Label:
    return Label(
        host=row["host"],
        start=_aware(row["window_start"]),
        end=_aware(row["window_end"]),
        kind=row["kind"],
        author=row["author"],
        note=row["note"],
        anomaly_id=row["anomaly_id"],
        label_id=row["label_id"],
        created_at=_aware(row["created_at"]),
    )


def operator_windows(
    settings: Settings | None = None, *, start: datetime, end: datetime
) -> dict[str, list[list[str]]]:
    """NAB-format windows of every ``incident`` label overlapping ``[start, end]``.

    ``{host: [[start_iso, end_iso], ...]}``, hosts sorted, each host's windows sorted with
    overlapping ones merged; times are ISO 8601 UTC (``2026-01-15T10:00:00Z``). Reads the
    event store named by ``settings`` (default :func:`get_settings`). An event store that
    holds no labels yet gives ``{}``.
    """
    from smartcloudops.settings import get_settings

    store = LabelStore.from_settings(settings or get_settings())
    try:
        return store.windows(start, end)
    finally:
        store.close()
