"""Wire format of the scoring API: decoding, validation, encoding.

Requests are decoded by msgspec straight into typed structs, so type checks, unknown-field
checks and out-of-range numbers are found in C while parsing; a 10,000-row batch never
becomes 10,000 Python dicts to walk. msgspec reports *where* a problem is
(``$.instances[3].metrics.cpu``), which becomes the ``field`` of the 422 answer.

The decoded request becomes a :class:`Batch` (column arrays, what every scorer consumes) and
a scorer's :class:`ScoreOutput` becomes the response; both are the seam between the HTTP
layer and whatever scores (pandas FleetModel today, compiled arrays later).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from smartcloudops.domain import CANONICAL_METRICS

#: Most rows one request may carry (issue 4: batches up to 10,000 rows).
MAX_BATCH_ROWS = 10_000
#: Largest request body accepted. A 10,000-row batch is about 2 MB of compact JSON; this
#: leaves room for pretty-printed bodies while bounding what one request can make us buffer.
MAX_BODY_BYTES = 8 * 1024 * 1024

JSON_MEDIA_TYPE = "application/json"


class RequestError(Exception):
    """A request the service refuses; becomes ``{"error": {"code", "message", "field"}}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.field)


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


# -- request structs -----------------------------------------------------------------------

Host = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
# An ISO 8601 / RFC 3339 string or epoch seconds; naive datetimes are taken as UTC.
Timestamp = datetime | float | None


class Metrics(msgspec.Struct, forbid_unknown_fields=True):
    """One value per canonical metric; absent or null means missing (the model sees NaN).

    Spelled out rather than generated from CANONICAL_METRICS so type checkers see the
    fields; a unit test keeps the two in step.
    """

    cpu: float | None = None
    memory: float | None = None
    disk: float | None = None
    load: float | None = None
    network_in: float | None = None
    network_out: float | None = None


class ScoreRow(msgspec.Struct, forbid_unknown_fields=True):
    host: Host
    metrics: Metrics
    timestamp: Timestamp = None


class ScoreBody(msgspec.Struct, forbid_unknown_fields=True):
    """Either a single row (``host``, ``metrics``, ``timestamp``) or ``instances``."""

    host: Host | None = None
    metrics: Metrics | None = None
    timestamp: Timestamp = None
    instances: list[ScoreRow] | None = None


_DECODER = msgspec.json.Decoder(ScoreBody)


# -- what scorers consume and produce ------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Batch:
    """Validated rows as columns.

    ``values`` has one column per entry of ``metrics`` (the canonical order), float64,
    NaN where a metric was not given; ``timestamps`` are timezone-aware UTC.
    """

    hosts: list[str]
    timestamps: list[datetime]
    values: npt.NDArray[np.float64]
    metrics: tuple[str, ...] = CANONICAL_METRICS

    def __len__(self) -> int:
        return len(self.hosts)

    def column(self, metric: str) -> npt.NDArray[np.float64]:
        return self.values[:, self.metrics.index(metric)]


