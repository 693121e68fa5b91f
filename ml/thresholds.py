"""Label-free thresholds, which also define the calibrated score scale.

A threshold object learns two numbers from a detector's *training* raw scores: a
``baseline_`` (the typical score) and a ``threshold_`` (the alarm line). Calibration is the
affine map ``(raw - baseline_) / (threshold_ - baseline_)`` clipped at 0, so on the
calibrated scale 0 means "typical", :data:`CALIBRATED_THRESHOLD` (1.0) is the alarm line for
every detector family, and 2.0 means twice as far from typical as the alarm line. Severity
bands (:mod:`ml.severity`) live on that scale.

Swap the rule by passing another object as a detector's ``threshold`` parameter; a new rule
is one small subclass implementing :meth:`Threshold._fit_line`.
"""

from __future__ import annotations

from typing import Self

import numpy as np
from sklearn.base import BaseEstimator

from smartcloudops.errors import InputError

#: Calibrated scores at or above this value are flagged.
CALIBRATED_THRESHOLD = 1.0

# Below this spread, training scores were (nearly) constant: keep the scale finite.
_MIN_SPREAD = 1e-9


class Threshold(BaseEstimator):  # type: ignore[misc]
    """Base class: ``fit(train_raw_scores)`` then ``calibrate(raw_scores)``."""

    def fit(self, scores: np.ndarray, rows_per_day: float | None = None) -> Self:
        """Learn the line from training scores.

        ``rows_per_day`` (the detector's sampling rate) lets a rule state its risk per unit of
        time rather than per row; rules that do not need it ignore it.
        """
        values = np.asarray(scores, dtype=float).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise InputError("cannot fit a threshold: no finite training scores")
        self.rows_per_day_ = rows_per_day
        baseline, line = self._fit_line(values)
        self.baseline_ = float(baseline)
        self.threshold_ = float(max(line, baseline + max(_MIN_SPREAD, abs(baseline) * 1e-9)))
        self.n_scores_ = int(values.size)
        return self

    def _fit_line(self, scores: np.ndarray) -> tuple[float, float]:
        raise NotImplementedError

    def calibrate(self, scores: np.ndarray) -> np.ndarray:
        raw = np.asarray(scores, dtype=float)
        out = (raw - self.baseline_) / (self.threshold_ - self.baseline_)
        return np.clip(out, 0.0, None)


class QuantileThreshold(Threshold):
    """Alarm line = baseline + ``margin`` × (``quantile`` of training scores − baseline).

    The baseline is the training median. ``margin`` > 1 leaves head-room because training
    scores are in-sample (slightly optimistic) and a quantile of a finite sample is noisy.
    """

    def __init__(self, quantile: float = 0.999, margin: float = 1.25) -> None:
        self.quantile = quantile
        self.margin = margin

    def _fit_line(self, scores: np.ndarray) -> tuple[float, float]:
        if not 0.5 <= self.quantile < 1.0:
            raise InputError(f"quantile must be in [0.5, 1), got {self.quantile}")
        if self.margin <= 0:
            raise InputError(f"margin must be > 0, got {self.margin}")
        baseline = float(np.median(scores))
        q = float(np.quantile(scores, self.quantile))
        return baseline, baseline + self.margin * (q - baseline)


class PotThreshold(Threshold):
    """Peaks-over-threshold (extreme value theory, as in SPOT, Siffer et al. 2017).

    Fit a generalised Pareto distribution to the excesses over the ``initial_quantile`` of
    training scores and put the line where the tail probability is ``risk``. Falls back to
    the empirical maximum when too few excesses exist to fit a tail.
    """

    def __init__(self, risk: float = 1e-4, initial_quantile: float = 0.98, margin: float = 1.0) -> None:
        self.risk = risk
        self.initial_quantile = initial_quantile
        self.margin = margin

    def _fit_line(self, scores: np.ndarray) -> tuple[float, float]:
        from scipy.stats import genpareto  # scipy is heavy-ish; only this rule needs it

        if not 0.0 < self.risk < 1.0:
            raise InputError(f"risk must be in (0, 1), got {self.risk}")
        baseline = float(np.median(scores))
        t0 = float(np.quantile(scores, self.initial_quantile))
        excess = scores[scores > t0] - t0
        if excess.size < 10 or np.ptp(excess) == 0:
            line = float(scores.max())
        else:
            shape, _, scale = genpareto.fit(excess, floc=0.0)
            ratio = self.risk * scores.size / excess.size
            if abs(shape) < 1e-6:
                line = t0 - scale * np.log(ratio)
            else:
                line = t0 + scale / shape * (ratio ** (-shape) - 1.0)
            if not np.isfinite(line):
                line = float(scores.max())
        return baseline, baseline + self.margin * (line - baseline)


def exponential_tail_line(scores: np.ndarray, risk: float, initial_quantile: float = 0.98) -> float:
    """The score exceeded with probability ``risk``, from an exponential tail over a quantile.

    Peaks over ``t0`` (the ``initial_quantile``) are modelled as exponential (a generalised
    Pareto with shape 0, the Gumbel domain): ``line = t0 + mean_excess · ln(p0 / risk)`` with
    ``p0`` the share of scores above ``t0``. One parameter estimated from the excesses is
    stable on the few dozen peaks a short training window has, where a free GPD shape is
    not; a heavier tail still raises the line through a larger mean excess. Where the risk
    is not beyond the data (``risk >= p0``) the empirical quantile is returned.
    """
    values = np.asarray(scores, dtype=float)
    t0 = float(np.quantile(values, initial_quantile))
    excess = values[values > t0] - t0
    p0 = excess.size / values.size
    if excess.size == 0:
        return t0
    if risk >= p0:
        return float(np.quantile(values, 1.0 - risk))
    return t0 + float(excess.mean()) * float(np.log(p0 / risk))


class RateThreshold(Threshold):
    """Alarm line at an expected rate of ``false_alarms_per_day`` rows over it on normal data.

    Peaks-over-threshold with an exponential tail (:func:`exponential_tail_line`) on the
    training scores, at the per-row risk ``false_alarms_per_day / rows_per_day``: the same
    setting means the same thing at one-minute and at five-minute sampling, and a line far
    beyond the few days of training data is extrapolated from the shape of their tail
    rather than read off their maximum. ``rows_per_day`` comes from the detector at fit;
    without it, ``default_rows_per_day`` is assumed.
    """

    def __init__(
        self,
        false_alarms_per_day: float = 0.05,
        initial_quantile: float = 0.98,
        margin: float = 1.0,
        default_rows_per_day: float = 1440.0,
    ) -> None:
        self.false_alarms_per_day = false_alarms_per_day
        self.initial_quantile = initial_quantile
        self.margin = margin
        self.default_rows_per_day = default_rows_per_day

    def risk(self) -> float:
        rows: float | None = getattr(self, "rows_per_day_", None)
        per_day = float(rows) if rows else float(self.default_rows_per_day)
        return float(min(0.5, self.false_alarms_per_day / per_day))

    def _fit_line(self, scores: np.ndarray) -> tuple[float, float]:
        if self.false_alarms_per_day <= 0:
            raise InputError(f"false_alarms_per_day must be > 0, got {self.false_alarms_per_day}")
        if not 0.5 <= self.initial_quantile < 1.0:
            raise InputError(f"initial_quantile must be in [0.5, 1), got {self.initial_quantile}")
        baseline = float(np.median(scores))
        line = exponential_tail_line(scores, self.risk(), self.initial_quantile)
        return baseline, baseline + self.margin * (line - baseline)

