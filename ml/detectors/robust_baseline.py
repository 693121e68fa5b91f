"""A robust seasonal baseline: the challenger that needs no model library at all."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ml.detectors.base import BaseDetector, Segment
from ml.features import DAY_NS, rolling_previous, rows_for, tod_bins
from ml.thresholds import QuantileThreshold, Threshold

_MAD_TO_SIGMA = 1.4826


def _causal_median(values: np.ndarray, rows: int, from_row: int = 0) -> np.ndarray:
    """Median of the current row and up to ``rows - 1`` previous rows."""
    if rows <= 1:
        return values
    # rolling_previous at row i+1 covers rows i+1-rows .. i, i.e. a window ending at i.
    padded = np.vstack([values, np.zeros((1, values.shape[1]))])
    return rolling_previous(padded, rows, "median", 1, from_row + 1)[1:]


class RobustBaselineDetector(BaseDetector):
    """Per metric: robust z-scores of the deviation from a time-of-day median profile.

    For metric ``j`` at row ``t``:

    1. ``e_t = x_t − profile_j[bin(t)]``: the training median of the metric in the same
       time-of-day bin (``n_bins`` per UTC day) removes daily seasonality; with under
       ``profile_min_days`` of training data the profile is one bin (the median);
    2. ``r_t = e_t − median(e over the previous level_window)``: the local level lets a
       sustained shift raise alarms at its onset and then become the new normal, instead of
       alarming for as long as it lasts. With under half a window of history (cold start)
       ``r_t`` is 0 (neutral);
    3. two channels: ``r_t`` itself (catches spikes) and its causal median over ``smooth``
       (catches sustained moderate departures that single rows hide in noise; a median, so
       one spike does not echo through the following window);
    4. each channel's ``z = |r − median(r)| / (1.4826 · MAD(r))`` (training median and MAD,
       floored so a constant training series keeps a finite scale), divided by the
       ``norm_quantile`` of its training values so channels and metrics with heavier tails
       do not dominate.

    Raw score: the largest normalised ``z`` over channels and metrics. Contributions: each
    metric's largest normalised ``z`` (normalised to sum 1 by the base class).
    """

    family = "robust_baseline"
    min_fit_rows = 10

    def __init__(
        self,
        n_bins: int = 24,
        profile_min_days: float = 2.0,
        level_window: str = "2h",
        smooth: str | None = "1h",
        norm_quantile: float = 0.99,
        metrics: Sequence[str] | None = None,
        threshold: Threshold | None = None,
    ) -> None:
        self.n_bins = n_bins
        self.profile_min_days = profile_min_days
        self.level_window = level_window
        self.smooth = smooth
        self.norm_quantile = norm_quantile
        self.metrics = metrics
        self.threshold = threshold

    def default_threshold(self) -> Threshold:
        # Training windows are often short (detect fits on 15 % of a series): the 99.9 %
        # quantile of a day of scores is close to its maximum, and the smoothed channel is
        # autocorrelated, so new data exceeds it more often than 0.1 %. A 1.5 margin kept
        # clean synthetic series (Gaussian, t3 and AR(1) noise) to about 0.1, 0 and 0.7
        # alarms a day; 1.25 gave 0.35, 0.1 and 1.0.
        return QuantileThreshold(quantile=0.999, margin=1.5)

    def required_context(self) -> int:
        return int(self.level_rows_) + int(self.smooth_rows_)

    def _channels(self, segment: Segment, start: int = 0) -> list[np.ndarray]:
        """Channels for rows ``start:``; only the history those rows need is computed."""
        lo = max(0, start - (self.smooth_rows_ - 1))  # first row the smoothing reaches back to
        base = max(0, lo - self.level_rows_)  # first row the level of row lo reaches back to
        bins = tod_bins(segment.timestamps[base:], self.n_bins_)
        e = segment.values[base:] - self.profile_[bins]
        level = rolling_previous(e, self.level_rows_, "median", max(1, self.level_rows_ // 2), lo - base)
        # No level yet (cold start: under half a window of history): neutral, not "anomalous".
        r = np.where(np.isnan(level), 0.0, e - level)[lo - base :]
        channels = [r]
        if self.smooth_rows_ > 1:
            # Positions are relative to lo; when lo > 0 the row at `start` already has a full
            # smoothing window, so the result equals the whole-segment computation.
            channels.append(_causal_median(r, self.smooth_rows_, start - lo))
        return [c[start - lo :] for c in channels]

    def _resolve(self) -> None:
        self.level_rows_ = rows_for(self.level_window, self.step_ns_, minimum=1)
        self.smooth_rows_ = rows_for(self.smooth, self.step_ns_, minimum=1) if self.smooth else 1

    def _fit(self, segments: list[Segment]) -> None:
        masks = [np.ones(len(s), dtype=bool) if s.fit_mask is None else s.fit_mask for s in segments]
        ts = np.concatenate([s.timestamps[m] for s, m in zip(segments, masks, strict=True)])
        values = np.vstack([s.values[m] for s, m in zip(segments, masks, strict=True)])
        # A profile fitted on under `profile_min_days` days fits that day's noise (each bin's
        # median is computed from the very points it is then compared with) and alarms on
        # every later day; below that, the local level alone follows the daily cycle.
        span_days = (ts.max() - ts.min()) / DAY_NS if len(ts) else 0.0
        self.n_bins_ = self.n_bins if span_days >= self.profile_min_days else 1
        bins = tod_bins(ts, self.n_bins_)
        overall = np.median(values, axis=0)
        profile = np.tile(overall, (self.n_bins_, 1))
        for b in range(self.n_bins_):
            rows = bins == b
            if rows.any():
                profile[b] = np.median(values[rows], axis=0)
        self.profile_ = profile

        per_segment = [self._channels(s) for s in segments]
        n_channels = len(per_segment[0])
        # Floor: a near-constant metric must not turn rounding noise into huge z-scores.
        floor = 1e-3 * (np.abs(overall) + values.std(axis=0)) + 1e-9
        centers, scales, norms = [], [], []
        for c in range(n_channels):
            resid = np.vstack([ch[c][m] for ch, m in zip(per_segment, masks, strict=True)])
            center = np.median(resid, axis=0)
            scale = np.maximum(_MAD_TO_SIGMA * np.median(np.abs(resid - center), axis=0), floor)
            z = np.abs(resid - center) / scale
            norm = np.maximum(np.quantile(z, self.norm_quantile, axis=0), 1.0)
            centers.append(center)
            scales.append(scale)
            norms.append(norm)
        self.center_ = np.array(centers)  # (channels, metrics)
        self.scale_ = np.array(scales)
        self.norm_ = np.array(norms)

    def _score(self, segment: Segment, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        channels = self._channels(segment, start)
        u = np.stack(
            [np.abs(r - self.center_[c]) / self.scale_[c] / self.norm_[c] for c, r in enumerate(channels)]
        )  # (channels, n, metrics)
        per_metric = u.max(axis=0)
        return per_metric.max(axis=1), per_metric
