"""One row of :class:`ml.alarms.AlarmPolicy`'s M-of-N and cooldown rules, on plain numbers.

``AlarmPolicy.apply_array`` builds a dozen small arrays per call; a live row needs a handful of
comparisons. The one-row paths of the scoring service (``ml.compiled.FleetPlan`` and
``serving.fast``) share this function; it imports nothing, so the service's numpy-only path
stays light. Both check it against ``apply_array`` on a random row stream when a model loads.
"""

from __future__ import annotations


def alarm_step(
    recent: tuple[bool, ...],
    last_alarm_ns: int | None,
    last_by_key: dict[int, int],
    *,
    flag: bool,
    score: float,
    t: int,
    key: int | None,
    m: int,
    n: int,
    bypass: float | None,
    cooldown_ns: int,
) -> tuple[bool, tuple[bool, ...], int | None, dict[int, int]]:
    """``(alarm, recent flags to keep, last alarm, last alarm per key)`` after a row.

    ``flag``: the row is over the line (after any routine bar). A candidate is a flagged row
    with ``m`` of the last ``n`` flags set, or one at ``bypass`` or beyond; it alarms unless
    its key (the leading metric; ``None`` is one key) alarmed less than ``cooldown_ns`` ago.
    """
    # max(..., 0): a negative start would count from the end and keep too few flags.
    window = (*recent[max(len(recent) - (n - 1), 0) :], flag) if n > 1 else (flag,)
    candidate = flag and (sum(window) >= m or (bypass is not None and score >= bypass))
    by_key = dict(last_by_key)
    if key is None and not by_key and last_alarm_ns is not None:
        by_key[0] = last_alarm_ns  # a state written before keys existed
    row_key = 0 if key is None else key
    alarm = False
    if candidate:
        before = by_key.get(row_key)
        if before is None or cooldown_ns == 0 or t >= before + cooldown_ns:
            alarm, last_alarm_ns, by_key[row_key] = True, t, t
    kept = window[max(len(window) - (n - 1), 0) :] if n > 1 else ()
    return alarm, kept, last_alarm_ns, by_key
