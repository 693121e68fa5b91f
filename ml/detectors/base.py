"""The detector contract shared by every family.

A detector follows scikit-learn's estimator API (parameters only in ``__init__``, learned
state ends in ``_``, ``fit`` returns ``self``, ``clone``/``get_params`` work) and Merlion's
split of work: the public methods here validate and convert the input, a subclass implements
two private methods on clean numpy data:

- ``_fit(segments)`` learns whatever the family needs;
- ``_score(segment, start) -> (raw, contributions)`` returns raw scores (higher = more
  anomalous) and non-negative per-metric contributions for rows ``start:`` of one
  time-sorted segment; rows before ``start`` are history that only feeds features.

Scoring is layered, each layer a separate public method:

``score_samples`` (raw) → ``decision_function`` (calibrated by the fitted threshold
object: 0 = typical, 1.0 = the alarm line, see :mod:`ml.thresholds`) → ``predict``
(bool, calibrated ≥ 1.0). Alarm handling (M-of-N, cooldown) is a later, separate step
(:mod:`ml.alarms`).

Input is a *wide* frame: a DatetimeIndex or a ``timestamp`` column (UTC; naive is taken as
UTC), one numeric column per metric, optionally a ``host`` column. Rows of different hosts
are separate *segments*: features never cross a host boundary, but the model is shared
(that is how the fleet-wide fallback detector learns from all hosts pooled). Rows need not
be sorted; results come back in input order. Missing values are carried forward from the
previous row of the same host (causal), else filled with the training median.

``fit(X, y)`` accepts an optional boolean ``y`` marking rows already known to be anomalous
(e.g. labelled incidents in the training period): they still give context to features but
are left out of model fitting and of the threshold. Unsupervised use passes no ``y``.
"""

# ruff: noqa: N803  (X is scikit-learn's name for a feature matrix)
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone

from ml.alarms import score_moments
from ml.features import DAY_NS, median_step_ns
from ml.severity import severity_labels
from ml.thresholds import CALIBRATED_THRESHOLD, QuantileThreshold, Threshold
from smartcloudops.errors import InputError, ModelError

_RESERVED = ("timestamp", "host")


@dataclass
class Segment:
    """One host's rows, sorted by time, as numpy arrays."""

    key: str
    timestamps: np.ndarray  # int64 epoch ns, UTC, non-decreasing
    values: np.ndarray  # (n, m) float64, NaN = missing
    positions: np.ndarray  # row positions in the caller's frame; -1 for context rows
    fit_mask: np.ndarray | None = None  # rows usable for fitting (None: all)

    def __len__(self) -> int:
        return len(self.timestamps)


@dataclass(frozen=True)
class ScoreDetails:
    """Every scoring layer at once, rows in the caller's order."""

    raw: np.ndarray
    calibrated: np.ndarray
    flags: np.ndarray
    contributions: np.ndarray  # (n, m); each row sums to 1 (0 when nothing stands out)
    metrics: tuple[str, ...]

    def severities(self) -> list[str | None]:
        return severity_labels(self.calibrated, self.flags)


def utc_nanos(values: Any, what: str = "timestamp") -> np.ndarray:
    """Parse timestamps to int64 UTC epoch nanoseconds, naming the bad ones on failure."""
    try:
        parsed = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    except (TypeError, ValueError) as exc:
        raise InputError(f"unparseable {what} values: {exc}") from exc
    index = pd.DatetimeIndex(parsed)
    bad = np.flatnonzero(index.isna())
    if bad.size:
        raw = np.asarray(values, dtype=object)
        examples = ", ".join(f"row {i}: {raw[i]!r}" for i in bad[:3])
        raise InputError(f"{bad.size} missing or unparseable {what}(s) ({examples})")
    return np.asarray(index.as_unit("ns").asi8, dtype=np.int64)


def metric_matrix(frame: pd.DataFrame, metrics: Sequence[str]) -> np.ndarray:
    """``(n, m)`` float matrix of the metric columns; absent columns are NaN.

    Raises :class:`InputError` naming the column for non-numeric or infinite values, or
    when the frame has none of the metrics at all.
    """
    present = [m for m in metrics if m in frame.columns]
    if not present and len(frame):
        raise InputError(f"input has none of the model's metrics: {', '.join(metrics)}")
    out = np.full((len(frame), len(metrics)), np.nan)
    for j, metric in enumerate(metrics):
        if metric not in frame.columns:
            continue
        col = frame[metric]
        if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
            numeric = col.to_numpy(dtype=float, na_value=np.nan)  # fast path: already numbers
        else:
            numeric = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            bad = np.flatnonzero(np.isnan(numeric) & col.notna().to_numpy())
            if bad.size:
                example = col.iloc[bad[0]]
                raise InputError(f"non-numeric value {example!r} in column {metric!r} (row {bad[0]})")
        if np.isinf(numeric).any():
            raise InputError(f"infinite value in column {metric!r}")
        out[:, j] = numeric
    return out


