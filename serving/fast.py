"""The request-path scorer for ``ml.fleet.FleetModel``: numpy in, numpy out, no pandas.

:class:`~serving.model.FleetScorer` builds a pandas frame per request and hands it to
``FleetModel.score``, which parses timestamps and groups hosts through pandas again: about
1 ms of overhead per call whatever the row count. :class:`ArrayFleetScorer` does the same
work on :attr:`Batch.values <serving.schema.Batch.values>` directly:

- per-host feature state (the last rows each host's detector needs as context, and its
  alarm state) lives here in numpy arrays, one small record per host;
- each host's rows go through the detector's numpy entry point ``score_segment`` (for the
  Isolation Forest: causal features, then the forest compiled to flat arrays at load time,
  walked for all trees at once; for Prophet: a lookup in the bands precomputed at fit),
  its ``calibrate`` and the fleet's alarm policy ``apply_array`` — the very pieces
  ``FleetModel.score`` uses, so results are the same (a unit test holds them equal, row by
  row and batch by batch) while the detectors keep evolving in ``ml``;
- the Isolation Forest's trees are re-laid at load time (:mod:`serving.forest`) into one
  flat node table whose leaves loop on themselves, so a traversal step is five ``take``
  calls with no leaf test, and a 10,000-row batch does not build (trees × rows) temporaries
  of fancy indices.

The scorer owns its state (the model object's own buffer is left untouched), so a swap
starts the new model with fresh history exactly as ``FleetScorer`` did.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from serving.schema import Batch, ScoreOutput
from smartcloudops.errors import ModelError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


@dataclass
class _HostState:
    timestamps: np.ndarray
    values: np.ndarray
    alarm: Any = None  # ml.alarms.AlarmState


def batch_nanos(batch: Batch) -> np.ndarray:
    """int64 epoch nanoseconds (UTC) of the batch's timestamps, exact to the microsecond."""
    micros = [(ts - _EPOCH) // _MICRO for ts in batch.timestamps]
    return np.asarray(micros, dtype=np.int64) * 1000


def supports(model: Any) -> bool:
    """True for a fitted ``ml.fleet.FleetModel`` whose pieces this scorer relies on."""
    try:
        from ml.fleet import FleetModel
    except ImportError:  # serving can run without ml's extras only for fakes
        return False
    if not isinstance(model, FleetModel) or not hasattr(model, "detectors_"):
        return False
    policy = model.policy
    return hasattr(policy, "apply_array") and all(
        hasattr(det, "score_segment") and hasattr(det, "calibrate") and hasattr(det, "required_context")
        for det in [*model.detectors_.values(), model.fallback_]
    )


@dataclass(eq=False)
class ArrayFleetScorer:
    """Scores a fitted FleetModel on numpy arrays; same results as ``FleetModel.score``."""

    model: Any  # ml.fleet.FleetModel
    version: str
    run_id: str | None = None
    source: str = ""
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        from ml.detectors.base import Segment
        from ml.severity import severity_from_score
        from ml.thresholds import CALIBRATED_THRESHOLD

        self._segment_cls = Segment
        self._severity_from_score = severity_from_score
        self._line = CALIBRATED_THRESHOLD
        self.metrics: tuple[str, ...] = tuple(self.model.metrics)
        self._policy = self.model.policy
        self._alarm_plan = _AlarmRowPlan.build(self._policy)
        self._lock = threading.Lock()
        self._state: dict[str, _HostState] = {}
        # Context each host must keep: computed once, not per request.
        self._keep: dict[str, int] = {
            host: max(int(det.required_context()), 1) for host, det in self.model.detectors_.items()
        }
        self._fallback_keep = max(int(self.model.fallback_.required_context()), 1)
        from serving.forest import accelerate

        accelerate(self.model)
        # One-row plans for the detectors that have one and pass its load-time self-check.
        self._plans: dict[int, _ForestRowPlan] = {}
        for det in [*self.model.detectors_.values(), self.model.fallback_]:
            if id(det) not in self._plans:
                plan = _ForestRowPlan.build(det)
                if plan is not None:
                    self._plans[id(det)] = plan

    # -- Scorer protocol -------------------------------------------------------------------
    def score(self, batch: Batch) -> ScoreOutput:
        return self._score(batch, stateful=True)

    def check(self, batch: Batch) -> ScoreOutput:
        return self._score(batch, stateful=False)

    # -- work ------------------------------------------------------------------------------
    def _columns(self, batch: Batch) -> np.ndarray:
        if batch.metrics == self.metrics:
            return batch.values
        out = np.full((len(batch), len(self.metrics)), np.nan)
        for j, metric in enumerate(self.metrics):
            if metric in batch.metrics:
                out[:, j] = batch.values[:, batch.metrics.index(metric)]
        return out

    def _score(self, batch: Batch, *, stateful: bool) -> ScoreOutput:
        n = len(batch)
        m = len(self.metrics)
        try:
            values = self._columns(batch)
            ts = batch_nanos(batch)
            scores = np.zeros(n)
            alarms = np.zeros(n, dtype=bool)
            contrib = np.zeros((n, m))
            groups = _group(batch.hosts)
            with self._lock:
                for host, rows in groups.items():
                    if len(rows) > 1:
                        rows = rows[np.argsort(ts[rows], kind="stable")]
                    s, a, c = self._score_host(host, ts[rows], values[rows], stateful)
                    scores[rows], alarms[rows], contrib[rows] = s, a, c
        except ModelError:
            raise
        except Exception as exc:  # any failure inside the model is the model's, not the request's
            raise ModelError(f"model {self.version} failed to score: {exc}") from exc
        return ScoreOutput(
            scores=scores,
            anomaly=alarms,
            severity=self._severities(scores, alarms),
            contributions=self._contributions(contrib),
        )

    def _score_host(
        self, host: str, ts: np.ndarray, values: np.ndarray, stateful: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Mirrors ml.fleet.FleetModel._score_host on arrays (tests hold the two equal).
        det = self.model.detectors_.get(host, self.model.fallback_)
        state = self._state.get(host) if stateful else None
        if state is not None:
            older = state.timestamps < ts[0]
            ctx_ts, ctx_values = state.timestamps[older], state.values[older]
        else:
            ctx_ts = np.empty(0, dtype=np.int64)
            ctx_values = np.empty((0, values.shape[1]))
        k = len(ctx_ts)
        positions = np.arange(-k, len(ts))
        positions[:k] = -1
        segment = self._segment_cls(
            key=host,
            timestamps=np.concatenate([ctx_ts, ts]) if k else ts,
            values=np.vstack([ctx_values, values]) if k else values,
            positions=positions,
        )
        plan = self._plans.get(id(det)) if len(ts) == 1 else None
        raw, contrib = plan.score_last(segment) if plan is not None else det.score_segment(segment)
        calibrated = det.calibrate(raw)
        flags = calibrated >= self._line
        keys = np.argmax(contrib, axis=1) if contrib.shape[1] > 1 else None
        previous = state.alarm if state is not None else None
        if self._alarm_plan is not None and len(ts) == 1:
            alarms, new_alarm = self._alarm_plan.apply_one(
                int(ts[0]),
                bool(flags[0]),
                previous,
                float(calibrated[0]),
                None if keys is None else int(keys[0]),
            )
        else:
            alarms, new_alarm = self._policy.apply_array(ts, flags, previous, calibrated, keys)
        if stateful:
            keep = self._keep.get(host, self._fallback_keep)
            self._state[host] = _HostState(
                timestamps=segment.timestamps[-keep:].copy(),
                values=segment.values[-keep:].copy(),
                alarm=new_alarm,
            )
        return calibrated, alarms, contrib

    def _severities(self, scores: np.ndarray, alarms: np.ndarray) -> list[str | None]:
        out: list[str | None] = [None] * len(scores)
        for i in np.flatnonzero(alarms).tolist():
            # An alarm kept by M-of-N may sit just under the line: still LOW (ml.severity).
            level = self._severity_from_score(float(scores[i]))
            out[i] = str(level) if level is not None else "low"
        return out

    def _contributions(self, contrib: np.ndarray) -> list[dict[str, float]]:
        metrics = self.metrics
        # Four decimals like FleetModel.score; np.round (scale, rint, unscale) may differ from
        # round() by one unit in the 4th decimal on exact ties, and is 5x faster on a batch.
        return [dict(zip(metrics, row, strict=True)) for row in np.round(contrib, 4).tolist()]


def _group(hosts: list[str]) -> dict[str, np.ndarray]:
    """Row indices per host, hosts in first-seen order."""
    if len(hosts) == 1:
        return {hosts[0]: np.zeros(1, dtype=np.intp)}
    groups: dict[str, list[int]] = {}
    for i, host in enumerate(hosts):
        groups.setdefault(host, []).append(i)
    return {host: np.asarray(rows, dtype=np.intp) for host, rows in groups.items()}


class _ForestRowPlan:
    """``IsolationForestDetector.score_segment`` for a segment's last row, computed directly.

    One live row needs its features only, not the features of the hour of context before
    it: value, first difference, deviation from the mean and the spread of the previous
    ``window`` rows (once half a window exists), time of day; then the forest and the
    per-metric robust z contributions. That is a dozen numpy calls instead of the detector's
    batch machinery (about 0.3 ms a row). It reads the detector's fitted attributes, so
    :meth:`build` checks it against ``score_segment`` on probe segments at load time and
    returns None (the generic path serves) if anything differs: a detector changed in ``ml``
    can never be scored wrongly here, only more slowly.
    """

    def __init__(self, det: Any) -> None:
        from ml.features import DAY_NS, PER_METRIC_FEATURES

        if tuple(PER_METRIC_FEATURES) != ("value", "diff", "dev", "std"):
            raise ValueError(f"unknown feature layout {PER_METRIC_FEATURES}")
        self.day_ns = DAY_NS
        self.window = int(det.window_rows_)
        self.warmup = max(2, self.window // 2)
        self.fill = np.asarray(det.fill_values_, dtype=np.float64)
        self.feature_fill = np.asarray(det.feature_fill_, dtype=np.float64)
        self.center = np.asarray(det.feature_center_, dtype=np.float64)
        self.scale = np.asarray(det.feature_scale_, dtype=np.float64)
        self.forest = det.forest_
        self.m = len(det.metrics_)
        if self.feature_fill.shape != (4 * self.m + 2,):
            raise ValueError("feature count differs from 4 per metric + time of day")

    @classmethod
    def build(cls, det: Any) -> _ForestRowPlan | None:
        if type(det).__name__ != "IsolationForestDetector":
            return None
        try:
            plan = cls(det)
            plan._self_check(det)
        except Exception as exc:  # noqa: BLE001 - any mismatch means: use the generic path
            import logging

            logging.getLogger("serving.fast").warning(
                "one-row fast path off for %s: %s", type(det).__name__, exc
            )
            return None
        return plan

    def _self_check(self, det: Any) -> None:
        from ml.detectors.base import Segment

        rng = np.random.default_rng(0)
        step = 60 * 10**9
        base = np.where(self.fill != 0, self.fill, 1.0)
        for n in sorted(
            {1, 2, 3, self.warmup, self.warmup + 1, self.window, self.window + 1, self.window + 2}
        ):
            values = base * (1 + rng.normal(0, 0.1, (n, self.m)))
            values[rng.random((n, self.m)) < 0.1] = np.nan
            values[-1, 0] = base[0] * 5  # an outlier, so contributions are not all zero
            ts = np.arange(n, dtype=np.int64) * step + 1_700_000_000 * 10**9
            positions = np.full(n, -1)
            positions[-1] = 0
            segment = Segment(key="check", timestamps=ts, values=values, positions=positions)
            want_raw, want_contrib = det.score_segment(segment)
            got_raw, got_contrib = self.score_last(segment)
            if not (np.allclose(got_raw, want_raw, rtol=0, atol=1e-9)
                    and np.allclose(got_contrib, want_contrib, rtol=0, atol=1e-9)):  # fmt: skip
                raise ValueError(f"self-check differs from score_segment on {n} rows")

    def score_last(self, segment: Any) -> tuple[np.ndarray, np.ndarray]:
        values = segment.values[-(self.window + 1) :]
        if np.isnan(values).any():
            values = _impute(segment.values, self.fill)[-(self.window + 1) :]
        n = len(values)
        x = values[-1]
        diff = x - values[-2] if n > 1 else np.full(self.m, np.nan)
        prev = values[max(0, n - 1 - self.window) : n - 1]
        if len(prev) >= self.warmup:
            dev = x - prev.mean(axis=0)
            std = prev.std(axis=0)
        else:
            dev = std = np.full(self.m, np.nan)
        phase = 2.0 * np.pi * (int(segment.timestamps[-1]) % self.day_ns) / self.day_ns
        feats = np.empty(4 * self.m + 2)
        per_metric = feats[: 4 * self.m].reshape(self.m, 4)
        per_metric[:, 0], per_metric[:, 1], per_metric[:, 2], per_metric[:, 3] = x, diff, dev, std
        feats[-2], feats[-1] = np.sin(phase), np.cos(phase)
        feats = np.where(np.isnan(feats), self.feature_fill, feats)
        raw = self.forest.anomaly_score(feats[None, :])
        z = np.abs(feats - self.center) / self.scale
        contrib = z[: 4 * self.m].reshape(self.m, 4).max(axis=1)
        total = contrib.sum()
        normalised = contrib / total if total > 0 else np.zeros(self.m)
        return raw, normalised[None, :]


def _impute(values: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Forward fill within the segment, then the training medians (as BaseDetector does)."""
    mask = np.isnan(values)
    idx = np.where(~mask, np.arange(len(values))[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    filled = values[idx, np.arange(values.shape[1])]
    return np.where(np.isnan(filled), fill[None, :], filled)


class _AlarmRowPlan:
    """``AlarmPolicy.apply_array`` for one row, on plain Python numbers.

    The policy's array code builds a dozen small arrays per call; one live row needs a
    handful of comparisons. The routine bar is still the policy's ``routine_bar``; M-of-N
    with bypass and the cooldown per key are done here in the same order, with the same
    :class:`ml.alarms.AlarmState` out, so one-row and batch calls can follow each other on
    one host. :meth:`build` refuses a policy with
    parameters it does not know and checks itself against ``apply_array`` on a random row
    stream at load time; on any difference the policy's own code serves.
    """

    _PARAMS = frozenset({"m", "n", "cooldown", "bypass", "recent_days", "recent_rank", "recent_margin"})
    _STATE = ("recent", "last_alarm_ns", "last_by_key", "hour_max")

    def __init__(self, policy: Any) -> None:
        from dataclasses import fields

        from ml.alarms import AlarmPolicy, AlarmState

        if type(policy) is not AlarmPolicy or set(policy.get_params()) != self._PARAMS:
            raise ValueError(f"unknown alarm policy {type(policy).__name__}")
        if tuple(f.name for f in fields(AlarmState)) != self._STATE:
            raise ValueError("unknown AlarmState layout")
        self.state_cls = AlarmState
        self.cooldown = int(policy._check())
        self.m, self.n = int(policy.m), int(policy.n)
        self.bypass = None if policy.bypass is None else float(policy.bypass)
        self.routine = policy.recent_days is not None
        self.margin = float(policy.recent_margin)
        self.policy = policy

    @classmethod
    def build(cls, policy: Any) -> _AlarmRowPlan | None:
        try:
            plan = cls(policy)
            plan._self_check()
        except Exception as exc:  # noqa: BLE001 - any mismatch means: use the policy's code
            import logging

            logging.getLogger("serving.fast").warning("one-row alarm fast path off: %s", exc)
            return None
        return plan

    def _self_check(self) -> None:
        rng = np.random.default_rng(1)
        t = 1_700_000_000 * 10**9
        ours = theirs = None
        for _ in range(400):
            # Mostly forward in time, sometimes a retry of the past or a gap of hours.
            t += int(rng.choice([60, 60, 60, 600, 3 * 3600, -300])) * 10**9
            score = float(rng.choice([rng.random() * 0.9, 1.0 + rng.random() * 2.5]))
            flag, key = score >= 1.0, int(rng.integers(0, 3))
            a_ref, theirs = self.policy.apply_array(
                np.array([t], dtype=np.int64), np.array([flag]), theirs, np.array([score]), np.array([key])
            )
            a_ours, ours = self.apply_one(t, flag, ours, score, key)
            if bool(a_ref[0]) != bool(a_ours[0]) or ours != theirs:
                raise ValueError("self-check differs from AlarmPolicy.apply_array")

    def apply_one(
        self, t: int, flag: bool, state: Any, score: float, key: int | None
    ) -> tuple[np.ndarray, Any]:
        state = state or self.state_cls()
        raw = flag
        hour_max = state.hour_max
        if self.routine:
            # The routine bar is the policy's own code (its rules evolve in ml); only the
            # cheap M-of-N and cooldown steps are done here on Python numbers.
            bar, hour_max = self.policy.routine_bar(np.array([t], dtype=np.int64), np.array([score]), state)
            raw = raw and score >= self.margin * float(bar[0])
        prefix = state.recent[-(self.n - 1) :] if self.n > 1 else ()
        full = (*(bool(x) for x in prefix), bool(raw))
        # A candidate is a flagged row with enough company (or beyond the bypass level).
        candidate = raw and sum(full[-self.n :]) >= self.m
        if self.bypass is not None:
            candidate = candidate or (raw and score >= self.bypass)
        last = state.last_alarm_ns
        by_key = dict(state.last_by_key)
        if key is None and not by_key and last is not None:
            by_key[0] = last
        row_key = 0 if key is None else key
        alarm = False
        if candidate:
            previous = by_key.get(row_key)
            if previous is None or t >= previous + self.cooldown or self.cooldown == 0:
                alarm = True
                last = t
                by_key[row_key] = t
        keep = max(self.n - 1, 0)
        recent = full[len(full) - keep :] if keep else ()
        new_state = self.state_cls(
            recent=recent, last_alarm_ns=last, last_by_key=tuple(sorted(by_key.items())), hour_max=hour_max
        )
        return np.array([alarm]), new_state
