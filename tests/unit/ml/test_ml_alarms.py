"""Alarm handling beyond M-of-N: the routine bar, per-key cooldown, known incidents."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.alarms import AlarmPolicy, AlarmState
from smartcloudops.errors import InputError

MIN = 60 * 10**9
HOUR = 60 * MIN


Bursts = tuple[tuple[float, float], ...]


def day_of_scores(days: int = 6, bursts: Bursts = ()) -> tuple[np.ndarray, np.ndarray]:
    """One-minute rows of calibrated score 0.2, with (hour, score) bursts of 10 minutes."""
    ts = np.arange(0, days * 24 * HOUR, MIN, dtype=np.int64)
    scores = np.full(len(ts), 0.2)
    for hour, value in bursts:
        start = int(hour * 60)
        scores[start : start + 10] = value
    return ts, scores


ROUTINE = AlarmPolicy(m=1, n=1, cooldown="6h", recent_days=3.0, recent_rank=3, recent_margin=1.5)


def alarm_hours(policy: AlarmPolicy, ts: np.ndarray, scores: np.ndarray) -> list[int]:
    alarms, _ = policy.apply_array(ts, scores >= 1.0, None, scores)
    return sorted({int(t // HOUR) for t in ts[alarms]})


def test_recurring_bursts_become_routine_and_a_larger_one_still_alarms() -> None:
    # A daily 02:00 burst at score 3: it pages on the first three days, then it is routine.
    bursts = (*((24 * d + 2, 3.0) for d in range(5)), (24 * 4 + 14, 6.0))
    ts, scores = day_of_scores(6, bursts)
    hours = alarm_hours(ROUTINE, ts, scores)
    assert hours == [2, 26, 50, 24 * 4 + 14]  # day 3 and 4's 02:00 bursts are routine; 14:00 is not


def test_one_or_two_past_incidents_do_not_raise_the_bar() -> None:
    ts, scores = day_of_scores(4, ((10, 8.0), (40, 8.0), (70, 1.5)))
    assert alarm_hours(ROUTINE, ts, scores) == [10, 40, 70]


def test_routine_bar_is_the_same_live_and_in_batch() -> None:
    bursts = (*((24 * d + 2, 3.0) for d in range(5)), (24 * 4 + 14, 6.0), (24 * 5 + 3, 2.0))
    ts, scores = day_of_scores(6, bursts)
    flags = scores >= 1.0
    batch, _ = ROUTINE.apply_array(ts, flags, None, scores)
    state = AlarmState()
    parts = []
    for chunk in np.array_split(np.arange(len(ts)), 37):  # uneven chunks, some mid-hour
        out, state = ROUTINE.apply_array(ts[chunk], flags[chunk], state, scores[chunk])
        parts.append(out)
    np.testing.assert_array_equal(np.concatenate(parts), batch)
    # The state stays small: only the hours the bar looks back at.
    assert len(state.hour_max) <= 3 * 24 + 1


def test_known_incidents_are_not_taken_as_routine() -> None:
    bursts = tuple((24 * d + 2, 3.0) for d in range(5))
    ts, scores = day_of_scores(6, bursts)
    known = np.zeros(len(ts), dtype=bool)
    for d in range(3):
        known[(24 * d + 2) * 60 : (24 * d + 2) * 60 + 10] = True
    alarms, _ = ROUTINE.apply_array(ts, scores >= 1.0, None, scores, exclude=known)
    assert {int(t // HOUR) for t in ts[alarms]} >= {24 * 3 + 2, 24 * 4 + 2}


def test_cooldown_is_kept_per_key() -> None:
    ts = np.arange(0, 12 * MIN, MIN, dtype=np.int64)
    flags = np.zeros(12, dtype=bool)
    flags[[1, 3, 6, 9]] = True
    keys = np.array([0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0])
    policy = AlarmPolicy(cooldown="1h")
    alarms, state = policy.apply_array(ts, flags, None, None, keys)
    assert np.flatnonzero(alarms).tolist() == [1, 6]  # key 0 at 1, key 1 at 6; repeats suppressed
    assert dict(state.last_by_key) == {0: int(ts[1]), 1: int(ts[6])}
    single, _ = policy.apply_array(ts, flags)
    assert np.flatnonzero(single).tolist() == [1]


EACH_EPISODE = AlarmPolicy(m=1, n=1, cooldown="1h", recent_days=3.0, recent_rank=1, recent_margin=1.5)


def test_routine_bar_is_kept_per_key() -> None:
    # Key 0 (say cpu) goes over the line at 02:00 and 20:00; key 1 (memory) once, at 10:00.
    ts, scores = day_of_scores(1, ((2, 3.0), (10, 3.0), (20, 3.0)))
    keys = np.zeros(len(ts), dtype=np.int64)
    keys[10 * 60 : 10 * 60 + 10] = 1
    alarms, state = EACH_EPISODE.apply_array(ts, scores >= 1.0, None, scores, keys)
    # 10:00 pages: cpu's 02:00 episode is no reference for memory; 20:00 repeats cpu's 02:00.
    assert sorted({int(t // HOUR) for t in ts[alarms]}) == [2, 10]
    assert {key for key, _, _ in state.hour_max} == {0, 1}
    one_key, _ = EACH_EPISODE.apply_array(ts, scores >= 1.0, None, scores)
    assert sorted({int(t // HOUR) for t in ts[one_key]}) == [2]  # without keys, one host-wide bar


def test_routine_bar_per_key_is_the_same_live_and_in_batch() -> None:
    bursts = ((2, 3.0), (10, 3.0), (20, 3.0), (26, 5.0), (30, 2.0), (50, 3.5), (60, 6.0))
    ts, scores = day_of_scores(3, bursts)
    keys = (ts // (7 * HOUR)) % 2  # the leading metric changes every seven hours
    flags = scores >= 1.0
    batch, end_state = EACH_EPISODE.apply_array(ts, flags, None, scores, keys)
    state, parts = AlarmState(), []
    for chunk in np.array_split(np.arange(len(ts)), 29):
        out, state = EACH_EPISODE.apply_array(ts[chunk], flags[chunk], state, scores[chunk], keys[chunk])
        parts.append(out)
    np.testing.assert_array_equal(np.concatenate(parts), batch)
    assert state == end_state
    # Each key's bar is its own highest episode of the last three days: 20:00 and 30:00 repeat
    # key 0's 02:00, 50:00 is under 1.5x key 1's 26:00; 26:00 and 60:00 go beyond theirs.
    assert sorted({int(t // HOUR) for t in ts[batch]}) == [2, 10, 26, 60]


def test_unflagged_rows_never_alarm_through_m_of_n() -> None:
    ts = np.arange(0, 5 * MIN, MIN, dtype=np.int64)
    flags = np.array([1, 1, 0, 0, 0], dtype=bool)
    alarms, _ = AlarmPolicy(m=2, n=3).apply_array(ts, flags)
    assert np.flatnonzero(alarms).tolist() == [1]


def test_routine_bar_validation_and_series_api() -> None:
    with pytest.raises(InputError, match="routine bar"):
        AlarmPolicy(recent_days=0.0).apply_array(np.zeros(1, dtype=np.int64), np.ones(1, dtype=bool))
    index = pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC")
    flags = pd.Series([True, False, True, True], index=index)
    scores = pd.Series([2.0, 0.1, 2.0, 5.0], index=index)
    policy = AlarmPolicy(cooldown="90min", recent_days=1.0, recent_rank=1, recent_margin=2.0)
    out = policy.apply(flags, scores)
    assert out.tolist() == [True, False, False, True]  # 02:00 is not 2× the 00:00 episode; 03:00 is


# -- the score likelihood and the spike level ------------------------------------------------
LIKELIHOOD = AlarmPolicy(m=1, n=1, cooldown="6h", likelihood_z=5.0, likelihood_rows=10, spike_level=3.0)


def noisy_scores(days: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five-minute rows of calibrated scores around 0.1, none near the line."""
    rng = np.random.default_rng(seed)
    ts = np.arange(0, days * 24 * HOUR, 5 * MIN, dtype=np.int64)
    return ts, np.abs(rng.normal(0.1, 0.05, len(ts)))


