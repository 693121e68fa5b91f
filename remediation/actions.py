"""Remediation actions as registered classes (in the manner of Cloud Custodian's actions).

Each action declares a parameter schema (a pydantic model: rules are validated against it
when they load, CLIs when they parse), the permissions it needs (so an IAM policy can be
generated from the rules in use), an idempotency check, the change itself and a check that
the change took effect. Actions never look at dry-run: the executor decides that in one place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from remediation.adapters.base import SERVICE_PATTERN, RemediationAdapter
from smartcloudops.errors import InputError


@dataclass(frozen=True)
class Target:
    """What an action acts on. ``episode_start`` lets idempotency checks ask "already done
    for this incident?" rather than "ever done?"."""

    host: str
    episode_start: datetime | None = None


@dataclass
class ActionOutcome:
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


class ActionParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Action(ABC):
    name: ClassVar[str]
    schema: ClassVar[type[ActionParams]] = ActionParams
    permissions: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    #: Read-only actions change nothing; the CLI runs them without ``--execute``.
    read_only: ClassVar[bool] = False

    def __init__(self, adapter: RemediationAdapter) -> None:
        self.adapter = adapter

    def is_in_goal_state(self, target: Target, params: Any) -> bool:
        """True when acting would change nothing (the executor records ``skipped``)."""
        return False

    def goal(self, params: Any) -> str:
        return f"{self.name} not needed"

    @abstractmethod
    def execute(self, target: Target, params: Any) -> ActionOutcome: ...

    def verify(self, target: Target, params: Any, outcome: ActionOutcome) -> bool:
        """Did the change take effect? (Whether it *fixed* the problem is the engine's
        re-check of the rule's condition.)"""
        return True


A = TypeVar("A", bound=type[Action])


class ActionRegistry:
    def __init__(self) -> None:
        self._actions: dict[str, type[Action]] = {}

    def register(self, cls: A) -> A:
        name = getattr(cls, "name", None)
        if not name:
            raise TypeError(f"{cls.__name__} has no action name")
        if name in self._actions and self._actions[name] is not cls:
            raise TypeError(f"action {name!r} is already registered")
        self._actions[name] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self._actions)

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def get(self, name: str) -> type[Action]:
        try:
            return self._actions[name]
        except KeyError:
            raise InputError(
                f"unknown action {name!r}; valid actions: {', '.join(self.names())}"
            ) from None

    def validate_params(self, name: str, params: Mapping[str, Any] | None) -> ActionParams:
        """Typed parameters for action ``name``; InputError names each bad parameter and,
        for unknown ones, lists the valid ones."""
        cls = self.get(name)
        try:
            return cls.schema.model_validate(dict(params or {}))
        except ValidationError as exc:
            raise InputError("; ".join(param_problems(name, cls.schema, exc))) from None


def param_problems(action: str, schema: type[BaseModel], exc: ValidationError) -> list[str]:
    valid = ", ".join(schema.model_fields) or "(none)"
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "params"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown parameter {where!r} for action {action}; valid: {valid}")
        else:
            problems.append(f"parameter {where!r} of action {action}: {err['msg']}")
    return problems


registry = ActionRegistry()
register = registry.register
get_action = registry.get
validate_params = registry.validate_params


# -- the actions ---------------------------------------------------------------------------


class ServiceParams(ActionParams):
    service: str = Field(default="app", pattern=SERVICE_PATTERN)


class ScaleUpParams(ActionParams):
    replicas: int = Field(default=1, ge=1, le=10)
    # Upper bound on the group's capacity: the brake on a scaling loop or a runaway bill.
    max_capacity: int = Field(default=10, ge=1, le=100)


class ScaleDownParams(ActionParams):
    replicas: int = Field(default=1, ge=1, le=10)
    min_capacity: int = Field(default=1, ge=1, le=100)


@register
class RestartService(Action):
    name = "restart_service"
    schema = ServiceParams
    permissions = ("ssm:SendCommand", "ssm:GetCommandInvocation")
    description = "Restart a service on the host (ends a CPU hog or a memory leak)."

    def is_in_goal_state(self, target: Target, params: ServiceParams) -> bool:
        if target.episode_start is None:
            return False
        last = self.adapter.last_restart(target.host, params.service)
        return last is not None and last >= target.episode_start

    def goal(self, params: ServiceParams) -> str:
        return f"{params.service} was already restarted during this incident"

    def execute(self, target: Target, params: ServiceParams) -> ActionOutcome:
        self.adapter.restart_service(target.host, params.service)
        return ActionOutcome(f"restarted {params.service} on {target.host}")

    def verify(self, target: Target, params: ServiceParams, outcome: ActionOutcome) -> bool:
        return self.adapter.health(target.host, params.service).healthy


class _Rescale(Action):
    """Scale the host's group by ``replicas`` within a bound; up and down differ only in sign."""

    #: +1 adds capacity, -1 removes it.
    direction: ClassVar[int]
    permissions = ("autoscaling:DescribeAutoScalingGroups", "autoscaling:SetDesiredCapacity")

    def _bound(self, params: Any) -> int:
        return int(params.max_capacity if self.direction > 0 else params.min_capacity)

    def is_in_goal_state(self, target: Target, params: Any) -> bool:
        capacity = self.adapter.capacity(target.host)
        bound = self._bound(params)
        return capacity >= bound if self.direction > 0 else capacity <= bound

    def goal(self, params: Any) -> str:
        side = "upper" if self.direction > 0 else "lower"
        return f"capacity already at the {side} bound {self._bound(params)}"

    def execute(self, target: Target, params: Any) -> ActionOutcome:
        before = self.adapter.capacity(target.host)
        if self.direction > 0:
            after = self.adapter.scale_up(target.host, params.replicas, max_capacity=params.max_capacity)
        else:
            after = self.adapter.scale_down(target.host, params.replicas, min_capacity=params.min_capacity)
        return ActionOutcome(
            f"scaled {target.host}'s group from {before} to {after}",
            {"capacity_before": before, "capacity_after": after},
        )

    def verify(self, target: Target, params: Any, outcome: ActionOutcome) -> bool:
        # Moved in the asked direction: the adapter may clamp at the bound, never overshoot.
        before = int(outcome.data.get("capacity_before", 0))
        return (self.adapter.capacity(target.host) - before) * self.direction > 0


@register
class ScaleUp(_Rescale):
    name = "scale_up"
    schema = ScaleUpParams
    direction = 1
    description = "Add capacity to the host's group, never above max_capacity."


@register
class ScaleDown(_Rescale):
    name = "scale_down"
    schema = ScaleDownParams
    direction = -1
    description = "Remove capacity from the host's group, never below min_capacity."


@register
class HealthCheck(Action):
    name = "health_check"
    schema = ServiceParams
    permissions = ("ssm:SendCommand", "ssm:GetCommandInvocation", "ec2:DescribeInstanceStatus")
    description = "Check the host's health; an unhealthy result fails verification (escalates)."
    read_only = True

    def execute(self, target: Target, params: ServiceParams) -> ActionOutcome:
        report = self.adapter.health(target.host, params.service)
        return ActionOutcome(
            report.summary(),
            {
                "healthy": report.healthy,
                "checks": report.checks,
                "active_incidents": [str(i) for i in report.active_incidents],
            },
        )

    def verify(self, target: Target, params: ServiceParams, outcome: ActionOutcome) -> bool:
        return bool(outcome.data.get("healthy", False))
