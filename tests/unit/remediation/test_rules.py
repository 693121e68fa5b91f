"""Rules: the packaged file, validation messages (rule, field, line, valid choices), durations
and the threshold predicates."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from remediation.rules import (
    AnomalyCondition,
    RulesError,
    ThresholdCondition,
    load_rules,
    packaged_rules_path,
    parse_duration,
    parse_rules,
)
from smartcloudops.domain import Severity
from smartcloudops.errors import ConfigError


def _rules(body: str) -> str:
    return textwrap.dedent(body).lstrip("\n")


def test_packaged_rules_are_found_through_importlib_resources_and_valid() -> None:
    assert packaged_rules_path().name == "rules.yaml"
    assert packaged_rules_path().exists()
    rules = load_rules()
    names = [r.name for r in rules]
    assert {"cpu_high", "memory_high", "load_high"} <= set(names)
    cpu = rules.get("cpu_high")
    assert cpu is not None
    assert isinstance(cpu.condition, ThresholdCondition)
    assert (cpu.condition.metric, cpu.condition.operator, cpu.condition.threshold) == ("cpu", ">", 90)
    assert cpu.condition.duration == timedelta(minutes=3)
    assert cpu.action == "restart_service" and cpu.typed_params.model_dump() == {"service": "app"}
    memory = rules.get("memory_high")
    assert memory is not None and memory.action == "restart_service"
    assert isinstance(memory.condition, ThresholdCondition)
    assert memory.condition.duration == timedelta(minutes=5)
    load = rules.get("load_high")
    assert load is not None and load.action == "scale_up"
    anomaly_rules = [r for r in rules if isinstance(r.condition, AnomalyCondition)]
    assert [r.action for r in anomaly_rules] == ["health_check"]
    assert "autoscaling:SetDesiredCapacity" in rules.permissions()


VALID_CONDITION = '{metric: cpu, operator: ">", threshold: 90, duration: 3m}'

# (YAML, substrings every one of which the error message must contain)
BAD_RULES = [
    pytest.param(
        f"""
        rules:
          - name: cpu_high
            condition: {VALID_CONDITION}
            action: restart_servce
        """,
        ["line 4", "rule 'cpu_high'", "field 'action'", "unknown action 'restart_servce'",
         "valid actions: health_check, restart_service, scale_down, scale_up"],
        id="unknown-action-lists-valid",
    ),
    pytest.param(
        """
        rules:
          - name: cpu_high
            condition:
              metric: cpu
              operator: ">"
              threshold: 90
              duration: 3x
            action: restart_service
        """,
        ["line 7", "rule 'cpu_high'", "field 'condition.duration'", "invalid duration '3x'", "3m"],
        id="bad-duration",
    ),
    pytest.param(
        f"""
        rules:
          - name: cpu_high
            condition: {VALID_CONDITION}
            action: restart_service
            params:
              servce: app
        """,
        ["line 6", "field 'params.servce'", "unknown parameter 'servce'", "valid: service"],
        id="unknown-parameter-lists-valid",
    ),
    pytest.param(
        f"""
        rules:
          - name: scale
            condition: {VALID_CONDITION}
            action: scale_up
            params: {{replicas: 0}}
        """,
        ["rule 'scale'", "field 'params.replicas'", "greater than or equal to 1"],
        id="parameter-out-of-range",
    ),
    pytest.param(
        """
        rules:
          - name: cpu_high
            condition: {metric: cpu, operator: ">"
            action: restart_service
        """,
        ["line 4", "malformed YAML"],
        id="malformed-yaml-names-line",
    ),
    pytest.param(
        """
        rules:
          - name: cpu_high
            condition:
              metric: cpu
              operator: ">"
              treshold: 90
              duration: 3m
            action: restart_service
        """,
        ["line 6", "field 'condition.treshold'", "unknown field 'treshold'", "valid fields:", "threshold"],
        id="unknown-field-lists-valid",
    ),
    pytest.param(
        """
        rules:
          - name: cpu_high
            condition: {metric: cpux, operator: ">", threshold: 90, duration: 3m}
            action: restart_service
        """,
        ["field 'condition.metric'", "unknown metric 'cpux'", "valid: cpu, memory"],
        id="unknown-metric",
    ),
    pytest.param(
        """
        rules:
          - name: cpu_high
            condition:
              metric: cpu
              operator: >
              threshold: 90
              duration: 3m
            action: restart_service
        """,
        ["line 5", "field 'condition.operator'", "quote it"],
        id="unquoted-operator",
    ),
    pytest.param(
        """
        rules:
          - name: cpu_high
            condition: {metric: cpu, operator: ">", threshold: 90, duration: 3m, clear_threshold: 95}
            action: restart_service
        """,
        ["field 'condition.clear_threshold'", "must be at or below threshold 90"],
        id="clear-threshold-wrong-side",
    ),
    pytest.param(
        """
        rules:
          - name: a
            condition: {type: magic}
            action: health_check
        """,
        ["field 'condition'", "unknown condition type 'magic'", "valid: threshold, anomaly"],
        id="unknown-condition-type",
    ),
    pytest.param(
        """
        rules:
          - name: a
            condition: {min_severity: huge}
            action: health_check
        """,
        ["field 'condition.min_severity'", "unknown severity 'huge'", "low, medium, high, critical"],
        id="bad-severity",
    ),
    pytest.param(
        f"""
        rules:
          - name: a
            condition: {VALID_CONDITION}
            action: health_check
          - name: a
            condition: {VALID_CONDITION}
            action: health_check
        """,
        ["line 5", "duplicate rule name 'a'"],
        id="duplicate-name",
    ),
    pytest.param(
        f"""
        rules:
          - condition: {VALID_CONDITION}
            action: health_check
            approval: maybe
        """,
        ["rule '#1'", "field 'name'", "required", "field 'approval'", "'auto' or 'required'"],
        id="missing-name-and-bad-approval",
    ),
    pytest.param(
        f"""
        defaults: {{cooldwn: 5m}}
        rules:
          - name: a
            condition: {VALID_CONDITION}
            action: health_check
        """,
        ["line 1", "field 'defaults.cooldwn'", "unknown default", "cooldown"],
        id="unknown-default",
    ),
    pytest.param("", ["empty"], id="empty-file"),
    pytest.param("- name: a\n", ["line 1", "top level must be a mapping"], id="top-level-list"),
    pytest.param("version: 1\n", ["field 'rules'", "required"], id="no-rules-list"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_RULES)
def test_invalid_rules_name_rule_field_line_and_valid_choices(text: str, expected: list[str]) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(_rules(text), source="rules.yaml")
    message = str(info.value)
    assert message.startswith("invalid rules in rules.yaml")
    for part in expected:
        assert part in message, f"{part!r} not in:\n{message}"
    assert isinstance(info.value, ConfigError)
    assert info.value.problems


def test_every_problem_is_reported_at_once() -> None:
    text = _rules(
        f"""
        rules:
          - name: one
            condition: {VALID_CONDITION}
            action: nope
          - name: two
            condition: {{metric: cpu, operator: ">", threshold: 90, duration: soon}}
            action: restart_service
        """
    )
    with pytest.raises(RulesError) as info:
        parse_rules(text)
    problems = {(p.rule, p.field, p.line) for p in info.value.problems}
    assert ("one", "action", 4) in problems
    assert ("two", "condition.duration", 6) in problems


def test_load_rules_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="file not found"):
        load_rules(tmp_path / "nope.yaml")


def test_defaults_apply_and_rules_override_them() -> None:
    rules = parse_rules(
        _rules(
            f"""
            defaults: {{cooldown: 5m, approval: required}}
            rules:
              - name: a
                condition: {VALID_CONDITION}
                action: health_check
              - name: b
                condition: {VALID_CONDITION}
                action: health_check
                cooldown: 1h
                approval: auto
                hosts: ["web-*"]
            """
        )
    )
    a, b = rules.rules
    assert (a.cooldown, a.approval) == (timedelta(minutes=5), "required")
    assert (b.cooldown, b.approval) == (timedelta(hours=1), "auto")
    assert a.matches_host("db-1")
    assert b.matches_host("web-2") and not b.matches_host("db-1")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("3m", 180), ("1h30m", 5400), ("1h 30m", 5400), ("500ms", 0.5), ("2d", 172800),
     (45, 45), (1.5, 1.5), ("0s", 0)],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["3x", "", "m3", "3m junk", "-5", -5, True, None, "five minutes"])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_threshold_predicates_with_hysteresis_both_directions() -> None:
    up = ThresholdCondition(metric="cpu", operator=">", threshold=90, duration="3m", clear_threshold=80)
    assert up.breaches(90.1) and not up.breaches(90.0)
    assert not up.clears(85) and up.clears(80) and up.clears(10)
    assert not up.clears(float("nan")) and not up.breaches(float("nan"))
    down = ThresholdCondition(metric="disk", operator="<=", threshold=10, duration="1m", clear_threshold=20)
    assert down.breaches(10) and not down.breaches(11)
    assert not down.clears(15) and down.clears(20)
    plain = ThresholdCondition(metric="cpu", operator=">=", threshold=90, duration="3m")
    assert plain.breaches(90) and not plain.clears(90) and plain.clears(89.9)
    # "true for 3m" at 60 s steps: the 4 samples t-3m..t; 0.75 of them may be 3.
    assert up.expected_samples(60) == 4 and up.required_samples(60) == 3


def test_anomaly_condition_parses_severity_names() -> None:
    cond = AnomalyCondition(min_severity="HIGH", metric="cpu")
    assert cond.min_severity is Severity.HIGH
    assert "high" in cond.describe()
