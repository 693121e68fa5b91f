"""Labelled validation data without waiting for real incidents.

Two sources, both returning NAB-format windows (:mod:`ml.evaluation`):

- :func:`inject_anomalies` writes anomalies of several kinds into a copy of a *real* series
  (e.g. a held-back segment of a host's metric) and labels them. The anomaly's size is set
  relative to the segment's own robust spread, so the same call is as hard on a noisy series
  as on a quiet one.
- :func:`synthetic_corpus` builds cloud-metric-like series (cpu-like percentages, bursty
  byte counters, low counts; daily cycles, heavy-tailed and autocorrelated noise, normal
  bursts, quantisation) with injected anomalies. It is the development set the detectors'
  one configuration was chosen on, so that the real labelled series (NAB) stay a final
  report instead of a tuning target.

Windows follow NAB's convention: every anomaly gets a window of ``window_share`` of the
series length divided by the number of anomalies, centred on the anomaly's onset (NAB
rewards early detection inside that window and so do we: a window is found by any alarm in
it).

Everything is a pure function of its ``seed`` (``numpy.random.default_rng``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from smartcloudops.errors import InputError

#: Kinds :func:`inject_anomalies` can write.
ANOMALY_KINDS: tuple[str, ...] = (
    "spike",
    "level_shift",
    "dip",
    "variance",
    "flatline",
    "ramp",
    "slow_shift",
    "trend",
)
#: Kinds that last half a day to two days instead of one to six hours.
_SLOW_KINDS = frozenset({"slow_shift", "trend"})

_FMT = "%Y-%m-%d %H:%M:%S.%f"
_MAD_TO_SIGMA = 1.4826
_MIN_ROWS = 200


@dataclass(frozen=True)
class Injected:
    """One injected anomaly: rows ``[start, end)`` of the series were changed."""

    kind: str
    start: int
    end: int
    window: tuple[pd.Timestamp, pd.Timestamp]


def robust_spread(values: np.ndarray) -> float:
    """Robust σ of the first differences / √2 (level-free), else of the values; never 0."""
    finite = values[np.isfinite(values)]
    if finite.size < 3:
        return 1.0
    diff = np.diff(finite)
    sigma = _MAD_TO_SIGMA * float(np.median(np.abs(diff - np.median(diff)))) / np.sqrt(2.0)
    if sigma <= 0:
        sigma = float(np.std(finite))
    if sigma <= 0:
        sigma = max(abs(float(np.median(finite))) * 0.01, 1e-6)
    return sigma


def _apply(
    kind: str, values: np.ndarray, start: int, length: int, sigma: float, rng: np.random.Generator
) -> int:
    """Change ``values`` in place from ``start``; return the end row (exclusive)."""
    n = len(values)
    end = min(n, start + length)
    seg = slice(start, end)
    k = end - start
    level = float(np.median(values[max(0, start - 288) : start])) if start > 0 else float(values[0])
    spread = float(np.percentile(values[max(0, start - 2016) : start], 99) - np.percentile(
        values[max(0, start - 2016) : start], 1
    )) if start > 10 else 10 * sigma
    spread = max(spread, 4 * sigma)
    sign = 1.0 if rng.random() < 0.7 else -1.0
    if kind == "spike":
        end = min(n, start + int(rng.integers(1, 4)))
        seg, k = slice(start, end), end - start
        # Clearly beyond the largest excursion of the last week in that direction, the way a
        # runaway request or a GC storm looks (smaller "spikes" are the series' normal tail).
        recent = values[max(0, start - 2016) : start] - level
        reach = float(np.max(sign * recent)) if recent.size else spread
        values[seg] = level + sign * max(reach, 2 * sigma) * rng.uniform(1.3, 2.5) + rng.normal(0, sigma, k)
    elif kind == "level_shift":
        values[seg] += sign * rng.uniform(0.5, 1.2) * spread
    elif kind == "dip":
        floor = min(float(np.min(values[max(0, start - 2016) : start + 1])), level) if start else level
        values[seg] = floor - rng.uniform(0.0, 0.3) * spread + rng.normal(0, 0.3 * sigma, k)
    elif kind == "variance":
        values[seg] += rng.normal(0, rng.uniform(4, 8) * sigma, k)
    elif kind == "flatline":
        values[seg] = values[start - 1] if start > 0 else level
    elif kind == "ramp":
        values[seg] += sign * np.linspace(0, rng.uniform(0.8, 1.5) * spread, k)
    elif kind == "slow_shift":
        # A modest, sustained change (a traffic drop, a slower service): small next to the
        # series' range, news only because it lasts.
        values[seg] += sign * rng.uniform(0.25, 0.5) * spread
    elif kind == "trend":
        values[seg] += sign * np.linspace(0, rng.uniform(0.4, 0.8) * spread, k)
    else:
        raise InputError(f"unknown anomaly kind {kind!r}; valid: {', '.join(ANOMALY_KINDS)}")
    return end


def inject_anomalies(
    frame: pd.DataFrame,
    *,
    count: int = 2,
    kinds: Sequence[str] = ANOMALY_KINDS,
    seed: int = 0,
    start_fraction: float = 0.15,
    window_share: float = 0.1,
    clip: tuple[float, float] | None = None,
) -> tuple[pd.DataFrame, list[Injected]]:
    """A copy of ``frame`` (``timestamp,value``, time-sorted) with ``count`` labelled anomalies.

    Anomalies start after the first ``start_fraction`` of the rows (the part a detector
    trains on stays clean) and are spread so their windows do not overlap. ``clip`` bounds
    the values (e.g. ``(0, 100)`` for a percentage).
    """
    bad = [k for k in kinds if k not in ANOMALY_KINDS]
    if bad:
        raise InputError(f"unknown anomaly kind(s) {', '.join(bad)}; valid: {', '.join(ANOMALY_KINDS)}")
    if count < 1 or not kinds:
        raise InputError("inject_anomalies needs count >= 1 and at least one kind")
    rng = np.random.default_rng(seed)
    out = frame.reset_index(drop=True).copy()
    values = out["value"].to_numpy(dtype=float).copy()
    ts = pd.to_datetime(out["timestamp"], utc=True)
    n = len(values)
    first = int(n * start_fraction)
    half = int(n * window_share / count / 2)
    usable = n - first - 2 * half
    # Each anomaly needs room for its window and some history before it (its size is set
    # relative to the recent past).
    if n < _MIN_ROWS or usable < count * (2 * half + 1) or half < 1:
        raise InputError(f"a series of {n} rows is too short for {count} labelled anomalies")
    sigma = robust_spread(values[:first] if first > 10 else values)
    # One slot per anomaly; the onset is placed inside its slot so windows never overlap.
    slot = usable // count
    injected = []
    for i in range(count):
        lo = first + half + i * slot
        onset = int(rng.integers(lo, lo + max(1, slot - 2 * half)))
        kind = str(kinds[int(rng.integers(len(kinds)))])
        # One to six hours at 5-minute steps; slow kinds half a day to two days.
        length = int(rng.integers(144, 576)) if kind in _SLOW_KINDS else int(rng.integers(12, 72))
        end = _apply(kind, values, onset, length, sigma, rng)
        w_start = ts.iloc[max(0, onset - half)]
        w_end = ts.iloc[min(n - 1, onset + half)]
        injected.append(Injected(kind, onset, end, (w_start, w_end)))
    if clip is not None:
        values = np.clip(values, clip[0], clip[1])
    out["value"] = values
    return out, injected


def windows_of(injected: Sequence[Injected]) -> list[list[str]]:
    """NAB-format window list of injected anomalies."""
    return [[w.window[0].strftime(_FMT), w.window[1].strftime(_FMT)] for w in injected]


# -- synthetic cloud-like series ---------------------------------------------------------------
SERIES_KINDS: tuple[str, ...] = ("cpu", "bytes", "count")


def synthetic_series(
    kind: str, *, seed: int, n: int = 4032, freq: str = "5min", start: str = "2024-01-01"
) -> tuple[pd.DataFrame, tuple[float, float] | None]:
    """Normal behaviour of one metric: ``(frame, clip bounds)``. No anomalies yet."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    hours = np.asarray(ts.hour + ts.minute / 60.0, dtype=float)
    phase = rng.uniform(0, 24)
    daily = np.sin(2 * np.pi * (hours - phase) / 24.0) * rng.choice([0.0, 0.3, 1.0], p=[0.3, 0.3, 0.4])
    weekend = np.asarray(ts.dayofweek >= 5, dtype=float) * rng.choice([0.0, 0.2])

    def noise(size: int) -> np.ndarray:
        if rng.random() < 0.5:
            e = rng.standard_t(df=rng.choice([3, 5, 30]), size=size)
        else:
            e = rng.normal(size=size)
        phi = rng.choice([0.0, 0.5, 0.9])
        if phi:
            out = np.empty(size)
            acc = 0.0
            for i in range(size):
                acc = phi * acc + e[i]
                out[i] = acc
            e = out * np.sqrt(1 - phi**2)
        return np.asarray(e)

    clip: tuple[float, float] | None
    if kind == "cpu":
        level = rng.uniform(2, 60)
        amp = rng.uniform(0.1, 0.5) * level
        sd = rng.uniform(0.02, 0.15) * level
        values = level + amp * daily - level * weekend * 0.5 + sd * noise(n)
        clip = (0.0, 100.0)
    elif kind == "bytes":
        level = 10 ** rng.uniform(4, 7)
        values = level * np.exp(0.5 * daily - weekend + rng.uniform(0.1, 0.6) * noise(n))
        clip = (0.0, float("inf"))
    elif kind == "count":
        lam = rng.uniform(1, 30)
        values = rng.poisson(lam * np.exp(0.5 * daily)).astype(float)
        clip = (0.0, float("inf"))
    else:
        raise InputError(f"unknown series kind {kind!r}; valid: {', '.join(SERIES_KINDS)}")
    # Normal bursts (batch jobs, cache refills): short, frequent enough to appear in training.
    rate = rng.choice([0.0, 1.0, 4.0])  # per day
    steps_per_day = int(pd.Timedelta("1D") / pd.Timedelta(freq))
    for onset in np.flatnonzero(rng.random(n) < rate / steps_per_day):
        width = int(rng.integers(1, 4))
        bump = rng.uniform(2, 6) * float(np.std(values[: max(onset, 50)]) or 1.0)
        values[onset : onset + width] += bump
    if rng.random() < 0.5:
        values = np.round(values, int(rng.choice([0, 1, 2]))) if kind != "count" else values
    if clip is not None:
        values = np.clip(values, clip[0], clip[1])
    return pd.DataFrame({"timestamp": ts, "value": values}), clip


