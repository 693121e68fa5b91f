"""Actions: the registry, schemas, idempotency, the executor's dry-run and failure handling,
and the simulator adapter against the real simulator."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from remediation_helpers import T0, FakeAdapter, audit_records

from remediation.actions import Action, ActionOutcome, Target, get_action, registry, validate_params
from remediation.adapters.simulator import SimulatorAdapter
from remediation.executor import ActionExecutor
from smartcloudops.audit import AuditLog
from smartcloudops.domain import ActionStatus
from smartcloudops.errors import ActionError, InputError
from smartcloudops.events import EventStore
from smartcloudops.simulator import FleetSimulator


def test_registry_knows_the_actions_and_lists_them_on_a_typo() -> None:
    assert registry.names() == ["health_check", "restart_service", "scale_down", "scale_up"]
    with pytest.raises(InputError) as info:
        get_action("restart")
    assert "unknown action 'restart'" in str(info.value)
    assert "health_check, restart_service, scale_down, scale_up" in str(info.value)


@pytest.mark.parametrize("name", ["health_check", "restart_service", "scale_down", "scale_up"])
def test_every_action_declares_schema_and_permissions(name: str) -> None:
    cls = get_action(name)
    assert issubclass(cls, Action)
    assert cls.permissions and all(":" in p for p in cls.permissions)
    assert cls.schema.model_validate({})  # defaults make every parameter optional


def test_params_unknown_and_invalid_are_named() -> None:
    expected = r"unknown parameter 'replica' for action scale_up; valid: replicas, max_capacity"
    with pytest.raises(InputError, match=expected):
        validate_params("scale_up", {"replica": 2})
    with pytest.raises(InputError, match="parameter 'service' of action restart_service"):
        validate_params("restart_service", {"service": "app; rm -rf /"})
    assert validate_params("scale_up", {"replicas": 2}).model_dump() == {"replicas": 2, "max_capacity": 10}


def test_idempotency_checks() -> None:
    adapter = FakeAdapter(capacities={"web-1": 4})
    scale_up = get_action("scale_up")(adapter)
    assert scale_up.is_in_goal_state(Target("web-1"), validate_params("scale_up", {"max_capacity": 4}))
    assert not scale_up.is_in_goal_state(Target("web-1"), validate_params("scale_up", {"max_capacity": 5}))
    restart = get_action("restart_service")(adapter)
    params = validate_params("restart_service", {})
    assert not restart.is_in_goal_state(Target("web-1", episode_start=T0), params)
    adapter.restarted_at = T0 + timedelta(minutes=1)  # someone already restarted it in this incident
    assert restart.is_in_goal_state(Target("web-1", episode_start=T0), params)
    assert not restart.is_in_goal_state(Target("web-1", episode_start=T0 + timedelta(minutes=5)), params)


def test_health_check_verify_reflects_health() -> None:
    adapter = FakeAdapter(healthy=False)
    check = get_action("health_check")(adapter)
    params = validate_params("health_check", {})
    outcome = check.execute(Target("web-1"), params)
    assert outcome.data["healthy"] is False
    assert not check.verify(Target("web-1"), params, outcome)
    assert check.verify(Target("web-1"), params, ActionOutcome("ok", {"healthy": True}))


@pytest.fixture
def executor_parts(tmp_path: Path) -> tuple[FakeAdapter, EventStore, Path]:
    return FakeAdapter(), EventStore(f"sqlite:///{tmp_path / 'ev.db'}"), tmp_path / "audit"


def test_executor_dry_run_records_and_audits_without_touching_the_adapter(
    executor_parts: tuple[FakeAdapter, EventStore, Path],
) -> None:
    adapter, events, audit_dir = executor_parts
    executor = ActionExecutor(adapter, events, AuditLog(audit_dir), dry_run=True)
    execution = executor.run("restart_service", "web-1", {"service": "app"})
    assert execution.record.result is ActionStatus.DRY_RUN and execution.record.dry_run
    assert "would run restart_service(service='app') on web-1" in execution.record.detail
    assert adapter.calls == []
    [entry] = audit_records(audit_dir)
    assert entry["dry_run"] is True and entry["result"] == "dry_run"
    assert entry["action_id"] == execution.record.action_id
    assert events.get_action(execution.record.action_id) == execution.record
    events.close()


def test_executor_turns_adapter_failure_into_a_failed_audited_record(
    executor_parts: tuple[FakeAdapter, EventStore, Path],
) -> None:
    adapter, events, audit_dir = executor_parts
    adapter.fail.add("scale_up")
    execution = ActionExecutor(adapter, events, AuditLog(audit_dir), dry_run=False).run("scale_up", "web-1")
    assert execution.record.result is ActionStatus.FAILED
    assert "connection refused" in execution.record.detail
    assert execution.record.duration_ms >= 0
    [entry] = audit_records(audit_dir)
    assert entry["result"] == "failed" and entry["dry_run"] is False
    events.close()


def test_executor_rejects_bad_input_before_doing_anything(
    executor_parts: tuple[FakeAdapter, EventStore, Path],
) -> None:
    adapter, events, audit_dir = executor_parts
    executor = ActionExecutor(adapter, events, AuditLog(audit_dir), dry_run=False)
    with pytest.raises(InputError, match="valid actions"):
        executor.run("reboot", "web-1")
    with pytest.raises(InputError, match="valid: service"):
        executor.run("restart_service", "web-1", {"svc": "x"})
    assert adapter.calls == [] and audit_records(audit_dir) == []
    events.close()


# -- the simulator adapter on the real simulator -----------------------------------------------


@pytest.fixture
def sim(tmp_path: Path) -> FleetSimulator:
    return FleetSimulator(tmp_path / "sim", ["web-1", "web-2", "app-1"], seed=3, schedule=False)


def test_simulator_adapter_restart_ends_a_cpu_hog(sim: FleetSimulator) -> None:
    start = T0 - timedelta(minutes=10)
    sim.inject("cpu_hog", "web-1", start=start, duration_minutes=60)
    now = {"t": T0}
    adapter = SimulatorAdapter(sim, clock=lambda: now["t"])
    assert adapter.health("web-1").healthy is False
    assert adapter.last_restart("web-1", "app") is None
    adapter.restart_service("web-1", "app")
    now["t"] = T0 + timedelta(minutes=1)
    report = adapter.health("web-1")
    assert report.healthy is True and report.active_incidents == []
    assert adapter.last_restart("web-1", "app") == T0
    restart = get_action("restart_service")(adapter)
    params = validate_params("restart_service", {})
    assert restart.is_in_goal_state(Target("web-1", episode_start=start), params)


def test_simulator_adapter_scaling_respects_bounds(sim: FleetSimulator) -> None:
    adapter = SimulatorAdapter(sim, clock=lambda: T0)
    base = adapter.capacity("web-1")
    assert adapter.scale_up("web-1", 5, max_capacity=base + 1) == base + 1
    assert adapter.scale_up("web-1", 1, max_capacity=base + 1) == base + 1  # at the bound: no-op
    assert adapter.scale_down("web-1", 10, min_capacity=1) == 1


def test_simulator_adapter_unknown_host_is_an_action_error(sim: FleetSimulator) -> None:
    adapter = SimulatorAdapter(sim)
    with pytest.raises(ActionError, match="unknown host 'web-9'; known hosts: web-1, web-2, app-1"):
        adapter.restart_service("web-9", "app")
