"""Evaluation exactly as ARCHITECTURE.md defines it.

Definitions (all counts are *micro*: summed over every series before any ratio):

- A labelled window ``[start, end]`` (inclusive, NAB's convention) is **found** (TP) when at
  least one alarm falls inside it, otherwise it is **missed** (FN).
- Every hour-long bucket (timestamp floored to the hour, UTC) that holds at least one alarm
  outside *every* window of its series is one **false positive** (FP).
- ``event_f1 = 2·TP / (2·TP + FP + FN)``; event precision ``TP / (TP + FP)``, event recall
  ``TP / (TP + FN)``. This is the gate metric.
- Point-wise: every timestamp inside a window is a positive. Point precision = alarms inside
  windows / all alarms; point recall = labelled timestamps with an alarm / labelled
  timestamps; ``point_f1`` their harmonic mean.
- ``fc1 = 2·P_point·R_event / (P_point + R_event)`` (point precision × event recall,
  harmonic-mean form).
- ``fp_per_day`` = FP buckets / days of data evaluated, where a series contributes its span
  ``last − first + one median step``. With several series this is "per series-day".
- ``delay_seconds`` = mean over found windows of (first alarm in the window − window start);
  the start is clipped to the first evaluated timestamp so data we never saw adds no delay.

Only windows that overlap a series' evaluated span count: labels for the training part of a
history are ignored, not counted as misses. Windows of a series absent from ``alarms`` are
listed in ``skipped_series`` rather than silently counted.

Empty denominators: a ratio with nothing to count is 1.0 (no alarms → no false alarms; no
windows and no alarms → nothing to get wrong). That can never pass the gate by accident:
:func:`passes_gate` also requires at least one evaluated window.

Point-adjusted F1 is deliberately absent (random scores reach 0.9 with it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smartcloudops.errors import InputError

Window = tuple[pd.Timestamp, pd.Timestamp]

_BUCKET = "h"


def to_utc_timestamp(value: Any) -> pd.Timestamp:
    """Parse a timestamp; naive values (NAB's format) are taken as UTC."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise InputError(f"unparseable timestamp {value!r}") from exc
    if ts is pd.NaT:
        raise InputError(f"unparseable timestamp {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def parse_windows(raw: Mapping[str, Any]) -> dict[str, list[Window]]:
    """Validate a NAB-format mapping ``series -> [[start, end], ...]`` into UTC windows."""
    if not isinstance(raw, Mapping):
        raise InputError("label windows must be a JSON object mapping series to [[start, end], ...]")
    out: dict[str, list[Window]] = {}
    for series, pairs in raw.items():
        if not isinstance(pairs, Sequence) or isinstance(pairs, str):
            raise InputError(f"windows of {series!r} must be a list of [start, end] pairs")
        parsed: list[Window] = []
        for i, pair in enumerate(pairs):
            if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise InputError(f"window {i} of {series!r} must be a [start, end] pair, got {pair!r}")
            start, end = to_utc_timestamp(pair[0]), to_utc_timestamp(pair[1])
            if end < start:
                raise InputError(f"window {i} of {series!r} ends before it starts: {pair!r}")
            parsed.append((start, end))
        out[str(series)] = sorted(parsed)
    return out


def load_nab_windows(path: str | Path) -> dict[str, list[Window]]:
    """Read NAB's ``combined_windows.json`` (timestamps like "2014-02-26 22:05:00.000000", UTC)."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"label file not found: {p}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"label file {p} is not valid JSON: {exc}") from exc
    return parse_windows(raw)


def windows_to_json(windows: Mapping[str, Sequence[Window]]) -> dict[str, list[list[str]]]:
    """The inverse of :func:`parse_windows`, in NAB's timestamp format."""
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    return {
        k: [[to_utc_timestamp(s).strftime(fmt), to_utc_timestamp(e).strftime(fmt)] for s, e in v]
        for k, v in windows.items()
    }


def merge_windows(windows: Sequence[Window]) -> list[Window]:
    """Union of overlapping or touching windows, sorted."""
    merged: list[Window] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else num / den


def _hmean(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)


@dataclass(frozen=True)
class SeriesReport:
    """Counts for one series; every figure of the overall report is derived from these."""

    series: str
    windows: int
    tp: int
    fn: int
    fp: int
    alarms: int
    point_tp: int
    labelled_points: int
    points: int
    days: float
    delays_seconds: tuple[float, ...]
    windows_outside: int = 0

    @property
    def event_f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["delays_seconds"] = list(self.delays_seconds)
        data["event_f1"] = self.event_f1
        return data


@dataclass(frozen=True)
class EvaluationReport:
    event_f1: float
    event_precision: float
    event_recall: float
    point_f1: float
    point_precision: float
    point_recall: float
    fc1: float
    fp_per_day: float
    delay_seconds: float | None
    tp: int
    fn: int
    fp: int
    windows: int
    alarms: int
    days: float
    per_series: Mapping[str, SeriesReport] = field(default_factory=dict)
    skipped_series: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("per_series", "skipped_series")}
        data["skipped_series"] = list(self.skipped_series)
        data["per_series"] = {k: v.to_dict() for k, v in self.per_series.items()}
        return data

    def summary(self) -> str:
        delay = "n/a" if self.delay_seconds is None else f"{self.delay_seconds:.0f}s"
        return (
            f"event-F1 {self.event_f1:.3f} (TP {self.tp}, FN {self.fn}, FP {self.fp}), "
            f"point-F1 {self.point_f1:.3f}, Fc1 {self.fc1:.3f}, "
            f"FP/day {self.fp_per_day:.2f}, delay {delay}"
        )


def _utc_index(series: pd.Series, name: str) -> pd.Series:
    if not isinstance(series.index, pd.DatetimeIndex):
        raise InputError(f"alarms of series {name!r} must be indexed by timestamps")
    idx = series.index
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    flags = series.fillna(False).astype(bool).to_numpy()
    return pd.Series(flags, index=idx).sort_index(kind="stable")


def evaluate_series(name: str, alarms: pd.Series, windows: Sequence[Window]) -> SeriesReport:
    """Counts for one series (see the module docstring for the definitions)."""
    flags = _utc_index(alarms, name)
    idx = flags.index
    values = flags.to_numpy()
    if len(idx) == 0:
        return SeriesReport(name, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, (), len(windows))
    first, last = idx[0], idx[-1]
    steps = np.diff(idx.as_unit("ns").asi8)
    step_ns = float(np.median(steps)) if len(steps) else 0.0
    days = ((last - first).value + step_ns) / 86_400e9

    in_any = np.zeros(len(idx), dtype=bool)
    tp = fn = outside = 0
    delays: list[float] = []
    for start, end in windows:
        inside = (idx >= start) & (idx <= end)
        in_any |= inside
        if end < first or start > last:
            outside += 1
            continue
        hits = idx[inside & values]
        if len(hits):
            tp += 1
            delays.append((hits[0] - max(start, first)).total_seconds())
        else:
            fn += 1
    false_alarms = idx[values & ~in_any]
    fp = int(false_alarms.floor(_BUCKET).nunique())
    return SeriesReport(
        series=name,
        windows=tp + fn,
        tp=tp,
        fn=fn,
        fp=fp,
        alarms=int(values.sum()),
        point_tp=int((values & in_any).sum()),
        labelled_points=int(in_any.sum()),
        points=len(idx),
        days=days,
        delays_seconds=tuple(delays),
        windows_outside=outside,
    )


def evaluate(
    alarms: Mapping[str, pd.Series],
    windows: Mapping[str, Sequence[tuple[pd.Timestamp, pd.Timestamp]]],
) -> EvaluationReport:
    """Evaluate bool alarm series (UTC-indexed) against labelled windows, micro over series."""
    parsed = parse_windows({k: [list(w) for w in v] for k, v in windows.items()})
    per_series = {
        name: evaluate_series(name, series, parsed.get(name, [])) for name, series in alarms.items()
    }
    skipped = tuple(sorted(k for k, v in parsed.items() if k not in alarms and v))
    return _aggregate(per_series, skipped)


def _aggregate(per_series: Mapping[str, SeriesReport], skipped: tuple[str, ...]) -> EvaluationReport:
    reports = list(per_series.values())
    tp = sum(r.tp for r in reports)
    fn = sum(r.fn for r in reports)
    fp = sum(r.fp for r in reports)
    alarms = sum(r.alarms for r in reports)
    point_tp = sum(r.point_tp for r in reports)
    labelled = sum(r.labelled_points for r in reports)
    days = sum(r.days for r in reports)
    delays = [d for r in reports for d in r.delays_seconds]

    event_precision = _ratio(tp, tp + fp)
    event_recall = _ratio(tp, tp + fn)
    point_precision = _ratio(point_tp, alarms)
    point_recall = _ratio(point_tp, labelled)
    # No time span at all (a single timestamp): any false alarm is "infinitely" frequent.
    fp_per_day = fp / days if days > 0 else (0.0 if fp == 0 else math.inf)
    return EvaluationReport(
        event_f1=_ratio(2 * tp, 2 * tp + fp + fn),
        event_precision=event_precision,
        event_recall=event_recall,
        point_f1=_ratio(2 * point_tp, alarms + labelled),
        point_precision=point_precision,
        point_recall=point_recall,
        fc1=_hmean(point_precision, event_recall),
        fp_per_day=fp_per_day,
        delay_seconds=float(np.mean(delays)) if delays else None,
        tp=tp,
        fn=fn,
        fp=fp,
        windows=tp + fn,
        alarms=alarms,
        days=days,
        per_series=dict(per_series),
        skipped_series=skipped,
    )


def gate_passed(event_f1: float, labelled_windows: int, threshold: float) -> bool:
    """The gate on bare figures: event-F1 ≥ ``threshold`` with at least one labelled window."""
    return labelled_windows > 0 and event_f1 >= threshold


def passes_gate(report: EvaluationReport, threshold: float) -> bool:
    """True when event-F1 reaches ``threshold`` on at least one labelled window.

    A validation set without windows certifies nothing, so it never passes.
    """
    return gate_passed(report.event_f1, report.windows, threshold)
