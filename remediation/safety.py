"""Fleet-wide safety rails, as engine guards (``RemediationEngine(..., guards=[...])``).

A guard sees (rule, host, now) before an incident is claimed and returns a reason to hold
the action back, or None. Cooldown and exactly-once live in the engine itself; these rails
look across rules and hosts, using the event store's action history and state so every
sensor process sees the same picture. :func:`guards_from_settings` builds them from the
``SMARTCLOUDOPS_REMEDIATION_*`` settings (safe defaults: breaker and blast radius on).

Maintenance windows (``SMARTCLOUDOPS_REMEDIATION_MAINTENANCE_WINDOWS``, ``;``-separated, UTC):
``2026-11-22T02:00Z/2026-11-22T04:00Z`` (one-off, ISO 8601), ``daily 02:00-03:00``,
``sat,sun 00:00-06:00``, ``mon-fri 22:00-02:00`` (an end before the start runs past
midnight); append ``@web-*,db-1`` to limit a window to hosts.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from remediation.rules import Rule
from smartcloudops.domain import ActionStatus
from smartcloudops.errors import ConfigError
from smartcloudops.events import EventStore

if TYPE_CHECKING:
    from smartcloudops.settings import Settings

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

    def status(self, now: datetime) -> dict[str, Any]:
        touched = sorted({r.instance for r in _recent(self.events, now - self.window)})
        size = max(1, self.fleet_size())
        return {"touched": touched, "limit": max(1, int(self.max_share * size)), "fleet": size}

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


# -- maintenance windows ------------------------------------------------------------------------

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW_HINT = (
    "expected '<start>/<end>' (ISO 8601) or '<days> HH:MM-HH:MM' with days 'daily', 'mon', "
    "'mon-fri' or 'sat,sun', optionally followed by '@host-glob,...'"
)


@dataclass(frozen=True)
class MaintenanceWindow:
    """A one-off interval (``start``/``end``) or a weekly recurring one (``days`` + minutes of
    the day, UTC; an end before the start runs past midnight into the next day)."""

    text: str
    hosts: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    days: frozenset[int] = frozenset()
    start_minute: int = 0
    end_minute: int = 0

    def applies_to(self, host: str) -> bool:
        return not self.hosts or any(fnmatch.fnmatchcase(host, p) for p in self.hosts)

    def contains(self, now: datetime) -> bool:
        now = now.astimezone(UTC)
        if self.start is not None and self.end is not None:
            return self.start <= now < self.end
        minute = now.hour * 60 + now.minute
        if self.start_minute <= self.end_minute:
            return now.weekday() in self.days and self.start_minute <= minute < self.end_minute
        # Past midnight: the evening part belongs to today, the morning part to yesterday.
        yesterday = (now.weekday() - 1) % 7
        return (now.weekday() in self.days and minute >= self.start_minute) or (
            yesterday in self.days and minute < self.end_minute
        )


def _parse_days(text: str) -> frozenset[int]:
    text = text.strip().lower()
    if text in ("daily", "*", "every"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if first[:3] not in _DAYS or (last and last[:3] not in _DAYS):
            raise ValueError(f"unknown day in {part.strip()!r}; valid: daily, {', '.join(_DAYS)}")
        a = _DAYS.index(first[:3])
        b = _DAYS.index(last[:3]) if last else a
        index = a
        days.add(index)
        while index != b:  # 'fri-mon' wraps around the week
            index = (index + 1) % 7
            days.add(index)
    return frozenset(days)


def _parse_minute(text: str) -> int:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not match or int(match.group(1)) > 24 or int(match.group(2)) > 59:
        raise ValueError(f"invalid time of day {text.strip()!r}; use HH:MM (UTC)")
    minute = int(match.group(1)) * 60 + int(match.group(2))
    if minute > 24 * 60:
        raise ValueError(f"invalid time of day {text.strip()!r}; use HH:MM (UTC)")
    return minute


def _parse_instant(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_maintenance_windows(text: str | None) -> list[MaintenanceWindow]:
    """``SMARTCLOUDOPS_REMEDIATION_MAINTENANCE_WINDOWS`` -> windows.

    Raises:
        ConfigError: a window cannot be read; the message names the variable and the window.
    """
    windows = []
    for raw in (text or "").split(";"):
        item = raw.strip()
        if not item:
            continue
        spec, at_sign, host_part = item.partition("@")
        hosts = tuple(h.strip() for h in host_part.split(",") if h.strip())
        if at_sign and not hosts:
            raise ConfigError(f"{_ENV_WINDOWS}: window {item!r} has an empty host list after '@'")
        spec = spec.strip()
        try:
            if "/" in spec:
                first, _, last = spec.partition("/")
                start, end = _parse_instant(first), _parse_instant(last)
                if end <= start:
                    raise ValueError("the end must be after the start")
                windows.append(MaintenanceWindow(item, hosts, start=start, end=end))
                continue
            days_text, _, times = spec.rpartition(" ")
            first, sep, last = times.partition("-")
            if not days_text or not sep:
                raise ValueError(_WINDOW_HINT)
            start_minute, end_minute = _parse_minute(first), _parse_minute(last)
            if start_minute == end_minute:
                raise ValueError("the window is empty (start equals end)")
            windows.append(
                MaintenanceWindow(
                    item, hosts, days=_parse_days(days_text),
                    start_minute=start_minute, end_minute=end_minute,
                )
            )
        except ValueError as exc:
            raise ConfigError(f"{_ENV_WINDOWS}: cannot read window {item!r}: {exc}") from exc
    return windows


_ENV_WINDOWS = "SMARTCLOUDOPS_REMEDIATION_MAINTENANCE_WINDOWS"


class MaintenanceWindows:
    """Suppresses automatic actions on a host while one of its windows is open. A suppressed
    incident is not dropped: if it still holds after the window, the engine acts then."""

    def __init__(self, windows: Sequence[MaintenanceWindow]) -> None:
        self.windows = tuple(windows)

    def active(self, now: datetime, host: str | None = None) -> list[MaintenanceWindow]:
        return [
            w for w in self.windows if w.contains(now) and (host is None or w.applies_to(host))
        ]

    def status(self, now: datetime) -> dict[str, Any]:
        return {
            "windows": [w.text for w in self.windows],
            "active": [w.text for w in self.active(now)],
        }

    def __call__(self, rule: Rule, host: str, now: datetime) -> str | None:
        hits = self.active(now, host)
        return f"maintenance window {hits[0].text!r} is open" if hits else None


def guards_from_settings(
    settings: Settings, events: EventStore, fleet_size: Callable[[], int]
) -> list[Callable[[Rule, str, datetime], str | None]]:
    """The rails ``RemediationEngine.from_settings`` wires in (cheapest check first)."""
    guards: list[Callable[[Rule, str, datetime], str | None]] = []
    windows = parse_maintenance_windows(settings.remediation_maintenance_windows)
    if windows:
        guards.append(MaintenanceWindows(windows))
    if settings.remediation_rate_limit_actions > 0:
        guards.append(
            RateLimitBreaker(
                events,
                max_actions=settings.remediation_rate_limit_actions,
                window=timedelta(minutes=settings.remediation_rate_limit_window_minutes),
                open_for=timedelta(minutes=settings.remediation_breaker_open_minutes),
            )
        )
    if settings.remediation_blast_radius_share < 1.0:
        guards.append(
            BlastRadius(
                events,
                fleet_size,
                max_share=settings.remediation_blast_radius_share,
                window=timedelta(minutes=settings.remediation_blast_radius_window_minutes),
            )
        )
    return guards
