"""Alarm handling: a post-step turning per-row flags into alarms.

Two rules, applied in this order:

1. **M-of-N**: a row is an alarm candidate when at least ``m`` of the last ``n`` raw flags
   (this row included) are set. ``m == n`` is a debounce; ``m = n = 1`` passes flags through.
   With ``bypass`` set, a row whose calibrated score reaches it is a candidate on its own:
   debouncing exists to ignore marginal blips, not a value far beyond the alarm line.
2. **Cooldown** (suppression after an alarm): after an alarm at ``t``, candidates before
   ``t + cooldown`` are dropped. One incident then raises one alarm instead of one per row,
   which is what an on-call engineer wants paged, and what event-level scoring rewards.

The same code serves batch scoring (:meth:`AlarmPolicy.apply`) and live scoring one row at a
time (:meth:`AlarmPolicy.apply_array` with an :class:`AlarmState` carried between calls);
both give identical alarms for the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from smartcloudops.errors import InputError


@dataclass(frozen=True)
class AlarmState:
    """What live scoring must remember between calls for one host."""

    recent: tuple[bool, ...] = ()  # the last n-1 raw flags, oldest first
    last_alarm_ns: int | None = None


class AlarmPolicy(BaseEstimator):  # type: ignore[misc]
    def __init__(self, m: int = 1, n: int = 1, cooldown: str = "0s", bypass: float | None = None) -> None:
        self.m = m
        self.n = n
        self.cooldown = cooldown
        self.bypass = bypass

    def _check(self) -> int:
        if not (isinstance(self.m, int) and isinstance(self.n, int) and 1 <= self.m <= self.n):
            raise InputError(f"alarm policy needs 1 <= m <= n, got m={self.m}, n={self.n}")
        try:
            cooldown = pd.Timedelta(self.cooldown)
        except ValueError as exc:
            raise InputError(f"bad alarm cooldown {self.cooldown!r}") from exc
        if cooldown < pd.Timedelta(0):
            raise InputError(f"alarm cooldown must be >= 0, got {self.cooldown!r}")
        return int(cooldown.value)

    def apply_array(
        self,
        timestamps_ns: np.ndarray,
        flags: np.ndarray,
        state: AlarmState | None = None,
        scores: np.ndarray | None = None,
    ) -> tuple[np.ndarray, AlarmState]:
        """Alarms for time-sorted rows of one host, continuing from ``state``.

        ``scores`` (calibrated) enable the ``bypass`` rule: a row scoring at least
        ``bypass`` is a candidate on its own, without waiting for M-of-N.
        """
        cooldown_ns = self._check()
        state = state or AlarmState()
        raw = np.asarray(flags, dtype=bool)
        ts = np.asarray(timestamps_ns, dtype=np.int64)
        prefix = np.asarray(state.recent[-(self.n - 1) :] if self.n > 1 else (), dtype=bool)
        full = np.concatenate([prefix, raw]).astype(np.int64)
        csum = np.concatenate([[0], np.cumsum(full)])
        end = np.arange(len(prefix) + 1, len(full) + 1)
        counts = csum[end] - csum[np.maximum(end - self.n, 0)]
        candidates = counts >= self.m
        if self.bypass is not None and scores is not None:
            candidates |= np.asarray(scores, dtype=float) >= self.bypass

        alarms = np.zeros(len(raw), dtype=bool)
        last = state.last_alarm_ns
        for i in np.flatnonzero(candidates):
            if last is None or ts[i] >= last + cooldown_ns or cooldown_ns == 0:
                alarms[i] = True
                last = int(ts[i])
        keep = max(self.n - 1, 0)
        recent = tuple(bool(x) for x in full[len(full) - keep :]) if keep else ()
        return alarms, AlarmState(recent=recent, last_alarm_ns=last)

    def apply(self, flags: pd.Series) -> pd.Series:
        """Alarms for a bool series indexed by timestamps (sorted here if needed)."""
        if not isinstance(flags.index, pd.DatetimeIndex):
            raise InputError("alarm handling needs flags indexed by timestamps")
        raw = flags.fillna(False).astype(bool).to_numpy()
        idx = flags.index
        idx_utc = (idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")).as_unit("ns")
        order = np.argsort(idx_utc.asi8, kind="stable")
        sorted_alarms, _ = self.apply_array(idx_utc.asi8[order], raw[order])
        alarms = np.empty(len(raw), dtype=bool)
        alarms[order] = sorted_alarms
        return pd.Series(alarms, index=flags.index, name=flags.name)
