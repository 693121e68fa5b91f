"""Airflow glue for the anomaly sensor: a deferrable sensor and the trigger it defers to.

:class:`CurrentStateTrigger` runs in Airflow's triggerer (an asyncio loop shared by many
triggers). Every ``poll_interval`` seconds it calls a *check* — by default
:func:`remediation.sensor.pending_work` — in a worker thread, so a slow metric source never
blocks the loop. The check tests the **current** state against what the last sensor pass
processed, never an edge between two polls: whatever happened while no DAG run was
deferred is still there to be found at the first poll of the next run (NOTES.md: the
downstream task then runs 1.7-2.7 s after the condition became true).

The trigger serialises to its class path and plain keyword arguments (strings and numbers):
the check travels as a dotted path, resolved in the triggerer, so any process can rebuild
it. With nothing to do for ``idle_after_seconds`` it fires an ``idle`` event and the sensor
skips, which ends the continuous DAG's run cleanly and lets the next one start.

Only Airflow and the standard library are imported here; the check is imported when the
trigger runs.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException, AirflowSkipException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from smartcloudops.errors import SmartCloudOpsError

DEFAULT_CHECK = "remediation.sensor.pending_work"


def resolve(path: str) -> Callable[..., Any]:
    """``"package.module.function"`` -> the function (clear error for a bad path)."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(f"check {path!r} is not a dotted path like 'package.module.function'")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"check {path!r} cannot be imported: {exc}") from exc
    if not callable(target):
        raise ValueError(f"check {path!r} is not callable")
    return target  # type: ignore[no-any-return]


class CurrentStateTrigger(BaseTrigger):
    """Fires ``{"status": "work", "work": ...}`` as soon as the check reports work.

    Other events: ``{"status": "idle"}`` after ``idle_after_seconds`` without work (None:
    never), ``{"status": "error"}`` when the check is broken (cannot be imported, raises a
    programming error). Transient failures of the check (the source or the store is down)
    are logged and polled again.
    """

    def __init__(
        self,
        check: str = DEFAULT_CHECK,
        poll_interval: float = 2.0,
        idle_after_seconds: float | None = 600.0,
        check_timeout: float = 30.0,
        check_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        if check_timeout <= 0:
            raise ValueError("check_timeout must be positive")
        self.check = check
        self.poll_interval = float(poll_interval)
        self.idle_after_seconds = None if idle_after_seconds is None else float(idle_after_seconds)
        self.check_timeout = float(check_timeout)
        self.check_kwargs = dict(check_kwargs or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "check": self.check,
                "poll_interval": self.poll_interval,
                "idle_after_seconds": self.idle_after_seconds,
                "check_timeout": self.check_timeout,
                "check_kwargs": dict(self.check_kwargs),
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            check = resolve(self.check)
        except ValueError as exc:
            yield TriggerEvent({"status": "error", "error": str(exc), "polls": 0})
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        polls, failures, last_error = 0, 0, None
        while True:
            polls += 1
            work = None
            try:
                work = await asyncio.wait_for(
                    asyncio.to_thread(check, **self.check_kwargs), timeout=self.check_timeout
                )
            except TimeoutError:
                failures, last_error = failures + 1, f"check took longer than {self.check_timeout:g}s"
                self.log.warning("anomaly sensor check timed out (poll %d)", polls)
            except (SmartCloudOpsError, OSError) as exc:
                # The source or the store is briefly unavailable: poll again, do not fail.
                failures, last_error = failures + 1, str(exc)
                self.log.warning("anomaly sensor check failed (poll %d): %s", polls, exc)
            except Exception as exc:  # noqa: BLE001 - a bug in the check must end the wait visibly
                error = f"{type(exc).__name__}: {exc}"
                yield TriggerEvent({"status": "error", "error": error, "polls": polls})
                return
            elapsed = loop.time() - started
            if work:
                yield TriggerEvent(
                    {"status": "work", "work": work, "polls": polls, "waited_seconds": round(elapsed, 3)}
                )
                return
            if self.idle_after_seconds is not None and elapsed >= self.idle_after_seconds:
                yield TriggerEvent(
                    {"status": "idle", "polls": polls, "failures": failures, "last_error": last_error,
                     "waited_seconds": round(elapsed, 3)}
                )
                return
            await asyncio.sleep(self.poll_interval)


class CurrentStateSensor(BaseSensorOperator):
    """Deferrable sensor: waits in the triggerer (no worker slot) until there is work.

    Its XCom is the trigger's description of the work found (hosts with fresh samples, newly
    crossed thresholds). No work within ``idle_after`` -> skipped (not failed).
    """

    template_fields = ()

    def __init__(
        self,
        *,
        check: str = DEFAULT_CHECK,
        poll_interval: float = 2.0,
        idle_after: timedelta = timedelta(minutes=10),
        check_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # Airflow's own sensor timeout is a safety net above the trigger's idle timeout.
        kwargs.setdefault("timeout", idle_after + timedelta(minutes=5))
        super().__init__(poke_interval=poll_interval, **kwargs)
        self.check = check
        self.poll_interval = float(poll_interval)
        self.idle_after = idle_after
        self.check_kwargs = dict(check_kwargs or {})

    def _trigger(self) -> CurrentStateTrigger:
        return CurrentStateTrigger(
            check=self.check,
            poll_interval=self.poll_interval,
            idle_after_seconds=self.idle_after.total_seconds(),
            check_kwargs=self.check_kwargs,
        )

    def execute(self, context: Any) -> Any:
        self.defer(
            trigger=self._trigger(),
            method_name="execute_complete",
            timeout=self.idle_after + timedelta(minutes=5),
        )

    def execute_complete(self, context: Any, event: Mapping[str, Any] | None = None) -> Any:
        status = (event or {}).get("status")
        if status == "work":
            return dict(event or {})
        if status == "idle":
            raise AirflowSkipException(
                f"no new samples or threshold crossings for {self.idle_after}; "
                f"last check error: {(event or {}).get('last_error')}"
            )
        raise AirflowException(f"anomaly sensor trigger failed: {(event or {}).get('error', event)}")

    def poke(self, context: Any) -> bool:
        """Non-deferred use (a plain poke loop): the same check, synchronously."""
        return bool(resolve(self.check)(**self.check_kwargs))
