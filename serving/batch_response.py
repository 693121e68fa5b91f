"""Large ``POST /v1/score`` responses written straight from arrays by one compiled kernel.

Issue 4 asks for 200,000 rows/s on 10,000-row batches: 50 ms per batch for reading,
scoring and answering. Building the answer as 10,000 result structs (plus 10,000
contribution structs and 60,000 rounded Python floats) for msgspec costs about 15 ms of it.
Here the JSON is written by a numba kernel from the arrays the scorer returns:

- pieces that repeat (a host's ``{"host":...,"timestamp":"`` prefix, a severity with the
  model version after it, each metric's key) are encoded once per batch by msgspec and
  copied;
- timestamps are written from epoch microseconds in the form msgspec writes an aware UTC
  datetime (``2026-01-01T00:00:00Z``, ``.ffffff`` only when there are microseconds);
- scores are encoded by msgspec as one list (its shortest round-trip float form, ``null``
  for NaN) and the kernel copies each item;
- contributions are rounded to four decimals exactly as ``np.round(x, 4)`` does and written
  in the form msgspec gives that float (``0.1234``, ``0.5``, ``1.0``, ``0.0``).

The bytes are the same as the struct path's (:func:`serving.schema.encode_score_response`);
a unit test holds the two equal byte for byte. A value the kernel does not write in
msgspec's form (a negative or huge contribution, NaN) makes it give up, and the caller
encodes through the structs instead: never a different answer, only a slower one.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np
import numpy.typing as npt

# ml.compiled points numba's cache at SMARTCLOUDOPS_HOME and keeps SciPy out of the process
# before numba loads; import it first so this module's kernel is cached the same way.
import ml.compiled  # noqa: F401  # isort: skip
import numba

_ENCODER = msgspec.json.Encoder()

#: Contributions at or above this are left to msgspec (it switches to exponent form at 1e16).
_CONTRIBUTION_LIMIT = 1e9
#: Room given to one contribution's text (below the limit: 9 integer digits, ".", 4
#: decimals) and to one timestamp's (``YYYY-MM-DDTHH:MM:SS.ffffffZ``, 27; years past 9999
#: from arbitrary int64 microseconds, 29). :func:`_write` checks every row against the same
#: figures, written out there, before writing it.
_CONTRIBUTION_CHARS = 24
_TIMESTAMP_CHARS = 32


@numba.njit(cache=True, nogil=True)
def _put(out: npt.NDArray[np.uint8], pos: int, blob: npt.NDArray[np.uint8], lo: int, hi: int) -> int:
    for i in range(lo, hi):
        out[pos] = blob[i]
        pos += 1
    return pos


@numba.njit(cache=True, nogil=True)
def _put_digits(out: npt.NDArray[np.uint8], pos: int, value: int, width: int) -> int:
    """``value`` in decimal, zero-padded to ``width`` digits (more if it needs them)."""
    digits = 1
    scale = 10
    while value >= scale:
        digits += 1
        scale *= 10
    digits = max(digits, width)
    for k in range(digits - 1, -1, -1):
        out[pos + k] = 48 + value % 10
        value //= 10
    return pos + digits


@numba.njit(cache=True, nogil=True)
def _put_timestamp(out: npt.NDArray[np.uint8], pos: int, micros: int) -> int:
    days = micros // 86_400_000_000
    rest = micros - days * 86_400_000_000
    # Civil date from days since 1970-01-01 (H. Hinnant's days_from_civil, inverted).
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    seconds = rest // 1_000_000
    fraction = rest - seconds * 1_000_000
    pos = _put_digits(out, pos, year, 4)
    out[pos] = 45  # -
    pos = _put_digits(out, pos + 1, month, 2)
    out[pos] = 45
    pos = _put_digits(out, pos + 1, day, 2)
    out[pos] = 84  # T
    pos = _put_digits(out, pos + 1, seconds // 3600, 2)
    out[pos] = 58  # :
    pos = _put_digits(out, pos + 1, (seconds // 60) % 60, 2)
    out[pos] = 58
    pos = _put_digits(out, pos + 1, seconds % 60, 2)
    if fraction:
        out[pos] = 46  # .
        pos = _put_digits(out, pos + 1, fraction, 6)
    out[pos] = 90  # Z
    return pos + 1


@numba.njit(cache=True, nogil=True)
def _put_rounded(out: npt.NDArray[np.uint8], pos: int, x: float, limit: float) -> int:
    """``np.round(x, 4)`` as msgspec writes it; -1 if ``x`` is not in ``[0, limit)`` (or is
    -0.0), where that form is not msgspec's."""
    if not (0.0 <= x < limit) or (x == 0.0 and np.signbit(x)):
        return -1
    # numpy rounds to 4 decimals as rint(x * 1e4) / 1e4; the shortest text of that double
    # is the integer k / 10^4 written out, trailing zeros dropped (one digit kept).
    k = int(np.rint(x * 10_000.0))
    pos = _put_digits(out, pos, k // 10_000, 1)
    out[pos] = 46
    pos += 1
    fraction = k % 10_000
    if fraction == 0:
        out[pos] = 48
        return pos + 1
    width = 4
    while fraction % 10 == 0:
        fraction //= 10
        width -= 1
    return _put_digits(out, pos, fraction, width)


@numba.njit(cache=True, nogil=True)
def _write(
    out: npt.NDArray[np.uint8],
    pieces: npt.NDArray[np.uint8],
    bounds: npt.NDArray[np.int64],
    host_code: npt.NDArray[np.intp],
    micros: npt.NDArray[np.int64],
    anomaly: npt.NDArray[np.bool_],
    scores_json: npt.NDArray[np.uint8],
    severity_code: npt.NDArray[np.intp],
    contributions: npt.NDArray[np.float64],
    first_anomaly_piece: int,
    first_severity_piece: int,
    first_key_piece: int,
    limit: float,
) -> int:
    """The response into ``out``; its length, or -1 where msgspec must write it instead.

    ``pieces[bounds[i]:bounds[i + 1]]`` is piece ``i``: host prefixes first, then the two
    ``anomaly`` pieces (false, true), the severity pieces, the metric keys, the row end.
    ``scores_json`` is msgspec's ``[s0,s1,...]`` of the scores. A row that might not fit
    in what is left of ``out`` (its pieces and score, 32 bytes for the timestamp, 24 per
    contribution) gives up (-1) rather than write past the end; the caller sizes ``out`` so
    that this never happens.
    """
    n, m = contributions.shape
    last = len(bounds) - 2
    pos = _put(out, 0, pieces, bounds[last], bounds[last + 1])  # {"results":[
    score_at = 1  # after "["
    stamp_at = stamp_end = 0
    keys = bounds[first_key_piece + m] - bounds[first_key_piece]
    for r in range(n):
        end = score_at
        while scores_json[end] != 44 and scores_json[end] != 93:  # , or ]
            end += 1
        h = host_code[r]
        a = first_anomaly_piece + (1 if anomaly[r] else 0)
        s = first_severity_piece + severity_code[r]
        need = (
            (bounds[h + 1] - bounds[h]) + 32 + (bounds[a + 1] - bounds[a]) + (end - score_at)
            + (bounds[s + 1] - bounds[s]) + keys + 24 * m + 5
        )  # fmt: skip
        if len(out) - pos < need:
            return -1
        if r:
            out[pos] = 44  # ,
            pos += 1
        pos = _put(out, pos, pieces, bounds[h], bounds[h + 1])
        if r and micros[r] == micros[r - 1]:
            # Rows of one scrape share a timestamp: copy the text instead of writing it.
            pos = _put(out, pos, out, stamp_at, stamp_end)
        else:
            stamp_at = pos
            pos = _put_timestamp(out, pos, micros[r])
            stamp_end = pos
        pos = _put(out, pos, pieces, bounds[a], bounds[a + 1])
        pos = _put(out, pos, scores_json, score_at, end)
        score_at = end + 1
        pos = _put(out, pos, pieces, bounds[s], bounds[s + 1])
        for j in range(m):
            k = first_key_piece + j
            pos = _put(out, pos, pieces, bounds[k], bounds[k + 1])
            pos = _put_rounded(out, pos, contributions[r, j], limit)
            if pos < 0:
                return -1
        out[pos] = 125  # }
        out[pos + 1] = 125
        pos += 2
    out[pos] = 93  # ]
    out[pos + 1] = 125
    return pos + 2


def encode_rows(
    hosts: Sequence[str],
    micros: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float64],
    anomaly: npt.NDArray[np.bool_],
    severity: Sequence[str | None],
    model_version: str,
    contributions: npt.NDArray[np.float64],
    metric_names: Sequence[str],
) -> bytes | None:
    """The ``{"results": [...]}`` body, or None when a value needs msgspec's own encoder."""
    n = len(hosts)
    if not (len(micros) == len(scores) == len(anomaly) == len(severity) == n):
        raise ValueError("columns of different lengths")
    if contributions.shape != (n, len(metric_names)):
        raise ValueError("contributions do not match the rows and metrics")
    host_index: dict[str, int] = dict.fromkeys(hosts, 0)
    for code, host in enumerate(host_index):
        host_index[host] = code
    severity_index: dict[str | None, int] = dict.fromkeys(severity, 0)
    for code, level in enumerate(severity_index):
        severity_index[level] = code
    encode = _ENCODER.encode
    version = encode(model_version)
    pieces = [b'{"host":' + encode(host) + b',"timestamp":"' for host in host_index]
    pieces += [b'","anomaly":false,"score":', b'","anomaly":true,"score":']
    pieces += [
        b',"severity":' + encode(level) + b',"model_version":' + version + b',"contributions":{'
        for level in severity_index
    ]
    pieces += [(b"," if j else b"") + encode(name) + b":" for j, name in enumerate(metric_names)]
    pieces.append(b'{"results":[')
    first_anomaly = len(host_index)
    first_severity = first_anomaly + 2
    first_key = first_severity + len(severity_index)
    sizes = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    bounds = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(sizes, out=bounds[1:])
    scores_json = encode(scores.tolist())
    # Every row at its longest besides its score: the largest host and severity pieces,
    # every key, the widest numbers, "}}", "," and the closing "]}"; the scores' own text
    # is counted exactly.
    row_most = (
        int(sizes[:first_anomaly].max()) + _TIMESTAMP_CHARS + int(sizes[first_anomaly : first_severity].max())
        + int(sizes[first_severity:first_key].max()) + int(sizes[first_key:-1].sum())
        + len(metric_names) * _CONTRIBUTION_CHARS + 5
    )  # fmt: skip
    out = np.empty(n * row_most + len(scores_json) + int(sizes[-1]) + 2, dtype=np.uint8)
    host_code = np.fromiter(map(host_index.__getitem__, hosts), dtype=np.intp, count=n)
    severity_code = np.fromiter(map(severity_index.__getitem__, severity), dtype=np.intp, count=n)
    size = _write(
        out,
        np.frombuffer(b"".join(pieces), dtype=np.uint8),
        bounds,
        host_code,
        np.ascontiguousarray(micros, dtype=np.int64),
        np.ascontiguousarray(anomaly, dtype=np.bool_),
        np.frombuffer(scores_json, dtype=np.uint8),
        severity_code,
        np.ascontiguousarray(contributions, dtype=np.float64),
        first_anomaly,
        first_severity,
        first_key,
        _CONTRIBUTION_LIMIT,
    )
    if size < 0:
        return None
    return out[:size].tobytes()


def warm_up() -> None:
    """Compile (or load from numba's disk cache) the kernel before the first large batch."""
    encode_rows(
        ["warm-up"], np.zeros(1, dtype=np.int64), np.zeros(1), np.zeros(1, dtype=np.bool_), [None], "0",
        np.zeros((1, 1)), ["cpu"],
    )  # fmt: skip
