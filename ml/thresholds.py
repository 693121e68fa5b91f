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

    def fit(self, scores: np.ndarray) -> Self:
        values = np.asarray(scores, dtype=float).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise InputError("cannot fit a threshold: no finite training scores")
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
