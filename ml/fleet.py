"""FleetModel: the unit trained, registered in MLflow and served.

One fitted detector per host (all of one family), plus a fleet-wide *fallback* detector fit on
every host pooled, used for hosts the model has never seen (a new instance scales in) rather
than failing. Scores pass through the detector's calibration and threshold, then through the
alarm policy (:mod:`ml.alarms`) per host.

Live scoring and history
------------------------
The scoring service sends one row per host per call. Features such as "deviation from the
last hour" need history, so the model keeps a small per-host buffer of recent rows (as many
as the host's detector needs, :meth:`~ml.detectors.base.BaseDetector.required_context`) and
the alarm-handling state. With ``stateful=True`` (the default) each call uses the buffer as
context and then updates it, so scoring rows one at a time gives the same results as scoring
them in one batch. Rows older than the buffer's context are scored without it; a retried
timestamp is recomputed, not double counted in the features. With ``stateful=False`` the call
is a pure function of its input (used for validation); a host with no history is scored with
neutral features (no deviation), which is also what happens on the first live call.

The buffer is small, guarded by a lock, and dropped/re-created around pickling, so the model
stays picklable with cloudpickle.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import numpy as np
import pandas as pd
from sklearn.base import clone

from ml.alarms import AlarmPolicy, AlarmState
from ml.detectors.base import BaseDetector, Segment, metric_matrix, utc_nanos
from ml.severity import severity_labels
from ml.thresholds import CALIBRATED_THRESHOLD
from smartcloudops.domain import CANONICAL_METRICS
from smartcloudops.errors import InputError, ModelError

#: Output columns of :meth:`FleetModel.score`, in order.
SCORE_COLUMNS: tuple[str, ...] = ("score", "anomaly", "severity", "contributions")


@dataclass
class _HostState:
    timestamps: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    values: np.ndarray | None = None
    alarm: AlarmState = field(default_factory=AlarmState)


def _infer_metrics(frame: pd.DataFrame) -> list[str]:
    """Canonical metrics with data first (in canonical order), else any numeric column."""
    columns = [c for c in frame.columns if c not in ("timestamp", "host")]
    with_data = [str(c) for c in columns if pd.to_numeric(frame[c], errors="coerce").notna().any()]
    canonical = [m for m in CANONICAL_METRICS if m in with_data]
    return canonical or with_data


class FleetModel:
    """Per-host detectors of one family, with a pooled fallback and alarm handling."""

    def __init__(
        self,
        detector: BaseDetector,
        alarm_policy: AlarmPolicy | None = None,
        name: str | None = None,
        metrics: Sequence[str] | None = None,
        min_host_rows: int = 60,
    ) -> None:
        self.detector = detector
        self.alarm_policy = alarm_policy
        self.name = name or detector.family
        self.requested_metrics = list(metrics) if metrics is not None else None
        self.min_host_rows = min_host_rows
        self._lock = threading.Lock()
        self._state: dict[str, _HostState] = {}

    # -- pickling: the lock cannot be pickled; the buffer is runtime state ----------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state["_state"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- description ----------------------------------------------------------------------
    @property
    def family(self) -> str:
        return self.detector.family

    @property
    def metrics(self) -> list[str]:
        self._check_fitted()
        return list(self.metrics_)

    @property
    def hosts(self) -> list[str]:
        self._check_fitted()
        return list(self.detectors_)

    @property
    def policy(self) -> AlarmPolicy:
        return self.alarm_policy if self.alarm_policy is not None else AlarmPolicy()

    def get_params(self) -> dict[str, Any]:
        """Flat parameters for logging: ``detector__*`` and ``alarm__*``."""
        params: dict[str, Any] = {"family": self.family, "min_host_rows": self.min_host_rows}
        for key, value in self.detector.get_params(deep=True).items():
            params[f"detector__{key}"] = value
        for key, value in self.policy.get_params().items():
            params[f"alarm__{key}"] = value
        return params

    @property
    def version_info(self) -> dict[str, Any]:
        import sklearn

        import ml

        self._check_fitted()
        return {
            "name": self.name,
            "family": self.family,
            "metrics": list(self.metrics_),
            "hosts": list(self.detectors_),
            "skipped_hosts": list(self.skipped_hosts_),
            "fitted_at": self.fitted_at_,
            "train_start": self.train_start_,
            "train_end": self.train_end_,
            "n_train_rows": self.n_train_rows_,
            "params": {
                k: repr(v) if not isinstance(v, int | float | str | bool | None) else v
                for k, v in self.get_params().items()
            },
            "versions": {
                "ml": ml.__version__,
                "scikit-learn": sklearn.__version__,
                "numpy": np.__version__,
                "pandas": pd.__version__,
                "python": platform.python_version(),
            },
        }

    def _check_fitted(self) -> None:
        if not hasattr(self, "detectors_"):
            raise ModelError(f"fleet model {self.name!r} is not fitted")

    # -- fit ------------------------------------------------------------------------------
    def fit(self, wide: pd.DataFrame, y: Any = None) -> Self:
        """Fit one detector per host plus the pooled fallback.

        ``wide``: columns ``timestamp, host, <metrics>`` (one row per host and timestamp).
        ``y``: optional bool per row marking known-anomalous rows (kept out of fitting).

        The same as fitting the parts separately (:meth:`training_metrics`,
        :meth:`fit_host`, :meth:`fit_pooled`) and joining them with :meth:`assemble`, which
        is how the ``train_validate_deploy`` DAG spreads one model over many tasks.
        """
        frame = _check_frame(wide, "training data")
        if frame.empty:
            raise InputError("training data is empty")
        metrics = self.training_metrics(frame)
        known = _known_rows(y, len(frame), "training data")
        hosts = frame["host"].astype(str).to_numpy()
        detectors: dict[str, BaseDetector | None] = {}
        for host in pd.unique(hosts):
            rows = hosts == host
            detectors[str(host)] = self.fit_host(
                frame.loc[rows], None if known is None else known[rows], metrics
            )
        fitted = [d for d in detectors.values() if d is not None]
        # A one-host fleet needs no pooled fit: its host detector is the fallback (assemble).
        pooled = None if len(fitted) == len(detectors) == 1 else self.fit_pooled(frame, known, metrics)
        return self.assemble(detectors, pooled, metrics=metrics, training_span=training_span(frame))

    def training_metrics(self, wide: pd.DataFrame) -> list[str]:
        """The metrics a fit on ``wide`` (the whole fleet's training rows) uses."""
        frame = _check_frame(wide, "training data")
        metrics = list(self.requested_metrics or _infer_metrics(frame))
        if not metrics:
            raise InputError("training data has no metric columns with values")
        return metrics

    def _template(self, metrics: Sequence[str]) -> BaseDetector:
        return clone(self.detector).set_params(metrics=list(metrics))

    def fit_host(self, part: pd.DataFrame, y: Any, metrics: Sequence[str]) -> BaseDetector | None:
        """One host's detector, fitted on that host's rows; None when the host is skipped.

        Skipped: fewer than ``min_host_rows`` rows, or data that cannot train a model (e.g. a
        metric never reported); the pooled fallback then serves the host.
        """
        frame = _check_frame(part, "host training data")
        if len(frame) < self.min_host_rows:
            return None
        known = _known_rows(y, len(frame), "host training data")
        try:
            return self._template(metrics).fit(frame.loc[:, ["timestamp", *metrics]], known)
        except InputError:
            # One host that cannot train must not fail the whole fleet.
            return None

    def fit_pooled(self, wide: pd.DataFrame, y: Any, metrics: Sequence[str]) -> BaseDetector:
        """The fleet-wide fallback detector, fitted on every host's rows pooled."""
        frame = _check_frame(wide, "training data")
        known = _known_rows(y, len(frame), "training data")
        return self._template(metrics).fit(frame.loc[:, ["timestamp", "host", *metrics]], known)

    def assemble(
        self,
        detectors: Mapping[str, BaseDetector | None],
        pooled: BaseDetector | None,
        *,
        metrics: Sequence[str],
        training_span: TrainingSpan,
    ) -> Self:
        """Make this (unfitted) model a fitted one from separately fitted parts.

        ``detectors``: host -> its :meth:`fit_host` result (None: skipped). ``pooled``: the
        :meth:`fit_pooled` result; not needed when exactly one host was fitted and none
        skipped (that host's detector is then the fallback, as in :meth:`fit`).
        ``training_span``: :func:`training_span` of the fleet's training rows.
        """
        fitted = {str(h): d for h, d in detectors.items() if d is not None}
        skipped = [str(h) for h, d in detectors.items() if d is None]
        if len(fitted) == 1 and not skipped:
            fallback = next(iter(fitted.values()))
        elif pooled is None:
            raise InputError(f"fleet model {self.name!r} needs the pooled fallback detector")
        else:
            fallback = pooled
        self.metrics_ = list(metrics)
        self.detectors_: dict[str, BaseDetector] = fitted
        self.fallback_ = fallback
        self.skipped_hosts_ = skipped
        self.train_start_, self.train_end_, self.n_train_rows_ = training_span
        self.fitted_at_ = datetime.now(UTC).isoformat()
        self.reset_state()
        return self

    def detector_for(self, host: str) -> BaseDetector:
        self._check_fitted()
        return self.detectors_.get(host, self.fallback_)

    def initial_alarm_state(self, host: str) -> AlarmState:
        """The alarm state a host starts from: the history of its detector's training scores
        (the alarm policy's score likelihood and score record judge the first rows against
        it)."""
        detector = self.detector_for(host)
        moments = getattr(detector, "score_moments_", None)
        if moments is None:  # pickled before the likelihood existed: no history
            return AlarmState()
        return AlarmState(
            score_moments=tuple(moments),
            score_max=float(getattr(detector, "score_max_", 0.0)),
            history_start_ns=getattr(detector, "history_start_ns_", None),
        )

    def reset_state(self) -> None:
        """Forget the live-scoring history of every host."""
        with self._lock:
            self._state = {}

    def prime(self, history: pd.DataFrame, *, score: bool = False, y: Any = None) -> None:
        """Load recent rows (``timestamp, host, <metrics>``) into the live-scoring buffer.

        Each host keeps the last rows its detector needs as context; alarm state is reset.
        With ``score=True`` the history is scored instead, as live scoring would have seen
        it: the alarm state then also remembers its alarms and the scores the routine bar
        and the score likelihood of the alarm policy compare with (:mod:`ml.alarms`); the
        likelihood's history is then these rows' scores alone (the history normally *is*
        the training data, whose scores would otherwise count twice). Without it, each
        host's alarm state starts from its detector's training scores. Use it to warm a freshly loaded
        model, or to score validation data right after the training period. ``y`` (bool
        per row) marks known incidents: they are scored but not taken as routine.
        """
        self._check_fitted()
        frame = _check_frame(history, "history")
        if frame.empty:
            return
        if score:
            known = _known_rows(y, len(frame), "history")
            self.reset_state()
            self._score_frame(frame, stateful=True, known=known, replay=True)
            return
        ts = utc_nanos(frame["timestamp"])
        hosts = frame["host"].astype(str).to_numpy()
        values = metric_matrix(frame, self.metrics_)
        with self._lock:
            for host in pd.unique(hosts):
                rows = np.flatnonzero(hosts == host)
                rows = rows[np.argsort(ts[rows], kind="stable")]
                keep = max(self.detector_for(str(host)).required_context(), 1)
                rows = rows[-keep:]
                self._state[str(host)] = _HostState(
                    timestamps=ts[rows], values=values[rows], alarm=self.initial_alarm_state(str(host))
                )

    # -- score ----------------------------------------------------------------------------
    def score(self, wide: pd.DataFrame, *, stateful: bool = True) -> pd.DataFrame:
        """Score rows ``timestamp, host, <metrics>``; output in the same row order.

        Columns: ``score`` (calibrated: 0 typical, 1.0 the alarm line), ``anomaly`` (bool,
        after alarm handling), ``severity`` (``low``..``critical`` where ``anomaly``, else
        None), ``contributions`` (dict metric → share, summing to 1 or all 0).
        """
        return self._score_frame(wide, stateful=stateful)

    def _score_frame(
        self, wide: pd.DataFrame, *, stateful: bool, known: np.ndarray | None = None, replay: bool = False
    ) -> pd.DataFrame:
        self._check_fitted()
        frame = _check_frame(wide, "scoring input")
        n = len(frame)
        scores = np.zeros(n)
        alarms = np.zeros(n, dtype=bool)
        contrib = np.zeros((n, len(self.metrics_)))
        if n:
            ts = utc_nanos(frame["timestamp"])
            hosts = frame["host"].astype(str).to_numpy()
            values = metric_matrix(frame, self.metrics_)
            with self._lock:
                for host in pd.unique(hosts):
                    rows = np.flatnonzero(hosts == host)
                    rows = rows[np.argsort(ts[rows], kind="stable")]
                    marks = None if known is None else known[rows]
                    s, a, c = self._score_host(str(host), ts[rows], values[rows], stateful, marks, replay)
                    scores[rows], alarms[rows], contrib[rows] = s, a, c
        metrics = list(self.metrics_)
        return pd.DataFrame(
            {
                "score": scores,
                "anomaly": alarms,
                "severity": severity_labels(scores, alarms),
                "contributions": [
                    {m: round(float(v), 4) for m, v in zip(metrics, row, strict=True)} for row in contrib
                ],
            },
            index=frame.index,
        )

    def _score_host(
        self,
        host: str,
        ts: np.ndarray,
        values: np.ndarray,
        stateful: bool,
        known: np.ndarray | None = None,
        replay: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        det = self.detector_for(host)
        state = self._state.get(host) if stateful else None
        if state is not None and state.values is not None:
            older = state.timestamps < ts[0]
            ctx_ts, ctx_values = state.timestamps[older], state.values[older]
        else:
            ctx_ts = np.empty(0, dtype=np.int64)
            ctx_values = np.empty((0, values.shape[1]))
        k = len(ctx_ts)
        segment = Segment(
            key=host,
            timestamps=np.concatenate([ctx_ts, ts]),
            values=np.vstack([ctx_values, values]),
            positions=np.concatenate([np.full(k, -1), np.arange(len(ts))]),
        )
        raw, contrib = det.score_segment(segment)  # rows k: only
        calibrated = det.calibrate(raw)
        flags = calibrated >= CALIBRATED_THRESHOLD
        if state is not None:
            alarm_state = state.alarm
        else:  # a replay of the history starts the likelihood's history with its own rows
            alarm_state = AlarmState() if replay else self.initial_alarm_state(host)
        # The cooldown is kept per leading metric: a second, different incident on the same
        # host pages again (see ml.alarms).
        keys = np.argmax(contrib, axis=1) if contrib.shape[1] > 1 else None
        alarms, new_alarm_state = self.policy.apply_array(
            ts, flags, alarm_state, calibrated, keys, exclude=known
        )
        if stateful:
            keep = max(det.required_context(), 1)
            self._state[host] = _HostState(
                timestamps=segment.timestamps[-keep:].copy(),
                values=segment.values[-keep:].copy(),
                alarm=new_alarm_state,
            )
        return calibrated, alarms, contrib


#: ``(first timestamp, last timestamp, rows)`` of a training frame (ISO strings, UTC).
TrainingSpan = tuple[str, str, int]


def training_span(wide: pd.DataFrame) -> TrainingSpan:
    ts = pd.to_datetime(_check_frame(wide, "training data")["timestamp"], utc=True)
    return ts.min().isoformat(), ts.max().isoformat(), len(ts)


def _known_rows(y: Any, rows: int, what: str) -> np.ndarray | None:
    known = None if y is None else np.asarray(y, dtype=bool).ravel()
    if known is not None and len(known) != rows:
        raise InputError(f"y has {len(known)} rows but the {what} has {rows}")
    return known


def _check_frame(wide: Any, what: str) -> pd.DataFrame:
    if not isinstance(wide, pd.DataFrame):
        raise InputError(f"{what} must be a pandas DataFrame, got {type(wide).__name__}")
    missing = [c for c in ("timestamp", "host") if c not in wide.columns]
    if missing:
        raise InputError(f"{what} lacks column(s): {', '.join(missing)}")
    return wide
