"""Safety rails wired from settings (maintenance windows, circuit breaker, blast radius), the
fleet lock that closes the guard race, the intent record that closes the claim/execute crash
gap, and the failing-health-check condition."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from remediation_helpers import CPU_RULE, T0, Clock, FakeAdapter, audit_records, frame, frames

from remediation.engine import RemediationEngine
from remediation.rules import RulesError, parse_rules
from remediation.safety import (
    BlastRadius,
    MaintenanceWindows,
    RateLimitBreaker,
    parse_maintenance_windows,
)
from smartcloudops.audit import AuditLog, verify_audit
from smartcloudops.domain import ActionStatus
from smartcloudops.errors import ConfigError
from smartcloudops.events import EventStore
from smartcloudops.settings import Settings

EngineFactory = Callable[..., RemediationEngine]
BREACH = [50, 95, 95, 95, 95]


def cpu(values: Sequence[float | None], *, end_minutes: float = 0, host: str = "web-1") -> pd.DataFrame:
    return frame(host, "cpu", values, end=T0 + timedelta(minutes=end_minutes))


def actions_in_audit(audit_dir: Path) -> list[dict[str, Any]]:
    return [r for r in audit_records(audit_dir) if r.get("event") == "action"]


# -- maintenance windows: parsing -----------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        ("2026-01-05T11:00Z/2026-01-05T13:00Z", ["2026-01-05T11:00", "2026-01-05T12:59"],
         ["2026-01-05T10:59", "2026-01-05T13:00"]),
        ("daily 02:00-03:00", ["2026-01-05T02:00", "2026-01-07T02:30"], ["2026-01-05T03:00"]),
        # 2026-01-05 is a Monday; an end before the start runs past midnight
        ("mon-fri 22:00-02:00", ["2026-01-05T23:00", "2026-01-06T01:59", "2026-01-10T01:00"],
         ["2026-01-05T02:00", "2026-01-10T23:00", "2026-01-11T01:00"]),
        ("sat,sun 00:00-24:00", ["2026-01-10T00:00", "2026-01-11T23:59"], ["2026-01-09T23:59"]),
        ("fri-mon 10:00-11:00", ["2026-01-09T10:30", "2026-01-12T10:30"], ["2026-01-07T10:30"]),
    ],
)
def test_maintenance_window_specs(spec: str, inside: list[str], outside: list[str]) -> None:
    [window] = parse_maintenance_windows(spec)
    for text in inside:
        assert window.contains(at(text)), text
    for text in outside:
        assert not window.contains(at(text)), text


def test_maintenance_window_host_globs_and_lists() -> None:
    windows = parse_maintenance_windows(
        " daily 11:00-13:00 @web-*, db-1 ; 2026-01-05T00:00Z/2026-01-06T00:00Z@app-1;"
    )
    guard = MaintenanceWindows(windows)
    assert [w.hosts for w in windows] == [("web-*", "db-1"), ("app-1",)]
    rule = parse_rules(CPU_RULE).rules[0]
    assert guard(rule, "web-2", T0) and guard(rule, "db-1", T0) and guard(rule, "app-1", T0)
    assert guard(rule, "db-2", T0) is None
    assert guard.status(T0)["active"] == [w.text for w in windows]


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("daily 2am-3am", "invalid time of day '2am'"),
        ("someday 02:00-03:00", "unknown day"),
        ("02:00-03:00", "expected"),
        ("daily 25:00-26:00", "invalid time of day"),
        ("2026-01-05T13:00Z/2026-01-05T11:00Z", "end must be after the start"),
        ("2026-13-05T11:00Z/2026-01-05T13:00Z", "cannot read window"),
        ("daily 02:00-03:00@", "empty host list"),
    ],
)
def test_bad_maintenance_windows_name_the_variable(spec: str, named: str) -> None:
    with pytest.raises(ConfigError, match="SMARTCLOUDOPS_REMEDIATION_MAINTENANCE_WINDOWS") as info:
        parse_maintenance_windows(f"daily 01:00-01:30; {spec}")
    assert named in str(info.value) and spec.strip() in str(info.value)


# -- zero actions while a rail holds --------------------------------------------------------------


def test_no_action_in_a_maintenance_window_then_acts_after_it(
    make_engine: EngineFactory, adapter: FakeAdapter, clock: Clock, audit_dir: Path
) -> None:
    windows = parse_maintenance_windows("2026-01-05T11:30Z/2026-01-05T12:05Z@web-*")
    engine = make_engine(guards=[MaintenanceWindows(windows)])
    both = frames(cpu(BREACH), cpu(BREACH, host="app-1"))
    [record] = engine.evaluate(both)
    assert record.instance == "app-1"  # outside the window's hosts
    for minute in range(1, 5):  # the incident on web-1 holds all through the window
        clock.advance(minutes=1)
        assert engine.evaluate(cpu([50] + [95] * (4 + minute), end_minutes=minute)) == []
    assert adapter.mutations == [("restart_service", "app-1")]
    assert engine.status()["guards"]["MaintenanceWindows"]["active"] == [windows[0].text]
    clock.advance(minutes=1)  # 12:05: the window has closed and web-1 still burns
    [late] = engine.evaluate(cpu([50] + [95] * 9, end_minutes=5))
    assert (late.instance, late.result) == ("web-1", ActionStatus.SUCCEEDED)
    assert [a["instance"] for a in actions_in_audit(audit_dir)] == ["app-1", "web-1"]


def test_no_action_while_the_breaker_is_open(
    make_engine: EngineFactory, events: EventStore, adapter: FakeAdapter, clock: Clock
) -> None:
    breaker = RateLimitBreaker(
        events, max_actions=1, window=timedelta(minutes=10), open_for=timedelta(minutes=30)
    )
    engine = make_engine(CPU_RULE.replace("cooldown: 10m", "cooldown: 1m"), guards=[breaker])
    assert len(engine.evaluate(cpu(BREACH))) == 1
    # New incidents on other hosts, and web-1 again after its cooldown: all held back.
    for minute in (2, 12, 29):
        clock.advance(minutes=minute - (clock.now - T0).total_seconds() / 60)
        values = [50] + [95] * (4 + minute)
        hosts = frames(*(cpu(values, end_minutes=minute, host=h) for h in ("web-1", "web-2", "app-1")))
        assert engine.evaluate(hosts) == [], minute
        assert engine.status()["guards"]["RateLimitBreaker"]["open"] is True
    assert len(adapter.mutations) == 1
    clock.advance(minutes=32 - 29)  # 30 minutes after it opened: closed again
    assert engine.status()["guards"]["RateLimitBreaker"]["open"] is False


def test_from_settings_wires_every_rail(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        remediation_maintenance_windows="daily 02:00-03:00",
        remediation_rate_limit_actions=3,
        remediation_blast_radius_share=0.5,
    )
    engine = RemediationEngine.from_settings(settings, FakeAdapter())
    kinds = [type(g) for g in engine.guards]
    assert kinds == [MaintenanceWindows, RateLimitBreaker, BlastRadius]
    breaker = engine.guards[1]
    assert isinstance(breaker, RateLimitBreaker) and breaker.max_actions == 3
    blast = engine.guards[2]
    assert isinstance(blast, BlastRadius) and blast.fleet_size() == 3  # FakeAdapter's hosts
    status = engine.status()["guards"]
    assert status["RateLimitBreaker"]["open"] is False
    assert status["MaintenanceWindows"]["windows"] == ["daily 02:00-03:00"]
    assert status["BlastRadius"] == {"touched": [], "limit": 1, "fleet": 3}

    # The safe defaults: breaker and blast radius on, no window; switching them off works.
    default = RemediationEngine.from_settings(Settings(home=tmp_path), FakeAdapter())
    default_kinds = [type(g) for g in default.guards]
    assert default_kinds == [RateLimitBreaker, BlastRadius]
    off = Settings(home=tmp_path, remediation_rate_limit_actions=0, remediation_blast_radius_share=1.0)
    assert RemediationEngine.from_settings(off, FakeAdapter()).guards == ()
    with pytest.raises(ConfigError, match="MAINTENANCE_WINDOWS"):
        RemediationEngine.from_settings(
            Settings(home=tmp_path, remediation_maintenance_windows="nightly"), FakeAdapter()
        )


def test_settings_reject_bad_rail_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from smartcloudops.settings import SettingsError, get_settings

    monkeypatch.setenv("SMARTCLOUDOPS_REMEDIATION_BLAST_RADIUS_SHARE", "1.5")
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError, match="SMARTCLOUDOPS_REMEDIATION_BLAST_RADIUS_SHARE"):
            get_settings()
    finally:
        get_settings.cache_clear()


# -- the guard race -------------------------------------------------------------------------------


def test_fleet_lock_closes_the_guard_race(tmp_path: Path, adapter: FakeAdapter, clock: Clock) -> None:
    """Four runs, each seeing a different host breach, against a blast radius of one host:
    without the fleet lock each could count zero touched hosts and act."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [EventStore(url) for _ in range(4)]
    stores[0].get_state("warm-up")
    hosts = ("web-1", "web-2", "app-1", "db-1")
    adapter.host_names = hosts
    engines = [
        RemediationEngine(
            parse_rules(CPU_RULE), adapter, store, AuditLog(tmp_path / "audit"), dry_run=False,
            clock=clock, guards=[BlastRadius(store, lambda: 4, max_share=0.25)],
        )
        for store in stores
    ]
    barrier = threading.Barrier(len(engines))
    acted: list[int] = []

    def run(engine: RemediationEngine, host: str) -> None:
        barrier.wait()
        # A busy fleet lock means "try next pass": give each run a few passes.
        for _ in range(20):
            acted.append(len(engine.evaluate(cpu(BREACH, host=host))))

    threads = [threading.Thread(target=run, args=(e, h)) for e, h in zip(engines, hosts, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for store in stores:
        store.close()
    assert sum(acted) == 1
    assert len(adapter.mutations) == 1


def test_busy_fleet_lock_defers_without_claiming(
    make_engine: EngineFactory, events: EventStore, adapter: FakeAdapter
) -> None:
    engine = make_engine(guards=[BlastRadius(events, lambda: 3, max_share=1.0)])
    assert events.claim("remediation:lock:fleet", "someone-else", ttl_seconds=60)
    assert engine.evaluate(cpu(BREACH)) == []
    events.release("remediation:lock:fleet")
    [record] = engine.evaluate(cpu(BREACH))  # the incident was not claimed: it acts now
    assert record.result is ActionStatus.SUCCEEDED and len(adapter.mutations) == 1


# -- crash gap between claim and execute ----------------------------------------------------------


class Crash(BaseException):
    """Stands in for the process dying: no ``except Exception`` catches it."""


class CrashingAdapter(FakeAdapter):
    crash_next: bool = True

    def restart_service(self, host: str, service: str) -> None:
        if self.crash_next:
            self.crash_next = False
            raise Crash
        super().restart_service(host, service)


def test_a_run_dying_after_the_claim_is_resumed_once(
    make_engine: EngineFactory, audit_dir: Path
) -> None:
    adapter = CrashingAdapter()
    with pytest.raises(Crash):
        make_engine(adapter=adapter).evaluate(cpu(BREACH))
    assert actions_in_audit(audit_dir) == [] and adapter.mutations == []
    # The next pass (a new process) finds the intent: the incident is claimed, nothing was
    # recorded, the condition still holds -> it finishes the action, under the same id.
    [record] = make_engine(adapter=adapter).evaluate(cpu(BREACH))
    assert record.result is ActionStatus.SUCCEEDED
    assert adapter.mutations == [("restart_service", "web-1")]
    [entry] = actions_in_audit(audit_dir)
    assert entry["action_id"] == record.action_id and entry["recovered"] is True
    assert make_engine(adapter=adapter).evaluate(cpu(BREACH)) == []  # exactly once
    assert verify_audit(audit_dir).ok


def test_a_resumed_action_already_done_is_skipped(make_engine: EngineFactory) -> None:
    adapter = CrashingAdapter()
    with pytest.raises(Crash):
        make_engine(adapter=adapter).evaluate(cpu(BREACH))
    adapter.restarted_at = T0  # it did restart before it died: the goal state is reached
    [record] = make_engine(adapter=adapter).evaluate(cpu(BREACH))
    assert record.result is ActionStatus.SKIPPED and adapter.mutations == []


def test_an_interrupted_action_is_closed_not_run_once_the_incident_is_over(
    make_engine: EngineFactory, clock: Clock, audit_dir: Path
) -> None:
    adapter = CrashingAdapter()
    with pytest.raises(Crash):
        make_engine(adapter=adapter).evaluate(cpu(BREACH))
    clock.advance(minutes=1)
    [record] = make_engine(adapter=adapter).evaluate(cpu([95, 95, 95, 95, 40], end_minutes=1))
    assert record.result is ActionStatus.SKIPPED and "interrupted" in record.detail
    assert adapter.mutations == []
    assert [a["result"] for a in actions_in_audit(audit_dir)] == ["skipped"]


def test_an_intent_that_never_claimed_is_dropped_and_decided_afresh(
    make_engine: EngineFactory, events: EventStore, adapter: FakeAdapter
) -> None:
    key = "remediation/rule/cpu_high/web-1"
    events.put_state(key, {
        "episode_active": True, "episode_start": (T0 - timedelta(minutes=3)).isoformat(),
        "intent": {"action_id": "act-dead", "incident_key": "remediation:incident:x", "at": T0.isoformat()},
    })
    [record] = make_engine().evaluate(cpu(BREACH))
    assert record.action_id != "act-dead" and record.result is ActionStatus.SUCCEEDED
    assert "intent" not in (events.get_state(key) or {})
    assert events.claim("remediation:incident:x", "anyone")  # our recovery released it


def test_an_action_stored_but_not_audited_gets_its_audit_record_back(
    make_engine: EngineFactory, audit: AuditLog, audit_dir: Path, adapter: FakeAdapter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_append = audit.append
    calls = {"n": 0}

    def dies_once(record: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk went away")
        return real_append(record)

    monkeypatch.setattr(audit, "append", dies_once)
    assert make_engine().evaluate(cpu(BREACH)) == []  # stored, not audited, intent left
    assert actions_in_audit(audit_dir) == []
    assert make_engine().evaluate(cpu(BREACH)) == []  # recovery: no second action...
    [entry] = actions_in_audit(audit_dir)  # ...but the proof is back
    assert entry["recovered"] is True and entry["result"] == "succeeded"
    assert adapter.mutations == [("restart_service", "web-1")]
    assert verify_audit(audit_dir).ok


# -- failing health check condition ---------------------------------------------------------------

HEALTH_RULE = """
rules:
  - name: app_down
    condition: {type: health, service: app, failures: 2}
    action: restart_service
    params: {service: app}
    cooldown: 10m
"""


def test_failing_health_check_restarts_after_n_failures(
    make_engine: EngineFactory, adapter: FakeAdapter, clock: Clock
) -> None:
    engine = make_engine(HEALTH_RULE)
    samples = cpu([40])  # the host is seen (any fresh sample); its health is asked directly
    adapter.healthy = False
    assert engine.evaluate(samples) == []  # one failure: could be a blip
    clock.advance(seconds=30)
    [record] = engine.evaluate(samples)
    assert (record.rule, record.action) == ("app_down", "restart_service")
    assert record.result is ActionStatus.SUCCEEDED
    clock.advance(seconds=30)
    assert engine.evaluate(samples) == []  # same incident: no second action
    assert adapter.mutations == [("restart_service", "web-1")]


def test_a_healthy_check_resets_the_count(make_engine: EngineFactory, adapter: FakeAdapter) -> None:
    engine = make_engine(HEALTH_RULE)
    for healthy in (False, True, False, True, False):
        adapter.healthy = healthy
        assert engine.evaluate(cpu([40])) == []
    assert adapter.mutations == []


def test_an_unreachable_health_check_is_no_data_not_a_failure(
    make_engine: EngineFactory, adapter: FakeAdapter
) -> None:
    adapter.fail.add("health")
    engine = make_engine(HEALTH_RULE)
    for _ in range(3):
        assert engine.evaluate(cpu([40])) == []
    assert adapter.mutations == []


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("{type: health, service: app, failures: 0}", ["line 4", "field 'condition.failures'"]),
        ("{type: health, servce: app}", ["line 4", "field 'condition.servce'", "valid fields"]),
        ("{type: health, service: 'app; rm -rf /'}", ["line 4", "field 'condition.service'"]),
        ("{type: healthy}", ["line 4", "unknown condition type 'healthy'", "health"]),
    ],
)
def test_health_condition_validation_names_line_and_field(condition: str, expected: list[str]) -> None:
    text = f"""
rules:
  - name: app_down
    condition: {condition}
    action: restart_service
"""
    with pytest.raises(RulesError) as info:
        parse_rules(text)
    for part in expected:
        assert part in str(info.value), (part, str(info.value))


def test_a_handled_incident_does_not_consult_the_guards_again(
    make_engine: EngineFactory, clock: Clock, adapter: FakeAdapter
) -> None:
    calls: list[str] = []

    def counting_guard(rule: Any, host: str, now: datetime) -> str | None:
        calls.append(host)
        return None

    engine = make_engine(guards=[counting_guard])
    assert len(engine.evaluate(cpu(BREACH))) == 1
    clock.advance(minutes=15)  # past the cooldown; the incident never cleared
    assert engine.evaluate(cpu([50] + [95] * 19, end_minutes=15)) == []
    assert calls == ["web-1"] and len(adapter.mutations) == 1