def test_likelihood_finds_a_sustained_rise_that_never_reaches_the_line() -> None:
    ts, scores = noisy_scores(4)
    onset = 3 * 288
    scores[onset : onset + 36] += 0.5  # three hours well above usual, every row under 1.0
    assert scores.max() < 1.0
    alarms, _ = LIKELIHOOD.apply_array(ts, scores >= 1.0, None, scores)
    assert np.flatnonzero(alarms).tolist() and onset <= np.flatnonzero(alarms)[0] < onset + 12
    assert not alarms[:onset].any()
    line_only, _ = AlarmPolicy(m=1, n=1, cooldown="6h").apply_array(ts, scores >= 1.0, None, scores)
    assert not line_only.any()


def test_likelihood_learns_a_busier_normal() -> None:
    ts, scores = noisy_scores(8, seed=1)
    # From day 2 on, a busy three hours every six hours.
    scores[2 * 288 :] += np.where(np.arange(len(ts) - 2 * 288) % 72 < 36, 0.4, 0.0)
    alarms, _ = LIKELIHOOD.apply_array(ts, scores >= 1.0, None, scores)
    hits = np.flatnonzero(alarms)
    assert hits.size and hits[0] >= 2 * 288  # the first busy spell pages ...
    assert not alarms[5 * 288 :].any()  # ... and after days of them they are the host's normal


