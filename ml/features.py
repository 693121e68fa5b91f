"""Causal feature engineering on one host's time-sorted metric matrix.

Every feature at row ``t`` depends only on rows ``<= t`` (the rolling statistics on rows
``< t``), so a live scorer computes the same numbers from a short recent history as a batch
run does over the whole series: that is what makes single-row scoring honest. Windows are
counted in rows; detectors convert a duration ("1h") into rows with the sampling step they
saw at fit (:func:`rows_for`).

Inputs are plain numpy arrays (``values``: shape ``(n, m)``, no NaN — detectors impute
first; ``timestamps_ns``: int64 epoch nanoseconds, UTC) because the live path scores one
row at a time and pandas' per-call overhead would dominate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

DAY_NS = 86_400 * 10**9

#: Per-metric feature kinds produced by :func:`causal_features`, in column order.
PER_METRIC_FEATURES: tuple[str, ...] = ("value", "diff", "dev", "std", "seasonal")
#: Features shared by all metrics (time of day on the unit circle).
SHARED_FEATURES: tuple[str, ...] = ("tod_sin", "tod_cos")

# Rolling windows are evaluated in blocks so memory stays O(block × window).
_BLOCK = 8192


def rows_for(duration: str | pd.Timedelta, step_ns: float, minimum: int = 2) -> int:
    """How many rows of the given sampling step make ``duration``."""
    span = pd.Timedelta(duration).value
    if step_ns <= 0:
        return minimum
    return max(minimum, round(span / step_ns))


def median_step_ns(timestamps_ns: np.ndarray) -> float:
    steps = np.diff(np.asarray(timestamps_ns, dtype=np.int64))
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else 0.0


def time_of_day(timestamps_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    phase = 2.0 * np.pi * (np.asarray(timestamps_ns, dtype=np.int64) % DAY_NS) / DAY_NS
    return np.sin(phase), np.cos(phase)


def tod_bins(timestamps_ns: np.ndarray, n_bins: int) -> np.ndarray:
    """Index of each timestamp's time-of-day bin (``n_bins`` equal bins per UTC day)."""
    return ((np.asarray(timestamps_ns, dtype=np.int64) % DAY_NS) * n_bins // DAY_NS).astype(np.intp)


def tod_profile(values: np.ndarray, timestamps_ns: np.ndarray, n_bins: int, min_days: float) -> np.ndarray:
    """The seasonal baseline: per time-of-day bin, the median of each metric, ``(bins, m)``.

    With under ``min_days`` days of data the profile is one bin, the overall median: a
    profile fitted on less than that fits that day's noise (each bin's median comes from the
    very points it is then compared with) and departs from every later day. Bins without a
    row take the overall median.
    """
    values = np.asarray(values, dtype=float)
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    span_days = (ts.max() - ts.min()) / DAY_NS if len(ts) else 0.0
    bins_used = n_bins if span_days >= min_days else 1
    overall = np.median(values, axis=0)
    profile = np.tile(overall, (bins_used, 1))
    bins = tod_bins(ts, bins_used)
    for b in range(bins_used):
        rows = bins == b
        if rows.any():
            profile[b] = np.median(values[rows], axis=0)
    return profile


def _previous_windows(values: np.ndarray, window: int) -> np.ndarray:
    """View ``(n, m, window)`` of the ``window`` rows *before* each row, NaN-padded."""
    n, m = values.shape
    padded = np.vstack([np.full((window, m), np.nan), values])
    view = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)
    return view[:n]  # row t sees padded[t : t+window] = values[t-window : t]


def rolling_previous(
    values: np.ndarray, window: int, stat: str, min_count: int | None = None, from_row: int = 0
) -> np.ndarray:
    """``stat`` ("mean", "std" or "median") of the previous ``window`` rows.

    NaN where fewer than ``min_count`` previous rows exist (default 1, 2 for ``std``):
    statistics of one or two rows are noise, and callers treat NaN as "no history yet",
    i.e. neutral. Rows before ``from_row`` are left NaN (callers that only need the tail,
    like a live scorer, skip the work). Computed in blocks over a sliding view so that the
    same rows give bit-identical results whether scored in a batch or one at a time.
    """
    values = np.asarray(values, dtype=float)
    n, m = values.shape
    out = np.full((n, m), np.nan)
    if n == 0:
        return out
    nan_fns: dict[str, Callable[..., Any]] = {"mean": np.nanmean, "std": np.nanstd, "median": np.nanmedian}
    fast_fns: dict[str, Callable[..., Any]] = {"mean": np.mean, "std": np.std, "median": np.median}
    nan_fn, fast_fn = nan_fns[stat], fast_fns[stat]
    if min_count is None:
        min_count = 2 if stat == "std" else 1
    min_count = max(min_count, 2 if stat == "std" else 1)
    for lo in range(min(max(from_row, 0), n), n, _BLOCK):
        hi = min(n, lo + _BLOCK)
        start = max(0, lo - window)
        view = _previous_windows(values[start:hi], window)[lo - start :]
        counts = np.sum(~np.isnan(view), axis=2)
        ok = counts >= min_count
        if not ok.any():
            continue
        block = np.full((hi - lo, m), np.nan)
        # Full windows take the plain (much faster) reduction; partial ones the NaN-aware
        # one. Which applies depends only on a row's history, so batch and live agree.
        full = counts == window
        partial = ok & ~full
        if full.any():
            block[full] = fast_fn(view[full], axis=-1)
        if partial.any():
            block[partial] = nan_fn(view[partial], axis=-1)
        out[lo:hi] = block
    return out


def feature_names(metrics: Sequence[str]) -> list[str]:
    names = [f"{metric}__{kind}" for metric in metrics for kind in PER_METRIC_FEATURES]
    return names + list(SHARED_FEATURES)


def causal_features(
    values: np.ndarray, timestamps_ns: np.ndarray, window: int, profile: np.ndarray
) -> np.ndarray:
    """Feature matrix ``(n, 5·m + 2)`` in :func:`feature_names` order.

    Per metric: the value; its first difference; its deviation from the mean of the
    previous ``window`` rows; the standard deviation of those rows; its deviation from the
    seasonal baseline ``profile`` (:func:`tod_profile`, fitted on training data: what this
    metric usually reads at this time of day; 0 with a one-bin profile). Then time of day
    (sin, cos). Rows with less than half a window of history get NaN for the rolling
    features (and the first row for the difference): detectors fill NaN with the training
    median of that feature, a neutral value for a tree ensemble.
    """
    values = np.asarray(values, dtype=float)
    n, m = values.shape
    diff = np.full((n, m), np.nan)
    if n > 1:
        diff[1:] = values[1:] - values[:-1]
    # Half a window of history before deviations count: fewer rows give noisy statistics,
    # and NaN features are filled with neutral training medians by the detector.
    warmup = max(2, window // 2)
    mean = rolling_previous(values, window, "mean", warmup)
    std = rolling_previous(values, window, "std", warmup)
    dev = values - mean
    # A one-bin profile (under profile_min_days of training) knows no season: the departure
    # would only repeat the value, and a duplicated column dilutes the random splits of a
    # forest. Zero there, a constant no tree splits on.
    if len(profile) > 1:
        seasonal = values - profile[tod_bins(timestamps_ns, len(profile))]
    else:
        seasonal = np.zeros_like(values)
    per_metric = np.stack([values, diff, dev, std, seasonal], axis=2).reshape(n, m * len(PER_METRIC_FEATURES))
    sin, cos = time_of_day(timestamps_ns)
    return np.hstack([per_metric, sin[:, None], cos[:, None]])
