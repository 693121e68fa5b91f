"""Property tests of the time parser (hypothesis): phrases -> ``since_minutes``.

Each property states what an operator would expect of *every* phrase of a family, not of a
few examples: the unit arithmetic, number words, compound amounts, clock times, case and
spacing, the phrase inside a whole question, and ordering.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chatops.intents import MAX_SINCE_MINUTES, parse, parse_since_minutes

NOW = datetime(2026, 5, 17, 12, 0, 0, tzinfo=UTC)
HOSTS = ["web-1", "web-2", "app-1", "db-1", "db-2"]

UNITS: dict[str, float] = {
    "second": 1 / 60, "seconds": 1 / 60, "sec": 1 / 60, "secs": 1 / 60,
    "minute": 1, "minutes": 1, "min": 1, "mins": 1,
    "hour": 60, "hours": 60, "hr": 60, "hrs": 60,
    "day": 1440, "days": 1440, "week": 10080, "weeks": 10080,
}
SHORT = {"m": 1, "h": 60, "d": 1440, "w": 10080}
LEADS = ["last {x}", "past {x}", "{x} ago", "since {x}", "in the last {x}", "over the past {x}",
         "for the last {x}", "within the last {x}", "during the past {x}", "the previous {x}"]

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def words(n: int) -> str:
    """English words for 1..99 ("forty five")."""
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")


def expected(minutes: float) -> int:
    return min(MAX_SINCE_MINUTES, max(1, math.ceil(minutes - 1e-9)))


quantity = st.integers(min_value=1, max_value=100_000)


@settings(max_examples=150, deadline=None)
@given(n=quantity, unit=st.sampled_from(sorted(UNITS)), lead=st.sampled_from(LEADS))
def test_amount_times_unit(n: int, unit: str, lead: str) -> None:
    text = lead.format(x=f"{n} {unit}")
    assert parse_since_minutes(text, now=NOW) == expected(n * UNITS[unit])


@settings(max_examples=100, deadline=None)
@given(n=quantity, unit=st.sampled_from(sorted(SHORT)), lead=st.sampled_from(LEADS))
def test_glued_short_units(n: int, unit: str, lead: str) -> None:
    assert parse_since_minutes(lead.format(x=f"{n}{unit}"), now=NOW) == expected(n * SHORT[unit])


@settings(max_examples=100, deadline=None)
@given(n=st.integers(min_value=1, max_value=99), unit=st.sampled_from(["minutes", "hours", "days"]),
       lead=st.sampled_from(LEADS))
def test_number_words_mean_the_same_as_digits(n: int, unit: str, lead: str) -> None:
    digits = parse_since_minutes(lead.format(x=f"{n} {unit}"), now=NOW)
    spelled = parse_since_minutes(lead.format(x=f"{words(n)} {unit}"), now=NOW)
    assert spelled == digits == expected(n * UNITS[unit])


@settings(max_examples=100, deadline=None)
@given(h=st.integers(min_value=1, max_value=48), m=st.integers(min_value=1, max_value=59),
       form=st.sampled_from(["last {h}h{m}m", "past {h}h {m}m", "last {h} hours {m} minutes",
                             "last {h} hours and {m} minutes", "{h} hours, {m} minutes ago"]))
def test_compound_amounts_add_up(h: int, m: int, form: str) -> None:
    assert parse_since_minutes(form.format(h=h, m=m), now=NOW) == h * 60 + m


@settings(max_examples=100, deadline=None)
@given(whole=st.integers(min_value=0, max_value=99), tenth=st.integers(min_value=1, max_value=9),
       unit=st.sampled_from(["hours", "days"]))
def test_fractions_round_up_to_whole_minutes(whole: int, tenth: int, unit: str) -> None:
    text = f"last {whole}.{tenth} {unit}"
    assert parse_since_minutes(text, now=NOW) == expected((whole + tenth / 10) * UNITS[unit])


@settings(max_examples=100, deadline=None)
@given(hour=st.integers(min_value=0, max_value=23), minute=st.integers(min_value=0, max_value=59),
       now_minute=st.integers(min_value=0, max_value=24 * 60 - 1))
def test_clock_times_count_back_to_their_last_occurrence(hour: int, minute: int, now_minute: int) -> None:
    now = NOW.replace(hour=0, minute=0) + timedelta(minutes=now_minute)
    at = now.replace(hour=hour, minute=minute)
    if at > now:
        at -= timedelta(days=1)
    want = max(1, math.ceil((now - at).total_seconds() / 60))
    assert parse_since_minutes(f"since {hour:02d}:{minute:02d}", now=now) == want
    assert 1 <= want <= 1440


@settings(max_examples=100, deadline=None)
@given(n=quantity, unit=st.sampled_from(sorted(UNITS)), lead=st.sampled_from(LEADS),
       upper=st.booleans(), spaces=st.integers(min_value=1, max_value=4))
def test_case_and_spacing_do_not_matter(n: int, unit: str, lead: str, upper: bool, spaces: int) -> None:
    text = lead.format(x=f"{n} {unit}").replace(" ", " " * spaces)
    text = text.upper() if upper else text.title()
    assert parse_since_minutes(text, now=NOW) == expected(n * UNITS[unit])


@settings(max_examples=100, deadline=None)
@given(n=st.integers(min_value=1, max_value=10_000),
       unit=st.sampled_from(["minutes", "hours", "days", "h", "m"]),
       question=st.sampled_from([
           ("cpu on web-1 over the last {x}", "metric.history"),
           ("show error logs from the past {x}", "logs.search"),
           ("anomalies in the last {x}", "anomaly.summary"),
           ("remediation history for the last {x}", "remediation.history"),
       ]))
def test_the_phrase_inside_a_question(n: int, unit: str, question: tuple[str, str]) -> None:
    form, intent = question
    amount = f"{n}{unit}" if len(unit) == 1 else f"{n} {unit}"
    got = parse(form.format(x=amount), hosts=HOSTS, now=NOW)
    assert got.intent == intent
    assert got.params["since_minutes"] == expected(n * (SHORT.get(unit) or UNITS[unit]))
    assert "limit" not in got.params  # the amount is a window, never a list size


@settings(max_examples=100, deadline=None)
@given(a=quantity, b=quantity, unit=st.sampled_from(sorted(UNITS)), lead=st.sampled_from(LEADS))
def test_longer_phrases_mean_longer_windows(a: int, b: int, unit: str, lead: str) -> None:
    assume(a < b)
    first = parse_since_minutes(lead.format(x=f"{a} {unit}"), now=NOW)
    second = parse_since_minutes(lead.format(x=f"{b} {unit}"), now=NOW)
    assert first is not None and second is not None and first <= second


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_any_text_gives_none_or_a_window_in_range(text: str) -> None:
    got = parse_since_minutes(text, now=NOW)
    assert got is None or (isinstance(got, int) and 1 <= got <= MAX_SINCE_MINUTES)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from("abcefgijklnopqruvxz ,.?!-"), max_size=60))
def test_text_without_numbers_or_time_words_has_no_window(text: str) -> None:
    # Letters that cannot spell a unit or a time word ("hour", "day", "today", "minute" ...
    # all need one of d, h, m, s, t, w, y): no window may be invented.
    assert parse_since_minutes(text, now=NOW) is None
