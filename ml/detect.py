"""The engine behind ``smartcloudops detect``: one ``timestamp,value`` series in, scores out.

The series is treated as a one-metric "host" and goes through exactly the pipeline's code: the
default candidate's detector, its fit-time threshold and the same alarm handling
(:func:`ml.training.make_candidate`). The detector is fitted on the first ``train_fraction`` of
the rows (in time order) and never sees labels.

Input handling (:func:`read_series_csv`, :func:`detect_series`):

- empty file, no data rows, missing ``timestamp``/``value`` columns, missing or unparseable
  timestamps, non-numeric or infinite values, a series too short for the training fraction,
  an all-missing series: :class:`~smartcloudops.errors.InputError` naming the problem (and
  the CSV line numbers where that helps);
- unsorted timestamps: scored in time order (stable sort), output in the *input* order;
- duplicate timestamps: kept, one output row each, in their input order;
- naive timestamps are UTC; offsets are converted to UTC;
- missing values (empty cell, ``NaN``, ``null``): the detector carries the last value
  forward for its features; the row is still output, with an empty ``score`` and
  ``is_anomaly`` false (no value, no claim);
- a constant series: valid; the detector's scale is floored, so it scores 0 and flags
  nothing until the value departs from the constant.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ml.detectors.base import utc_nanos
from ml.training import DEFAULT_CANDIDATE, make_candidate
from smartcloudops.errors import InputError

#: The fewest non-missing training rows :func:`detect_series` accepts.
MIN_TRAIN_ROWS = 30
_MISSING = {"", "nan", "NaN", "NAN", "null", "NULL", "None", "NA", "N/A", "n/a"}
_HOST = "series"


def read_series_csv(path: str | Path) -> pd.DataFrame:
    """Read and validate a ``timestamp,value`` CSV (extra columns are kept as text).

    Returns ``timestamp`` as UTC datetimes and ``value`` as float (NaN where missing), in the
    file's row order.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"input file not found: {p}")
    try:
        raw = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"input file {p} is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"input file {p} is not a readable CSV: {exc}") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in ("timestamp", "value") if c not in raw.columns]
    if missing:
        raise InputError(
            f"input file {p} lacks column(s) {', '.join(missing)}; expected a header "
            f"'timestamp,value' (found: {', '.join(raw.columns) or 'nothing'})"
        )
    if raw.empty:
        raise InputError(f"input file {p} has a header but no data rows")

    stamps = raw["timestamp"].str.strip()
    parsed = pd.to_datetime(stamps.where(stamps != ""), utc=True, errors="coerce", format="mixed")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        lines = ", ".join(f"line {i + 2} ({stamps.iloc[i]!r})" for i in bad[:5])
        raise InputError(f"{bad.size} missing or unparseable timestamp(s) in {p}: {lines}")

    text = raw["value"].str.strip()
    is_missing = text.isin(_MISSING).to_numpy()
    values = pd.to_numeric(text.where(~is_missing), errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(np.isnan(values) & ~is_missing)
    if bad.size:
        lines = ", ".join(f"line {i + 2} ({text.iloc[i]!r})" for i in bad[:5])
        raise InputError(f"{bad.size} non-numeric value(s) in {p}: {lines}")
    inf = np.flatnonzero(np.isinf(values))
    if inf.size:
        lines = ", ".join(f"line {i + 2}" for i in inf[:5])
        raise InputError(f"infinite value(s) in {p}: {lines}")

    out = raw.copy()
    out["timestamp"] = parsed
    out["value"] = values
    return out


def detect_series(
    frame: pd.DataFrame, train_fraction: float = 0.15, *, candidate: str = DEFAULT_CANDIDATE
) -> pd.DataFrame:
    """Score one ``timestamp,value`` series; one output row per input row, in input order.

    Adds ``score`` (calibrated: 1.0 is the alarm line; NaN where the value is missing) and
    ``is_anomaly`` (bool, after alarm handling) to the input columns.
    """
    if not isinstance(train_fraction, int | float) or not 0.0 < float(train_fraction) < 1.0:
        raise InputError(f"train fraction must be between 0 and 1 (exclusive), got {train_fraction!r}")
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"expected a DataFrame, got {type(frame).__name__}")
    missing = [c for c in ("timestamp", "value") if c not in frame.columns]
    if missing:
        raise InputError(f"series lacks column(s): {', '.join(missing)}")
    n = len(frame)
    if n == 0:
        raise InputError("series is empty")
    ts = utc_nanos(frame["timestamp"])
    values = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(np.isnan(values) & frame["value"].notna().to_numpy())
    if bad.size:
        raise InputError(f"non-numeric value {frame['value'].iloc[bad[0]]!r} at row {bad[0]}")
    if np.isinf(values).any():
        raise InputError(f"infinite value at row {int(np.flatnonzero(np.isinf(values))[0])}")
    if np.isnan(values).all():
        raise InputError("series has no values (every value is missing)")

    order = np.argsort(ts, kind="stable")
    n_train = int(n * float(train_fraction))
    train_rows = order[:n_train]
    usable = int(np.count_nonzero(~np.isnan(values[train_rows])))
    if usable < MIN_TRAIN_ROWS:
        raise InputError(
            f"series too short: {n} rows with train fraction {train_fraction} give {usable} "
            f"training values; need at least {MIN_TRAIN_ROWS} "
            f"(about {int(np.ceil(MIN_TRAIN_ROWS / float(train_fraction)))} rows)"
        )

    wide = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(ts[order], utc=True),
            "host": _HOST,
            "value": values[order],
        }
    )
    model = make_candidate(candidate)
    model.min_host_rows = MIN_TRAIN_ROWS
    train = wide.iloc[:n_train]
    model.fit(train)
    # As the pipeline validates (ml.training.evaluate_model): the training rows are replayed
    # as history (features' context, the alarm policy's memory), then the rest is scored as
    # live scoring would. The training rows' own output is their in-sample scoring.
    in_sample = model.score(train, stateful=False)
    model.prime(train, score=True)
    held_out = model.score(wide.iloc[n_train:], stateful=True)
    score = np.empty(n)
    flags = np.empty(n, dtype=bool)
    score[order] = np.concatenate([in_sample["score"].to_numpy(), held_out["score"].to_numpy()])
    flags[order] = np.concatenate([in_sample["anomaly"].to_numpy(), held_out["anomaly"].to_numpy()])
    absent = np.isnan(values)
    score[absent] = np.nan
    flags[absent] = False

    out = frame.copy()
    out["score"] = score
    out["is_anomaly"] = flags
    return out


def write_detect_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write :func:`detect_series` output; UTC timestamps as ``YYYY-MM-DD HH:MM:SS[.ffffff]``."""
    out = frame.copy()
    if isinstance(out["timestamp"].dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(
        out["timestamp"]
    ):
        stamps = pd.to_datetime(out["timestamp"], utc=True)
        whole = bool((stamps.dt.microsecond == 0).all() and (stamps.dt.nanosecond == 0).all())
        out["timestamp"] = stamps.dt.strftime("%Y-%m-%d %H:%M:%S" if whole else "%Y-%m-%d %H:%M:%S.%f")
    out["score"] = out["score"].round(6)
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    out.to_csv(tmp, index=False)
    tmp.replace(target)  # never leave a half-written output behind
