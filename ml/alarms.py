"""Alarm handling: a post-step turning calibrated scores and per-row flags into alarms.

Per-row flags come in as "calibrated score at the alarm line". Then:

1. **Spike level** (``spike_level``, default the line itself): a flag stands only if the
   row's score also reaches this level. Raised above the line when the score likelihood
   (3) is on: one row then pages on its own only when it is far beyond the line; runs of
   moderately unusual rows are the likelihood's to judge.
2. **Routine bar** (optional, ``recent_days``): a row is flagged only when its calibrated
   score also reaches ``recent_margin`` × the peak of the ``recent_rank``-th largest
   *episode* of the previous ``recent_days``. An episode is a run of UTC clock hours whose
   maximum score reached the alarm line, closer than three hours to each other (an
   incident's onset and its recovery are one episode); the current hour is not part of its
   own reference. What went over the line in ``recent_rank`` separate episodes of the last
   days is routine for this series — a nightly batch job, a cache refill — however far it
   sits from the training data; an incident is what goes beyond it. Fewer episodes than
   ``recent_rank`` do not raise the bar. With ``keys`` the bar is kept per key, like the
   cooldown (6): a CPU episode says nothing about what is routine for memory. Known
   incidents (``exclude``, e.g. operator labels) never count as episodes. Label-free,
   causal, and adaptive to a series whose normal behaviour drifts after training.
3. **Score likelihood** (optional, ``likelihood_z``): a row is also flagged when the mean
   of ``u = log(1 + score)`` over the last ``likelihood_rows`` rows sits more than
   ``likelihood_z`` standard deviations above the mean of every ``u`` this host has produced
   so far, its training rows' in-sample scores included (:func:`score_moments`). It is the
   anomaly likelihood of Numenta's NAB detectors (Ahmad et al., 2017) on this project's
   calibrated scores, and the part of alarm handling that keeps learning after the fit: a
   run of rows more surprising than what the host usually does, judged against a history
   that grows with every row. A slow bump in a noisy metric (no row over the line, many
   rows above usual) is found; a series busier than its training days stops paging once its
   history has seen enough of it. The log keeps one enormous row from swamping the
   statistics.
4. **Score record** (optional, ``record_ratio``): a row is also flagged when its score is
   at least ``record_ratio`` × the highest score this host has produced so far (training
   rows in-sample, then every scored row; known incidents left out) and at least
   ``record_floor`` (a fraction of the alarm line). A row unlike anything the host has done
   is news even below the line: a spike half again as high as every daily spike before it.
   Records are judged only once the history spans ``record_history``: the highest score of
   a day or two of training underestimates what normal days do (on the synthetic corpus
   most records in the first hours after training were false alarms). The reference only
   grows, so what was once a record is routine afterwards; it restarts with each retrained
   model, whose training window is the start of its history.
5. **M-of-N**: a flagged row is an alarm candidate when at least ``m`` of the last ``n``
   flags (this row included) are set. ``m == n`` is a debounce; ``m = n = 1`` passes flags through.
   With ``bypass`` set, a flagged row whose calibrated score reaches it is a candidate on its
   own: debouncing exists to ignore marginal blips, not a value far beyond the alarm line.
6. **Cooldown** (suppression after an alarm): after an alarm at ``t``, candidates before
   ``t + cooldown`` are dropped. One incident then raises one alarm instead of one per row,
   which is what an on-call engineer wants paged, and what event-level scoring rewards.
   With ``keys`` (the caller's label for *what* is anomalous, e.g. the metric contributing
   most), the cooldown is kept per key: a memory leak an hour after a CPU hog on the same
   host is a new incident and pages again; the same metric still firing is not.

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

_HOUR_NS = 3_600 * 10**9
#: Smallest standard deviation of ``log(1 + score)`` the likelihood divides by: a host whose
#: history is flat (a constant series scores 0) must not page for a rounding-size departure.
_MIN_LIKELIHOOD_SPREAD = 0.01
#: Rows of history the likelihood needs before it judges (its mean and spread are noise
#: before that); a host with training moments has them from the start.
_MIN_LIKELIHOOD_HISTORY = 30


def likelihood_scale(scores: np.ndarray) -> np.ndarray:
    """``log(1 + score)``, the scale the score likelihood works on (missing scores: 0)."""
    return np.log1p(np.maximum(np.nan_to_num(np.asarray(scores, dtype=float), nan=0.0), 0.0))


def score_moments(scores: np.ndarray) -> tuple[float, float, float]:
    """(count, sum, sum of squares) of :func:`likelihood_scale` of calibrated scores: what a
    detector hands the likelihood as the history of its training rows."""
    u = likelihood_scale(scores)
    return float(u.size), float(u.sum()), float(np.square(u).sum())


#: Hours over the alarm line closer than this belong to one episode (an incident's onset and
#: its recovery are one event, not two pieces of evidence that such scores are routine).
_EPISODE_GAP_HOURS = 3
_EPISODE_LEVEL = 1.0


def _episode_peaks(hours: np.ndarray, maxima: np.ndarray) -> np.ndarray:
    """Peak score of each episode: runs of hours less than ``_EPISODE_GAP_HOURS`` apart."""
    if hours.size == 0:
        return hours.astype(float)
    starts = np.concatenate([[True], np.diff(hours) >= _EPISODE_GAP_HOURS])
    return np.asarray(np.maximum.reduceat(maxima, np.flatnonzero(starts)))


def _duration(value: str, what: str) -> pd.Timedelta:
    """A policy's duration parameter, parsed; a clear error when it is not one or negative."""
    try:
        duration = pd.Timedelta(value)
    except ValueError as exc:
        raise InputError(f"bad {what} {value!r}") from exc
    if duration < pd.Timedelta(0):
        raise InputError(f"{what} must be >= 0, got {value!r}")
    return duration


