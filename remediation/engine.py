"""The rule engine: recent metrics and anomalies in, remediation actions out.

For every enabled rule and every host it selects, :meth:`RemediationEngine.evaluate` decides
whether the rule's condition holds, and if so acts -- at most once per incident:

* An *incident* (episode) of a rule on a host starts when the condition first holds and ends
  when the value crosses the clear threshold (hysteresis), or, for anomaly rules, after a quiet
  period. Its start time is kept in the event store, so every process agrees on it.
* ``claim("remediation:incident:<rule>:<host>:<start>")`` in the event store is the
  exactly-once arbiter: two sensor runs that see the same incident produce one action.
* A per-(rule, host) cooldown (event-store state, survives restarts) and the incident claim
  together mean a failed or unverified fix is escalated, never retried in a loop.
* Dry-run is decided by the executor alone (:mod:`remediation.executor`).
* ``approval: required`` leaves a ``pending_approval`` record that :meth:`approve` /
  :meth:`reject` (ChatOps) decide, or that expires after ``approval_ttl``.
* After an action, the engine re-checks the condition once the settle time has passed
  (immediately by default: the simulator reacts at once) and records ``verified``.

Further safety rails (rate limit / circuit breaker, blast radius, maintenance windows) plug
in as ``guards`` (:mod:`remediation.safety`; ``from_settings`` wires them from the
``remediation_*`` settings): callables that may veto an action before it is claimed. They
count actions across hosts, so one fleet lock spans guards -> claim -> recorded action: two
runs acting on two hosts at once cannot both pass a limit that has room for one.

Crash safety: before claiming an incident the engine writes an *intent* into the (rule, host)
state. A run that dies between the claim and the recorded action leaves it behind, and the
next run holding the (rule, host) lock resolves it: recorded already -> clear it (and put a
missing audit record back); never claimed -> drop it; claimed, not recorded -> finish the
action under the same id while the incident holds (the executor's idempotency check skips a
target already in its goal state), or close it as ``skipped`` once the incident is over.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from remediation.actions import ActionOutcome, Target
from remediation.adapters.base import RemediationAdapter
from remediation.executor import ActionExecutor, Execution, audit_entry
from remediation.rules import (
    AnomalyCondition,
    HealthCondition,
    Rule,
    RulesError,
    RuleSet,
    ThresholdCondition,
    load_rules,
)
from smartcloudops.audit import AuditLog
from smartcloudops.domain import ActionRecord, ActionStatus, Anomaly, new_id, normalize_long, utcnow
from smartcloudops.errors import ActionError, ConfigError, InputError, SmartCloudOpsError, StoreError
from smartcloudops.events import EventStore

if TYPE_CHECKING:
    from remediation.locks import Locks
    from smartcloudops.settings import Settings

log = logging.getLogger(__name__)

#: ``probe(hosts)`` -> long frame with the newest sample per host x metric (verification).
MetricProbe = Callable[[Sequence[str]], pd.DataFrame]
#: A guard returns a reason to suppress the action, or None to allow it.
Guard = Callable[[Rule, str, datetime], str | None]

ConditionState = Literal["breach", "clear", "pending", "no_data"]

_STATE_PREFIX = "remediation/rule"
_VERIFY_PREFIX = "remediation/verify"
_PENDING_PREFIX = "remediation/pending"
_HEALTH_PREFIX = "remediation/health"
#: One fleet-wide lock spans guards -> claim -> recorded action (see _decide_locked).
_FLEET_LOCK = "remediation:lock:fleet"


class ApprovalError(InputError):
    """An approve/reject request that cannot be honoured (unknown, decided, expired)."""


@dataclass(frozen=True)
class Escalation:
    """Handed to the notification hook when a fix failed, did not work, or nobody approved."""

    action_id: str
    rule: str
    host: str
    action: str
    reason: str
    timestamp: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "action_id": self.action_id,
            "rule": self.rule,
            "host": self.host,
            "action": self.action,
            "reason": self.reason,
            "timestamp": self.timestamp.isoformat(),
        }


@dataclass(frozen=True)
class ConditionResult:
    state: ConditionState
    start: datetime | None = None  # first sample/anomaly of the current breach run
    last_seen: datetime | None = None
    value: float | None = None
    samples: int = 0
    expected: int = 0
    anomaly_id: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Verification:
    action_id: str
    verified: bool
    detail: str
    record: ActionRecord | None = None  # the action record as updated with the result


@dataclass
class Series:
    """One host x metric, ascending, NaN-free."""

    times: np.ndarray = field(default_factory=lambda: np.array([], dtype="datetime64[ns]"))
    values: np.ndarray = field(default_factory=lambda: np.array([], dtype=float))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: Any) -> datetime | None:
    if not value:
        return None
    return pd.Timestamp(value).to_pydatetime()


def _to_datetime(value: np.datetime64) -> datetime:
    return pd.Timestamp(value, tz="UTC").to_pydatetime()


class RemediationEngine:
    def __init__(
        self,
        rules: RuleSet,
        adapter: RemediationAdapter,
        events: EventStore,
        audit: AuditLog,
        *,
        dry_run: bool,
        clock: Callable[[], datetime] = utcnow,
        step_seconds: float = 60.0,
        max_staleness: timedelta | None = None,
        settle: timedelta = timedelta(0),
        approval_ttl: timedelta = timedelta(minutes=30),
        probe: MetricProbe | None = None,
        notify: Callable[[Escalation], None] | None = None,
        guards: Sequence[Guard] = (),
        rules_path: Path | None = None,
        lock_ttl: timedelta = timedelta(minutes=2),
        locks: Locks | None = None,
    ) -> None:
        self._rules = rules
        self.adapter = adapter
        self.events = events
        self.audit = audit
        self.clock = clock
        self.step_seconds = float(step_seconds)
        # A sample older than this is not "now": stale data never starts an action.
        self.max_staleness = max_staleness or timedelta(seconds=3 * self.step_seconds)
        self.settle = settle
        self.approval_ttl = approval_ttl
        self.probe = probe
        self.notify = notify
        self.guards = tuple(guards)
        self.rules_path = rules_path
        self.rules_error: str | None = None
        self._rules_mtime = _mtime(rules_path)
        self.lock_ttl = lock_ttl
        # Short-lived locks (Redis in service mode); durable claims stay in the event store.
        self.locks: Locks = locks if locks is not None else events
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.executor = ActionExecutor(adapter, events, audit, dry_run=dry_run, clock=clock)

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        adapter: RemediationAdapter | None = None,
        *,
        events: EventStore | None = None,
        audit: AuditLog | None = None,
        probe: MetricProbe | None = None,
        notify: Callable[[Escalation], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
        rules: RuleSet | None = None,
    ) -> RemediationEngine:
        """The engine the sensor and ChatOps use: rules from ``settings.rules_file`` (or the
        packaged file) unless given; the adapter ``settings.remediation_adapter`` names
        (simulator, local, aws) unless one is given; the safety rails from the
        ``remediation_*`` settings. Connects to nothing. Raises ``ConfigError`` (``RulesError``
        for invalid rules) naming what is wrong."""
        from smartcloudops.settings import get_settings

        settings = settings or get_settings()
        if rules is None:
            rules = load_rules(settings.rules_file)
        if adapter is None and settings.remediation_adapter != "simulator":
            from remediation.adapters.factory import adapter_from_settings

            adapter = adapter_from_settings(settings)
        if adapter is None:
            from remediation.adapters.simulator import SimulatorAdapter
            from smartcloudops.simulator import FleetSimulator

            sim = FleetSimulator.from_settings(settings)
            adapter = SimulatorAdapter(sim)
            if probe is None:
                probe = lambda hosts: sim.latest(hosts=list(hosts))  # noqa: E731
        if probe is None:
            from smartcloudops.sources import get_metric_source

            source = get_metric_source(settings)
            probe = lambda hosts: source.latest(hosts=list(hosts))  # noqa: E731
        from remediation.safety import guards_from_settings

        events = events or EventStore.from_settings(settings)
        fleet = adapter
        # Raises ConfigError naming the variable if a maintenance window cannot be read.
        guards = guards_from_settings(settings, events, lambda: len(fleet.hosts()))
        locks: Locks | None = None
        if settings.remediation_locks == "redis":
            if not settings.redis_url:
                raise ConfigError(
                    "SMARTCLOUDOPS_REMEDIATION_LOCKS=redis needs SMARTCLOUDOPS_REDIS_URL"
                )
            from remediation.locks import RedisLocks

            locks = RedisLocks(settings.redis_url, timeout_seconds=min(settings.http_timeout_seconds, 5.0))
        return cls(
            rules,
            adapter,
            events,
            audit or AuditLog(settings.audit_dir, retention_days=settings.audit_retention_days),
            dry_run=settings.dry_run,
            clock=clock,
            step_seconds=settings.step_seconds,
            settle=timedelta(seconds=float(getattr(settings, "remediation_settle_seconds", 0.0))),
            approval_ttl=timedelta(
                minutes=float(getattr(settings, "approval_ttl_minutes", 30.0))
            ),
            probe=probe,
            notify=notify,
            guards=guards,
            rules_path=settings.rules_file,
            locks=locks,
        )

    # -- rules ----------------------------------------------------------------------------

    @property
    def rules(self) -> RuleSet:
        return self._rules

    @property
    def dry_run(self) -> bool:
        return self.executor.dry_run

    @property
    def lookback(self) -> timedelta:
        """How much history :meth:`evaluate` wants (the sensor queries this much)."""
        return self._rules.lookback(self.step_seconds)

    def reload_rules(self, path: Path | None = None) -> bool:
        """Load rules again; on any error keep the last good rules and return False."""
        path = path or self.rules_path
        try:
            rules = load_rules(path)
        except RulesError as exc:
            self.rules_error = str(exc)
            log.error("rules reload failed; keeping the last good rules: %s", exc)
            return False
        self._rules = rules
        self.rules_error = None
        log.info("loaded %d remediation rules from %s", len(rules), path or "the package")
        return True

    def _reload_if_changed(self) -> None:
        if self.rules_path is None:
            return
        mtime = _mtime(self.rules_path)
        if mtime != self._rules_mtime:
            # Remember the mtime even on failure: one error per edit, not one per poll.
            self._rules_mtime = mtime
            self.reload_rules()

    # -- evaluation -----------------------------------------------------------------------

    def evaluate(
        self,
        metrics_long: pd.DataFrame,
        anomalies: Sequence[Anomaly] = (),
        *,
        now: datetime | None = None,
    ) -> list[ActionRecord]:
        """Apply every enabled rule to every host it selects; return the actions taken now
        (executed, dry-run, skipped, failed or pending approval)."""
        now = now or self.clock()
        self._reload_if_changed()
        self._housekeeping(now)
        series = index_metrics(metrics_long)
        by_host: dict[str, list[Anomaly]] = {}
        for anomaly in anomalies:
            by_host.setdefault(anomaly.host, []).append(anomaly)
        hosts = sorted({h for h, _ in series} | set(by_host))
        out: list[ActionRecord] = []
        for rule in self._rules.active:
            for host in hosts:
                if not rule.matches_host(host):
                    continue
                cond = rule.condition
                try:
                    if isinstance(cond, ThresholdCondition):
                        result = self.check_threshold(cond, series.get((host, cond.metric)), now)
                    elif isinstance(cond, HealthCondition):
                        result = self.check_health(rule, cond, host, now)
                    else:
                        result = self.check_anomalies(cond, by_host.get(host, ()), now)
                    record = self._decide(rule, host, result, now)
                except StoreError as exc:
                    # One broken write must not stop the other rules; the DAG logs it.
                    log.error("remediation of %s on %s not completed: %s", rule.name, host, exc)
                    continue
                if record is not None:
                    out.append(record)
        return out

    def check_threshold(
        self, cond: ThresholdCondition, series: Series | None, now: datetime
    ) -> ConditionResult:
        """Where a threshold condition stands on one host's samples (see module doc)."""
        expected = cond.expected_samples(self.step_seconds)
        if series is None or len(series.values) == 0:
            return ConditionResult("no_data", expected=expected, detail="no samples")
        latest_t = _to_datetime(series.times[-1])
        latest_v = float(series.values[-1])
        if now - latest_t > self.max_staleness:
            return ConditionResult(
                "no_data", value=latest_v, expected=expected, detail=f"newest sample is from {latest_t}"
            )
        if cond.clears(latest_v):
            return ConditionResult("clear", value=latest_v, expected=expected)
        # Half a step of slack absorbs scrape jitter; counts are capped at the expected N.
        window_start = np.datetime64(
            pd.Timestamp(latest_t - cond.duration - timedelta(seconds=self.step_seconds / 2)).tz_convert(None)
        )
        in_window = series.values[series.times >= window_start]
        present = min(len(in_window), expected)
        required = cond.required_samples(self.step_seconds)
        if present >= required and all(cond.breaches(float(v)) for v in in_window):
            start = self._run_start(cond, series)
            return ConditionResult(
                "breach",
                start=start,
                last_seen=latest_t,
                value=latest_v,
                samples=present,
                expected=expected,
                detail=f"{cond.describe()}: {present}/{expected} samples, latest {latest_v:.4g}",
            )
        return ConditionResult(
            "pending", value=latest_v, samples=present, expected=expected,
            detail=f"{present}/{expected} samples (need {required}) all breaching: no",
        )

    def _run_start(self, cond: ThresholdCondition, series: Series) -> datetime:
        # Walk back over the contiguous breaching run; a gap longer than the rule's own
        # duration ends it (the data cannot say the breach went on through it).
        max_gap = np.timedelta64(int(cond.duration.total_seconds() * 1e9), "ns")
        index = len(series.values) - 1
        while index > 0:
            prev = index - 1
            if not cond.breaches(float(series.values[prev])):
                break
            if series.times[index] - series.times[prev] > max_gap:
                break
            index = prev
        return _to_datetime(series.times[index])

    def check_health(
        self, rule: Rule, cond: HealthCondition, host: str, now: datetime
    ) -> ConditionResult:
        """Run the service's health check once; ``failures`` failing checks in a row breach.

        The count lives in the event store (the sensor builds a new engine per pass); a
        healthy host with no failures on record costs one read and no write.
        """
        key = f"{_HEALTH_PREFIX}/{rule.name}/{host}"
        try:
            report = self.adapter.health(host, cond.service)
        except ActionError as exc:
            # The check itself could not run: that is no data, not a failing service (an
            # unreachable adapter must not restart the fleet).
            return ConditionResult("no_data", detail=f"health check unavailable: {exc}")
        state = self.events.get_state(key) or {}
        if report.healthy:
            if state.get("failures"):
                self.events.put_state(key, {"failures": 0})
            return ConditionResult("clear", detail=report.summary(), expected=cond.failures)
        failures = int(state.get("failures") or 0) + 1
        first_failed = _parse(state.get("first_failed")) or now
        self.events.put_state(
            key, {"failures": failures, "first_failed": _iso(first_failed), "last_failed": _iso(now)}
        )
        detail = f"{cond.describe()}: {failures} failing, {report.summary()}"
        if failures < cond.failures:
            return ConditionResult("pending", samples=failures, expected=cond.failures, detail=detail)
        return ConditionResult(
            "breach", start=first_failed, last_seen=now, samples=failures,
            expected=cond.failures, detail=detail,
        )

    def check_anomalies(
        self, cond: AnomalyCondition, anomalies: Iterable[Anomaly], now: datetime
    ) -> ConditionResult:
        earliest = now - cond.within
        hits = [
            a
            for a in anomalies
            if a.severity >= cond.min_severity
            and (cond.metric is None or a.top_metric == cond.metric)
            and earliest <= a.timestamp <= now + self.max_staleness
        ]
        if not hits:
            return ConditionResult("clear", detail="no qualifying anomaly")
        hits.sort(key=lambda a: a.timestamp)
        return ConditionResult(
            "breach",
            start=hits[0].timestamp,
            last_seen=hits[-1].timestamp,
            anomaly_id=hits[-1].anomaly_id,
            samples=len(hits),
            detail=f"{cond.describe()}: {len(hits)} anomalies, latest score {hits[-1].score:.3g}",
        )

    # -- decisions ------------------------------------------------------------------------

    def _state_key(self, rule: str, host: str) -> str:
        return f"{_STATE_PREFIX}/{rule}/{host}"

    def _decide(self, rule: Rule, host: str, result: ConditionResult, now: datetime) -> ActionRecord | None:
        if result.state in ("no_data", "pending"):
            return None
        skey = self._state_key(rule.name, host)
        if result.state == "clear":
            # Cheap read first: the common case (nothing going on) takes no lock, no write.
            state = self.events.get_state(skey)
            if not state or not state.get("episode_active"):
                return None
            if isinstance(rule.condition, AnomalyCondition):
                last_seen = _parse(state.get("last_seen"))
                if last_seen is not None and now - last_seen < rule.condition.within:
                    return None
        lock = f"remediation:lock:{rule.name}:{host}"
        if not self.locks.claim(lock, self.owner, ttl_seconds=self.lock_ttl.total_seconds()):
            log.debug("%s on %s is being handled by another run", rule.name, host)
            return None
        try:
            return self._decide_locked(rule, host, result, now, skey)
        finally:
            self.locks.release(lock)

    def _decide_locked(
        self, rule: Rule, host: str, result: ConditionResult, now: datetime, skey: str
    ) -> ActionRecord | None:
        state = self.events.get_state(skey) or {}
        recovered: ActionRecord | None = None
        if state.get("intent"):
            # We hold the (rule, host) lock, so whoever wrote this intent lost theirs: it died
            # (or stalled past the lock's TTL) between deciding and recording the action.
            recovered = self._recover_intent(rule, host, result, now, skey, state)
        if result.state == "clear":
            if state.get("episode_active"):
                state.update(episode_active=False, cleared_at=_iso(now))
                self.events.put_state(skey, state)
                log.info(
                    "incident of %s on %s is over", rule.name, host,
                    extra={"rule": rule.name, "host": host},
                )
            return recovered

        # -- breach --
        if not state.get("episode_active"):
            state.update(episode_active=True, episode_start=_iso(result.start or now))
            log.warning(
                "%s breached on %s: %s", rule.name, host, result.detail,
                extra={"rule": rule.name, "host": host},
            )
        if result.last_seen is not None:
            state["last_seen"] = _iso(result.last_seen)
        self.events.put_state(skey, state)
        if recovered is not None:
            return recovered
        episode_start = _parse(state["episode_start"]) or now

        cooldown_until = _parse(state.get("cooldown_until"))
        if cooldown_until is not None and now < cooldown_until:
            log.info("%s on %s suppressed: cooldown until %s", rule.name, host, cooldown_until)
            return None
        pending_id = state.get("pending_action_id")
        if pending_id:
            pending = self.events.get_action(pending_id)
            if pending is not None and pending.result is ActionStatus.PENDING:
                return None
        if _parse(state.get("acted_episode")) == episode_start:
            # This incident was handled already (the claim would say no): skip the fleet
            # lock and the guards' queries on every pass of a long incident.
            return None
        if not self.guards:
            return self._claim_and_act(rule, host, result, now, skey, state, episode_start)
        # Fleet-wide rails count actions across hosts: two runs acting on two hosts at once
        # must not both pass them. One fleet lock spans the guards, the claim and the
        # recorded action, so the next run's count includes this one. Busy: try next pass
        # (nothing is claimed, the incident stays open).
        if not self.locks.claim(_FLEET_LOCK, self.owner, ttl_seconds=self.lock_ttl.total_seconds()):
            log.debug("%s on %s waits: another run holds the fleet lock", rule.name, host)
            return None
        try:
            for guard in self.guards:
                reason = guard(rule, host, now)
                if reason:
                    log.warning("%s on %s suppressed: %s", rule.name, host, reason)
                    return None
            return self._claim_and_act(rule, host, result, now, skey, state, episode_start)
        finally:
            self.locks.release(_FLEET_LOCK)

    def _claim_and_act(
        self,
        rule: Rule,
        host: str,
        result: ConditionResult,
        now: datetime,
        skey: str,
        state: dict[str, Any],
        episode_start: datetime,
    ) -> ActionRecord | None:
        action_id = new_id("act")
        incident_key = f"remediation:incident:{rule.name}:{host}:{episode_start.isoformat()}"
        # Intent before claim: a crash anywhere between here and the recorded action leaves
        # this trace, and the next pass resolves it (_recover_intent) instead of the
        # incident staying claimed with nothing done and nothing said.
        state["intent"] = {
            "action_id": action_id,
            "incident_key": incident_key,
            "episode_start": _iso(episode_start),
            "anomaly_id": result.anomaly_id,
            "at": _iso(now),
            "owner": self.owner,
        }
        self.events.put_state(skey, state)
        if not self.events.claim(incident_key, action_id):
            state.pop("intent", None)
            state["acted_episode"] = _iso(episode_start)
            self.events.put_state(skey, state)
            return None  # another run already acted on this incident
        return self._act(rule, host, result, now, skey, state, action_id, episode_start)

    def _act(
        self,
        rule: Rule,
        host: str,
        result: ConditionResult,
        now: datetime,
        skey: str,
        state: dict[str, Any],
        action_id: str,
        episode_start: datetime,
        *,
        recovered: bool = False,
    ) -> ActionRecord:
        """Run (or ask approval for) a claimed incident's action and clear the intent."""
        extra: dict[str, Any] = {"condition": result.detail, "episode_start": _iso(episode_start)}
        if recovered:
            extra["recovered"] = True
        if rule.approval == "required":
            record = self._request_approval(rule, host, result, now, action_id, episode_start)
            state.pop("intent", None)
            state["pending_action_id"] = record.action_id
            state["acted_episode"] = _iso(episode_start)
            self.events.put_state(skey, state)
            return record

        execution = self.executor.run(
            rule.action,
            host,
            rule.typed_params,
            rule=rule.name,
            anomaly_id=result.anomaly_id,
            episode_start=episode_start,
            action_id=action_id,
            extra_audit=extra,
        )
        state.pop("intent", None)
        state.update(
            cooldown_until=_iso(now + rule.cooldown),
            last_action_id=execution.record.action_id,
            last_action_at=_iso(now),
            acted_episode=_iso(episode_start),
        )
        self.events.put_state(skey, state)
        return self._after_execution(execution, rule, episode_start, now)

    def _recover_intent(
        self,
        rule: Rule,
        host: str,
        result: ConditionResult,
        now: datetime,
        skey: str,
        state: dict[str, Any],
    ) -> ActionRecord | None:
        """Resolve an intent left by a run that died; return a record made now, if any."""
        intent = dict(state.get("intent") or {})
        action_id = str(intent.get("action_id") or "")
        incident_key = str(intent.get("incident_key") or "")
        episode_start = _parse(intent.get("episode_start")) or now
        record = self.events.get_action(action_id) if action_id else None
        if record is not None:
            # It acted and stored the action; it died before clearing the intent (and
            # perhaps before the audit append: put the proof back if it is missing).
            self._ensure_audited(record, _parse(intent.get("at")) or now)
            state.pop("intent", None)
            state["acted_episode"] = _iso(episode_start)
            if record.result is ActionStatus.PENDING:
                state["pending_action_id"] = record.action_id
            else:
                state.setdefault("cooldown_until", _iso(record.timestamp + rule.cooldown))
                state.setdefault("last_action_id", record.action_id)
            self.events.put_state(skey, state)
            log.warning("recovered action %s of %s on %s (already recorded)", action_id, rule.name, host)
            return None
        if not incident_key or self.events.claim(incident_key, action_id or "recovery"):
            # It died before claiming: nothing was done. Drop the intent (and our claim):
            # this pass decides afresh, through the guards.
            if incident_key:
                self.events.release(incident_key)
            state.pop("intent", None)
            self.events.put_state(skey, state)
            log.warning("dropped the unclaimed intent %s of %s on %s", action_id, rule.name, host)
            return None
        # Claimed, never recorded: the action may or may not have run. If the incident still
        # holds, finish it under the same action id -- the executor's idempotency check skips
        # a target already in the goal state, so a half-done action is not done twice.
        if result.state == "breach":
            log.warning(
                "resuming action %s of %s on %s: its run died after claiming the incident",
                action_id, rule.name, host,
            )
            resumed = replace(result, anomaly_id=result.anomaly_id or intent.get("anomaly_id"))
            return self._act(
                rule, host, resumed, now, skey, state, action_id, episode_start, recovered=True
            )
        closed = self._unrun_record(
            rule, host, ActionStatus.SKIPPED, now, action_id, intent.get("anomaly_id"),
            "interrupted: the run that claimed this incident died before acting; "
            "the incident is over, so it was not executed",
        )  # fmt: skip
        self.executor.record(closed, recovered=True, episode_start=_iso(episode_start))
        state.pop("intent", None)
        state.update(
            cooldown_until=_iso(now + rule.cooldown), last_action_id=action_id,
            acted_episode=_iso(episode_start),
        )
        self.events.put_state(skey, state)
        return closed

    def _unrun_record(
        self,
        rule: Rule,
        host: str,
        status: ActionStatus,
        now: datetime,
        action_id: str,
        anomaly_id: str | None,
        detail: str,
    ) -> ActionRecord:
        """The record of ``rule``'s action on ``host`` that the engine decided without running
        it (pending approval, or skipped); actions that run are recorded by the executor."""
        return ActionRecord(
            action=rule.action,
            instance=host,
            result=status,
            rule=rule.name,
            dry_run=self.dry_run,
            timestamp=now,
            action_id=action_id,
            anomaly_id=anomaly_id,
            params=rule.typed_params.model_dump(),
            detail=detail,
        )

    def _ensure_audited(self, record: ActionRecord, since: datetime) -> None:
        try:
            for entry in self.audit.records(since=since - timedelta(minutes=5)):
                if entry.get("action_id") == record.action_id and entry.get("event", "action") == "action":
                    return
            self.audit.append(audit_entry(record, event="action", recovered=True))
        except (StoreError, OSError) as exc:
            log.error("could not check or repair the audit of %s: %s", record.action_id, exc)

    # -- approvals ------------------------------------------------------------------------

    def _request_approval(
        self,
        rule: Rule,
        host: str,
        result: ConditionResult,
        now: datetime,
        action_id: str,
        episode_start: datetime,
    ) -> ActionRecord:
        expires = now + self.approval_ttl
        record = self._unrun_record(
            rule, host, ActionStatus.PENDING, now, action_id, result.anomaly_id,
            f"awaiting approval until {expires.isoformat()}: {result.detail}",
        )  # fmt: skip
        self.events.put_state(
            f"{_PENDING_PREFIX}/{action_id}",
            {"episode_start": _iso(episode_start), "expires_at": _iso(expires)},
        )
        self.executor.record(record, expires_at=_iso(expires), condition=result.detail)
        log.warning("%s on %s needs approval: action %s", rule.action, host, action_id)
        return record

    def pending(self, limit: int = 50) -> list[ActionRecord]:
        return self.events.actions(limit=limit, status=ActionStatus.PENDING)

    def _pending_for_decision(self, action_id: str, now: datetime) -> ActionRecord:
        record = self.events.get_action(action_id)
        if record is None:
            raise ApprovalError(f"no remediation action {action_id!r}")
        if record.result is not ActionStatus.PENDING:
            by = f" by {record.approved_by}" if record.approved_by else ""
            raise ApprovalError(
                f"action {action_id} is {record.result.value}{by}, not pending approval"
            )
        if now >= self._expires_at(record):
            self._expire(record, now)
            raise ApprovalError(
                f"action {action_id} expired at {self._expires_at(record).isoformat()}; "
                "it was not executed"
            )
        return record

    def _expires_at(self, record: ActionRecord) -> datetime:
        meta = self.events.get_state(f"{_PENDING_PREFIX}/{record.action_id}") or {}
        return _parse(meta.get("expires_at")) or record.timestamp + self.approval_ttl

    def approve(self, action_id: str, by: str, *, now: datetime | None = None) -> ActionRecord:
        """Execute a pending action (or dry-run it, if the engine is in dry-run). Exactly
        once: a second approval, a late approval or one after a rejection raise ApprovalError."""
        if not by or not by.strip():
            raise ApprovalError("an approval must name who approves it")
        now = now or self.clock()
        record = self._pending_for_decision(action_id, now)
        if not self.events.claim(f"remediation:decision:{action_id}", by):
            raise ApprovalError(f"action {action_id} was already decided by someone else")
        meta = self.events.get_state(f"{_PENDING_PREFIX}/{action_id}") or {}
        episode_start = _parse(meta.get("episode_start"))
        execution = self.executor.run(
            record.action,
            record.instance,
            record.params,
            rule=record.rule,
            anomaly_id=record.anomaly_id,
            approved_by=by,
            episode_start=episode_start,
            action_id=action_id,
        )
        rule = self._rules.get(record.rule)
        self._close_pending(record, now, rule)
        if rule is not None:
            return self._after_execution(execution, rule, episode_start, now)
        if execution.record.result is ActionStatus.FAILED:
            self._escalate(execution.record, execution.record.detail, now)
        return execution.record

    def reject(
        self, action_id: str, by: str, reason: str = "", *, now: datetime | None = None
    ) -> ActionRecord:
        """Close a pending action without running it."""
        if not by or not by.strip():
            raise ApprovalError("a rejection must name who rejects it")
        now = now or self.clock()
        record = self._pending_for_decision(action_id, now)
        if not self.events.claim(f"remediation:decision:{action_id}", by):
            raise ApprovalError(f"action {action_id} was already decided by someone else")
        because = f": {reason}" if reason else ""
        closed = replace(
            record, result=ActionStatus.REJECTED, timestamp=now, detail=f"rejected by {by}{because}"
        )
        self.executor.record(closed, rejected_by=by)
        self._close_pending(record, now, self._rules.get(record.rule))
        log.info("action %s rejected by %s", action_id, by)
        return closed

    def expire_pending(self, now: datetime | None = None) -> list[ActionRecord]:
        now = now or self.clock()
        expired = []
        for record in self.pending(limit=500):
            if now >= self._expires_at(record):
                if not self.events.claim(f"remediation:decision:{record.action_id}", "expiry"):
                    continue
                expired.append(self._expire(record, now))
        return expired

    def _expire(self, record: ActionRecord, now: datetime) -> ActionRecord:
        closed = replace(
            record, result=ActionStatus.EXPIRED, timestamp=now,
            detail=f"approval not given within {self.approval_ttl}; not executed",
        )
        self.executor.record(closed)
        self._close_pending(record, now, self._rules.get(record.rule))
        self._escalate(closed, "approval expired; the action was not executed", now)
        return closed

    def _close_pending(self, record: ActionRecord, now: datetime, rule: Rule | None) -> None:
        skey = self._state_key(record.rule, record.instance)
        state = self.events.get_state(skey) or {}
        if state.get("pending_action_id") == record.action_id:
            state["pending_action_id"] = None
        if rule is not None:
            # A decision (or silence) also starts the cooldown: don't ask again at once.
            state["cooldown_until"] = _iso(now + rule.cooldown)
        state["last_action_id"] = record.action_id
        self.events.put_state(skey, state)

    # -- verification and escalation -----------------------------------------------------

    def _after_execution(
        self, execution: Execution, rule: Rule, episode_start: datetime | None, now: datetime
    ) -> ActionRecord:
        """Escalate a failure, verify a success now or schedule its verification; return
        the record as it stands afterwards."""
        record = execution.record
        if record.result is ActionStatus.FAILED:
            self._escalate(record, f"action failed: {record.detail}", now)
            return record
        if record.result is not ActionStatus.SUCCEEDED:
            return record  # dry-run or already in the goal state: nothing to verify
        settle = rule.settle if rule.settle is not None else self.settle
        outcome = execution.outcome or ActionOutcome(record.detail)
        if settle.total_seconds() <= 0:
            return self._verify(record, rule, episode_start, outcome.data, now).record or record
        self.events.put_state(
            f"{_VERIFY_PREFIX}/{record.action_id}",
            {
                "due": _iso(now + settle),
                "episode_start": _iso(episode_start),
                "data": outcome.data,
                "done": False,
            },
        )
        return record

    def verify_due(self, now: datetime | None = None) -> list[Verification]:
        """Verify actions whose settle time has passed (each exactly once, any process)."""
        now = now or self.clock()
        done = []
        recent = self.events.actions(
            limit=200, since=now - timedelta(hours=6), status=ActionStatus.SUCCEEDED
        )
        for record in recent:
            key = f"{_VERIFY_PREFIX}/{record.action_id}"
            meta = self.events.get_state(key)
            if not meta or meta.get("done"):
                continue
            due = _parse(meta.get("due"))
            if due is None or due > now:
                continue
            if not self.events.claim(f"remediation:verify:{record.action_id}", self.owner):
                continue
            rule = self._rules.get(record.rule)
            if rule is None:
                meta["done"] = True
                self.events.put_state(key, meta)
                continue
            episode_start = _parse(meta.get("episode_start"))
            data = dict(meta.get("data") or {})
            done.append(self._verify(record, rule, episode_start, data, now))
            meta["done"] = True
            self.events.put_state(key, meta)
        return done

    def _verify(
        self,
        record: ActionRecord,
        rule: Rule,
        episode_start: datetime | None,
        data: Mapping[str, Any],
        now: datetime,
    ) -> Verification:
        reasons: list[str] = []
        verified = True
        try:
            action = self.executor.action(record.action)
            typed = self.executor.actions.validate_params(record.action, record.params)
            target = Target(record.instance, episode_start)
            if not action.verify(target, typed, ActionOutcome(record.detail, dict(data))):
                verified = False
                reasons.append(f"{record.action} did not take effect")
        except (ActionError, InputError) as exc:
            verified = False
            reasons.append(f"could not check the action: {exc}")
        cond = rule.condition
        if isinstance(cond, ThresholdCondition) and self.probe is not None:
            value = self._probe_value(record.instance, cond.metric)
            if value is None:
                reasons.append(f"no fresh {cond.metric} sample to re-check")
            elif cond.breaches(value):
                verified = False
                reasons.append(f"{cond.metric} still {value:.4g} ({cond.describe()})")
            else:
                reasons.append(f"{cond.metric} now {value:.4g}")
        why = "; ".join(reasons) or "action took effect"
        updated = replace(record, detail=f"{record.detail}; verified={str(verified).lower()}: {why}")
        if "verified" in ActionRecord.__dataclass_fields__:
            # Forward-compatible: set the field once the core ActionRecord grows it.
            extra: dict[str, Any] = {"verified": verified}
            updated = replace(updated, **extra)
        try:
            self.events.record_action(updated)
        except StoreError as exc:
            log.error("could not store verification of %s: %s", record.action_id, exc)
        self.audit.append(
            {
                "event": "verification",
                "timestamp": self.clock().isoformat(),
                "action": record.action,
                "instance": record.instance,
                "result": "verified" if verified else "verification_failed",
                "verified": verified,
                "action_id": record.action_id,
                "rule": record.rule,
                "anomaly_id": record.anomaly_id,
                "dry_run": record.dry_run,
                "approved_by": record.approved_by,
                "detail": why,
            }
        )
        if verified:
            log.info("action %s verified: %s", record.action_id, why)
        else:
            self._escalate(record, f"fix not verified: {why}", now)
        return Verification(record.action_id, verified, why, updated)

    def _probe_value(self, host: str, metric: str) -> float | None:
        assert self.probe is not None
        try:
            frame = self.probe([host])
        except SmartCloudOpsError as exc:
            log.warning("verification probe for %s failed: %s", host, exc)
            return None
        series = index_metrics(frame).get((host, metric))
        if series is None or len(series.values) == 0:
            return None
        return float(series.values[-1])

    def _escalate(self, record: ActionRecord, reason: str, now: datetime) -> None:
        escalation = Escalation(record.action_id, record.rule, record.instance, record.action, reason, now)
        log.error(
            "ESCALATION %s on %s (rule %s): %s", record.action, record.instance, record.rule, reason,
            extra={"escalation": escalation.to_dict()},
        )
        if self.notify is None:
            return
        try:
            self.notify(escalation)
        except Exception:  # a broken hook must not stop remediation
            log.exception("escalation hook failed for %s", record.action_id)

    # -- manual actions and status --------------------------------------------------------

    def run_action(
        self,
        action: str,
        host: str,
        params: Mapping[str, Any] | None = None,
        *,
        by: str | None = None,
        dry_run: bool | None = None,
        verify: bool = True,
    ) -> tuple[ActionRecord, Verification | None]:
        """An operator's action (scripts, ChatOps): same executor, same audit trail."""
        if host not in self.adapter.hosts():
            raise InputError(f"unknown host {host!r}; known hosts: {', '.join(self.adapter.hosts())}")
        execution = self.executor.run(action, host, params, rule="manual", approved_by=by, dry_run=dry_run)
        record = execution.record
        now = self.clock()
        if record.result is ActionStatus.FAILED:
            self._escalate(record, f"action failed: {record.detail}", now)
        if not verify or record.result is not ActionStatus.SUCCEEDED:
            return record, None
        try:
            ok = self.executor.action(action).verify(
                Target(host), execution.params, execution.outcome or ActionOutcome(record.detail)
            )
        except ActionError as exc:
            return record, Verification(record.action_id, False, f"could not check: {exc}")
        return record, Verification(record.action_id, ok, "took effect" if ok else "did not take effect")

    def status(self) -> dict[str, Any]:
        """What ChatOps and ``smartcloudops status`` show about remediation."""
        now = self.clock()
        return {
            "dry_run": self.dry_run,
            "rules": [r.describe() for r in self._rules.active],
            "rules_error": self.rules_error,
            "pending_approval": [r.action_id for r in self.pending()],
            # Guards that keep state (the circuit breaker) say where they stand.
            "guards": {
                type(g).__name__: g.status(now)  # type: ignore[attr-defined]
                for g in self.guards
                if callable(getattr(g, "status", None))
            },
        }

    def _housekeeping(self, now: datetime) -> None:
        for job in (self.expire_pending, self.verify_due):
            try:
                job(now)
            except StoreError as exc:
                log.error("remediation housekeeping (%s) failed: %s", job.__name__, exc)


def _mtime(path: Path | None) -> float | None:
    if path is None:
        return None
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return None


def index_metrics(frame: pd.DataFrame) -> dict[tuple[str, str], Series]:
    """Long frame -> {(host, metric): ascending NaN-free series}."""
    if frame is None or frame.empty:
        return {}
    data = normalize_long(frame).dropna(subset=["value"])
    out: dict[tuple[str, str], Series] = {}
    for (host, metric), group in data.groupby(["host", "metric"], sort=False):
        group = group.drop_duplicates("timestamp", keep="last")
        times = group["timestamp"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
        out[(str(host), str(metric))] = Series(times=times, values=group["value"].to_numpy(dtype=float))
    return out
