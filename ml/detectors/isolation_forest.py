"""Isolation Forest over causal engineered features, multivariate per host."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.ensemble import IsolationForest

from ml.compiled import CompiledForest
from ml.detectors.base import BaseDetector, Segment
from ml.features import PER_METRIC_FEATURES, causal_features, feature_names, rows_for, tod_profile
from ml.thresholds import QuantileThreshold, Threshold


def robust_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column medians and MAD-based scales (std, then 1.0, where the MAD is 0)."""
    center = np.median(values, axis=0)
    scale = 1.4826 * np.median(np.abs(values - center), axis=0)
    std = values.std(axis=0)
    scale = np.where(scale > 0, scale, np.where(std > 0, std, 1.0))
    return center, scale


class IsolationForestDetector(BaseDetector):
    """IsolationForest on value, first difference, deviation from and spread of the
    previous ``window``, and deviation from the seasonal baseline of each metric (its training
    median in the same time-of-day bin, ``n_bins`` per UTC day; one bin with under
    ``profile_min_days`` of training data), plus time of day.

    Raw score: the isolation-forest anomaly score ``2^(-E[h]/c)`` in (0, 1] (equal to
    ``-IsolationForest.score_samples``), higher = more anomalous.

    Contributions: for each metric, the largest robust z-score (|x − training median| /
    (1.4826 · training MAD)) among its five features; the row's values are then normalised to
    sum 1. Trees do not give per-feature attributions cheaply; this says which metric's
    features sit furthest from their training distribution, which is what an operator asks.
    """

    family = "isolation_forest"
    min_fit_rows = 32

    def __init__(
        self,
        n_estimators: int = 100,
        max_samples: int = 256,
        window: str = "1h",
        n_bins: int = 24,
        profile_min_days: float = 2.0,
        metrics: Sequence[str] | None = None,
        threshold: Threshold | None = None,
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.window = window
        self.n_bins = n_bins
        self.profile_min_days = profile_min_days
        self.metrics = metrics
        self.threshold = threshold
        self.random_state = random_state

    def required_context(self) -> int:
        return int(self.window_rows_) + 1

    def _features(self, segment: Segment) -> np.ndarray:
        feats = causal_features(segment.values, segment.timestamps, self.window_rows_, self.profile_)
        return np.where(np.isnan(feats), self.feature_fill_[None, :], feats)

    def default_threshold(self) -> Threshold:
        # Isolation scores saturate well below 1 (an outlier in one of many features is
        # isolated in a few splits, not one), so a margin above the training quantile is
        # rarely reachable: the line sits at the quantile itself.
        return QuantileThreshold(quantile=0.999, margin=1.0)

    def _resolve(self) -> None:
        self.window_rows_ = rows_for(self.window, self.step_ns_)

    def _fit(self, segments: list[Segment]) -> None:
        self.feature_names_ = feature_names(self.metrics_)
        masks = [slice(None) if s.fit_mask is None else s.fit_mask for s in segments]
        self.profile_ = tod_profile(
            np.vstack([s.values[m] for s, m in zip(segments, masks, strict=True)]),
            np.concatenate([s.timestamps[m] for s, m in zip(segments, masks, strict=True)]),
            self.n_bins,
            self.profile_min_days,
        )
        raw_feats = [
            causal_features(s.values, s.timestamps, self.window_rows_, self.profile_) for s in segments
        ]
        stacked = np.vstack(
            [f if s.fit_mask is None else f[s.fit_mask] for f, s in zip(raw_feats, segments, strict=True)]
        )
        with np.errstate(all="ignore"):
            fill = np.nanmedian(stacked, axis=0)
        self.feature_fill_ = np.where(np.isnan(fill), 0.0, fill)
        matrix = np.where(np.isnan(stacked), self.feature_fill_[None, :], stacked)
        self.feature_center_, self.feature_scale_ = robust_scale(matrix)
        self.model_ = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, len(matrix)),
            random_state=self.random_state,
        ).fit(matrix)
        self.forest_ = CompiledForest.from_sklearn(self.model_)

    def _score(self, segment: Segment, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        lo = max(0, start - self.window_rows_ - 1)  # enough history for every feature
        sub = Segment(segment.key, segment.timestamps[lo:], segment.values[lo:], segment.positions[lo:])
        feats = self._features(sub)[start - lo :]
        # Rows at the very start of a segment have less history than a full window; slicing
        # at lo > 0 keeps their warm-up status because lo > 0 only when a full window exists.
        raw = self.forest_.anomaly_score(feats)
        n_metric_feats = len(self.metrics_) * len(PER_METRIC_FEATURES)
        z = np.abs(feats - self.feature_center_) / self.feature_scale_
        per_metric = z[:, :n_metric_feats].reshape(len(feats), len(self.metrics_), len(PER_METRIC_FEATURES))
        return raw, per_metric.max(axis=2)