def _forward_fill(values: np.ndarray) -> np.ndarray:
    mask = np.isnan(values)
    if not mask.any():
        return values
    idx = np.where(~mask, np.arange(len(values))[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    filled = values[idx, np.arange(values.shape[1])]
    # Leading NaNs stay NaN (index 0 was NaN): the caller fills them with training medians.
    return filled


class BaseDetector(BaseEstimator):  # type: ignore[misc]
    """Shared validation and layering; subclasses implement ``_fit`` and ``_score``."""

    #: Short family name, used for model names and logs.
    family: ClassVar[str] = "base"
    #: Fewer usable training rows than this is an error naming the count.
    min_fit_rows: ClassVar[int] = 10

    # Subclasses declare ``metrics`` and ``threshold`` among their __init__ parameters.
    metrics: Sequence[str] | None
    threshold: Threshold | None

    # -- the two methods a new detector implements ---------------------------------------
    def _fit(self, segments: list[Segment]) -> None:
        raise NotImplementedError

    def _score(self, segment: Segment, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _resolve(self) -> None:
        """Turn duration parameters into row counts once ``step_ns_`` is known (optional)."""

    def required_context(self) -> int:
        """Rows of history a live scorer must keep so one row scores as in a batch."""
        return 0

    # -- public API ----------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any = None) -> Self:
        segments = self._segments(X, fitting=True, y=y)
        self._check_usable(segments)
        steps = [median_step_ns(s.timestamps) for s in segments if len(s) > 1]
        self.step_ns_ = float(np.median(steps)) if steps else 0.0
        stacked = np.vstack([s.values if s.fit_mask is None else s.values[s.fit_mask] for s in segments])
        with np.errstate(all="ignore"):
            fill = np.nanmedian(stacked, axis=0) if stacked.size else np.zeros(len(self.metrics_))
        empty = [m for m, v in zip(self.metrics_, fill, strict=True) if np.isnan(v)]
        if empty:
            raise InputError(f"no values in the training data for metric(s): {', '.join(empty)}")
        self.fill_values_ = fill
        self._resolve()
        segments = [self._exclude_tainted(self._impute(s)) for s in segments]
        self.n_fit_rows_ = self._check_usable(segments)
        self._fit(segments)
        raw_parts = []
        for seg in segments:
            seg_raw = self._score(seg)[0]
            raw_parts.append(seg_raw if seg.fit_mask is None else seg_raw[seg.fit_mask])
        base = self.threshold if self.threshold is not None else self.default_threshold()
        rows_per_day = DAY_NS / self.step_ns_ if self.step_ns_ > 0 else None
        train_raw = np.concatenate(raw_parts)
        self.threshold_ = clone(base).fit(train_raw, rows_per_day=rows_per_day)
        # The training rows' calibrated scores, summed up: the history an alarm policy's score
        # likelihood starts from (ml.alarms), so a host's first live rows are judged at once.
        calibrated = self.calibrate(train_raw)
        self.score_moments_ = score_moments(calibrated)
        # ... and the highest of them: the reference of the policy's score record.
        self.score_max_ = float(np.nanmax(calibrated, initial=0.0))
        self.history_start_ns_ = int(min(int(seg.timestamps[0]) for seg in segments))
        return self

    def default_threshold(self) -> Threshold:
        """The threshold rule used when the ``threshold`` parameter is None."""
        return QuantileThreshold()

    def _check_usable(self, segments: list[Segment]) -> int:
        usable = sum(int(s.fit_mask.sum()) if s.fit_mask is not None else len(s) for s in segments)
        if usable < self.min_fit_rows:
            raise InputError(
                f"{type(self).__name__} needs at least {self.min_fit_rows} training rows "
                f"(outside known anomalies), got {usable}"
            )
        return usable

    def score_details(self, X: pd.DataFrame, *, context: pd.DataFrame | None = None) -> ScoreDetails:
        """All layers for the rows of ``X``; ``context`` rows (earlier history) feed features only."""
        self._check_fitted()
        segments = self._segments(X, fitting=False, context=context)
        n = len(X)
        raw = np.full(n, np.nan)
        contrib = np.zeros((n, len(self.metrics_)))
        for seg in segments:
            r, c = self.score_segment(seg)
            positions = seg.positions[len(seg) - len(r) :]
            own = positions >= 0
            raw[positions[own]] = r[own]
            contrib[positions[own]] = c[own]
        return self._details(raw, contrib)

    def score_segment(self, segment: Segment) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores and normalised contributions for the rows of ``segment`` from its first
        non-context row (``positions >= 0``) on; earlier rows only feed features.

        The fast path for callers holding numpy data (the fleet's live scorer).
        """
        own = np.flatnonzero(segment.positions >= 0)
        start = int(own[0]) if own.size else len(segment)
        raw, contrib = self._score(self._impute(segment), start)
        total = contrib.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            normalised = np.where(total > 0, contrib / np.where(total > 0, total, 1.0), 0.0)
        return raw, normalised

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return np.asarray(self.threshold_.calibrate(raw))

    def _details(self, raw: np.ndarray, contrib: np.ndarray) -> ScoreDetails:
        calibrated = self.calibrate(raw)
        return ScoreDetails(
            raw=raw,
            calibrated=calibrated,
            flags=calibrated >= CALIBRATED_THRESHOLD,
            contributions=contrib,
            metrics=tuple(self.metrics_),
        )

    def score_samples(self, X: pd.DataFrame) -> np.ndarray:
        """Raw anomaly scores, higher = more anomalous (scale depends on the family)."""
        return self.score_details(X).raw

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated scores: 0 = typical training score, 1.0 = the alarm line."""
        return self.score_details(X).calibrated

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Bool per row: calibrated score ≥ 1.0 (before alarm handling)."""
        return self.score_details(X).flags

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per-metric share of each row's anomaly (rows sum to 1, or 0 if nothing stands out)."""
        details = self.score_details(X)
        return pd.DataFrame(details.contributions, columns=list(self.metrics_), index=X.index)

    # -- validation ----------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise ModelError(f"{type(self).__name__} is not fitted; call fit() first")

    def _infer_metrics(self, X: pd.DataFrame) -> list[str]:
        if self.metrics is not None:
            metrics = [str(m) for m in self.metrics]
            missing = [m for m in metrics if m not in X.columns]
            if missing:
                raise InputError(f"training data lacks metric column(s): {', '.join(missing)}")
            return metrics
        candidates = [c for c in X.columns if c not in _RESERVED]
        metrics = []
        for col in candidates:
            numeric = pd.to_numeric(X[col], errors="coerce")
            if numeric.notna().any():
                metrics.append(str(col))
        if not metrics:
            raise InputError("no numeric metric columns with values in the training data")
        return metrics

    def _segments(
        self,
        X: pd.DataFrame,
        *,
        fitting: bool,
        y: Any = None,
        context: pd.DataFrame | None = None,
    ) -> list[Segment]:
        if not isinstance(X, pd.DataFrame):
            raise InputError(f"expected a pandas DataFrame, got {type(X).__name__}")
        if fitting:
            self.metrics_ = self._infer_metrics(X)
        mask = None
        if y is not None:
            known = np.asarray(y, dtype=bool).ravel()
            if len(known) != len(X):
                raise InputError(f"y has {len(known)} rows but X has {len(X)}")
            mask = ~known
        parts = [(X, np.arange(len(X)), mask)]
        if context is not None and len(context):
            parts.insert(0, (context, np.full(len(context), -1), None))
        ts_all, host_all, val_all, pos_all, mask_all = [], [], [], [], []
        for frame, positions, fmask in parts:
            ts_all.append(self._timestamps(frame))
            host_all.append(
                frame["host"].astype(str).to_numpy() if "host" in frame.columns else np.full(len(frame), "")
            )
            val_all.append(self._values(frame))
            pos_all.append(positions)
            mask_all.append(fmask if fmask is not None else np.ones(len(frame), dtype=bool))
        ts = np.concatenate(ts_all)
        hosts = np.concatenate(host_all)
        values = np.vstack(val_all)
        positions = np.concatenate(pos_all)
        fit_mask = np.concatenate(mask_all)
        segments = []
        for host in pd.unique(hosts):
            rows = np.flatnonzero(hosts == host)
            order = rows[np.argsort(ts[rows], kind="stable")]
            segments.append(
                Segment(
                    key=str(host),
                    timestamps=ts[order],
                    values=values[order],
                    positions=positions[order],
                    fit_mask=fit_mask[order] if mask is not None else None,
                )
            )
        return segments

    @staticmethod
    def _timestamps(frame: pd.DataFrame) -> np.ndarray:
        if "timestamp" in frame.columns:
            return utc_nanos(frame["timestamp"])
        if isinstance(frame.index, pd.DatetimeIndex):
            return utc_nanos(frame.index)
        raise InputError("input needs a 'timestamp' column or a DatetimeIndex")

    def _values(self, frame: pd.DataFrame) -> np.ndarray:
        return metric_matrix(frame, self.metrics_)

    def _exclude_tainted(self, segment: Segment) -> Segment:
        """Also leave out rows whose history window reaches back into a known anomaly.

        Right after a labelled incident, rolling statistics still contain it; those rows are
        not "normal" either, and would inflate the threshold.
        """
        if segment.fit_mask is None or segment.fit_mask.all():
            return segment
        reach = self.required_context()
        known = ~segment.fit_mask
        if reach > 0:
            counts = np.concatenate([[0], np.cumsum(known)])
            idx = np.arange(len(known))
            known = (counts[idx + 1] - counts[np.maximum(idx - reach, 0)]) > 0
        return Segment(segment.key, segment.timestamps, segment.values, segment.positions, ~known)

    def _impute(self, segment: Segment) -> Segment:
        values = _forward_fill(segment.values)
        if np.isnan(values).any():
            values = np.where(np.isnan(values), self.fill_values_[None, :], values)
        return Segment(segment.key, segment.timestamps, values, segment.positions, segment.fit_mask)