def test_spike_level_lets_only_far_rows_alarm_alone() -> None:
    ts, scores = noisy_scores(2)
    scores[300], scores[400] = 2.0, 4.0  # over the line; only the second is 3x beyond it
    alarms, _ = LIKELIHOOD.apply_array(ts, scores >= 1.0, None, scores)
    assert np.flatnonzero(alarms).tolist() == [400]


def apply_in_chunks(
    policy: AlarmPolicy, ts: np.ndarray, scores: np.ndarray, state: AlarmState, chunks: int
) -> tuple[np.ndarray, AlarmState]:
    """Live scoring's view: the rows in ``chunks`` calls, each carrying the state on."""
    parts = []
    for chunk in np.array_split(np.arange(len(ts)), chunks):
        out, state = policy.apply_array(ts[chunk], scores[chunk] >= 1.0, state, scores[chunk])
        parts.append(out)
    return np.concatenate(parts), state


def test_likelihood_is_the_same_live_and_in_batch_and_starts_from_given_history() -> None:
    ts, scores = noisy_scores(3, seed=2)
    scores[500:530] += 0.6
    scores[700] = 5.0
    history = AlarmState(score_moments=(100.0, 100 * np.log1p(0.1), 100 * np.log1p(0.1) ** 2 + 0.2))
    batch, end_state = LIKELIHOOD.apply_array(ts, scores >= 1.0, history, scores)
    live, state = apply_in_chunks(LIKELIHOOD, ts, scores, history, 23)
    np.testing.assert_array_equal(live, batch)
    assert state.score_moments[0] == end_state.score_moments[0] == 100 + len(ts)
    np.testing.assert_allclose(state.score_moments, end_state.score_moments, rtol=1e-12)
    assert state.recent_scores == pytest.approx(end_state.recent_scores)
    assert batch.any()


def test_likelihood_needs_history_and_scores_and_valid_parameters() -> None:
    ts, scores = noisy_scores(1)
    scores[:20] = 0.0
    scores[20:25] = 0.9  # a big rise, but after 20 rows of history there is nothing to judge by
    alarms, _ = LIKELIHOOD.apply_array(ts[:25], scores[:25] >= 1.0, None, scores[:25])
    assert not alarms.any()
    with pytest.raises(InputError, match="calibrated scores"):
        LIKELIHOOD.apply_array(ts, scores >= 1.0)
    with pytest.raises(InputError, match="likelihood"):
        AlarmPolicy(likelihood_z=0.0).apply_array(ts[:1], np.ones(1, dtype=bool), None, scores[:1])
    with pytest.raises(InputError, match="spike level"):
        AlarmPolicy(spike_level=0.5).apply_array(ts[:1], np.ones(1, dtype=bool), None, scores[:1])


def test_m_of_n_with_a_long_window_is_the_same_live_and_in_batch() -> None:
    # n = 5 keeps 4 flags between calls, more than the first calls produce.
    ts = np.arange(0, 12 * MIN, MIN, dtype=np.int64)
    flags = np.array([1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1], dtype=bool)
    policy = AlarmPolicy(m=3, n=5)
    batch, _ = policy.apply_array(ts, flags)
    state, live = None, []
    for i in range(len(ts)):
        out, state = policy.apply_array(ts[i : i + 1], flags[i : i + 1], state)
        live.append(bool(out[0]))
    assert live == batch.tolist()
    assert np.flatnonzero(batch).tolist() == [6]  # rows 2..6 hold the first 3 flags of 5


# -- the score record ------------------------------------------------------------------------
RECORD = AlarmPolicy(m=1, n=1, cooldown="6h", spike_level=3.0, record_ratio=1.5, record_floor=0.5)


def daily_spikes(days: int) -> tuple[np.ndarray, np.ndarray]:
    """Quiet rows with one spike a day at 0.5 of the line: a routine the host does daily."""
    ts, scores = noisy_scores(days, seed=3)
    scores = np.minimum(scores, 0.2)
    scores[np.arange(days) * 288 + 100] = 0.5
    return ts, scores