@dataclass(frozen=True, eq=False)
class ScoreOutput:
    """What a scorer returns: one entry per batch row, in batch order."""

    scores: npt.NDArray[np.float64]
    anomaly: npt.NDArray[np.bool_]
    severity: Sequence[str | None]
    contributions: Sequence[dict[str, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scores)


class ScoreResult(msgspec.Struct):
    host: str
    timestamp: datetime
    anomaly: bool
    score: float | None
    severity: str | None
    model_version: str
    contributions: dict[str, float]


class ScoreResponse(msgspec.Struct):
    results: list[ScoreResult]


_ENCODER = msgspec.json.Encoder()


# -- decoding ------------------------------------------------------------------------------

_AT_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN_FIELD = re.compile(r"unknown field `(?P<name>[^`]*)`")
_MISSING_FIELD = re.compile(r"missing required field `(?P<name>[^`]*)`")


def decode_score_request(
    body: bytes,
    *,
    max_rows: int = MAX_BATCH_ROWS,
    now: Callable[[], datetime] | None = None,
) -> Batch:
    """Parse and validate a ``POST /v1/score`` body; raise :class:`RequestError` if bad."""
    try:
        parsed = _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise _schema_error(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise RequestError(400, "malformed_json", f"request body is not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise RequestError(400, "malformed_json", f"request body is not valid UTF-8: {exc.reason}") from exc

    if parsed.instances is not None:
        if parsed.host is not None or parsed.metrics is not None or parsed.timestamp is not None:
            raise RequestError(
                422,
                "invalid_field",
                "give either `instances` or a single row (`host`, `metrics`, `timestamp`), not both",
                "instances",
            )
        rows = parsed.instances
        prefix = "instances[{}]."
        if not rows:
            raise RequestError(422, "empty_batch", "`instances` is empty; send at least one row", "instances")
        if len(rows) > max_rows:
            raise RequestError(
                413,
                "batch_too_large",
                f"batch has {len(rows)} rows; the limit is {max_rows} per request",
                "instances",
            )
    else:
        if parsed.host is None:
            raise RequestError(
                422,
                "missing_field",
                "body needs `host` and `metrics` (one row) or `instances` (a batch)",
                "host",
            )
        if parsed.metrics is None:
            raise RequestError(422, "missing_field", "`metrics` is required", "metrics")
        rows = [ScoreRow(host=parsed.host, metrics=parsed.metrics, timestamp=parsed.timestamp)]
        prefix = ""

    values = np.array([msgspec.structs.astuple(row.metrics) for row in rows], dtype=np.float64)
    # JSON has no NaN/Infinity literals and msgspec refuses out-of-range numbers, so an
    # infinity here means a decoder change; keep the contract explicit anyway.
    if np.isinf(values).any():
        index, col = (int(v) for v in np.argwhere(np.isinf(values))[0])
        raise RequestError(
            422,
            "non_finite",
            "metric values must be finite numbers",
            f"{prefix.format(index)}metrics.{CANONICAL_METRICS[col]}",
        )
    empty = np.isnan(values).all(axis=1)
    if empty.any():
        index = int(np.argmax(empty))
        raise RequestError(
            422,
            "missing_metric",
            "at least one metric value is required; valid metrics: " + ", ".join(CANONICAL_METRICS),
            f"{prefix.format(index)}metrics",
        )

    default_ts = (now or _utcnow)()
    timestamps = [_timestamp(row.timestamp, default_ts, prefix.format(i)) for i, row in enumerate(rows)]
    return Batch(hosts=[row.host for row in rows], timestamps=timestamps, values=values)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _timestamp(value: Timestamp, default: datetime, prefix: str) -> datetime:
    if value is None:
        return default
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    if not math.isfinite(value):
        raise RequestError(422, "invalid_field", "timestamp must be finite", f"{prefix}timestamp")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise RequestError(
            422, "invalid_field", f"timestamp {value} is out of range", f"{prefix}timestamp"
        ) from exc


def _schema_error(text: str) -> RequestError:
    """Turn msgspec's ``"<problem> - at `$.a[1].b`"`` into a 422 naming the field."""
    match = _AT_PATH.match(text)
    message = match["message"] if match else text
    path = (match["path"] or "") if match else ""
    field_path = path.lstrip(".") or None

    def join(name: str) -> str:
        return f"{field_path}.{name}" if field_path else name

    if unknown := _UNKNOWN_FIELD.search(message):
        name = unknown["name"]
        if field_path is not None and field_path.endswith("metrics"):
            return RequestError(
                422,
                "unknown_metric",
                f"unknown metric {name!r}; valid metrics: {', '.join(CANONICAL_METRICS)}",
                join(name),
            )
        return RequestError(422, "unknown_field", f"unknown field {name!r}", join(name))
    if missing := _MISSING_FIELD.search(message):
        return RequestError(422, "missing_field", f"`{missing['name']}` is required", join(missing["name"]))
    if "out of range" in message:
        return RequestError(422, "non_finite", "number is out of range (must be finite)", field_path)
    if field_path is None:
        return RequestError(422, "invalid_body", f"request body must be a JSON object: {message}")
    return RequestError(422, "invalid_field", message, field_path)


# -- encoding ------------------------------------------------------------------------------


def encode_score_response(batch: Batch, output: ScoreOutput, model_version: str) -> bytes:
    scores = output.scores.tolist()
    anomaly = output.anomaly.tolist()
    contributions = output.contributions or [{} for _ in range(len(batch))]
    results = [
        ScoreResult(
            host=host,
            timestamp=ts,
            anomaly=bool(flag),
            # NaN is not JSON; a row the model could not score answers null.
            score=score if math.isfinite(score) else None,
            severity=severity,
            model_version=model_version,
            contributions=contrib,
        )
        for host, ts, flag, score, severity, contrib in zip(
            batch.hosts, batch.timestamps, anomaly, scores, output.severity, contributions, strict=True
        )
    ]
    return _ENCODER.encode(ScoreResponse(results=results))


def encode_json(data: Any) -> bytes:
    return _ENCODER.encode(data)