def _without_known(scores: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    """Scores as references for later rows: known incidents (``exclude``) count as 0, so they
    are never taken as routine (the routine bar) nor as the highest normal score (the record)."""
    return scores if exclude is None else np.where(np.asarray(exclude, dtype=bool), 0.0, scores)


@dataclass(frozen=True)
class AlarmState:
    """What live scoring must remember between calls for one host."""

    recent: tuple[bool, ...] = ()  # the last n-1 flags, oldest first
    last_alarm_ns: int | None = None  # the latest alarm, whatever its key
    #: (key, time of its latest alarm) for the cooldown kept per key
    last_by_key: tuple[tuple[int, int], ...] = ()
    #: (key, UTC hour index, max calibrated score in it) for the hours the routine bar looks
    #: at, per key (see ``keys``), each key's newest (possibly still running) hour last.
    hour_max: tuple[tuple[int, int, float], ...] = ()
    #: the score likelihood's history: (count, sum, sum of squares) of log(1 + score) ...
    score_moments: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: ... and the last likelihood_rows - 1 values of log(1 + score), oldest first
    recent_scores: tuple[float, ...] = ()
    #: the score record's reference: the highest calibrated score of the history (0: none)
    score_max: float = 0.0
    #: when that history began (None: not yet); records are judged after ``record_history``
    history_start_ns: int | None = None


class AlarmPolicy(BaseEstimator):  # type: ignore[misc]
    def __init__(
        self,
        m: int = 1,
        n: int = 1,
        cooldown: str = "0s",
        bypass: float | None = None,
        recent_days: float | None = None,
        recent_rank: int = 3,
        recent_margin: float = 1.0,
        likelihood_z: float | None = None,
        likelihood_rows: int = 10,
        spike_level: float = 1.0,
        record_ratio: float | None = None,
        record_floor: float = 0.5,
        record_history: str = "0s",
    ) -> None:
        self.m = m
        self.n = n
        self.cooldown = cooldown
        self.bypass = bypass
        self.recent_days = recent_days
        self.recent_rank = recent_rank
        self.recent_margin = recent_margin
        self.likelihood_z = likelihood_z
        self.likelihood_rows = likelihood_rows
        self.spike_level = spike_level
        self.record_ratio = record_ratio
        self.record_floor = record_floor
        self.record_history = record_history

    def _check(self) -> int:
        if not (isinstance(self.m, int) and isinstance(self.n, int) and 1 <= self.m <= self.n):
            raise InputError(f"alarm policy needs 1 <= m <= n, got m={self.m}, n={self.n}")
        cooldown = _duration(self.cooldown, "alarm cooldown")
        if self.recent_days is not None and not (self.recent_days > 0 and self.recent_rank >= 1):
            raise InputError(
                f"routine bar needs recent_days > 0 and recent_rank >= 1, got "
                f"{self.recent_days!r} and {self.recent_rank!r}"
            )
        if self.likelihood_z is not None and not (
            self.likelihood_z > 0 and isinstance(self.likelihood_rows, int) and self.likelihood_rows >= 1
        ):
            raise InputError(
                f"score likelihood needs likelihood_z > 0 and likelihood_rows >= 1, got "
                f"{self.likelihood_z!r} and {self.likelihood_rows!r}"
            )
        if self.record_ratio is not None:
            if not (self.record_ratio >= 1.0 and self.record_floor >= 0.0):
                raise InputError(
                    f"score record needs record_ratio >= 1 and record_floor >= 0, got "
                    f"{self.record_ratio!r} and {self.record_floor!r}"
                )
            _duration(self.record_history, "score record history")
        if not self.spike_level >= 1.0:
            raise InputError(f"spike level must be >= 1 (the alarm line), got {self.spike_level!r}")
        return int(cooldown.value)

    def likelihood_flags(
        self, scores: np.ndarray, state: AlarmState | None = None
    ) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, ...]]:
        """Per row, whether the score likelihood flags it; the new moments and recent values.

        Each row is judged against the history *before* it (``state`` plus earlier rows of
        this call), then joins it, so batch and live scoring agree.
        """
        state = state or AlarmState()
        rows = int(self.likelihood_rows)
        u = likelihood_scale(scores)
        prefix = np.asarray(state.recent_scores[-(rows - 1) :] if rows > 1 else (), dtype=float)
        full = np.concatenate([prefix, u])
        csum = np.concatenate([[0.0], np.cumsum(full)])
        end = np.arange(len(prefix) + 1, len(full) + 1)
        begin = np.maximum(end - rows, 0)
        recent_mean = (csum[end] - csum[begin]) / (end - begin)
        count0, sum0, squares0 = state.score_moments
        before = np.arange(len(u), dtype=float)
        count = count0 + before
        # Sums of the rows before each row (an empty call gives empty arrays).
        total = sum0 + np.concatenate([[0.0], np.cumsum(u)])[:-1]
        squares = squares0 + np.concatenate([[0.0], np.cumsum(u * u)])[:-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count
            spread = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
            z = (recent_mean - mean) / np.maximum(spread, _MIN_LIKELIHOOD_SPREAD)
        flags = (count >= _MIN_LIKELIHOOD_HISTORY) & (z > float(self.likelihood_z or np.inf))
        moments = (count0 + len(u), sum0 + float(u.sum()), squares0 + float(np.square(u).sum()))
        recent = tuple(float(x) for x in full[max(len(full) - (rows - 1), 0) :]) if rows > 1 else ()
        return flags, moments, recent

    def record_flags(
        self,
        timestamps_ns: np.ndarray,
        scores: np.ndarray,
        state: AlarmState | None = None,
        exclude: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float, int | None]:
        """Per row, whether it is a score record; the new reference (highest score so far)
        and the start of the history (the first row ever seen, unless ``state`` has one).

        Each row is compared with the highest score *before* it (``state.score_max``, then
        earlier rows of this call); rows marked in ``exclude`` (known incidents) are judged
        but never become the reference. Rows less than ``record_history`` after the start of
        the history are never records.
        """
        state = state or AlarmState()
        values = np.nan_to_num(np.asarray(scores, dtype=float), nan=0.0)
        highest = np.maximum.accumulate(np.concatenate([[state.score_max], _without_known(values, exclude)]))
        before = highest[:-1]
        ratio = float(self.record_ratio) if self.record_ratio is not None else np.inf
        flags = (before > 0.0) & (values >= ratio * before) & (values >= float(self.record_floor))
        ts = np.asarray(timestamps_ns, dtype=np.int64)
        start = state.history_start_ns
        if start is None and len(ts):
            start = int(ts[0])
        if start is not None and flags.any():  # parsed only when some row is a candidate
            flags &= ts >= start + int(_duration(self.record_history, "score record history").value)
        return flags, float(highest[-1]), start

    @property
    def _recent_hours(self) -> int:
        return round(float(self.recent_days or 0) * 24)

    def routine_bar(
        self,
        timestamps_ns: np.ndarray,
        scores: np.ndarray,
        state: AlarmState | None = None,
        keys: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[tuple[int, int, float], ...]]:
        """Per row, the routine bar (0 where there is no history), and the new hour maxima.

        With ``keys`` (int per row, as for the cooldown) the bar is kept per key: each row is
        compared with the episodes of its own key only; None is one key for all rows.
        """
        ts = np.asarray(timestamps_ns, dtype=np.int64)
        values = np.nan_to_num(np.asarray(scores, dtype=float), nan=0.0)
        if self.recent_days is None:
            return np.zeros(len(ts)), ()
        row_keys = np.zeros(len(ts), dtype=np.int64) if keys is None else np.asarray(keys, dtype=np.int64)
        present = set(np.unique(row_keys).tolist())
        carried: dict[int, dict[int, float]] = {key: {} for key in present}
        # Keys with no new rows carry on as they are (the state is kept sorted by key, hour).
        kept: list[tuple[int, int, float]] = []
        for item in state.hour_max if state is not None else ():
            if item[0] in present:
                carried[item[0]][item[1]] = item[2]
            else:
                kept.append(item)
        bar = np.zeros(len(ts))
        for key in sorted(present):
            rows = np.flatnonzero(row_keys == key)
            key_bar, maxima = self._key_bar(ts[rows], values[rows], carried[key])
            bar[rows] = key_bar
            kept.extend((key, hour, peak) for hour, peak in maxima)
        kept.sort(key=lambda item: (item[0], item[1]))
        return bar, tuple(kept)

    def _key_bar(
        self, ts: np.ndarray, values: np.ndarray, carried: dict[int, float]
    ) -> tuple[np.ndarray, list[tuple[int, float]]]:
        """The routine bar of one key's rows, and that key's hour maxima to carry on."""
        hours = ts // _HOUR_NS
        # Hour maxima: carried ones (the last may still be running) plus these rows.
        maxima = dict(carried)
        if len(hours):
            uniq, inverse = np.unique(hours, return_inverse=True)
            per_hour = np.full(len(uniq), -np.inf)
            np.maximum.at(per_hour, inverse, values)
            for h, v in zip(uniq.tolist(), per_hour.tolist(), strict=True):
                maxima[h] = max(maxima.get(h, -np.inf), v)
        span = self._recent_hours
        known = np.array(sorted(maxima), dtype=np.int64)
        known_max = np.array([maxima[h] for h in known.tolist()], dtype=float)
        bar = np.zeros(len(ts))
        for h in np.unique(hours).tolist():
            # The reference is the hour maxima of the previous `span` hours, built from
            # carried state and these rows alike, so batch and live agree.
            ref = (known >= h - span) & (known < h) & (known_max >= _EPISODE_LEVEL)
            peaks = _episode_peaks(known[ref], known_max[ref])
            if peaks.size >= self.recent_rank:
                bar[hours == h] = np.sort(peaks)[peaks.size - self.recent_rank]
        if not known.size:
            return bar, []
        newest = int(known[-1])
        return bar, [(int(h), float(v)) for h, v in zip(known, known_max, strict=True) if h >= newest - span]

    def apply_array(
        self,
        timestamps_ns: np.ndarray,
        flags: np.ndarray,
        state: AlarmState | None = None,
        scores: np.ndarray | None = None,
        keys: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
    ) -> tuple[np.ndarray, AlarmState]:
        """Alarms for time-sorted rows of one host, continuing from ``state``.

        ``scores`` (calibrated) enable the ``bypass`` rule and the routine bar: a flagged row
        scoring at least ``bypass`` is a candidate on its own, without waiting for M-of-N.
        ``keys`` (int per row) keep the cooldown per key; None is one key for all rows.
        ``exclude`` (bool per row) marks known incidents: their scores do not count as
        routine for later rows. With ``likelihood_z`` set, the score likelihood's flags join
        ``flags`` (``scores`` required; ``state.score_moments`` holds the history, e.g. the
        detector's training moments for a host's first call).
        """
        cooldown_ns = self._check()
        state = state or AlarmState()
        raw = np.asarray(flags, dtype=bool)
        ts = np.asarray(timestamps_ns, dtype=np.int64)
        hour_max = state.hour_max
        moments, recent_scores = state.score_moments, state.recent_scores
        lik_flags = record = None
        score_max, history_start = state.score_max, state.history_start_ns
        if self.spike_level != 1.0 and scores is not None:
            raw = raw & (np.asarray(scores, dtype=float) >= self.spike_level)
        if self.likelihood_z is not None:
            if scores is None:
                raise InputError("the score likelihood needs the calibrated scores")
            lik_flags, moments, recent_scores = self.likelihood_flags(scores, state)
        if self.record_ratio is not None:
            if scores is None:
                raise InputError("the score record needs the calibrated scores")
            record, score_max, history_start = self.record_flags(ts, scores, state, exclude)
        if self.recent_days is not None and scores is not None:
            reference = _without_known(np.asarray(scores, dtype=float), exclude)
            bar, hour_max = self.routine_bar(ts, reference, state, keys)
            raw = raw & (np.asarray(scores, dtype=float) >= self.recent_margin * bar)
        if lik_flags is not None:
            raw = raw | lik_flags
        if record is not None:
            raw = raw | record
        prefix = np.asarray(state.recent[-(self.n - 1) :] if self.n > 1 else (), dtype=bool)
        full = np.concatenate([prefix, raw]).astype(np.int64)
        csum = np.concatenate([[0], np.cumsum(full)])
        end = np.arange(len(prefix) + 1, len(full) + 1)
        counts = csum[end] - csum[np.maximum(end - self.n, 0)]
        # A candidate is a flagged row with enough company: an unflagged row right after a
        # blip is never an alarm of its own (it would carry no score and no leading metric).
        candidates = raw & (counts >= self.m)
        if self.bypass is not None and scores is not None:
            candidates |= raw & (np.asarray(scores, dtype=float) >= self.bypass)

        alarms = np.zeros(len(raw), dtype=bool)
        last = state.last_alarm_ns
        by_key = dict(state.last_by_key)
        if keys is None and not by_key and last is not None:
            by_key[0] = last
        row_keys = np.zeros(len(raw), dtype=np.int64) if keys is None else np.asarray(keys, dtype=np.int64)
        for i in np.flatnonzero(candidates):
            key = int(row_keys[i])
            previous = by_key.get(key)
            if previous is None or ts[i] >= previous + cooldown_ns or cooldown_ns == 0:
                alarms[i] = True
                last = int(ts[i])
                by_key[key] = last
        keep = max(self.n - 1, 0)
        # max(..., 0): a negative start would count from the end and keep too few flags.
        recent = tuple(bool(x) for x in full[max(len(full) - keep, 0) :]) if keep else ()
        return alarms, AlarmState(
            recent=recent,
            last_alarm_ns=last,
            last_by_key=tuple(sorted(by_key.items())),
            hour_max=hour_max,
            score_moments=moments,
            recent_scores=recent_scores,
            score_max=score_max,
            history_start_ns=history_start,
        )

    def apply(self, flags: pd.Series, scores: pd.Series | None = None) -> pd.Series:
        """Alarms for a bool series indexed by timestamps (sorted here if needed).

        ``scores``: calibrated scores on the same index (for ``bypass`` and the routine bar).
        """
        if not isinstance(flags.index, pd.DatetimeIndex):
            raise InputError("alarm handling needs flags indexed by timestamps")
        raw = flags.fillna(False).astype(bool).to_numpy()
        idx = flags.index
        idx_utc = (idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")).as_unit("ns")
        order = np.argsort(idx_utc.asi8, kind="stable")
        values = None if scores is None else np.asarray(scores, dtype=float)[order]
        sorted_alarms, _ = self.apply_array(idx_utc.asi8[order], raw[order], None, values)
        alarms = np.empty(len(raw), dtype=bool)
        alarms[order] = sorted_alarms
        return pd.Series(alarms, index=flags.index, name=flags.name)