def test_a_spike_half_again_above_every_earlier_one_is_a_record() -> None:
    ts, scores = daily_spikes(6)
    scores[4 * 288 + 100] = 0.8  # 1.6x the daily spike, still under the line
    scores[5 * 288 + 100] = 0.7  # 1.4x the daily spike, and below the new highest
    trained = AlarmState(score_max=0.5)  # its training days had the daily spike too
    alarms, state = RECORD.apply_array(ts, scores >= 1.0, trained, scores)
    assert np.flatnonzero(alarms).tolist() == [4 * 288 + 100]
    assert state.score_max == pytest.approx(0.8)
    # Without the record, nothing under 3x the line alarms alone.
    plain = AlarmPolicy(m=1, n=1, cooldown="6h", spike_level=3.0)
    assert not plain.apply_array(ts, scores >= 1.0, trained, scores)[0].any()
    # Without a history the first daily spike is itself a record (nothing like it before).
    fresh, _ = RECORD.apply_array(ts, scores >= 1.0, None, scores)
    assert np.flatnonzero(fresh).tolist() == [100, 4 * 288 + 100]


def test_record_needs_a_history_and_the_floor_and_ignores_known_incidents() -> None:
    ts, scores = daily_spikes(3)
    # The first row of a host without history is never a record (there is nothing before it).
    first, _ = RECORD.apply_array(ts[:1], np.zeros(1, dtype=bool), None, np.array([0.9]))
    assert not first.any()
    # A quiet host: a rise to 0.4 is 2x its highest score but under the floor.
    quiet = np.full(50, 0.1)
    quiet[40] = 0.4
    low, _ = RECORD.apply_array(ts[:50], np.zeros(50, dtype=bool), None, quiet)
    assert not low.any()
    # A known incident at 5.0 is judged but does not become the reference.
    known = np.zeros(len(ts), dtype=bool)
    scores[288 + 50], known[288 + 50] = 5.0, True
    scores[2 * 288 + 100] = 0.8
    alarms, state = RECORD.apply_array(ts, scores >= 1.0, None, scores, exclude=known)
    assert 2 * 288 + 100 in np.flatnonzero(alarms).tolist()
    assert state.score_max == pytest.approx(0.8)
    with pytest.raises(InputError, match="score record"):
        AlarmPolicy(record_ratio=0.9).apply_array(ts[:1], np.ones(1, dtype=bool), None, scores[:1])
    with pytest.raises(InputError, match="calibrated scores"):
        RECORD.apply_array(ts[:1], np.ones(1, dtype=bool))


def test_record_is_the_same_live_and_in_batch_and_starts_from_given_history() -> None:
    ts, scores = daily_spikes(4)
    scores[3 * 288 + 100] = 0.9
    history = AlarmState(score_max=0.55)
    batch, end_state = RECORD.apply_array(ts, scores >= 1.0, history, scores)
    live, state = apply_in_chunks(RECORD, ts, scores, history, 17)
    np.testing.assert_array_equal(live, batch)
    assert state.score_max == end_state.score_max == pytest.approx(0.9)
    assert np.flatnonzero(batch).tolist() == [3 * 288 + 100]
    # From a history whose highest score was 0.7, 0.9 is no record.
    higher, _ = RECORD.apply_array(ts, scores >= 1.0, AlarmState(score_max=0.7), scores)
    assert not higher.any()


def test_records_wait_until_the_history_spans_record_history() -> None:
    ts, scores = daily_spikes(5)
    scores[1 * 288 + 100] = 0.8  # a record on day 1 ...
    scores[3 * 288 + 100] = 1.3  # ... and another on day 3
    patient = AlarmPolicy(m=1, n=1, cooldown="6h", spike_level=3.0, record_ratio=1.5, record_history="2D")
    alarms, state = patient.apply_array(ts, scores >= 1.0, AlarmState(score_max=0.5), scores)
    assert np.flatnonzero(alarms).tolist() == [3 * 288 + 100]  # day 1 is too early to judge
    assert state.history_start_ns == int(ts[0])
    # A history that began two days before these rows judges from the first of them.
    earlier = AlarmState(score_max=0.5, history_start_ns=int(ts[0]) - 2 * 24 * HOUR)
    alarms, _ = patient.apply_array(ts, scores >= 1.0, earlier, scores)
    assert np.flatnonzero(alarms).tolist() == [1 * 288 + 100, 3 * 288 + 100]
    # Live, row by row, the same.
    live, _ = apply_in_chunks(patient, ts, scores, AlarmState(score_max=0.5), len(ts))
    assert np.flatnonzero(live).tolist() == [3 * 288 + 100]
    with pytest.raises(InputError, match="score record history"):
        vague = AlarmPolicy(record_ratio=1.5, record_history="soon")
        vague.apply_array(ts[:1], np.ones(1, dtype=bool), None, scores[:1])