@dataclass(frozen=True)
class SyntheticCorpus:
    series: dict[str, pd.DataFrame]
    windows: dict[str, list[list[str]]]
    #: series -> the kind of each injected anomaly, in window order
    kinds: dict[str, list[str]]


def synthetic_corpus(
    n_series: int = 30, *, seed: int = 0, n: int = 4032, freq: str = "5min", start_fraction: float = 0.15
) -> SyntheticCorpus:
    """``n_series`` labelled series.

    About one series in eight has no anomaly at all (as one of NAB's AWS files), the rest one
    to three, of kinds drawn from :data:`ANOMALY_KINDS`.
    """
    rng = np.random.default_rng(seed)
    series: dict[str, pd.DataFrame] = {}
    windows: dict[str, list[list[str]]] = {}
    kinds: dict[str, list[str]] = {}
    for i in range(n_series):
        kind = str(SERIES_KINDS[int(rng.integers(len(SERIES_KINDS)))])
        sub_seed = int(rng.integers(2**31))
        frame, clip = synthetic_series(kind, seed=sub_seed, n=n, freq=freq)
        name = f"synthetic/{kind}_{seed}_{i:03d}"
        count = 0 if rng.random() < 0.125 else int(rng.integers(1, 4))
        if count:
            frame, injected = inject_anomalies(
                frame, count=count, seed=sub_seed + 1, start_fraction=start_fraction, clip=clip
            )
            windows[name] = windows_of(injected)
            kinds[name] = [a.kind for a in injected]
        else:
            windows[name] = []
            kinds[name] = []
        series[name] = frame
    return SyntheticCorpus(series, windows, kinds)
