"""The rule engine: condition evaluation, cooldown, hysteresis, exactly-once, dry-run,
approvals, failures, verification, anomaly rules and rules reload."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from remediation_helpers import CPU_RULE, T0, Clock, FakeAdapter, audit_records, frame, frames

from remediation.adapters.simulator import SimulatorAdapter
from remediation.engine import ApprovalError, Escalation, RemediationEngine, index_metrics
from remediation.rules import ThresholdCondition, parse_rules
from smartcloudops.audit import AuditLog, verify_audit
from smartcloudops.domain import ActionStatus, Anomaly, Severity
from smartcloudops.events import EventStore
from smartcloudops.simulator import FleetSimulator

EngineFactory = Callable[..., RemediationEngine]
MINUTE = timedelta(minutes=1)


def cpu(values: Sequence[float | None], *, end_minutes: float = 0, host: str = "web-1") -> pd.DataFrame:
    return frame(host, "cpu", values, end=T0 + timedelta(minutes=end_minutes))


def actions_in_audit(audit_dir: Path) -> list[dict[str, object]]:
    return [r for r in audit_records(audit_dir) if r.get("event") == "action"]


# -- condition evaluation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "state", "start_minutes_ago"),
    [
        ([50, 95, 95, 95, 95], "breach", 3),  # 4 of 4 samples over 3 minutes
        ([50, 95, None, 95, 95], "breach", 3),  # one lost scrape: 3 of 4 is enough (0.75)
        ([50, 95, 95, 95, 95, 95, 95, 95], "breach", 6),  # the episode began before the window
        ([50, None, None, 95, 95], "pending", None),  # 2 of 4: not enough evidence
        ([95, 95, 85, 95, 95], "pending", None),  # one sample under the threshold in the window
        ([50, 50, 50, 95, 95], "pending", None),  # breaching for 1 minute only
        ([95, 95, 95, 95, 85], "pending", None),  # between clear (80) and threshold: hysteresis
        ([95, 95, 95, 95, 75], "clear", None),
    ],
)
def test_threshold_condition(
    make_engine: EngineFactory, values: list[float | None], state: str, start_minutes_ago: int | None
) -> None:
    engine = make_engine()
    rule = engine.rules.get("cpu_high")
    assert rule is not None and isinstance(rule.condition, ThresholdCondition)
    series = index_metrics(cpu(values))[("web-1", "cpu")]
    result = engine.check_threshold(rule.condition, series, T0)
    assert result.state == state
    if start_minutes_ago is not None:
        assert result.start == T0 - start_minutes_ago * MINUTE


def test_stale_or_missing_data_never_breaches(make_engine: EngineFactory) -> None:
    engine = make_engine()
    rule = engine.rules.get("cpu_high")
    assert rule is not None and isinstance(rule.condition, ThresholdCondition)
    stale = index_metrics(cpu([95] * 6, end_minutes=-10))[("web-1", "cpu")]
    assert engine.check_threshold(rule.condition, stale, T0).state == "no_data"
    assert engine.check_threshold(rule.condition, None, T0).state == "no_data"
    assert engine.evaluate(pd.DataFrame(columns=["timestamp", "host", "metric", "value"])) == []


# -- acting once, cooldown, hysteresis --------------------------------------------------------


def test_breach_restarts_once_and_audits(
    make_engine: EngineFactory, adapter: FakeAdapter, audit_dir: Path
) -> None:
    engine = make_engine()
    healthy_host = cpu([40] * 5, host="web-2")
    [record] = engine.evaluate(frames(cpu([50, 95, 95, 95, 95]), healthy_host))
    assert (record.action, record.instance, record.rule) == ("restart_service", "web-1", "cpu_high")
    assert record.result is ActionStatus.SUCCEEDED and not record.dry_run
    assert adapter.mutations == [("restart_service", "web-1")]
    [entry] = actions_in_audit(audit_dir)
    for name in ("timestamp", "action", "instance", "result", "action_id", "rule", "anomaly_id",
                 "dry_run", "approved_by", "duration_ms"):
        assert name in entry, name
    assert entry["action_id"] == record.action_id and entry["result"] == "succeeded"
    assert verify_audit(audit_dir).ok


def test_two_sensor_runs_seeing_the_same_breach_act_once(
    make_engine: EngineFactory, adapter: FakeAdapter, clock: Clock, audit_dir: Path
) -> None:
    first, second = make_engine(), make_engine()  # two processes sharing one event store
    breach = cpu([50, 95, 95, 95, 95])
    assert len(first.evaluate(breach)) == 1
    assert second.evaluate(breach) == []
    # A minute later the window has moved on but it is the same incident.
    clock.advance(minutes=1)
    assert second.evaluate(cpu([50, 95, 95, 95, 95, 95], end_minutes=1)) == []
    # Even after the cooldown, an incident that never cleared gets no second action (no loop).
    clock.advance(minutes=15)
    assert first.evaluate(cpu([95] * 8, end_minutes=16)) == []
    assert adapter.mutations == [("restart_service", "web-1")]
    assert len(actions_in_audit(audit_dir)) == 1


def test_concurrent_sensor_runs_act_once(tmp_path: Path, adapter: FakeAdapter, clock: Clock) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [EventStore(url) for _ in range(4)]
    stores[0].get_state("warm-up")  # create the tables before the race
    engines = [
        RemediationEngine(parse_rules(CPU_RULE), adapter, store, AuditLog(tmp_path / "audit"),
                          dry_run=False, clock=clock)
        for store in stores
    ]
    breach = cpu([50, 95, 95, 95, 95])
    results: list[int] = []
    barrier = threading.Barrier(len(engines))

    def run(engine: RemediationEngine) -> None:
        barrier.wait()
        results.append(len(engine.evaluate(breach)))

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for store in stores:
        store.close()
    assert sorted(results) == [0, 0, 0, 1]
    assert adapter.mutations == [("restart_service", "web-1")]
    assert len(actions_in_audit(tmp_path / "audit")) == 1


def test_cooldown_suppresses_a_new_incident_until_it_ends(
    make_engine: EngineFactory, adapter: FakeAdapter, clock: Clock
) -> None:
    engine = make_engine()
    assert len(engine.evaluate(cpu([50, 95, 95, 95, 95]))) == 1
    clock.advance(minutes=2)
    assert engine.evaluate(cpu([95, 95, 95, 95, 50], end_minutes=2)) == []  # incident over
    # A new incident starts at T0+3m and holds for 3 minutes: inside the 10-minute cooldown.
    clock.advance(minutes=4)
    assert engine.evaluate(cpu([50, 95, 95, 95, 95], end_minutes=6)) == []
    assert len(adapter.mutations) == 1
    # Still breaching after the cooldown: now it acts, once.
    clock.advance(minutes=5)
    [record] = engine.evaluate(cpu([50] + [95] * 9, end_minutes=11))
    assert record.result is ActionStatus.SUCCEEDED
    assert engine.evaluate(cpu([50] + [95] * 10, end_minutes=12), now=T0 + 12 * MINUTE) == []
    assert len(adapter.mutations) == 2


def test_hysteresis_incident_ends_only_below_the_clear_threshold(
    make_engine: EngineFactory, adapter: FakeAdapter, clock: Clock
) -> None:
    engine = make_engine()
    assert len(engine.evaluate(cpu([50, 95, 95, 95, 95]))) == 1
    # Dips to 85 (under 90, over the clear threshold 80) do not end the incident...
    clock.advance(minutes=20)
    assert engine.evaluate(cpu([85, 85, 95, 95, 95, 95], end_minutes=20)) == []
    assert len(adapter.mutations) == 1
    # ...a drop to 70 does; the next breach is a new incident and acts (cooldown is over).
    clock.advance(minutes=1)
    assert engine.evaluate(cpu([95, 70], end_minutes=21)) == []
    clock.advance(minutes=4)
    [record] = engine.evaluate(cpu([70, 95, 95, 95, 95], end_minutes=25))
    assert record.result is ActionStatus.SUCCEEDED
    assert len(adapter.mutations) == 2


def test_host_selector_limits_a_rule(make_engine: EngineFactory, adapter: FakeAdapter) -> None:
    rules = CPU_RULE.replace("cooldown: 10m", 'cooldown: 10m\n    hosts: ["web-*"]')
    engine = make_engine(rules)
    breach = [50, 95, 95, 95, 95]
    records = engine.evaluate(frames(cpu(breach, host="app-1"), cpu(breach, host="web-2")))
    assert [r.instance for r in records] == ["web-2"]


# -- dry run ---------------------------------------------------------------------------------


def test_dry_run_audits_but_never_touches_the_adapter(
    make_engine: EngineFactory, adapter: FakeAdapter, audit_dir: Path, events: EventStore, clock: Clock
) -> None:
    engine = make_engine(dry_run=True)
    [record] = engine.evaluate(cpu([50, 95, 95, 95, 95]))
    assert record.result is ActionStatus.DRY_RUN and record.dry_run is True
    assert "would run restart_service(service='app') on web-1" in record.detail
    assert adapter.calls == []
    [entry] = actions_in_audit(audit_dir)
    assert entry["dry_run"] is True and entry["result"] == "dry_run"
    assert events.get_action(record.action_id) == record
    clock.advance(minutes=1)  # the same incident is not "dry-run" again every poll
    assert engine.evaluate(cpu([50, 95, 95, 95, 95, 95], end_minutes=1)) == []


# -- approvals ---------------------------------------------------------------------------------

APPROVAL_RULE = CPU_RULE.replace("cooldown: 10m", "cooldown: 10m\n    approval: required")


def test_approval_required_waits_then_runs_once_when_approved(
    make_engine: EngineFactory, adapter: FakeAdapter, audit_dir: Path, clock: Clock
) -> None:
    engine = make_engine(APPROVAL_RULE)
    [pending] = engine.evaluate(cpu([50, 95, 95, 95, 95]))
    assert pending.result is ActionStatus.PENDING and adapter.calls == []
    assert [r.action_id for r in engine.pending()] == [pending.action_id]
    clock.advance(minutes=1)
    assert engine.evaluate(cpu([50, 95, 95, 95, 95, 95], end_minutes=1)) == []  # no second request

    approved = engine.approve(pending.action_id, by="alice")
    assert approved.action_id == pending.action_id
    assert approved.result is ActionStatus.SUCCEEDED and approved.approved_by == "alice"
    assert adapter.mutations == [("restart_service", "web-1")]
    assert engine.events.get_action(pending.action_id).result is ActionStatus.SUCCEEDED  # type: ignore[union-attr]
    assert engine.pending() == []
    with pytest.raises(ApprovalError, match="is succeeded by alice, not pending approval"):
        engine.approve(pending.action_id, by="bob")
    assert len(adapter.mutations) == 1
    results = [(e["action_id"], e["result"]) for e in actions_in_audit(audit_dir)]
    assert results == [(pending.action_id, "pending_approval"), (pending.action_id, "succeeded")]


def test_rejected_action_never_runs(
    make_engine: EngineFactory, adapter: FakeAdapter, audit_dir: Path
) -> None:
    engine = make_engine(APPROVAL_RULE)
    [pending] = engine.evaluate(cpu([50, 95, 95, 95, 95]))
    rejected = engine.reject(pending.action_id, by="bob", reason="deploy in progress")
    assert rejected.result is ActionStatus.REJECTED and "bob" in rejected.detail
    with pytest.raises(ApprovalError, match="rejected"):
        engine.approve(pending.action_id, by="alice")
    assert adapter.calls == []
    assert actions_in_audit(audit_dir)[-1]["rejected_by"] == "bob"


def test_pending_action_expires(
    make_engine: EngineFactory, adapter: FakeAdapter, clock: Clock, escalations: list[Escalation]
) -> None:
    engine = make_engine(APPROVAL_RULE, approval_ttl=timedelta(minutes=5))
    [first] = engine.evaluate(cpu([50, 95, 95, 95, 95]))
    clock.advance(minutes=6)
    with pytest.raises(ApprovalError, match="expired"):
        engine.approve(first.action_id, by="alice")
    assert engine.events.get_action(first.action_id).result is ActionStatus.EXPIRED  # type: ignore[union-attr]
    assert [e.reason for e in escalations] == ["approval expired; the action was not executed"]
    # The housekeeping in evaluate() expires the others (here: none left), and never executes.
    [second] = make_engine(APPROVAL_RULE, approval_ttl=timedelta(minutes=5)).evaluate(
        cpu([50, 95, 95, 95, 95], host="web-2", end_minutes=6)
    )
    clock.advance(minutes=6)
    engine.evaluate(cpu([40], end_minutes=12))
    assert engine.events.get_action(second.action_id).result is ActionStatus.EXPIRED  # type: ignore[union-attr]
    assert adapter.calls == []


def test_approval_errors_are_clear(make_engine: EngineFactory) -> None:
    engine = make_engine(APPROVAL_RULE)
    with pytest.raises(ApprovalError, match="no remediation action 'act-nope'"):
        engine.approve("act-nope", by="alice")
    [pending] = engine.evaluate(cpu([50, 95, 95, 95, 95]))
    with pytest.raises(ApprovalError, match="must name who"):
        engine.approve(pending.action_id, by=" ")


# -- failures and verification ----------------------------------------------------------------


def test_failing_adapter_is_audited_escalated_and_not_retried(
    make_engine: EngineFactory, adapter: FakeAdapter, audit_dir: Path, clock: Clock,
    escalations: list[Escalation],
) -> None:
    adapter.fail.add("restart_service")
    engine = make_engine()
    [record] = engine.evaluate(cpu([50, 95, 95, 95, 95]))
    assert record.result is ActionStatus.FAILED and "connection refused" in record.detail
    [entry] = actions_in_audit(audit_dir)
    assert entry["result"] == "failed"
    assert len(escalations) == 1 and escalations[0].reason.startswith("action failed")
    assert escalations[0].host == "web-1" and escalations[0].action_id == record.action_id
    for minutes in (1, 5, 30):  # still breaching: within and after the cooldown
        clock.now = T0 + minutes * MINUTE
        assert engine.evaluate(cpu([50] + [95] * (4 + minutes), end_minutes=minutes)) == []
    assert adapter.calls == [("restart_service", "web-1")]
    assert len(escalations) == 1


def test_a_broken_notification_hook_does_not_stop_remediation(
    make_engine: EngineFactory, adapter: FakeAdapter
) -> None:
    def broken(_: Escalation) -> None:
        raise RuntimeError("slack is down")

    adapter.fail.add("restart_service")
    engine = make_engine(notify=broken)
    [record] = engine.evaluate(frames(cpu([50, 95, 95, 95, 95]), cpu([50, 95, 95, 95, 95], host="web-2")))[:1]
    assert record.result is ActionStatus.FAILED


def _probe(value: float) -> Callable[[Sequence[str]], pd.DataFrame]:
    return lambda hosts: pd.concat([frame(h, "cpu", [value]) for h in hosts], ignore_index=True)


def test_verification_records_success(make_engine: EngineFactory, audit_dir: Path) -> None:
    engine = make_engine(probe=_probe(31.0))
    [record] = engine.evaluate(cpu([50, 95, 95, 95, 95]))
    assert "verified=true" in record.detail and "cpu now 31" in record.detail
    verification = audit_records(audit_dir)[-1]
    assert verification["event"] == "verification" and verification["verified"] is True
    assert verification["action_id"] == record.action_id


def test_verification_failure_escalates_without_looping(
    make_engine: EngineFactory, adapter: FakeAdapter, audit_dir: Path, clock: Clock,
    escalations: list[Escalation],
) -> None:
    engine = make_engine(probe=_probe(97.0))
    [record] = engine.evaluate(cpu([50, 95, 95, 95, 95]))
    assert record.result is ActionStatus.SUCCEEDED and "verified=false" in record.detail
    verification = audit_records(audit_dir)[-1]
    assert verification["result"] == "verification_failed" and verification["verified"] is False
    assert len(escalations) == 1 and "cpu still 97" in escalations[0].reason
    clock.advance(minutes=20)
    assert engine.evaluate(cpu([95] * 10, end_minutes=20)) == []
    assert len(adapter.mutations) == 1


def test_verification_waits_for_the_settle_time(
    make_engine: EngineFactory, audit_dir: Path, clock: Clock
) -> None:
    engine = make_engine(probe=_probe(31.0), settle=timedelta(seconds=60))
    [record] = engine.evaluate(cpu([50, 95, 95, 95, 95]))
    assert [r["event"] for r in audit_records(audit_dir)] == ["action"]
    clock.advance(seconds=30)
    assert engine.verify_due() == []
    clock.advance(seconds=31)
    other = make_engine(probe=_probe(31.0), settle=timedelta(seconds=60))  # any process may verify
    [verification] = other.verify_due()
    assert verification.verified and verification.action_id == record.action_id
    assert engine.verify_due() == []  # exactly once
    assert [r["event"] for r in audit_records(audit_dir)] == ["action", "verification"]


# -- anomaly rules -----------------------------------------------------------------------------

ANOMALY_RULE = """
rules:
  - name: anomaly_check
    condition: {type: anomaly, min_severity: high, within: 10m}
    action: health_check
