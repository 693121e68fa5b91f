"""The anomaly sensor: its trigger (current state, not edges), one pass, and the DAG run."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from smartcloudops.errors import SourceError

# -- the trigger -------------------------------------------------------------------------------


class _Checks:
    """A fake check module: the trigger resolves checks by dotted path, as in the triggerer."""

    def __init__(self) -> None:
        self.calls = 0
        self.state: dict[str, Any] | None = None
        self.fail_first = 0

    def current(self, **kwargs: Any) -> dict[str, Any] | None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise SourceError("prometheus briefly down")
        return self.state

    def broken(self) -> None:
        raise TypeError("a bug in the check")


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> _Checks:
    fake = _Checks()
    module = types.ModuleType("fake_sensor_checks")
    module.current = fake.current  # type: ignore[attr-defined]
    module.broken = fake.broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_sensor_checks", module)
    return fake


def _first_event(trigger: Any, timeout: float = 10.0) -> Any:
    async def first() -> Any:
        return await asyncio.wait_for(anext(trigger.run()), timeout)

    return asyncio.run(first())


def test_trigger_fires_at_once_on_a_condition_that_is_already_true(checks: _Checks) -> None:
    from remediation.triggers import CurrentStateTrigger

    # The condition became true while no trigger was running (between two DAG runs):
    checks.state = {"fresh_hosts": ["web-1"]}
    event = _first_event(CurrentStateTrigger(check="fake_sensor_checks.current", poll_interval=30))
    assert event.payload["status"] == "work"
    assert event.payload["work"] == {"fresh_hosts": ["web-1"]}
    assert event.payload["polls"] == 1 and checks.calls == 1  # no waiting for an edge


def test_trigger_keeps_polling_until_the_state_has_work(checks: _Checks) -> None:
    from remediation.triggers import CurrentStateTrigger

    async def scenario() -> Any:
        trigger = CurrentStateTrigger(check="fake_sensor_checks.current", poll_interval=0.01)
        task = asyncio.ensure_future(anext(trigger.run()))
        await asyncio.sleep(0.1)
        assert not task.done() and checks.calls >= 3
        checks.state = {"new_breaches": ["cpu_high@web-1"]}
        return await asyncio.wait_for(task, 5)

    event = asyncio.run(scenario())
    assert event.payload["status"] == "work"
    assert event.payload["work"]["new_breaches"] == ["cpu_high@web-1"]


def test_trigger_survives_transient_check_failures(checks: _Checks) -> None:
    from remediation.triggers import CurrentStateTrigger

    checks.fail_first = 2
    checks.state = {"fresh_hosts": ["db-1"]}
    event = _first_event(CurrentStateTrigger(check="fake_sensor_checks.current", poll_interval=0.01))
    assert event.payload["status"] == "work" and event.payload["polls"] == 3


def test_trigger_goes_idle_and_reports_broken_checks(checks: _Checks) -> None:
    from remediation.triggers import CurrentStateTrigger

    idle = _first_event(
        CurrentStateTrigger(check="fake_sensor_checks.current", poll_interval=0.01, idle_after_seconds=0.05)
    )
    assert idle.payload["status"] == "idle" and idle.payload["polls"] >= 2
    broken = _first_event(CurrentStateTrigger(check="fake_sensor_checks.broken"))
    assert broken.payload["status"] == "error" and "TypeError" in broken.payload["error"]
    missing = _first_event(CurrentStateTrigger(check="fake_sensor_checks.nope"))
    assert missing.payload["status"] == "error" and "cannot be imported" in missing.payload["error"]


def test_trigger_serialises_to_plain_kwargs_and_back() -> None:
    from airflow.sdk.serde import deserialize, serialize

    from remediation.triggers import CurrentStateTrigger

    trigger = CurrentStateTrigger(poll_interval=1.5, idle_after_seconds=None, check_kwargs={"x": 1})
    classpath, kwargs = trigger.serialize()
    assert classpath == "remediation.triggers.CurrentStateTrigger"
    json.dumps(kwargs)  # plain JSON: any triggerer can rebuild it
    rebuilt = CurrentStateTrigger(**deserialize(serialize(kwargs)))  # what dag.test/the triggerer do
    assert rebuilt.serialize() == (classpath, kwargs)
    with pytest.raises(ValueError, match="poll_interval"):
        CurrentStateTrigger(poll_interval=0)


# -- one pass ----------------------------------------------------------------------------------

# A fixed instant: the simulator is a pure function of time, so this pass is deterministic.
T = datetime(2026, 3, 2, 12, 0, 30, tzinfo=UTC)


def _engine(settings: Any, events: Any, at: datetime) -> Any:
    from remediation.adapters.simulator import SimulatorAdapter
    from remediation.engine import RemediationEngine
    from smartcloudops.simulator import FleetSimulator

    sim = FleetSimulator.from_settings(settings)
    return RemediationEngine.from_settings(
        settings, SimulatorAdapter(sim, clock=lambda: at), events=events,
        probe=lambda hosts: sim.latest(at, hosts=list(hosts)), clock=lambda: at,
    )


def _pass(settings: Any, at: datetime = T, scorer: Any = None) -> dict[str, Any]:
    from remediation.sensor import sense_and_act
    from smartcloudops.events import EventStore

    events = EventStore.from_settings(settings)
    try:
        engine = _engine(settings, events, at)
        return sense_and_act(settings, events=events, engine=engine, scorer=scorer, now=at)
    finally:
        events.close()


def _settings(**update: Any) -> Any:
    from smartcloudops.settings import get_settings

    get_settings.cache_clear()
    return get_settings().model_copy(update=update)


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_cpu_hog_older_than_three_minutes_triggers_the_cpu_rule(sc_home: Path, dry_run: bool) -> None:
    from smartcloudops.audit import verify_audit
    from smartcloudops.events import EventStore
    from smartcloudops.simulator import FleetSimulator

    settings = _settings(dry_run=dry_run)
    sim = FleetSimulator.from_settings(settings)
    sim.inject("cpu_hog", "web-1", start=T - timedelta(minutes=6), duration_minutes=30)
    cpu = sim.values(T - timedelta(minutes=4), T, hosts=["web-1"]).query("metric == 'cpu'")["value"]
    assert (cpu > 90).all(), "precondition: the simulated hog keeps cpu above 90"

    summary = _pass(settings)  # the scoring service is down (closed port): rules still run
    assert summary["scoring"].startswith("unavailable")
    assert summary["dry_run"] is dry_run
    cpu_actions = [a for a in summary["actions"] if a["rule"] == "cpu_high"]
    assert len(cpu_actions) == 1
    action = cpu_actions[0]
    assert (action["action"], action["instance"]) == ("restart_service", "web-1")
    assert action["result"] == ("dry_run" if dry_run else "succeeded")
    assert not [a for a in summary["actions"] if a["instance"] == "db-1"]

    events = EventStore.from_settings(settings)
    stored = events.get_action(action["action_id"])
    events.close()
    assert stored is not None and stored.dry_run is dry_run
    assert verify_audit(settings.audit_dir).ok
    around = sim.incidents(T - timedelta(hours=1), T + timedelta(hours=1))
    hog = [i for i in around if i.kind == "cpu_hog" and i.injected]
    assert hog[0].ended_by == (None if dry_run else "restart_service")

    # The same incident seen again by the next pass: no second action.
    again = _pass(settings, T + timedelta(seconds=20))
    acted = ("dry_run", "succeeded")
    assert not [a for a in again["actions"] if a["rule"] == "cpu_high" and a["result"] in acted]


class _FakeScoring:
    """A loopback scoring service that flags web-1 (the real API's request/response shape)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                newest = {i["host"]: i["timestamp"] for i in body["instances"]}  # oldest first
                results = [
                    # Like the real alarm policy: one alarm at the incident's onset (the newest
                    # row here), not one for every row of a sustained breach.
                    {"host": i["host"], "timestamp": i["timestamp"],
                     "anomaly": i["host"] == "web-1" and i["timestamp"] == newest[i["host"]],
                     "score": 0.97 if i["host"] == "web-1" else 0.1,
                     "severity": "high" if i["host"] == "web-1" else None,
                     "model_version": "7", "contributions": {"cpu": 0.9}}
                    for i in body["instances"]
                ]
                data = json.dumps({"results": results}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scoring() -> Iterator[_FakeScoring]:
    fake = _FakeScoring()
    yield fake
    fake.stop()


def test_scored_anomalies_are_recorded_once(sc_home: Path, scoring: _FakeScoring) -> None:
    from smartcloudops.events import EventStore

    settings = _settings(scoring_url=scoring.url)
    first = _pass(settings)
    assert first["scoring"] == "ok" and first["model_version"] == "7"
    assert first["anomalies"] == 1 and first["anomalies_new"] == 1
    instances = scoring.requests[0]["instances"]
    assert {i["host"] for i in instances} == {"db-1", "web-1"}
    assert set(instances[0]["metrics"]) == {"cpu", "memory", "disk", "load", "network_in", "network_out"}
    # Each host's recent history goes along as context for the model, newest sample last.
    newest = {i["host"]: i["timestamp"] for i in instances}
    assert newest == {"db-1": "2026-03-02T12:00:00+00:00", "web-1": "2026-03-02T12:00:00+00:00"}
    assert len(instances) == 2 * settings.scoring_context_minutes  # one sample a minute

    # A retried pass over the same samples records nothing new (deterministic anomaly ids).
    second = _pass(settings)
    # The cursor says these samples were judged: nothing is reported or stored twice.
    assert second["anomalies"] == 0 and second["anomalies_new"] == 0
    events = EventStore.from_settings(settings)
    stored = events.recent_anomalies(limit=10)
    events.close()
    assert [(a.host, str(a.severity), a.model_version) for a in stored] == [("web-1", "high", "7")]
    web = [i for i in instances if i["host"] == "web-1"][-1]
    assert stored[0].metrics["cpu"] == web["metrics"]["cpu"]


def test_work_is_the_current_state_against_the_last_pass() -> None:
    from remediation.sensor import CurrentState, work_in

    t0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    state = CurrentState({"web-1": t0, "db-1": t0}, frozenset({("cpu_high", "web-1")}))
    assert work_in(state, None) == {
        "fresh_hosts": ["db-1", "web-1"], "new_breaches": ["cpu_high@web-1"], "latest": t0.isoformat()
    }
    cursor = state.to_cursor()
    assert work_in(state, cursor) is None  # processed: nothing to do, however often we poll
    later = CurrentState({"web-1": t0 + timedelta(minutes=1), "db-1": t0}, state.breaching)
    latest = later.latest["web-1"].isoformat()
    assert work_in(later, cursor) == {"fresh_hosts": ["web-1"], "new_breaches": [], "latest": latest}
    crossed = CurrentState(state.latest, frozenset({("cpu_high", "web-1"), ("memory_high", "db-1")}))
    assert work_in(crossed, cursor)["new_breaches"] == ["memory_high@db-1"]  # type: ignore[index]


def test_pending_work_is_cleared_by_a_pass(sc_home: Path) -> None:
    from remediation.sensor import pending_work, sense_and_act

    settings = _settings()
    assert pending_work(settings) is not None  # never processed: every host is fresh
    for _ in range(2):  # a minute boundary between the pass and the check makes fresh samples
        sense_and_act(settings)
        if pending_work(settings) is None:
            break
    else:
        pytest.fail("pending_work still reports work right after a pass")


def test_pending_work_with_broken_rules_still_senses_fresh_samples(
    sc_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from remediation.sensor import pending_work

    broken = sc_home.parent / "broken-rules.yaml"
    broken.write_text("rules:\n  - name: x\n    action: reboot_everything\n")
    settings = _settings(rules_file=broken)
    work = pending_work(settings)
    assert work is not None and work["fresh_hosts"] == ["db-1", "web-1"] and work["new_breaches"] == []


# -- the DAG, run for real ---------------------------------------------------------------------

RULES = """
version: 1
rules:
  - name: cpu_high
    condition: {metric: cpu, operator: ">", threshold: 85, duration: 3m, clear_threshold: 80}
    action: restart_service
    params: {service: app}
    cooldown: 10m
"""


def test_anomaly_sensor_dag_run_acts_on_a_live_cpu_hog(
    airflow_home: Path, sc_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smartcloudops.cli import airflow_runner
    from smartcloudops.settings import get_settings
    from smartcloudops.simulator import FleetSimulator

    # Threshold 85 instead of 90: the live hog (95 +- 2) must never dip under it by noise.
    rules = sc_home.parent / "rules.yaml"
    rules.write_text(RULES)
    monkeypatch.setenv("SMARTCLOUDOPS_RULES_FILE", str(rules))
    get_settings.cache_clear()
    now = datetime.now(UTC)
    FleetSimulator.from_settings(get_settings()).inject(
        "cpu_hog", "web-1", start=now - timedelta(minutes=6), duration_minutes=30
    )

    outcome = airflow_runner.run_dag_outcome("anomaly_sensor", now)
    assert outcome.state == "success", outcome.task_states
    assert outcome.task_states == {"wait_for_work": "success", "sense_and_act": "success"}
    work = outcome.returns["wait_for_work"]
    assert work["status"] == "work" and work["polls"] == 1
    assert "cpu_high@web-1" in work["work"]["new_breaches"]
    summary = outcome.returns["sense_and_act"]
    assert summary["scoring"].startswith("unavailable")
    acted = [(a["rule"], a["instance"], a["result"]) for a in summary["actions"]]
    assert acted == [("cpu_high", "web-1", "dry_run")]
