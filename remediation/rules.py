"""Remediation rules: YAML in, validated models out.

A rules file is a mapping with an optional ``defaults`` block and a ``rules`` list::

    defaults: {cooldown: 10m, approval: auto}
    rules:
      - name: cpu_high
        condition: {metric: cpu, operator: ">", threshold: 90, duration: 3m,
                    min_samples_ratio: 0.75, clear_threshold: 80}
        action: restart_service
        params: {service: app}

Every problem is reported at once, each naming the rule, the field and the line of the YAML
it came from; an unknown action, parameter or field lists the valid ones. Parameters are
checked against the action's own schema (:mod:`remediation.actions`), so a rule that loads
is a rule that can run.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from remediation.actions import ActionParams, registry
from remediation.adapters.base import SERVICE_PATTERN
from smartcloudops.domain import CANONICAL_METRICS, Severity
from smartcloudops.errors import ConfigError, InputError

PACKAGED_RULES = "rules.yaml"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_HINT = "use a number with a unit, e.g. 90s, 3m, 1h, 1h30m"


def parse_duration(value: Any) -> timedelta:
    """``"3m"``, ``"90s"``, ``"1h30m"``, or a bare number of seconds -> timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}; {_DURATION_HINT}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"invalid duration {value!r}; must be >= 0 seconds")
        return timedelta(seconds=float(value))
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}; {_DURATION_HINT}")
    text = value.strip().lower()
    pos, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if text[pos : match.start()].strip():
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos == 0 or text[pos:].strip():
        raise ValueError(f"invalid duration {value!r}; {_DURATION_HINT}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    """Unknown keys fail naming the valid ones (pydantic's own message does not)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            valid = list(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    raise PydanticCustomError(
                        "unknown_field",
                        "unknown field '{name}'; valid fields: {valid}",
                        {"name": str(key), "valid": ", ".join(valid), "field": str(key)},
                    )
        return data


def _check_metric(value: str | None) -> str | None:
    if value is not None and value not in CANONICAL_METRICS:
        raise ValueError(f"unknown metric {value!r}; valid: {', '.join(CANONICAL_METRICS)}")
    return value


Operator = Literal[">", ">=", "<", "<="]


class ThresholdCondition(_Strict):
    """``metric operator threshold`` held for ``duration``."""

    type: Literal["threshold"] = "threshold"
    metric: str
    operator: Operator
    threshold: float
    duration: Duration
    #: Share of the expected samples that must be present (M of N): scrapes get lost.
    min_samples_ratio: float = Field(default=0.75, gt=0.0, le=1.0)
    #: Hysteresis: once fired, the incident only ends when the value crosses this.
    clear_threshold: float | None = None

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        _check_metric(value)
        return value

    @field_validator("operator", mode="before")
    @classmethod
    def _operator(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            # YAML reads a bare `operator: >` as an (empty) folded block scalar.
            raise ValueError('operator is empty; quote it in YAML, e.g. operator: ">"')
        return value.strip() if isinstance(value, str) else value

    @field_validator("duration")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("duration must be greater than 0")
        return value

    @model_validator(mode="after")
    def _clear_side(self) -> ThresholdCondition:
        if self.clear_threshold is None:
            return self
        upward = self.operator in (">", ">=")
        if (upward and self.clear_threshold > self.threshold) or (
            not upward and self.clear_threshold < self.threshold
        ):
            side = "at or below" if upward else "at or above"
            raise PydanticCustomError(
                "clear_threshold",
                "clear_threshold {clear} must be {side} threshold {threshold} for operator {op}",
                {
                    "clear": self.clear_threshold,
                    "side": side,
                    "threshold": self.threshold,
                    "op": self.operator,
                    "field": "clear_threshold",
                },
            )
        return self

    def breaches(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.operator == ">":
            return value > self.threshold
        if self.operator == ">=":
            return value >= self.threshold
        if self.operator == "<":
            return value < self.threshold
        return value <= self.threshold

    def clears(self, value: float) -> bool:
        """True when an ongoing incident is over (hysteresis when clear_threshold is set)."""
        if math.isnan(value) or self.breaches(value):
            return False
        if self.clear_threshold is None:
            return True
        if self.operator in (">", ">="):
            return value <= self.clear_threshold
        return value >= self.clear_threshold

    def expected_samples(self, step_seconds: float) -> int:
        # Inclusive window [t - duration, t]: "true for 3m" at 60 s steps is 4 samples.
        return int(self.duration.total_seconds() // step_seconds) + 1

    def required_samples(self, step_seconds: float) -> int:
        expected = self.expected_samples(step_seconds)
        return max(1, math.ceil(self.min_samples_ratio * expected - 1e-9))

    def describe(self) -> str:
        text = f"{self.metric} {self.operator} {self.threshold:g} for {format_duration(self.duration)}"
        if self.clear_threshold is not None:
            text += f" (clears at {self.clear_threshold:g})"
        return text


class AnomalyCondition(_Strict):
    """The model flagged the host with at least ``min_severity`` (on ``metric`` if given)."""

    type: Literal["anomaly"] = "anomaly"
    min_severity: Severity
    metric: str | None = None
    #: Only anomalies this recent count; the incident ends after this long without one.
    within: Duration = timedelta(minutes=10)

    @field_validator("min_severity", mode="before")
    @classmethod
    def _severity(cls, value: Any) -> Any:
        if isinstance(value, str):
            return Severity.parse(value)
        return value

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str | None) -> str | None:
        return _check_metric(value)

    def describe(self) -> str:
        on = f" on {self.metric}" if self.metric else ""
        return f"model anomaly >= {self.min_severity}{on}"


class HealthCondition(_Strict):
    """The service's health check failed ``failures`` times in a row (one check per pass).

    A health rule asks the adapter on every sensor pass, so keep it to hosts that need it
    (``hosts:``); the count lives in the event store, so every sensor process shares it.
    """

    type: Literal["health"] = "health"
    service: str = Field(default="app", pattern=SERVICE_PATTERN)
    #: Consecutive failing checks before the incident starts: one blip is not an outage.
    failures: int = Field(default=2, ge=1, le=100)

    def describe(self) -> str:
        return f"health check of {self.service} failing {self.failures}x in a row"


CONDITION_TYPES = ("threshold", "anomaly", "health")


def _condition_type(value: Any) -> str | None:
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind is None:
            return "anomaly" if "min_severity" in value else "threshold"
        return str(kind)
    return getattr(value, "type", None)


Condition = Annotated[
    Annotated[ThresholdCondition, Tag("threshold")]
    | Annotated[AnomalyCondition, Tag("anomaly")]
    | Annotated[HealthCondition, Tag("health")],
    Discriminator(
        _condition_type,
        custom_error_type="unknown_condition",
        custom_error_message=f"unknown condition type; valid: {', '.join(CONDITION_TYPES)}",
    ),
]


class Rule(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    enabled: bool = True
    condition: Condition
    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    cooldown: Duration = timedelta(minutes=10)
    approval: Literal["auto", "required"] = "auto"
    #: Glob patterns (``web-*``); unset means every host.
    hosts: list[str] | None = None
    #: Wait this long before re-checking the condition; unset: the engine's default.
    settle: Duration | None = None

    @field_validator("action")
    @classmethod
    def _known_action(cls, value: str) -> str:
        if value not in registry:
            raise PydanticCustomError(
                "unknown_action",
                "unknown action '{action}'; valid actions: {valid}",
                {"action": value, "valid": ", ".join(registry.names())},
            )
        return value

    @field_validator("params")
    @classmethod
    def _params_fit_action(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        action = info.data.get("action")
        if action is None:  # the action itself is invalid; that error is reported already
            return value
        try:
            registry.validate_params(action, value)
        except InputError as exc:
            raise PydanticCustomError(
                "invalid_params",
                "{message}",
                {"message": str(exc), "field": _first_param_field(str(exc)) or ""},
            ) from None
        return value

    @property
    def typed_params(self) -> ActionParams:
        """Parameters with the action's defaults filled in."""
        return registry.validate_params(self.action, self.params)

    def matches_host(self, host: str) -> bool:
        return self.hosts is None or any(fnmatch.fnmatchcase(host, p) for p in self.hosts)

    def describe(self) -> str:
        return f"{self.name}: {self.condition.describe()} -> {self.action}"


def _first_param_field(message: str) -> str | None:
    match = re.search(r"parameter '([^']+)'", message)
    return match.group(1) if match else None


class RuleSet(_Strict):
    version: int = 1
    defaults: dict[str, Any] = Field(default_factory=dict)
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique_names(self) -> RuleSet:
        seen: set[str] = set()
        for index, rule in enumerate(self.rules):
            if rule.name in seen:
                raise PydanticCustomError(
                    "duplicate_rule",
                    "duplicate rule name '{name}'",
                    {"name": rule.name, "field": f"rules.{index}.name"},
                )
            seen.add(rule.name)
        return self

    def __iter__(self) -> Iterator[Rule]:  # type: ignore[override]
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    @property
    def active(self) -> list[Rule]:
        return [r for r in self.rules if r.enabled]

    def get(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def lookback(self, step_seconds: float = 60.0) -> timedelta:
        """How much recent data :meth:`RemediationEngine.evaluate` needs to see."""
        longest = timedelta(minutes=5)
        for rule in self.active:
            cond = rule.condition
            if isinstance(cond, ThresholdCondition):
                longest = max(longest, cond.duration)
            elif isinstance(cond, AnomalyCondition):
                longest = max(longest, cond.within)
        # Twice the longest window, so the start of a breach episode is visible too.
        return 2 * longest + timedelta(seconds=2 * step_seconds)

    def permissions(self) -> list[str]:
        """Every permission the enabled rules' actions declare (for IAM policies)."""
        return sorted({p for r in self.active for p in registry.get(r.action).permissions})


# -- loading --------------------------------------------------------------------------------

_ALLOWED_DEFAULTS = ("cooldown", "approval", "hosts", "settle", "enabled")


@dataclass(frozen=True)
class RuleProblem:
    rule: str | None
    field: str
    line: int | None
    message: str

    def __str__(self) -> str:
        parts = []
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.rule is not None:
            parts.append(f"rule {self.rule!r}")
        if self.field:
            parts.append(f"field {self.field!r}")
        where = ", ".join(parts)
        return f"{where}: {self.message}" if where else self.message


class RulesError(ConfigError):
    """A rules file is invalid; ``problems`` holds every problem found."""

    def __init__(self, source: str, problems: Sequence[RuleProblem]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid rules in {source}:\n{lines}")


def packaged_rules_path() -> Path:
    return Path(str(resources.files("remediation").joinpath(PACKAGED_RULES)))


def load_rules(path: Path | str | None = None) -> RuleSet:
    """Rules from ``path`` (unset: the packaged ``remediation/rules.yaml``)."""
    if path is None:
        resource = resources.files("remediation").joinpath(PACKAGED_RULES)
        return parse_rules(resource.read_text(encoding="utf-8"), source=f"remediation/{PACKAGED_RULES}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(str(path), [RuleProblem(None, "", None, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(str(path), [RuleProblem(None, "", None, f"cannot read: {exc}")]) from exc
    return parse_rules(text, source=str(path))


def parse_rules(text: str, *, source: str = "<rules>") -> RuleSet:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "malformed YAML"
        raise RulesError(source, [RuleProblem(None, "", line, f"malformed YAML: {what}")]) from None
    except yaml.YAMLError as exc:
        raise RulesError(source, [RuleProblem(None, "", None, f"malformed YAML: {exc}")]) from None
    if data is None:
        raise RulesError(source, [RuleProblem(None, "", None, "the file is empty; expected a 'rules:' list")])
    if not isinstance(data, dict):
        raise RulesError(
            source,
            [RuleProblem(None, "", 1, "the top level must be a mapping with a 'rules:' list")],
        )
    lines = _line_map(node) if node is not None else {}
    problems: list[RuleProblem] = []
    data = _apply_defaults(data, lines, problems)
    try:
        ruleset = RuleSet.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problem(err, data, lines) for err in exc.errors())
    if problems:
        raise RulesError(source, problems)
    return ruleset


def _apply_defaults(
    data: dict[str, Any], lines: Mapping[tuple[Any, ...], int], problems: list[RuleProblem]
) -> dict[str, Any]:
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append(RuleProblem(None, "defaults", lines.get(("defaults",)), "must be a mapping"))
        return data
    for key in defaults:
        if key not in _ALLOWED_DEFAULTS:
            problems.append(
                RuleProblem(
                    None,
                    f"defaults.{key}",
                    lines.get(("defaults", key)),
                    f"unknown default {key!r}; valid: {', '.join(_ALLOWED_DEFAULTS)}",
                )
            )
    rules = data.get("rules")
    if not isinstance(rules, list):
        return data
    merged = []
    for rule in rules:
        if isinstance(rule, dict):
            rule = {**{k: v for k, v in defaults.items() if k in _ALLOWED_DEFAULTS}, **rule}
        merged.append(rule)
    return {**data, "rules": merged}


def _line_map(node: yaml.Node) -> dict[tuple[Any, ...], int]:
    """Path of keys/indices -> 1-based line where it appears in the YAML."""
    out: dict[tuple[Any, ...], int] = {}

    def walk(n: yaml.Node, path: tuple[Any, ...]) -> None:
        out.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for key_node, value_node in n.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
                # The key's line, not the value's: a nested block starts on the next line.
                out[(*path, key)] = key_node.start_mark.line + 1
                walk(value_node, (*path, key))
        elif isinstance(n, yaml.SequenceNode):
            for index, item in enumerate(n.value):
                walk(item, (*path, index))

    walk(node, ())
    return out


def _problem(
    err: Mapping[str, Any], data: Mapping[str, Any], lines: Mapping[tuple[Any, ...], int]
) -> RuleProblem:
    loc: list[Any] = list(err.get("loc", ()))
    # Drop the discriminated union's tag from paths like rules.0.condition.threshold.duration
    loc = [
        p
        for i, p in enumerate(loc)
        if not (i > 0 and loc[i - 1] == "condition" and p in CONDITION_TYPES)
    ]
    ctx = err.get("ctx") or {}
    extra = ctx.get("field")
    if isinstance(extra, str) and extra:
        extra_parts: list[Any] = [int(p) if p.isdigit() else p for p in extra.split(".")]
        if extra_parts[0] == "rules":
            loc = extra_parts
        elif not loc or loc[-1] != extra_parts[-1]:
            loc = [*loc, *extra_parts]
    rule_name: str | None = None
    rest = loc
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rule_name = _rule_name(data, loc[1])
        rest = loc[2:]
    line = None
    for cut in range(len(loc), -1, -1):
        if tuple(loc[:cut]) in lines:
            line = lines[tuple(loc[:cut])]
            break
    message = str(err.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    if err.get("type") == "missing":
        message = "required field is missing"
    if err.get("type") == "unknown_condition":
        kind = _condition_type(err.get("input"))
        message = f"unknown condition type {kind!r}; valid: {', '.join(CONDITION_TYPES)}"
    return RuleProblem(rule_name, ".".join(str(p) for p in rest), line, message)


def _rule_name(data: Mapping[str, Any], index: int) -> str:
    rules = data.get("rules")
    if isinstance(rules, list) and 0 <= index < len(rules):
        rule = rules[index]
        if isinstance(rule, dict) and isinstance(rule.get("name"), str):
            return str(rule["name"])
    return f"#{index + 1}"
