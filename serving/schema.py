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
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

#: The canonical metric names (``smartcloudops.domain.CANONICAL_METRICS``; a unit test keeps
#: the two equal). Spelled out here because that module imports pandas, which the service
#: process does not load.
CANONICAL_METRICS: tuple[str, ...] = ("cpu", "memory", "disk", "load", "network_in", "network_out")

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


# gc=False on the request structs: a batch decodes into 20,000 of them, which hold no
# reference cycles; tracking them would only make the collector run (and scan) more often.
class Metrics(msgspec.Struct, forbid_unknown_fields=True, gc=False):
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


class ScoreRow(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    host: Host
    metrics: Metrics
    timestamp: Timestamp = None


class ScoreBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
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
    #: the timestamps as int64 epoch nanoseconds, when the decoder computed them already
    nanos: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self.hosts)

    def column(self, metric: str) -> npt.NDArray[np.float64]:
        return self.values[:, self.metrics.index(metric)]


@dataclass(frozen=True, eq=False)
class ScoreOutput:
    """What a scorer returns: one entry per batch row, in batch order.

    Contributions come either as one dict per row or, cheaper for large batches, as a
    ``(rows, metrics)`` matrix with its metric names (rounded to 4 decimals on the wire).
    """

    scores: npt.NDArray[np.float64]
    anomaly: npt.NDArray[np.bool_]
    severity: Sequence[str | None]
    contributions: Sequence[dict[str, float]] = field(default_factory=list)
    contribution_matrix: npt.NDArray[np.float64] | None = None
    contribution_metrics: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.scores)

    def contribution_dicts(self) -> list[dict[str, float]]:
        if self.contribution_matrix is None:
            return list(self.contributions) or [{} for _ in range(len(self))]
        names = self.contribution_metrics
        return [dict(zip(names, row, strict=True)) for row in _rounded(self.contribution_matrix)]


def _rounded(matrix: npt.NDArray[np.float64]) -> list[list[float]]:
    # Four decimals like FleetModel.score; np.round (scale, rint, unscale) may differ from
    # round(x, 4) by one unit in the 4th decimal on exact ties, and is far faster on a batch.
    if len(matrix) == 1:
        row = matrix[0].tolist()
        if all(map(math.isfinite, row)):
            # np.round's own steps on Python floats (round() of a float is rint: half to
            # even; copysign keeps np.round's -0.0), cheaper than a numpy call for one row.
            return [[math.copysign(round(v * 10_000.0) / 10_000.0, v) for v in row]]
    return list(np.round(matrix, 4).tolist())


# gc=False: thousands of these live for one response and hold no cycles; the collector
# need not track them.
class ScoreResult(msgspec.Struct, gc=False):
    host: str
    timestamp: datetime
    anomaly: bool
    score: float | None
    severity: str | None
    model_version: str
    contributions: Any  # dict[str, float], or CanonicalContributions (same JSON)


class CanonicalContributions(msgspec.Struct, gc=False):
    """Contributions over the canonical metrics: encodes as the same JSON object as the
    dict, built from a row of numbers without a dict per row."""

    cpu: float
    memory: float
    disk: float
    load: float
    network_in: float
    network_out: float


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
        return _single_row(parsed.host, parsed.metrics, parsed.timestamp, now)

    astuple = msgspec.structs.astuple
    values = np.array([v for row in rows for v in astuple(row.metrics)], dtype=np.float64)
    values = values.reshape(len(rows), len(CANONICAL_METRICS))
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

    stamps: list[Timestamp] = list(map(_TIMESTAMP_OF, rows))
    timestamps: list[datetime]
    if set(map(type, stamps)) == {datetime} and set(map(_TZINFO_OF, stamps)) == {UTC}:
        # Aware UTC datetimes (the usual "...Z" or "+00:00") need no work.
        timestamps = stamps  # type: ignore[assignment]
    else:
        default_ts = (now or _utcnow)()
        timestamps = [
            stamp
            if type(stamp) is datetime and stamp.tzinfo is UTC
            else _timestamp(stamp, default_ts, prefix.format(i))
            for i, stamp in enumerate(stamps)
        ]
    micros = _epoch_micros(timestamps)
    # The model counts time in int64 nanoseconds: about 1677-09-22 to 2262-04-11.
    outside = (micros < _MIN_MICROS) | (micros > _MAX_MICROS)
    if outside.any():
        index = int(np.argmax(outside))
        raise RequestError(
            422,
            "invalid_field",
            f"timestamp {timestamps[index].isoformat()} is out of range (years 1678 to 2261)",
            f"{prefix.format(index)}timestamp",
        )
    return Batch(hosts=list(map(_HOST_OF, rows)), timestamps=timestamps, values=values, nanos=micros * 1000)


