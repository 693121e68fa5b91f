"""The event store: anomalies, remediation actions, exactly-once claims and small state.

SQLAlchemy Core over any URL: SQLite under ``SMARTCLOUDOPS_HOME`` by default, PostgreSQL in
service mode. The engine is created on first use, never at import or construction, so
building an ``EventStore`` in a DAG file or an app factory connects to nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartcloudops.domain import ActionRecord, ActionStatus, Anomaly, Severity, utcnow
from smartcloudops.errors import StoreError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from smartcloudops.settings import Settings


def _tables(metadata: sa.MetaData) -> dict[str, sa.Table]:
    import sqlalchemy as sa

    ts = sa.DateTime(timezone=True)
    return {
        "anomalies": sa.Table(
            "anomalies", metadata,
            sa.Column("anomaly_id", sa.String(64), primary_key=True),
            sa.Column("host", sa.String(128), nullable=False, index=True),
            sa.Column("timestamp", ts, nullable=False, index=True),
            sa.Column("score", sa.Float, nullable=False),
            sa.Column("severity", sa.Integer, nullable=False),
            sa.Column("model_version", sa.String(64), nullable=False),
            sa.Column("contributions", sa.Text, nullable=False),
            sa.Column("metrics", sa.Text, nullable=False),
        ),
        "actions": sa.Table(
            "actions", metadata,
            sa.Column("action_id", sa.String(64), primary_key=True),
            sa.Column("timestamp", ts, nullable=False, index=True),
            sa.Column("action", sa.String(64), nullable=False),
            sa.Column("instance", sa.String(128), nullable=False, index=True),
            sa.Column("result", sa.String(32), nullable=False, index=True),
            sa.Column("rule", sa.String(128), nullable=False),
            sa.Column("dry_run", sa.Boolean, nullable=False),
            sa.Column("anomaly_id", sa.String(64)),
            sa.Column("approved_by", sa.String(128)),
            sa.Column("duration_ms", sa.Float, nullable=False),
            sa.Column("params", sa.Text, nullable=False),
            sa.Column("detail", sa.Text, nullable=False),
            sa.Column("verified", sa.Boolean, nullable=True),
        ),
        "claims": sa.Table(
            "claims", metadata,
            sa.Column("key", sa.String(256), primary_key=True),
            sa.Column("owner", sa.String(128), nullable=False),
            sa.Column("expires_at", ts),
        ),
        "state": sa.Table(
            "state", metadata,
            sa.Column("key", sa.String(256), primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        ),
        # Operator labels (smartcloudops.labels). The unique window makes "add" idempotent
        # even when two requests race: the database, not a read-then-write, decides.
        "labels": sa.Table(
            "labels", metadata,
            sa.Column("label_id", sa.String(64), primary_key=True),
            sa.Column("host", sa.String(128), nullable=False, index=True),
            sa.Column("window_start", ts, nullable=False, index=True),
            sa.Column("window_end", ts, nullable=False, index=True),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("author", sa.String(128), nullable=False),
            sa.Column("note", sa.Text, nullable=False),
            sa.Column("anomaly_id", sa.String(64)),
            sa.Column("created_at", ts, nullable=False),
            sa.UniqueConstraint("host", "window_start", "window_end", "kind", name="uq_labels_window"),
        ),
    }


def _aware(value: datetime) -> datetime:
    # SQLite drops tzinfo on the way back; everything we store is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc(value: datetime) -> datetime:
    """What we hand the database. SQLite keeps the wall-clock digits and drops the offset,
    so a +05:00 time stored as is would come back five hours off and compare wrongly."""
    return _aware(value)


class EventStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: sa.Engine | None = None
        self._tables: dict[str, sa.Table] = {}
        self._engine_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> EventStore:
        return cls(settings.resolved_event_store_url)

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            # Two threads touching a fresh store at once must not build two engines.
            with self._engine_lock:
                if self._engine is None:
                    self._engine = self._create_engine()
        return self._engine

    def _create_engine(self) -> sa.Engine:
        import sqlalchemy as sa

        try:
            if self.url.startswith("sqlite:///"):
                Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                # WAL lets the sensor write while ChatOps reads; busy_timeout waits out locks.
                engine = sa.create_engine(self.url, connect_args={"timeout": 30})

                @sa.event.listens_for(engine, "connect")
                def _pragmas(conn: Any, _record: Any) -> None:
                    cur = conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA synchronous=NORMAL")
                    cur.close()
            else:
                engine = sa.create_engine(self.url, pool_pre_ping=True)
        except (sa.exc.SQLAlchemyError, ImportError, OSError) as exc:
            # a malformed URL, a driver that is not installed, a directory we cannot create
            raise StoreError(f"event store URL {self._safe_url()} is unusable: {exc}") from exc
        metadata = sa.MetaData()
        tables = _tables(metadata)
        try:
            try:
                metadata.create_all(engine)
            except (sa.exc.IntegrityError, sa.exc.OperationalError, sa.exc.ProgrammingError):
                # Another process created the tables between our check and our CREATE
                # ("already exists", or PostgreSQL's duplicate pg_type row): check again.
                metadata.create_all(engine)
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            raise StoreError(f"event store {self._safe_url()} is unavailable: {exc}") from exc
        self._tables = tables
        return engine

    def _safe_url(self) -> str:
        # Never print a password that might be in the URL.
        head, sep, tail = self.url.partition("@")
        return f"{head.split('://')[0]}://***@{tail}" if sep else self.url

    def table(self, name: str) -> sa.Table:
        """A table of this store (created on first use); for stores that share its database."""
        self.engine  # noqa: B018 - creates the tables on first use
        return self._tables[name]

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- anomalies -----------------------------------------------------------------------

    def record_anomalies(self, anomalies: Iterable[Anomaly]) -> int:
        import sqlalchemy as sa

        rows = [
            {
                "anomaly_id": a.anomaly_id,
                "host": a.host,
                "timestamp": _utc(a.timestamp),
                "score": float(a.score),
                "severity": int(a.severity),
                "model_version": a.model_version,
                "contributions": json.dumps(a.contributions),
                "metrics": json.dumps(a.metrics),
            }
            for a in anomalies
        ]
        if not rows:
            return 0
        table = self.table("anomalies")
        ids = [r["anomaly_id"] for r in rows]
        known_ids = sa.select(table.c.anomaly_id).where(table.c.anomaly_id.in_(ids))
        attempts = 2
        while True:
            try:
                with self.begin() as conn:
                    known = set(conn.scalars(known_ids))
                    fresh = [r for r in rows if r["anomaly_id"] not in known]
                    if fresh:
                        conn.execute(table.insert(), fresh)
                return len(fresh)
            except sa.exc.IntegrityError as exc:
                # A concurrent writer inserted one of these ids after our read: read again.
                attempts -= 1
                if not attempts:
                    raise StoreError(f"event store {self._safe_url()}: {exc}") from exc

    def recent_anomalies(
        self, limit: int = 10, since: datetime | None = None, host: str | None = None
    ) -> list[Anomaly]:
        import sqlalchemy as sa

        table = self.table("anomalies")
        query = sa.select(table).order_by(table.c.timestamp.desc()).limit(max(0, limit))
        if since is not None:
            query = query.where(table.c.timestamp >= _utc(since))
        if host is not None:
            query = query.where(table.c.host == host)
        with self.connect() as conn:
            return [self._anomaly(row._mapping) for row in conn.execute(query)]

    def get_anomaly(self, anomaly_id: str) -> Anomaly | None:
        import sqlalchemy as sa

        table = self.table("anomalies")
        with self.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.anomaly_id == anomaly_id)).first()
        return self._anomaly(row._mapping) if row else None

    @staticmethod
    def _anomaly(row: Any) -> Anomaly:
        return Anomaly(
            host=row["host"],
            timestamp=_aware(row["timestamp"]),
            score=row["score"],
            severity=Severity(row["severity"]),
            model_version=row["model_version"],
            contributions=json.loads(row["contributions"]),
            metrics=json.loads(row["metrics"]),
            anomaly_id=row["anomaly_id"],
        )

    # -- actions -------------------------------------------------------------------------

    def record_action(self, record: ActionRecord) -> None:
        import sqlalchemy as sa

        table = self.table("actions")
        row = {
            "action_id": record.action_id,
            "timestamp": _utc(record.timestamp),
            "action": record.action,
            "instance": record.instance,
            "result": record.result.value,
            "rule": record.rule,
            "dry_run": record.dry_run,
            "anomaly_id": record.anomaly_id,
            "approved_by": record.approved_by,
            "duration_ms": record.duration_ms,
            "params": json.dumps(record.params, default=str),
            "detail": record.detail,
            "verified": record.verified,
        }
        with self.begin() as conn:
            conn.execute(sa.delete(table).where(table.c.action_id == record.action_id))
            conn.execute(table.insert(), [row])

    def actions(
        self,
        limit: int = 20,
        since: datetime | None = None,
        instance: str | None = None,
        status: ActionStatus | None = None,
    ) -> list[ActionRecord]:
        import sqlalchemy as sa

        table = self.table("actions")
        query = sa.select(table).order_by(table.c.timestamp.desc()).limit(max(0, limit))
        if since is not None:
            query = query.where(table.c.timestamp >= _utc(since))
        if instance is not None:
            query = query.where(table.c.instance == instance)
        if status is not None:
            query = query.where(table.c.result == status.value)
        with self.connect() as conn:
            return [self._action(row._mapping) for row in conn.execute(query)]

    def get_action(self, action_id: str) -> ActionRecord | None:
        import sqlalchemy as sa

        table = self.table("actions")
        with self.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.action_id == action_id)).first()
        return self._action(row._mapping) if row else None

    @staticmethod
    def _action(row: Any) -> ActionRecord:
        return ActionRecord(
            action=row["action"],
            instance=row["instance"],
            result=ActionStatus(row["result"]),
            rule=row["rule"],
            dry_run=bool(row["dry_run"]),
            timestamp=_aware(row["timestamp"]),
            action_id=row["action_id"],
            anomaly_id=row["anomaly_id"],
            approved_by=row["approved_by"],
            duration_ms=row["duration_ms"],
            params=json.loads(row["params"]),
            detail=row["detail"],
            verified=row["verified"],
        )

    # -- exactly-once claims -------------------------------------------------------------

    def claim(self, key: str, owner: str, ttl_seconds: float | None = None) -> bool:
        """Take ``key`` if nobody holds it (or the holder's claim expired). Atomic.

        The primary key makes the insert the arbiter: two processes racing for the same
        incident both try to insert, exactly one succeeds.
        """
        import sqlalchemy as sa

        table = self.table("claims")
        now = utcnow()
        expires = now + timedelta(seconds=ttl_seconds) if ttl_seconds is not None else None
        expired = sa.delete(table).where(
            table.c.key == key, table.c.expires_at.is_not(None), table.c.expires_at <= now
        )
        with self.begin() as conn:
            conn.execute(expired)
        try:
            with self.begin() as conn:
                conn.execute(table.insert(), [{"key": key, "owner": owner, "expires_at": expires}])
        except sa.exc.IntegrityError:
            return False
        return True

    def release(self, key: str) -> None:
        import sqlalchemy as sa

        table = self.table("claims")
        with self.begin() as conn:
            conn.execute(sa.delete(table).where(table.c.key == key))

    # -- small JSON state ----------------------------------------------------------------

    def put_state(self, key: str, value: dict[str, Any]) -> None:
        import sqlalchemy as sa

        table = self.table("state")
        with self.begin() as conn:
            conn.execute(sa.delete(table).where(table.c.key == key))
            conn.execute(table.insert(), [{"key": key, "value": json.dumps(value, default=str)}])

    def get_state(self, key: str) -> dict[str, Any] | None:
        import sqlalchemy as sa

        table = self.table("state")
        with self.connect() as conn:
            raw = conn.scalar(sa.select(table.c.value).where(table.c.key == key))
        return json.loads(raw) if raw is not None else None

    # -- connections ---------------------------------------------------------------------

    def begin(self) -> Any:
        """A transaction; SQLAlchemy errors other than integrity ones become StoreError."""
        return _Translated(lambda: self.engine.begin(), self._safe_url())

    def connect(self) -> Any:
        """A connection, with the same error translation as :meth:`begin`."""
        return _Translated(lambda: self.engine.connect(), self._safe_url())


class _Translated:
    """Context manager that turns SQLAlchemy errors (except integrity) into StoreError."""

    def __init__(self, opener: Any, where: str) -> None:
        self._opener = opener
        self._where = where
        self._cm: Any = None

    def __enter__(self) -> Any:
        import sqlalchemy as sa

        try:
            self._cm = self._opener()
            return self._cm.__enter__()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"event store {self._where}: {exc}") from exc

    def __exit__(self, *exc_info: Any) -> bool:
        import sqlalchemy as sa

        try:
            suppressed = bool(self._cm.__exit__(*exc_info))
        except sa.exc.IntegrityError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"event store {self._where}: {exc}") from exc
        error = exc_info[1]
        if isinstance(error, sa.exc.SQLAlchemyError) and not isinstance(error, sa.exc.IntegrityError):
            raise StoreError(f"event store {self._where}: {error}") from error
        return suppressed
