"""The request-path scorers for ``ml.fleet.FleetModel``: numpy in, numpy out, no pandas.

Two of them, chosen at load time by :func:`serving.model.make_scorer`:

- :class:`PlanScorer` runs an :class:`ml.compiled.FleetPlan`, the fitted Isolation-Forest
  fleet as plain arrays (features from running sums, the forest as complete binary trees,
  calibration, alarm rules, severity bands). It needs numpy and numba only, so the service can run
  it without importing scikit-learn, pandas or MLflow; a plan is only ever built after it
  scored a probe stream exactly as ``FleetModel.score`` (``ml.compiled.check_plan``).
- :class:`ArrayFleetScorer` serves every other fleet (another family, an alarm rule the plan
  does not know) through the model's own numpy entry points ``score_segment``,
  ``calibrate`` and ``apply_array``, the very pieces ``FleetModel.score`` uses.

Both keep per-host feature state (the last rows each host's detector needs as context, and
its alarm state) of their own, so a swap starts the new model with fresh history, and a
unit test holds both equal to ``FleetModel.score`` row by row and batch by batch.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.alarm_step import alarm_step
from serving import batch_response
from serving.schema import Batch, ScoreOutput
from smartcloudops.errors import ModelError

if TYPE_CHECKING:
    from ml.compiled import FleetPlan, HostState, PlanOutput

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


@dataclass
class _HostState:
    timestamps: np.ndarray
    values: np.ndarray
    alarm: Any = None  # ml.alarms.AlarmState


def batch_nanos(batch: Batch) -> np.ndarray:
    """int64 epoch nanoseconds (UTC) of the batch's timestamps, exact to the microsecond."""
    if batch.nanos is not None:
        return batch.nanos
    micros = [(ts - _EPOCH) // _MICRO for ts in batch.timestamps]
    return np.asarray(micros, dtype=np.int64) * 1000


@dataclass(eq=False)
class PlanScorer:
    """Scores through an :class:`ml.compiled.FleetPlan`; same results as ``FleetModel.score``."""

    plan: FleetPlan
    version: str
    run_id: str | None = None
    source: str = ""
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        self.metrics: tuple[str, ...] = self.plan.metrics
        self._lock = threading.Lock()
        self._state: dict[str, HostState] = {}
        # Here, before the provider swaps this scorer in: a request must not wait for numba.
        self.plan.warm_up()
        batch_response.warm_up()

    def score(self, batch: Batch) -> ScoreOutput:
        return self._score(batch, stateful=True)

    def check(self, batch: Batch) -> ScoreOutput:
        return self._score(batch, stateful=False)

    def _score(self, batch: Batch, *, stateful: bool) -> ScoreOutput:
        try:
            values = _columns(batch, self.metrics)
            ts = batch_nanos(batch)
            if stateful:
                with self._lock:
                    out = self._run(batch.hosts, ts, values, self._state)
            else:
                out = self._run(batch.hosts, ts, values, None)
        except Exception as exc:  # any failure inside the model is the model's, not the request's
            raise ModelError(f"model {self.version} failed to score: {exc}") from exc
        return ScoreOutput(
            scores=out.scores,
            anomaly=out.anomaly,
            severity=out.severity,
            contribution_matrix=out.contributions,
            contribution_metrics=self.metrics,
        )

    def _run(
        self, hosts: list[str], ts: np.ndarray, values: np.ndarray, state: dict[str, HostState] | None
    ) -> PlanOutput:
        large = len(hosts) >= PARALLEL_ROWS and _CPUS > 1
        halves = _host_halves(hosts) if large and _spare_core() else None
        if halves is None:
            return self.plan.score(hosts, ts, values, state)
        # A host's rows only ever meet its own rows and history, so two host groups scored
        # apart give the rows of one call (to the last bits: the plan's running sums depend
        # on what else is in the batch; tested to 1e-9). The kernels release the GIL: the
        # forest walk of one group (most of a large batch) runs while the other's does.
        from ml.compiled import PlanOutput

        first, second = halves
        second_hosts = [hosts[i] for i in second.tolist()]
        pending = _pool().submit(self.plan.score, second_hosts, ts[second], values[second], state)
        out_first = self.plan.score([hosts[i] for i in first.tolist()], ts[first], values[first], state)
        out_second = pending.result()
        n = len(hosts)
        scores = np.empty(n)
        anomaly = np.empty(n, dtype=bool)
        contributions = np.empty((n, out_first.contributions.shape[1]))
        severity = np.empty(n, dtype=object)
        for rows, part in ((first, out_first), (second, out_second)):
            scores[rows] = part.scores
            anomaly[rows] = part.anomaly
            contributions[rows] = part.contributions
            severity[rows] = part.severity
        return PlanOutput(scores, anomaly, severity.tolist(), contributions)


#: Batches of at least this many rows are scored as two host groups on two threads.
PARALLEL_ROWS = 2_000
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """One extra thread for the second host group, started on the first large batch."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-hosts")
        return _POOL


def _spare_core() -> bool:
    """Whether a core is idle right now: fewer runnable tasks than cores, this thread counted.

    A second thread only helps on a free core; on a busy machine the two groups take turns
    and cost more than one call. Measured here on a 10,000-row batch: with both cores taken
    by other work, 31 ms in one call against 34 ms in two; over HTTP with a core free, 56 ms
    per request in one call against 49 ms in two. Linux counts runnable tasks in
    ``/proc/loadavg``; elsewhere the one-minute load average stands in.
    """
    try:
        with open("/proc/loadavg", encoding="ascii") as fh:
            return int(fh.read().split()[3].partition("/")[0]) < _CPUS
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] < _CPUS - 1


def _host_halves(hosts: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Row indices of two host groups of about equal rows; None for a single host."""
    index: dict[str, int] = dict.fromkeys(hosts, 0)
    if len(index) < 2:
        return None
    for code, host in enumerate(index):
        index[host] = code
    codes = np.fromiter(map(index.__getitem__, hosts), dtype=np.intp, count=len(hosts))
    counts = np.bincount(codes)
    # Largest hosts first, each to the lighter group.
    group = np.zeros(len(counts), dtype=bool)
    load = [0, 0]
    for code in np.argsort(-counts, kind="stable").tolist():
        lighter = int(load[1] < load[0])
        group[code] = bool(lighter)
        load[lighter] += int(counts[code])
    second = group[codes]
    return np.flatnonzero(~second), np.flatnonzero(second)


def _columns(batch: Batch, metrics: tuple[str, ...]) -> np.ndarray:
    """The batch's values in the model's metric order (NaN for a metric never sent)."""
    if batch.metrics == metrics:
        return batch.values
    out = np.full((len(batch), len(metrics)), np.nan)
    for j, metric in enumerate(metrics):
        if metric in batch.metrics:
            out[:, j] = batch.values[:, batch.metrics.index(metric)]
    return out


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
    """Scores any fitted FleetModel through its detectors' numpy entry points; same results
    as ``FleetModel.score``."""

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
        batch_response.warm_up()  # large responses: compiled before this scorer serves

    # -- Scorer protocol -------------------------------------------------------------------
    def score(self, batch: Batch) -> ScoreOutput:
        return self._score(batch, stateful=True)

    def check(self, batch: Batch) -> ScoreOutput:
        return self._score(batch, stateful=False)

    # -- work ------------------------------------------------------------------------------
    def _score(self, batch: Batch, *, stateful: bool) -> ScoreOutput:
        n = len(batch)
        m = len(self.metrics)
        try:
            values = _columns(batch, self.metrics)
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
            contribution_matrix=contrib,
            contribution_metrics=self.metrics,
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
        raw, contrib = det.score_segment(segment)
        calibrated = det.calibrate(raw)
        flags = calibrated >= self._line
        keys = np.argmax(contrib, axis=1) if contrib.shape[1] > 1 else None
        previous = state.alarm if state is not None else self.model.initial_alarm_state(host)
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


def _group(hosts: list[str]) -> dict[str, np.ndarray]:
    """Row indices per host, hosts in first-seen order."""
    if len(hosts) == 1:
        return {hosts[0]: np.zeros(1, dtype=np.intp)}
    groups: dict[str, list[int]] = {}
    for i, host in enumerate(hosts):
        groups.setdefault(host, []).append(i)
    return {host: np.asarray(rows, dtype=np.intp) for host, rows in groups.items()}


class _AlarmRowPlan:
    """``AlarmPolicy.apply_array`` for one row, on plain Python numbers.

    The policy's array code builds a dozen small arrays per call; one live row needs a
    handful of comparisons. The routine bar is still the policy's ``routine_bar``; M-of-N
    with bypass and the cooldown per key are :func:`ml.alarm_step.alarm_step` (shared with
    ``ml.compiled``), in the same order, with the same
    :class:`ml.alarms.AlarmState` out, so one-row and batch calls can follow each other on
    one host. :meth:`build` refuses a policy with
    parameters it does not know and checks itself against ``apply_array`` on a random row
    stream at load time; on any difference the policy's own code serves.
    """

    _PARAMS = frozenset(
        {"m", "n", "cooldown", "bypass", "recent_days", "recent_rank", "recent_margin", "likelihood_z",
         "likelihood_rows", "spike_level", "record_ratio", "record_floor", "record_history"}
    )  # fmt: skip
    _STATE = (
        "recent", "last_alarm_ns", "last_by_key", "hour_max", "score_moments", "recent_scores", "score_max",
        "history_start_ns",
    )  # fmt: skip

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
        self.likelihood = policy.likelihood_z is not None
        self.record = policy.record_ratio is not None
        self.spike_level = float(policy.spike_level)
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
        raw = raw and score >= self.spike_level
        moments, recent_scores = state.score_moments, state.recent_scores
        if self.routine:
            # The routine bar is the policy's own code (its rules evolve in ml); only the
            # cheap M-of-N and cooldown steps are done here on Python numbers.
            when, keys = np.array([t], dtype=np.int64), None if key is None else np.array([key])
            bar, hour_max = self.policy.routine_bar(when, np.array([score]), state, keys)
            raw = raw and score >= self.margin * float(bar[0])
        if self.likelihood:
            # The policy's own code, like the routine bar: a few array operations on one row.
            flags, moments, recent_scores = self.policy.likelihood_flags(np.array([score]), state)
            raw = raw or bool(flags[0])
        score_max, history_start = state.score_max, state.history_start_ns
        if self.record:
            record, score_max, history_start = self.policy.record_flags(
                np.array([t], dtype=np.int64), np.array([score]), state
            )
            raw = raw or bool(record[0])
        alarm, recent, last, by_key = alarm_step(
            tuple(bool(x) for x in state.recent), state.last_alarm_ns, dict(state.last_by_key),
            flag=bool(raw), score=score, t=t, key=key,
            m=self.m, n=self.n, bypass=self.bypass, cooldown_ns=self.cooldown,
        )  # fmt: skip
        new_state = self.state_cls(
            recent=recent, last_alarm_ns=last, last_by_key=tuple(sorted(by_key.items())), hour_max=hour_max,
            score_moments=moments, recent_scores=recent_scores, score_max=score_max,
            history_start_ns=history_start,
        )  # fmt: skip
        return np.array([alarm]), new_state