def _single_row(host: str, metrics: Metrics, stamp: Timestamp, now: Callable[[], datetime] | None) -> Batch:
    """One row (most of the traffic): the batch path's checks on plain Python values, since a
    numpy reduction costs more than the whole check on six numbers."""
    row = msgspec.structs.astuple(metrics)
    if all(value is None for value in row):
        raise RequestError(
            422,
            "missing_metric",
            "at least one metric value is required; valid metrics: " + ", ".join(CANONICAL_METRICS),
            "metrics",
        )
    for name, value in zip(CANONICAL_METRICS, row, strict=True):
        if value is not None and math.isinf(value):
            raise RequestError(422, "non_finite", "metric values must be finite numbers", f"metrics.{name}")
    if type(stamp) is not datetime or stamp.tzinfo is not UTC:
        stamp = _timestamp(stamp, (now or _utcnow)(), "")
    micros = (stamp - _EPOCH) // _MICRO
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        raise RequestError(
            422,
            "invalid_field",
            f"timestamp {stamp.isoformat()} is out of range (years 1678 to 2261)",
            "timestamp",
        )
    return Batch(
        hosts=[host],
        timestamps=[stamp],
        values=np.array([row], dtype=np.float64),
        nanos=np.array([micros * 1000], dtype=np.int64),
    )


_TIMESTAMP_OF = attrgetter("timestamp")
_TZINFO_OF = attrgetter("tzinfo")
_HOST_OF = attrgetter("host")
_MIN_MICROS = -(2**63) // 1000 + 1
_MAX_MICROS = (2**63 - 1) // 1000


def _epoch_micros(timestamps: list[datetime]) -> npt.NDArray[np.int64]:
    """int64 epoch microseconds of aware datetimes, exact."""
    return np.asarray([(stamp - _EPOCH) // _MICRO for stamp in timestamps], dtype=np.int64)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


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


#: Responses of at least this many rows are written by :mod:`serving.batch_response`'s kernel;
#: below it the struct path is as fast (one row is most of the traffic).
KERNEL_ENCODE_ROWS = 64


def encode_score_response(batch: Batch, output: ScoreOutput, model_version: str) -> bytes:
    matrix = output.contribution_matrix
    if len(batch) == 1 and matrix is not None and output.contribution_metrics == CANONICAL_METRICS:
        return _encode_one(batch, output, matrix, model_version)
    if len(batch) >= KERNEL_ENCODE_ROWS and matrix is not None:
        from serving.batch_response import encode_rows

        body = encode_rows(
            batch.hosts, batch_micros(batch), output.scores, output.anomaly, output.severity,
            model_version, matrix, output.contribution_metrics,
        )  # fmt: skip
        if body is not None:
            return body
    return _encode_structs(batch, output, model_version)


def batch_micros(batch: Batch) -> npt.NDArray[np.int64]:
    """The batch's timestamps as int64 epoch microseconds (UTC)."""
    if batch.nanos is not None:
        return batch.nanos // 1000
    return _epoch_micros(batch.timestamps)


def _encode_one(
    batch: Batch, output: ScoreOutput, matrix: npt.NDArray[np.float64], model_version: str
) -> bytes:
    """One row (most of the traffic): the struct path without its numpy calls on one value."""
    value = float(output.scores[0])
    # NaN is not JSON; a row the model could not score answers null.
    score = value if math.isfinite(value) else None
    contributions = CanonicalContributions(*_rounded(matrix)[0])
    result = ScoreResult(
        batch.hosts[0], batch.timestamps[0], bool(output.anomaly[0]), score, output.severity[0],
        model_version, contributions,
    )  # fmt: skip
    return _ENCODER.encode(ScoreResponse(results=[result]))


def _encode_structs(batch: Batch, output: ScoreOutput, model_version: str) -> bytes:
    scores: list[float | None] = output.scores.tolist()
    if not np.isfinite(output.scores).all():
        # NaN is not JSON; a row the model could not score answers null.
        scores = [score if score is not None and math.isfinite(score) else None for score in scores]
    anomaly = output.anomaly.tolist()
    contributions: Sequence[Any]
    if output.contribution_matrix is not None and output.contribution_metrics == CANONICAL_METRICS:
        contributions = [CanonicalContributions(*row) for row in _rounded(output.contribution_matrix)]
    else:
        contributions = output.contribution_dicts()
    results = [
        ScoreResult(host, ts, flag, score, severity, model_version, contrib)
        for host, ts, flag, score, severity, contrib in zip(
            batch.hosts, batch.timestamps, anomaly, scores, output.severity, contributions, strict=True
        )
    ]
    return _ENCODER.encode(ScoreResponse(results=results))


def encode_json(data: Any) -> bytes:
    return _ENCODER.encode(data)
