"""Fleet-wide safety rails, as engine guards (``RemediationEngine(..., guards=[...])``).

A guard sees (rule, host, now) before an incident is claimed and returns a reason to hold
the action back, or None. Cooldown and exactly-once live in the engine itself; these rails
look across rules and hosts, using the event store's action history and state so every
sensor process sees the same picture.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from remediation.rules import Rule
from smartcloudops.domain import ActionStatus
from smartcloudops.events import EventStore

log = logging.getLogger(__name__)

BREAKER_KEY = "remediation/breaker"
#: Outcomes that count as "the engine acted" (a dry run counts: it would have acted).
_ACTED = (ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.DRY_RUN, ActionStatus.PENDING)


def _recent(events: EventStore, since: datetime) -> list[Any]:
    return [
        r for r in events.actions(limit=1000, since=since) if r.result in _ACTED and r.rule != "manual"
    ]


class RateLimitBreaker:
    """More than ``max_actions`` automatic actions within ``window`` opens a circuit breaker:
    no automatic action for ``open_for`` (operators' manual actions are not affected)."""

    def __init__(
        self,
        events: EventStore,
        *,
        max_actions: int = 10,
        window: timedelta = timedelta(minutes=10),
        open_for: timedelta = timedelta(minutes=30),
    ) -> None:
        self.events = events
        self.max_actions = max_actions
        self.window = window
        self.open_for = open_for

    def status(self, now: datetime) -> dict[str, Any]:
        state = self.events.get_state(BREAKER_KEY) or {}
        until = state.get("open_until")
        is_open = bool(until) and now < datetime.fromisoformat(str(until))
        return {"open": is_open, "open_until": until if is_open else None, "reason": state.get("reason")}

    def __call__(self, rule: Rule, host: str, now: datetime) -> str | None:
        status = self.status(now)
        if status["open"]:
            return f"circuit breaker open until {status['open_until']}: {status['reason']}"
        count = len(_recent(self.events, now - self.window))
        if count >= self.max_actions:
            until = now + self.open_for
            reason = f"{count} automatic actions in {self.window} (limit {self.max_actions})"
            self.events.put_state(BREAKER_KEY, {"open_until": until.isoformat(), "reason": reason})
            log.error("remediation circuit breaker opened until %s: %s", until.isoformat(), reason)
            return f"circuit breaker opened until {until.isoformat()}: {reason}"
        return None


class BlastRadius:
    """At most ``max_share`` of the fleet may be touched by automatic actions per ``window``
    (a host already touched in the window may be touched again: it adds no radius)."""

    def __init__(
        self,
        events: EventStore,
        fleet_size: Callable[[], int],
        *,
        max_share: float = 0.4,
        window: timedelta = timedelta(hours=1),
    ) -> None:
        if not 0 < max_share <= 1:
            raise ValueError("max_share must be in (0, 1]")
        self.events = events
        self.fleet_size = fleet_size
        self.max_share = max_share
        self.window = window

    def __call__(self, rule: Rule, host: str, now: datetime) -> str | None:
        touched = {r.instance for r in _recent(self.events, now - self.window)}
        if host in touched:
            return None
        size = max(1, self.fleet_size())
        allowed = max(1, int(self.max_share * size))
        if len(touched) + 1 > allowed:
            return (
                f"blast radius: {len(touched)} of {size} hosts already touched in {self.window}; "
                f"the limit is {allowed} ({self.max_share:.0%})"
            )
        return None
