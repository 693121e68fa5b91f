"""Training stage: split history, train and evaluate candidates.

Labels are NAB-format windows keyed ``"<host>/<metric>"`` (what the simulator writes; a key
without ``/`` is a whole host). A fleet model is evaluated at host level: one series per
host, its windows the union of that host's metric windows, its alarms the model's
``anomaly`` flags (after alarm handling) for that host's validation rows.

A new challenger is one small detector class plus one line in :data:`CANDIDATES`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ml.alarms import AlarmPolicy
from ml.detectors import IsolationForestDetector, ProphetDetector, RobustBaselineDetector
from ml.detectors.base import BaseDetector
from ml.evaluation import EvaluationReport, Window, evaluate, merge_windows, parse_windows
from ml.fleet import FleetModel
from smartcloudops.domain import METRIC_UNITS, long_to_wide, normalize_long
from smartcloudops.errors import InputError


def default_alarm_policy(routine: bool = True, likelihood: bool = False) -> AlarmPolicy:
    """One alarm per incident, then quiet for 6 hours on that host and leading metric.

    - plain (``routine=False``, the isolation forest): 2 flagged rows of the last 3, or one
      row at calibrated score ≥ 2;
    - ``routine``: a row must also reach 1.5× the peak of the third-largest over-the-line
      episode of its leading metric in the last 3 days (:mod:`ml.alarms`): what recurs is
      routine, however unusual it looked at training. It needs a score scale where "1.5×
      further from typical" means something (z-like scores); isolation-forest scores
      saturate below 1, so that family goes without it;
    - ``likelihood`` (with the routine bar): one row alarms on its own at 3× the line, and
      only at 1.5× the highest unlabelled episode of its leading metric in the last 3 days
      (rank 1: with the two rules below, a repeat of last night's episode still pages when
      it is a run of unusual rows or a record; without them, as for Prophet, the bar is the
      only way in, so it waits for three episodes); runs of moderately unusual rows alarm
      through the score likelihood (the mean of the last 10 rows' log(1 + score) more than
      4.5 standard deviations above the host's history); and, once the host has three days
      of history, a row 1.5× higher than any score it has produced (and at least half the
      line) alarms as a score record.

    Chosen on the synthetic development corpus (:mod:`ml.injection`) and the simulator; the
    likelihood and the record also on NAB, which NOTES.md allows as development data
    (docs/benchmarks.md has the runs, and other synthetic seeds as the check).
    """
    if not routine:
        return AlarmPolicy(m=2, n=3, cooldown="6h", bypass=2.0)
    if likelihood:
        return AlarmPolicy(
            m=1, n=1, cooldown="6h", recent_days=3.0, recent_rank=1, recent_margin=1.5,
            likelihood_z=4.5, likelihood_rows=10, spike_level=3.0,
            record_ratio=1.5, record_floor=0.5, record_history="3D",
        )  # fmt: skip
    return AlarmPolicy(m=2, n=3, cooldown="6h", bypass=2.0, recent_days=3.0, recent_rank=3, recent_margin=1.5)


def _candidate(
    name: str, detector: BaseDetector, *, routine: bool = True, likelihood: bool = False
) -> FleetModel:
    return FleetModel(detector, alarm_policy=default_alarm_policy(routine, likelihood), name=name)


CandidateFactory = Callable[[], FleetModel]

#: name -> factory of an unfitted FleetModel. Add a challenger with one line here.
CANDIDATES: dict[str, CandidateFactory] = {
    "isolation_forest": lambda: _candidate("isolation_forest", IsolationForestDetector(), routine=False),
    "prophet": lambda: _candidate("prophet", ProphetDetector()),
    "robust_baseline": lambda: _candidate("robust_baseline", RobustBaselineDetector(), likelihood=True),
}

#: The family ``smartcloudops detect`` uses on a single series.
DEFAULT_CANDIDATE = "robust_baseline"


def make_candidate(name: str) -> FleetModel:
    try:
        factory = CANDIDATES[name]
    except KeyError:
        valid = ", ".join(sorted(CANDIDATES))
        raise InputError(f"unknown candidate {name!r}; valid: {valid}") from None
    return factory()


@dataclass(frozen=True)
class CandidateResult:
    name: str
    model: FleetModel
    report: EvaluationReport
    train_seconds: float
    params: dict[str, Any]
    #: validation rows with ``score``/``anomaly`` (what plots and reports show)
    validation: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: host-level windows the report was computed against
    windows: dict[str, list[Window]] = field(default_factory=dict)
    #: fingerprint of the validation data and labels (compare champions on equal keys only)
    validation_key: str = ""


# -- data preparation ------------------------------------------------------------------------
def split_history(
    history_long: pd.DataFrame, validation_fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long samples -> (train_wide, valid_wide), split in time at one cut for all hosts.

    The last ``validation_fraction`` of the covered time span is validation.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise InputError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    try:
        long = normalize_long(history_long)
    except (ValueError, TypeError) as exc:
        raise InputError(f"bad metric history: {exc}") from exc
    long = long.dropna(subset=["value"])
    if long.empty:
        raise InputError("metric history is empty")
    wide = long_to_wide(long)
    ts = pd.to_datetime(wide["timestamp"], utc=True)
    start, end = ts.min(), ts.max()
    cut = start + (end - start) * (1.0 - validation_fraction)
    train = wide.loc[ts < cut].reset_index(drop=True)
    valid = wide.loc[ts >= cut].reset_index(drop=True)
    if train.empty or valid.empty:
        raise InputError(
            f"history from {start} to {end} is too short to split at validation_fraction "
            f"{validation_fraction}"
        )
    return train, valid


def host_windows(windows: Mapping[str, Sequence[Any]]) -> dict[str, list[Window]]:
    """``"host/metric"`` windows -> per-host union of windows."""
    parsed = parse_windows({k: list(v) for k, v in windows.items()})
    grouped: dict[str, list[Window]] = {}
    for key, wins in parsed.items():
        host = key.split("/", 1)[0]
        grouped.setdefault(host, []).extend(wins)
    return {host: merge_windows(wins) for host, wins in grouped.items()}


def in_windows(wide: pd.DataFrame, windows: Mapping[str, Sequence[Window]]) -> np.ndarray:
    """Bool per row: the row's timestamp falls in one of its host's windows."""
    ts = pd.to_datetime(wide["timestamp"], utc=True)
    hosts = wide["host"].astype(str).to_numpy()
    out = np.zeros(len(wide), dtype=bool)
    for host, wins in windows.items():
        rows = hosts == host
        for start, end in wins:
            out |= rows & (ts >= start).to_numpy() & (ts <= end).to_numpy()
    return out


def validation_fingerprint(valid_wide: pd.DataFrame, windows: Mapping[str, Sequence[Window]]) -> str:
    """A short hash of the validation rows and their labels."""
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(valid_wide, index=False).to_numpy().tobytes())
    digest.update(
        json.dumps({k: [[str(s), str(e)] for s, e in v] for k, v in sorted(windows.items())}).encode()
    )
    return digest.hexdigest()[:16]


#: Injected into unlabelled validation data: the unmistakable kinds. Stuck values, slow shifts
#: and trends stay in the development corpus, where their difficulty is the point.
VALIDATION_KINDS: tuple[str, ...] = ("spike", "level_shift", "dip", "variance", "ramp")


def inject_validation(
    valid_wide: pd.DataFrame, *, per_host: int = 2, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, list[list[str]]]]:
    """Held-back real rows with labelled anomalies written into them (:mod:`ml.injection`).

    For every host, ``per_host`` different metrics (drawn by ``seed``) each get one anomaly of
    a kind an on-call engineer would call an incident at a glance (:data:`VALIDATION_KINDS`),
    sized to that metric's own spread. Returns a copy of ``valid_wide`` and
    NAB-format windows keyed ``"host/metric"``. Used when the validation period has no
    labels of its own (a real Prometheus and no operator labels yet), so the gate still
    measures something real: can the model find departures in *these* hosts' metrics?
    """
    from ml.injection import inject_anomalies, windows_of

    rng = np.random.default_rng(seed)
    out = valid_wide.copy()
    ts = pd.to_datetime(out["timestamp"], utc=True)
    metrics = [c for c in out.columns if c not in ("timestamp", "host")]
    windows: dict[str, list[list[str]]] = {}
    for host in sorted(out["host"].astype(str).unique()):
        rows = np.flatnonzero((out["host"].astype(str) == host).to_numpy())
        rows = rows[np.argsort(ts.iloc[rows].to_numpy(), kind="stable")]
        usable = [m for m in metrics if pd.to_numeric(out[m].iloc[rows], errors="coerce").notna().all()]
        if len(rows) < 200 or not usable:
            continue
        chosen = rng.choice(len(usable), size=min(per_host, len(usable)), replace=False)
        for k, j in enumerate(sorted(chosen.tolist())):
            metric = usable[j]
            values = out[metric].iloc[rows].to_numpy(dtype=float)
            series = pd.DataFrame({"timestamp": ts.iloc[rows].to_numpy(), "value": values})
            # Keep values physical: percentages within 0..100, other non-negative metrics >= 0.
            high = 100.0 if METRIC_UNITS.get(metric) == "%" else float("inf")
            clip = (0.0, high) if values.min() >= 0 else None
            injected, anomalies = inject_anomalies(
                series,
                count=1,
                seed=int(rng.integers(2**31)),
                kinds=VALIDATION_KINDS,
                start_fraction=0.1 + 0.4 * k / max(per_host, 1),
                clip=clip,
            )
            out.loc[out.index[rows], metric] = injected["value"].to_numpy()
            windows.setdefault(f"{host}/{metric}", []).extend(windows_of(anomalies))
    return out, windows


# -- evaluation and training -----------------------------------------------------------------
def evaluate_model(
    model: FleetModel,
    valid_wide: pd.DataFrame,
    windows: Mapping[str, Sequence[Window]],
    *,
    context: pd.DataFrame | None = None,
    context_known: np.ndarray | None = None,
) -> tuple[EvaluationReport, pd.DataFrame]:
    """Score validation rows and evaluate per host against host-level windows.

    ``context`` (normally the training rows just before validation) is scored first, so the
    model's history buffer and alarm state are what live scoring would have at the start of
    validation; both are cleared afterwards so the model is registered clean.
    ``context_known`` marks labelled incidents in the context (not taken as routine).
    """
    model.reset_state()
    if context is not None and len(context):
        model.prime(context, score=True, y=context_known)
    try:
        scored = model.score(valid_wide, stateful=True)
    finally:
        model.reset_state()
    frame = valid_wide.copy()
    frame["score"] = scored["score"].to_numpy()
    frame["anomaly"] = scored["anomaly"].to_numpy()
    frame["severity"] = scored["severity"].to_numpy()
    ts = pd.to_datetime(frame["timestamp"], utc=True)
    alarms: dict[str, pd.Series] = {}
    for host, rows in frame.groupby(frame["host"].astype(str), sort=True).groups.items():
        alarms[str(host)] = pd.Series(frame.loc[rows, "anomaly"].to_numpy(), index=pd.DatetimeIndex(ts[rows]))
    report = evaluate(alarms, windows)
    return report, frame


def train_candidate(
    name: str,
    train_wide: pd.DataFrame,
    valid_wide: pd.DataFrame,
    windows: Mapping[str, Sequence[Any]],
    *,
    exclude_labelled_training: bool = True,
) -> CandidateResult:
    """Fit candidate ``name`` on ``train_wide`` and evaluate it on ``valid_wide``.

    ``windows`` are ``"host/metric"`` label windows. With ``exclude_labelled_training``,
    training rows inside a labelled window are kept for feature context but left out of
    fitting and thresholds (semi-supervised cleaning); validation labels are only used to
    evaluate.
    """
    model = make_candidate(name)
    hw = host_windows(windows)
    y = in_windows(train_wide, hw) if exclude_labelled_training else None
    started = time.perf_counter()
    model.fit(train_wide, y)
    elapsed = time.perf_counter() - started
    return evaluate_candidate(name, model, train_wide, valid_wide, windows, train_seconds=elapsed)


def evaluate_candidate(
    name: str,
    model: FleetModel,
    train_wide: pd.DataFrame,
    valid_wide: pd.DataFrame,
    windows: Mapping[str, Sequence[Any]],
    *,
    train_seconds: float,
) -> CandidateResult:
    """Evaluate a fitted candidate on ``valid_wide``, primed with ``train_wide`` as context.

    The second half of :func:`train_candidate`, for a model fitted elsewhere (the DAG fits
    it host by host, :meth:`ml.fleet.FleetModel.assemble`).
    """
    hw = host_windows(windows)
    report, scored = evaluate_model(
        model, valid_wide, hw, context=train_wide, context_known=in_windows(train_wide, hw)
    )
    return CandidateResult(
        name=name,
        model=model,
        report=report,
        train_seconds=train_seconds,
        params=model.get_params(),
        validation=scored,
        windows=hw,
        validation_key=validation_fingerprint(valid_wide, hw),
    )


def train_candidates(
    names: Sequence[str],
    train_wide: pd.DataFrame,
    valid_wide: pd.DataFrame,
    windows: Mapping[str, Sequence[Any]],
) -> list[CandidateResult]:
    return [train_candidate(n, train_wide, valid_wide, windows) for n in names]
