"""Prophet forecast band per metric, precomputed ahead so scoring is a lookup."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ml.detectors.base import BaseDetector, Segment
from ml.features import DAY_NS, rolling_previous, rows_for
from ml.thresholds import Threshold

_MAD_TO_SIGMA = 1.4826


def _quiet_prophet() -> None:
    # cmdstanpy logs every fit at INFO; a fleet fit would print dozens of lines. Its logger
    # is configured lazily (and forced to DEBUG) on first use, so configure it first.
    from cmdstanpy.utils import get_logger

    get_logger().setLevel(logging.WARNING)
    for name in ("prophet", "prophet.plot"):
        logging.getLogger(name).setLevel(logging.WARNING)


class ProphetDetector(BaseDetector):
    """One Prophet model per metric column; the anomaly score is the residual's robust z.

    At fit, each metric's training values are averaged to ``resolution`` (Prophet's cost
    grows with points; 5-minute means keep a week of 1-minute data at ~2k points), Prophet is
    fitted with ``uncertainty_samples=0`` (its sampled intervals are the slow part) and the
    forecast ``yhat`` is computed once on a regular grid from the start of training to
    ``horizon`` past its end. The fitted Prophet objects are then dropped: the model keeps
    only the grid, so it pickles small and scoring never calls Prophet.

    Residual calibration: ``r = x − yhat(t)`` (``yhat`` linearly interpolated on the grid),
    minus the median of ``r`` over the previous ``level_window`` (None disables it: a level
    change Prophet's trend did not foresee, such as a disk that was filled and stays full,
    then alarms at its onset instead of for as long as it lasts); then
    ``z = |r − median(r)| / (1.4826 · MAD(r))`` over training rows. That is the band: the
    alarm line of the threshold object is a z-value, i.e. a band ``yhat ± k·σ``. Raw score:
    max of ``z`` over metrics; contributions: each metric's ``z``.

    Timestamps past the grid reuse the forecast of the same time of day on the grid's last
    day (seasonal-naive extension) rather than failing; refit daily to stay inside the horizon.
    """

    family = "prophet"
    min_fit_rows = 24

    def __init__(
        self,
        resolution: str = "5min",
        horizon: str = "3D",
        daily_seasonality: bool = True,
        weekly_seasonality: bool | str = "auto",
        changepoint_prior_scale: float = 0.05,
        level_window: str | None = "2h",
        metrics: Sequence[str] | None = None,
        threshold: Threshold | None = None,
    ) -> None:
        self.resolution = resolution
        self.horizon = horizon
        self.daily_seasonality = daily_seasonality
        self.weekly_seasonality = weekly_seasonality
        self.changepoint_prior_scale = changepoint_prior_scale
        self.level_window = level_window
        self.metrics = metrics
        self.threshold = threshold

    def _fit(self, segments: list[Segment]) -> None:
        # prophet.plot logs an ERROR at import when plotly is absent; we never plot with
        # plotly (our PNGs use matplotlib), so that line would only alarm operators.
        logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
        from prophet import Prophet  # slow import (~1 s): only when a Prophet is fitted

        prophet_cls: Any = Prophet  # its annotations reject bool for weekly_seasonality

        _quiet_prophet()
        res_ns = int(pd.Timedelta(self.resolution).value)
        if res_ns <= 0:
            raise ValueError(f"resolution must be positive, got {self.resolution!r}")
        frames = []
        for seg in segments:
            keep = np.ones(len(seg), dtype=bool) if seg.fit_mask is None else seg.fit_mask
            bucket = (seg.timestamps[keep] // res_ns) * res_ns
            frame = pd.DataFrame(seg.values[keep], columns=list(self.metrics_))
            frame["ds"] = bucket
            frames.append(frame.groupby("ds", sort=True).mean().reset_index())
        pooled = pd.concat(frames, ignore_index=True)
        start = int(pooled["ds"].min())
        end = int(pooled["ds"].max()) + int(pd.Timedelta(self.horizon).value)
        grid = np.arange(start, end + res_ns, res_ns, dtype=np.int64)
        grid_ds = pd.to_datetime(grid, utc=True).tz_localize(None)
        ds = pd.to_datetime(pooled["ds"].to_numpy(), utc=True).tz_localize(None)
        yhat = np.empty((len(grid), len(self.metrics_)))
        for j, metric in enumerate(self.metrics_):
            train = pd.DataFrame({"ds": ds, "y": pooled[metric].to_numpy()})
            model = prophet_cls(
                daily_seasonality=self.daily_seasonality,
                weekly_seasonality=self.weekly_seasonality,
                yearly_seasonality=False,
                changepoint_prior_scale=self.changepoint_prior_scale,
                uncertainty_samples=0,
            )
            model.fit(train)
            yhat[:, j] = model.predict(pd.DataFrame({"ds": grid_ds}))["yhat"].to_numpy()
        self.grid_start_ns_ = start
        self.grid_step_ns_ = res_ns
        self.yhat_ = yhat
        resid = np.vstack(
            [r if s.fit_mask is None else r[s.fit_mask] for s in segments for r in [self._residuals(s)]]
        )
        self.center_ = np.median(resid, axis=0)
        mad = _MAD_TO_SIGMA * np.median(np.abs(resid - self.center_), axis=0)
        values = np.vstack([s.values for s in segments])
        floor = 1e-3 * (np.abs(np.median(values, axis=0)) + values.std(axis=0)) + 1e-9
        self.scale_ = np.maximum(mad, floor)

    def forecast(self, timestamps_ns: np.ndarray) -> np.ndarray:
        """``yhat`` at the given times, ``(n, m)``: a lookup on the precomputed grid."""
        ts = np.asarray(timestamps_ns, dtype=np.int64)
        n_grid = len(self.yhat_)
        last = self.grid_start_ns_ + (n_grid - 1) * self.grid_step_ns_
        # Past the grid: same time of day on its last day. Before it: same on its first day.
        late = ts > last
        ts = np.where(late, ts - ((ts - last) // DAY_NS + 1) * DAY_NS, ts)
        early = ts < self.grid_start_ns_
        ts = np.where(early, ts + ((self.grid_start_ns_ - ts) // DAY_NS + 1) * DAY_NS, ts)
        ts = np.clip(ts, self.grid_start_ns_, last)
        pos = (ts - self.grid_start_ns_) / self.grid_step_ns_
        lo = np.clip(np.floor(pos).astype(np.intp), 0, n_grid - 1)
        hi = np.clip(lo + 1, 0, n_grid - 1)
        frac = (pos - lo)[:, None]
        return np.asarray(self.yhat_[lo] * (1.0 - frac) + self.yhat_[hi] * frac)

    def required_context(self) -> int:
        return int(self.level_rows_)

    def _resolve(self) -> None:
        self.level_rows_ = rows_for(self.level_window, self.step_ns_, minimum=1) if self.level_window else 0

    def _residuals(self, segment: Segment, start: int = 0) -> np.ndarray:
        """Residuals for rows ``start:``, net of the local residual level when enabled."""
        base = max(0, start - self.level_rows_)
        r = np.asarray(segment.values[base:] - self.forecast(segment.timestamps[base:]))
        if self.level_rows_:
            level = rolling_previous(
                r, self.level_rows_, "median", max(1, self.level_rows_ // 2), start - base
            )
            r = np.where(np.isnan(level), 0.0, r - level)
        return r[start - base :]

    def _score(self, segment: Segment, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        z = np.abs(self._residuals(segment, start) - self.center_) / self.scale_
        return z.max(axis=1), z
