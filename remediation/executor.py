"""The one place an action runs: dry-run, idempotency, timing, failure capture, recording.

The rule engine, the approval path and the command-line scripts all go through
:meth:`ActionExecutor.run`, so every action -- automatic, approved or manual -- is decided the
same way and leaves the same two traces: an :class:`ActionRecord` in the event store and a
hash-chained record in the audit log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from remediation.actions import Action, ActionOutcome, ActionParams, ActionRegistry, Target, registry
from remediation.adapters.base import RemediationAdapter
from smartcloudops.audit import AuditLog
from smartcloudops.domain import ActionRecord, ActionStatus, new_id, utcnow
from smartcloudops.errors import ActionError, StoreError
from smartcloudops.events import EventStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Execution:
    """An action's record plus what only the engine needs (the outcome for verification)."""

    record: ActionRecord
    params: ActionParams
    outcome: ActionOutcome | None = None

    @property
    def ok(self) -> bool:
        return self.record.result in (
            ActionStatus.SUCCEEDED,
            ActionStatus.SKIPPED,
            ActionStatus.DRY_RUN,
        )


def audit_entry(record: ActionRecord, **extra: Any) -> dict[str, Any]:
    """The audit log's view of an action record (ARCHITECTURE.md's field list + extras)."""
    entry = record.to_dict()
    entry.update(extra)
    return entry


class ActionExecutor:
    def __init__(
        self,
        adapter: RemediationAdapter,
        events: EventStore,
        audit: AuditLog,
        *,
        dry_run: bool,
        actions: ActionRegistry = registry,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.adapter = adapter
        self.events = events
        self.audit = audit
        self.dry_run = dry_run
        self.actions = actions
        self.clock = clock

    def action(self, name: str) -> Action:
        return self.actions.get(name)(self.adapter)

    def run(
        self,
        action: str,
        host: str,
        params: Mapping[str, Any] | BaseModel | None = None,
        *,
        rule: str = "manual",
        anomaly_id: str | None = None,
        approved_by: str | None = None,
        episode_start: datetime | None = None,
        action_id: str | None = None,
        dry_run: bool | None = None,
        extra_audit: Mapping[str, Any] | None = None,
    ) -> Execution:
        """Run ``action`` on ``host`` (or pretend to, in dry-run) and record it.

        Raises ``InputError`` for an unknown action or bad parameters (nothing is recorded:
        nothing was attempted). Adapter failures never raise: they become a ``failed`` record.
        """
        cls = self.actions.get(action)
        typed = (
            params
            if isinstance(params, cls.schema)
            else self.actions.validate_params(
                action, params.model_dump() if isinstance(params, BaseModel) else params
            )
        )
        dry = self.dry_run if dry_run is None else dry_run
        base = ActionRecord(
            action=action,
            instance=host,
            result=ActionStatus.DRY_RUN,
            rule=rule,
            dry_run=dry,
            timestamp=self.clock(),
            action_id=action_id or new_id("act"),
            anomaly_id=anomaly_id,
            approved_by=approved_by,
            params=typed.model_dump(),
        )
        outcome: ActionOutcome | None = None
        if dry:
            # The only dry-run branch in the project: nothing below touches the adapter.
            record = replace(base, detail=f"dry run: would run {_call(action, typed)} on {host}")
        else:
            instance = cls(self.adapter)
            target = Target(host=host, episode_start=episode_start)
            started = time.perf_counter()
            try:
                if instance.is_in_goal_state(target, typed):
                    status, detail = ActionStatus.SKIPPED, f"already in goal state: {instance.goal(typed)}"
                else:
                    outcome = instance.execute(target, typed)
                    status, detail = ActionStatus.SUCCEEDED, outcome.detail
            except ActionError as exc:
                status, detail = ActionStatus.FAILED, str(exc)
            except Exception as exc:  # an adapter bug must still be audited
                log.exception("action %s on %s raised unexpectedly", action, host)
                status, detail = ActionStatus.FAILED, f"unexpected {type(exc).__name__}: {exc}"
            duration_ms = round((time.perf_counter() - started) * 1000.0, 3)
            record = replace(base, result=status, detail=detail, duration_ms=duration_ms)
        self.record(record, **dict(extra_audit or {}))
        level = logging.ERROR if record.result is ActionStatus.FAILED else logging.INFO
        log.log(
            level,
            "remediation %s %s on %s: %s",
            record.action,
            record.result.value,
            record.instance,
            record.detail,
            extra={"action_id": record.action_id, "rule": record.rule, "dry_run": record.dry_run},
        )
        return Execution(record=record, params=typed, outcome=outcome)

    def record(self, record: ActionRecord, **extra_audit: Any) -> None:
        """Event store first (what ChatOps reads), then the audit log (the proof).

        Both are attempted even if the first fails, so one broken store never hides an
        action that already happened from the other; the first error is raised afterwards.
        """
        errors: list[Exception] = []
        try:
            self.events.record_action(record)
        except StoreError as exc:
            log.error("could not record action %s in the event store: %s", record.action_id, exc)
            errors.append(exc)
        try:
            self.audit.append(audit_entry(record, event="action", **extra_audit))
        except (StoreError, OSError) as exc:
            log.error("could not append action %s to the audit log: %s", record.action_id, exc)
            errors.append(exc)
        if errors:
            first = errors[0]
            raise StoreError(f"action {record.action_id} was not fully recorded: {first}") from first


def _call(action: str, params: BaseModel) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in params.model_dump().items())
    return f"{action}({args})"
