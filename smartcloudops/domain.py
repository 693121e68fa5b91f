"""Domain types shared by every stage of the loop.

Metric samples travel in *long* format (one row per value: ``timestamp, host, metric,
value``) because that is what Prometheus returns and what the metric store keeps. Detectors
want *wide* frames (one row per host and timestamp, one column per metric); the two helpers
at the bottom convert between them so no stage writes its own pivot.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from smartcloudops.errors import InputError

#: Canonical metric names, in the order wide frames keep their columns.
CANONICAL_METRICS: tuple[str, ...] = ("cpu", "memory", "disk", "load", "network_in", "network_out")

#: Human units, used by ChatOps and the CLI when they print values.
METRIC_UNITS: dict[str, str] = {
    "cpu": "%",
    "memory": "%",
    "disk": "%",
    "load": "",
    "network_in": "B/s",
    "network_out": "B/s",
}

LONG_COLUMNS: tuple[str, ...] = ("timestamp", "host", "metric", "value")


class Severity(enum.IntEnum):
    """Ordered so that rules can say ``severity >= HIGH``."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            valid = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown severity {text!r}; valid: {valid}") from None

    def __str__(self) -> str:
        return self.name.lower()


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Anomaly:
    """One scored observation the model flagged, as stored in the event store."""

    host: str
    timestamp: datetime
    score: float
    severity: Severity
    model_version: str
    contributions: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    anomaly_id: str = field(default_factory=lambda: new_id("anom"))

    @property
    def top_metric(self) -> str | None:
        if not self.contributions:
            return None
        return max(self.contributions, key=lambda name: self.contributions[name])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timestamp"] = self.timestamp.isoformat()
        data["severity"] = str(self.severity)
        return data


class ActionStatus(enum.StrEnum):
    PENDING = "pending_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    DRY_RUN = "dry_run"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True)
class ActionRecord:
    """What the remediation engine did (or would have done) about one incident."""

    action: str
    instance: str
    result: ActionStatus
    rule: str
    dry_run: bool
    timestamp: datetime = field(default_factory=utcnow)
    action_id: str = field(default_factory=lambda: new_id("act"))
    anomaly_id: str | None = None
    approved_by: str | None = None
    duration_ms: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    #: None until the engine re-checked the condition after the action.
    verified: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timestamp"] = self.timestamp.isoformat()
        data["result"] = self.result.value
        return data


def empty_long_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": pd.Series([], dtype="datetime64[ns, UTC]"),
            "host": pd.Series([], dtype="object"),
            "metric": pd.Series([], dtype="object"),
            "value": pd.Series([], dtype="float64"),
        }
    )


def _to_utc_timestamps(column: pd.Series) -> pd.Series:
    try:
        parsed = pd.to_datetime(column, utc=True)
    except (ValueError, TypeError):
        # pandas infers one format from the first string; rows that write ISO 8601 a little
        # differently ("...T...Z" beside "... ...") then fail. Each is still ISO 8601.
        try:
            parsed = pd.to_datetime(column, utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"metric frame has an unreadable timestamp: {first_line}") from exc
    return parsed.astype("datetime64[ns, UTC]")


def normalize_long(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce a long frame to the contract's dtypes and order; raise naming what is wrong."""
    missing = [c for c in LONG_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"metric frame is missing columns: {', '.join(missing)}")
    out = frame.loc[:, list(LONG_COLUMNS)].copy()
    out["timestamp"] = _to_utc_timestamps(out["timestamp"])
    out["host"] = out["host"].astype(str)
    out["metric"] = out["metric"].astype(str)
    out["value"] = pd.to_numeric(out["value"], errors="coerce").astype("float64")
    return out.sort_values(["timestamp", "host", "metric"], kind="stable").reset_index(drop=True)


def long_to_wide(frame: pd.DataFrame) -> pd.DataFrame:
    """Long samples -> one row per (timestamp, host), one column per canonical metric.

    Metrics absent from the input become NaN columns so every wide frame has the same shape.
    """
    if frame.empty:
        return pd.DataFrame(columns=["timestamp", "host", *CANONICAL_METRICS])
    wide = frame.pivot_table(
        index=["timestamp", "host"], columns="metric", values="value", aggfunc="last"
    )
    wide = wide.reindex(columns=list(CANONICAL_METRICS))
    wide.columns.name = None
    return wide.reset_index().sort_values(["host", "timestamp"], kind="stable").reset_index(drop=True)


def wide_to_long(frame: pd.DataFrame) -> pd.DataFrame:
    metrics = [c for c in CANONICAL_METRICS if c in frame.columns]
    long = frame.melt(
        id_vars=["timestamp", "host"], value_vars=metrics, var_name="metric", value_name="value"
    )
    return normalize_long(long.dropna(subset=["value"]))