"""


def _anomaly(host: str = "web-2", minutes_ago: float = 1, severity: Severity = Severity.HIGH,
             top: str = "cpu") -> Anomaly:
    return Anomaly(host=host, timestamp=T0 - minutes_ago * MINUTE, score=0.93, severity=severity,
                   model_version="3", contributions={top: 0.8, "disk": 0.1},
                   anomaly_id=f"anom-{host}-{minutes_ago}-{severity}")


def test_anomaly_rule_runs_health_check_once_per_incident(
    make_engine: EngineFactory, adapter: FakeAdapter, clock: Clock
) -> None:
    engine = make_engine(ANOMALY_RULE)
    empty = frame("web-2", "cpu", [])
    anomalies = [_anomaly(minutes_ago=2), _anomaly(minutes_ago=1)]
    [record] = engine.evaluate(empty, anomalies)
    assert (record.action, record.instance) == ("health_check", "web-2")
    assert record.anomaly_id == anomalies[-1].anomaly_id
    assert make_engine(ANOMALY_RULE).evaluate(empty, anomalies) == []  # the other sensor run
    clock.advance(minutes=1)
    assert engine.evaluate(empty, [*anomalies, _anomaly(minutes_ago=0)]) == []  # same incident
    assert adapter.calls == [("health", "web-2")]


@pytest.mark.parametrize(
    ("rule_metric", "anomaly"),
    [
        (None, _anomaly(severity=Severity.MEDIUM)),  # below min_severity
        (None, _anomaly(minutes_ago=30)),  # too old
        ("memory", _anomaly(top="cpu")),  # a different metric drove it
    ],
)
def test_anomaly_rule_ignores(make_engine: EngineFactory, rule_metric: str | None, anomaly: Anomaly) -> None:
    rules = ANOMALY_RULE
    if rule_metric is not None:
        rules = ANOMALY_RULE.replace("within: 10m", f"within: 10m, metric: {rule_metric}")
    assert make_engine(rules).evaluate(frame("web-2", "cpu", []), [anomaly]) == []


def test_unhealthy_host_after_health_check_escalates(
    make_engine: EngineFactory, adapter: FakeAdapter, escalations: list[Escalation]
) -> None:
    adapter.healthy = False
    [record] = make_engine(ANOMALY_RULE).evaluate(frame("web-2", "cpu", []), [_anomaly()])
    assert record.result is ActionStatus.SUCCEEDED and "verified=false" in record.detail
    assert len(escalations) == 1 and "did not take effect" in escalations[0].reason


# -- rules reload ------------------------------------------------------------------------------


def test_bad_rules_reload_keeps_the_last_good_rules(
    make_engine: EngineFactory, adapter: FakeAdapter, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(CPU_RULE)
    engine = make_engine(CPU_RULE, rules_path=path)
    path.write_text(CPU_RULE.replace("restart_service", "restart_servce"))
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the filesystem's resolution
    assert len(engine.evaluate(cpu([50, 95, 95, 95, 95]))) == 1  # still the old, good rule
    assert engine.rules_error is not None and "valid actions" in engine.rules_error
    assert engine.status()["rules_error"] == engine.rules_error
    path.write_text(CPU_RULE.replace("name: cpu_high", "name: cpu_hot"))
    os.utime(path, ns=(2, 2))
    engine.evaluate(frame("web-1", "cpu", []))
    assert [r.name for r in engine.rules] == ["cpu_hot"] and engine.rules_error is None


# -- against the real simulator ----------------------------------------------------------------


def test_cpu_hog_on_the_simulator_is_restarted_and_verified(
    tmp_path: Path, events: EventStore, audit: AuditLog, audit_dir: Path, clock: Clock
) -> None:
    sim = FleetSimulator(tmp_path / "sim", ["web-1", "web-2"], seed=5, schedule=False)
    sim.inject("cpu_hog", "web-1", start=T0 - 6 * MINUTE, duration_minutes=60)
    engine = RemediationEngine(
        parse_rules(CPU_RULE), SimulatorAdapter(sim, clock=clock), events, audit,
        dry_run=False, clock=clock, probe=lambda hosts: sim.latest(at=clock(), hosts=list(hosts)),
    )
    metrics = sim.values(T0 - engine.lookback, T0 + timedelta(seconds=1))
    [record] = engine.evaluate(metrics)
    assert (record.instance, record.result) == ("web-1", ActionStatus.SUCCEEDED)
    assert "verified=true" in record.detail
    assert sim.health("web-1", at=T0 + MINUTE)["healthy"]
    incidents = sim.incidents(T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert [i.ended_by for i in incidents] == ["restart_service"]
    assert verify_audit(audit_dir).ok


# -- fleet-wide guards ---------------------------------------------------------------------------


def test_rate_limit_opens_the_circuit_breaker(
    make_engine: EngineFactory, events: EventStore, adapter: FakeAdapter, clock: Clock
) -> None:
    from remediation.safety import RateLimitBreaker

    breaker = RateLimitBreaker(events, max_actions=2, window=timedelta(minutes=10))
    engine = make_engine(guards=[breaker])
    breach = [50, 95, 95, 95, 95]
    records = engine.evaluate(frames(*(cpu(breach, host=h) for h in ("web-1", "web-2", "app-1"))))
    assert [r.instance for r in records] == ["app-1", "web-1"]  # the third is held back
    assert breaker.status(clock())["open"] is True
    assert "2 automatic actions" in breaker.status(clock())["reason"]
    assert engine.status()["guards"]["RateLimitBreaker"]["open"] is True
    assert len(adapter.mutations) == 2


def test_blast_radius_caps_the_share_of_the_fleet_touched(
    make_engine: EngineFactory, events: EventStore, adapter: FakeAdapter
) -> None:
    from remediation.safety import BlastRadius

    engine = make_engine(guards=[BlastRadius(events, lambda: 5, max_share=0.4)])
    breach = [50, 95, 95, 95, 95]
    hosts = ("web-1", "web-2", "app-1")
    records = engine.evaluate(frames(*(cpu(breach, host=h) for h in hosts)))
    assert len(records) == 2 and len(adapter.mutations) == 2  # 40 % of 5 hosts
