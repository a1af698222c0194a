from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpi.errors import PeriodError
from kpi.periods import (
    GRAINS,
    MAX_BUCKETS,
    RANGE,
    Period,
    current_period,
    default_range,
    is_period_text,
    is_range_text,
    local_today,
    parse_period,
    parse_range,
    period_of,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
# Wednesday 25 November 2026, ISO week 48 (23–29 Nov).
AS_OF = datetime(2026, 11, 25, 10, 0, tzinfo=BERLIN)
D = date


def span(start: date, end: date, grain: str, so_far: str = "") -> Period:
    return Period(start, end, grain, so_far)


# --- parse_period: every form, worked out by hand for AS_OF ---------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("this week", span(D(2026, 11, 23), D(2026, 11, 26), RANGE, "week")),
        ("last week", span(D(2026, 11, 16), D(2026, 11, 23), "week")),
        ("this month", span(D(2026, 11, 1), D(2026, 11, 26), RANGE, "month")),
        ("last month", span(D(2026, 10, 1), D(2026, 11, 1), "month")),
        ("previous month", span(D(2026, 10, 1), D(2026, 11, 1), "month")),
        ("prior month", span(D(2026, 10, 1), D(2026, 11, 1), "month")),
        ("  Last   MONTH ", span(D(2026, 10, 1), D(2026, 11, 1), "month")),
        ("this quarter", span(D(2026, 10, 1), D(2026, 11, 26), RANGE, "quarter")),
        ("last quarter", span(D(2026, 7, 1), D(2026, 10, 1), "quarter")),
        ("this year", span(D(2026, 1, 1), D(2026, 11, 26), RANGE, "year")),
        ("last year", span(D(2025, 1, 1), D(2026, 1, 1), "year")),
        ("ytd", span(D(2026, 1, 1), D(2026, 11, 26), RANGE, "year")),
        ("YTD", span(D(2026, 1, 1), D(2026, 11, 26), RANGE, "year")),
        ("year to date", span(D(2026, 1, 1), D(2026, 11, 26), RANGE, "year")),
        ("2026-10", span(D(2026, 10, 1), D(2026, 11, 1), "month")),
        ("2025-02", span(D(2025, 2, 1), D(2025, 3, 1), "month")),
        ("2026-Q3", span(D(2026, 7, 1), D(2026, 10, 1), "quarter")),
        ("2026-q1", span(D(2026, 1, 1), D(2026, 4, 1), "quarter")),
        ("q3", span(D(2026, 7, 1), D(2026, 10, 1), "quarter")),
        ("Q3 2025", span(D(2025, 7, 1), D(2025, 10, 1), "quarter")),
        # Q4 2026 began on 1 October, so it is the latest Q4 that has started.
        ("q4", span(D(2026, 10, 1), D(2026, 11, 26), RANGE, "quarter")),
        ("2026-W44", span(D(2026, 10, 26), D(2026, 11, 2), "week")),
        ("w44", span(D(2026, 10, 26), D(2026, 11, 2), "week")),
        ("week 44", span(D(2026, 10, 26), D(2026, 11, 2), "week")),
        ("W1 2026", span(D(2025, 12, 29), D(2026, 1, 5), "week")),
        ("w48", span(D(2026, 11, 23), D(2026, 11, 26), RANGE, "week")),
        # 2026-W49 starts on 30 November, after AS_OF: the latest started is 2025-W49.
        ("w49", span(D(2025, 12, 1), D(2025, 12, 8), "week")),
        # 2026-W53 has not started yet on AS_OF; the latest week 53 before it was 2020's.
        ("w53", span(D(2020, 12, 28), D(2021, 1, 4), "week")),
        ("2026", span(D(2026, 1, 1), D(2026, 11, 26), RANGE, "year")),
        ("2026-10-05", span(D(2026, 10, 5), D(2026, 10, 6), "day")),
        ("yesterday", span(D(2026, 11, 24), D(2026, 11, 25), "day")),
        ("today", span(D(2026, 11, 25), D(2026, 11, 26), "day")),
        ("october", span(D(2026, 10, 1), D(2026, 11, 1), "month")),
        ("Oct", span(D(2026, 10, 1), D(2026, 11, 1), "month")),
        ("november", span(D(2026, 11, 1), D(2026, 11, 26), RANGE, "month")),
        # December 2026 has not started: the latest December is 2025's.
        ("december", span(D(2025, 12, 1), D(2026, 1, 1), "month")),
        ("sept", span(D(2026, 9, 1), D(2026, 10, 1), "month")),
        ("october 2025", span(D(2025, 10, 1), D(2025, 11, 1), "month")),
        ("2026-01-05..2026-02-01", span(D(2026, 1, 5), D(2026, 2, 1), RANGE)),
        ("ytd:2026-01-01..2026-03-01", span(D(2026, 1, 1), D(2026, 3, 1), RANGE, "year")),
        ("mtd:2026-10-01..2026-10-11", span(D(2026, 10, 1), D(2026, 10, 11), RANGE, "month")),
        ("qtd:2026-07-01..2026-08-01", span(D(2026, 7, 1), D(2026, 8, 1), RANGE, "quarter")),
        ("wtd:2026-11-16..2026-11-18", span(D(2026, 11, 16), D(2026, 11, 18), RANGE, "week")),
        ("last month.", span(D(2026, 10, 1), D(2026, 11, 1), "month")),
    ],
)
def test_parse_period(text, expected):
    assert parse_period(text, AS_OF, BERLIN) == expected


@pytest.mark.parametrize(
    ("text", "cadence", "expected"),
    [
        ("last", "week", span(D(2026, 11, 16), D(2026, 11, 23), "week")),
        ("previous", "quarter", span(D(2026, 7, 1), D(2026, 10, 1), "quarter")),
        ("this", "month", span(D(2026, 11, 1), D(2026, 11, 26), RANGE, "month")),
        ("last", "day", span(D(2026, 11, 24), D(2026, 11, 25), "day")),
        # An explicit unit beats the cadence.
        ("last month", "week", span(D(2026, 10, 1), D(2026, 11, 1), "month")),
    ],
)
def test_parse_period_bare_word_uses_cadence(text, cadence, expected):
    assert parse_period(text, AS_OF, BERLIN, cadence) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-13", "no month 13"),
        ("2026-00", "no month 0"),
        ("2026-W54", "2026 has 53 ISO weeks; there is no week 54"),
        ("2025-W53", "2025 has 52 ISO weeks; there is no week 53"),
        ("w0", "no week 0"),
        ("w54", "no week 54"),
        ("2026-02-29", "no day 2026-02-29"),
        ("q5", "Q1 to Q4"),
        ("q0", "Q1 to Q4"),
        ("2027", "2027 hasn't started yet"),
        ("2026-12", "December 2026 hasn't started yet"),
        ("2026-W49", "hasn't started yet"),
        ("1850", "outside the years"),
        ("foo", "can't read “foo”"),
        ("", "can't read"),
        ("next month", "can't read"),
        ("12w", "is a range"),
        ("2026-10-05..2026-10-01", "end after it starts"),
        ("ytd:2026-02-01..2026-03-01", "1 January"),
        ("mtd:2026-10-02..2026-10-11", "the first day of its month"),
        ("mtd:2026-10-01..2026-11-02", "within one month"),
    ],
)
def test_parse_period_rejects(text, message):
    with pytest.raises(PeriodError, match=message) as caught:
        parse_period(text, AS_OF, BERLIN)
    assert caught.value.example.startswith("/kpi ")


def test_iso_week_53_of_2026():
    # 1 Jan 2026 is a Thursday, so 2026 has 53 ISO weeks; the last runs 28 Dec – 3 Jan.
    week_53 = span(D(2026, 12, 28), D(2027, 1, 4), "week")
    as_of = datetime(2027, 1, 5, 9, 0, tzinfo=BERLIN)
    assert parse_period("2026-W53", as_of, BERLIN) == week_53
    assert parse_period("w53", as_of, BERLIN) == week_53
    assert period_of("week", D(2027, 1, 3)) == week_53
    assert current_period("week", as_of, BERLIN) == week_53
    assert week_53.next().key == "2027-W01"


def test_parse_period_echo_is_short():
    with pytest.raises(PeriodError) as caught:
        parse_period("x" * 500, AS_OF, BERLIN)
    assert "x" * 80 not in str(caught.value)


# --- parse_range ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cadence", "count", "first", "last"),
    [
        # The latest complete week on AS_OF is W47 (16–22 Nov); W36 starts on 31 Aug.
        ("12w", "month", 12, "2026-W36", "2026-W47"),
        ("last 12 weeks", "month", 12, "2026-W36", "2026-W47"),
        ("12 weeks", "month", 12, "2026-W36", "2026-W47"),
        ("6m", "week", 6, "2026-05", "2026-10"),
        ("past 6 months", "week", 6, "2026-05", "2026-10"),
        # 24 November back 89 days is 27 August.
        ("90d", "month", 90, "2026-08-27", "2026-11-24"),
        ("4q", "month", 4, "2025-Q4", "2026-Q3"),
        ("previous 3 quarters", "month", 3, "2026-Q1", "2026-Q3"),
        ("2y", "month", 2, "2024", "2025"),
        # A single period gives the complete buckets of the cadence inside it.
        ("2026", "month", 10, "2026-01", "2026-10"),
        ("this quarter", "month", 1, "2026-10", "2026-10"),
        ("last month", "week", 3, "2026-W41", "2026-W43"),  # weeks wholly in October
        # Blank text is the default: 12 periods of the cadence.
        ("", "week", 12, "2026-W36", "2026-W47"),
    ],
)
def test_parse_range(text, cadence, count, first, last):
    buckets = parse_range(text, AS_OF, BERLIN, cadence)
    assert (len(buckets), buckets[0].key, buckets[-1].key) == (count, first, last)
    assert all(a.end == b.start for a, b in zip(buckets, buckets[1:], strict=False))


@pytest.mark.parametrize(
    ("text", "cadence", "message"),
    [
        ("0w", "month", "at least one week"),
        ("401w", "month", f"too long; the most is {MAX_BUCKETS} weeks"),
        ("99999999999999999999d", "month", "too long"),
        ("12x", "month", "can't read “12x” as a range"),
        ("this quarter", "quarter", "no complete quarter in Q4 2026"),
        ("2026-12", "month", "hasn't started"),
        ("2020-01-01..2022-01-01", "day", "too long"),
    ],
)
def test_parse_range_rejects(text, cadence, message):
    with pytest.raises(PeriodError, match=message):
        parse_range(text, AS_OF, BERLIN, cadence)


def test_default_range_is_twelve_complete_periods_of_the_cadence():
    buckets = default_range("month", AS_OF, BERLIN)
    assert len(buckets) == 12
    assert buckets[0] == span(D(2025, 11, 1), D(2025, 12, 1), "month")
    assert buckets[-1] == current_period("month", AS_OF, BERLIN)


@pytest.mark.parametrize("text", ["last month", "2026-W44", "q3 2026", "oct", "ytd", "2026-13"])
def test_is_period_text(text):
    assert is_period_text(text)
    assert not is_range_text(text)


@pytest.mark.parametrize("text", ["12w", "last 12 weeks", "past 6 months", "90 d", "4Q"])
def test_is_range_text(text):
    assert is_range_text(text)
    assert not is_period_text(text)


@pytest.mark.parametrize("text", ["dso", "by", "branch=Berlin", "12", "weeks", ""])
def test_other_text_is_neither(text):
    assert not is_period_text(text)
    assert not is_range_text(text)


# --- labels, keys, neighbours, lengths ------------------------------------------------


@pytest.mark.parametrize(
    ("period", "label", "key"),
    [
        (period_of("month", D(2026, 10, 15)), "October 2026", "2026-10"),
        (period_of("week", D(2026, 10, 28)), "week 44 2026 (26 Oct – 1 Nov)", "2026-W44"),
        (period_of("week", D(2026, 1, 1)), "week 1 2026 (29 Dec – 4 Jan)", "2026-W01"),
        (period_of("week", D(2027, 1, 1)), "week 53 2026 (28 Dec – 3 Jan)", "2026-W53"),
        (period_of("quarter", D(2026, 8, 1)), "Q3 2026", "2026-Q3"),
        (period_of("year", D(2026, 8, 1)), "2026", "2026"),
        (period_of("day", D(2026, 10, 26)), "26 Oct 2026", "2026-10-26"),
        (
            span(D(2026, 1, 1), D(2026, 11, 26), RANGE, "year"),
            "1 Jan – 25 Nov 2026",
            "ytd:2026-01-01..2026-11-26",
        ),
        (
            span(D(2026, 1, 1), D(2026, 11, 26), RANGE),
            "1 Jan – 25 Nov 2026",
            "2026-01-01..2026-11-26",
        ),
        (
            span(D(2025, 12, 1), D(2026, 1, 5), RANGE),
            "1 Dec 2025 – 4 Jan 2026",
            "2025-12-01..2026-01-05",
        ),
    ],
)
def test_label_and_key(period, label, key):
    assert (period.label, period.key) == (label, key)


@pytest.mark.parametrize(
    ("period", "previous", "following"),
    [
        (
            period_of("month", D(2026, 1, 1)),
            span(D(2025, 12, 1), D(2026, 1, 1), "month"),
            span(D(2026, 2, 1), D(2026, 3, 1), "month"),
        ),
        (
            period_of("quarter", D(2026, 1, 1)),
            span(D(2025, 10, 1), D(2026, 1, 1), "quarter"),
            span(D(2026, 4, 1), D(2026, 7, 1), "quarter"),
        ),
        (
            period_of("week", D(2026, 12, 30)),
            span(D(2026, 12, 21), D(2026, 12, 28), "week"),
            span(D(2027, 1, 4), D(2027, 1, 11), "week"),
        ),
        (
            period_of("day", D(2028, 3, 1)),
            span(D(2028, 2, 29), D(2028, 3, 1), "day"),
            span(D(2028, 3, 2), D(2028, 3, 3), "day"),
        ),
        (
            period_of("year", D(2026, 5, 5)),
            span(D(2025, 1, 1), D(2026, 1, 1), "year"),
            span(D(2027, 1, 1), D(2028, 1, 1), "year"),
        ),
        # A plain range: the same number of days just before and just after.
        (
            span(D(2026, 1, 5), D(2026, 2, 1), RANGE),
            span(D(2025, 12, 9), D(2026, 1, 5), RANGE),
            span(D(2026, 2, 1), D(2026, 2, 28), RANGE),
        ),
        # Year to date: the same span a year before and after.
        (
            span(D(2026, 1, 1), D(2026, 11, 26), RANGE, "year"),
            span(D(2025, 1, 1), D(2025, 11, 26), RANGE, "year"),
            span(D(2027, 1, 1), D(2027, 11, 26), RANGE, "year"),
        ),
        # A month, quarter or week so far: the same number of days of the one before and after,
        # as many as it has.
        (
            span(D(2026, 11, 1), D(2026, 11, 26), RANGE, "month"),
            span(D(2026, 10, 1), D(2026, 10, 26), RANGE, "month"),
            span(D(2026, 12, 1), D(2026, 12, 26), RANGE, "month"),
        ),
        (
            span(D(2026, 3, 1), D(2026, 3, 31), RANGE, "month"),  # 1–30 March
            span(D(2026, 2, 1), D(2026, 3, 1), RANGE, "month"),  # February has 28 days
            span(D(2026, 4, 1), D(2026, 5, 1), RANGE, "month"),
        ),
        (
            span(D(2026, 10, 1), D(2026, 11, 26), RANGE, "quarter"),  # 56 days of Q4
            span(D(2026, 7, 1), D(2026, 8, 26), RANGE, "quarter"),
            span(D(2027, 1, 1), D(2027, 2, 26), RANGE, "quarter"),
        ),
        (
            span(D(2026, 11, 23), D(2026, 11, 26), RANGE, "week"),
            span(D(2026, 11, 16), D(2026, 11, 19), RANGE, "week"),
            span(D(2026, 11, 30), D(2026, 12, 3), RANGE, "week"),
        ),
        # Through 29 February becomes through 28 February in a common year.
        (
            span(D(2028, 1, 1), D(2028, 3, 1), RANGE, "year"),
            span(D(2027, 1, 1), D(2027, 3, 1), RANGE, "year"),
            span(D(2029, 1, 1), D(2029, 3, 1), RANGE, "year"),
        ),
    ],
)
def test_previous_and_next(period, previous, following):
    assert (period.previous(), period.next()) == (previous, following)


@pytest.mark.parametrize(
    ("period", "days"),
    [
        (period_of("quarter", D(2026, 2, 1)), 90),
        (period_of("quarter", D(2026, 5, 1)), 91),
        (period_of("quarter", D(2026, 8, 1)), 92),
        (period_of("quarter", D(2026, 11, 1)), 92),
        (period_of("quarter", D(2028, 2, 1)), 91),
        (period_of("month", D(2028, 2, 1)), 29),
        (period_of("year", D(2028, 2, 1)), 366),
        (period_of("week", D(2026, 2, 1)), 7),
        (span(D(2026, 1, 1), D(2026, 11, 26), RANGE, "year"), 329),
    ],
)
def test_days(period, days):
    assert period.days == days


def test_period_rejects_nonsense_construction():
    with pytest.raises(ValueError):
        Period(D(2026, 1, 2), D(2026, 1, 2), "day")
    with pytest.raises(ValueError):
        Period(D(2026, 1, 1), D(2026, 1, 2), "fortnight")
    with pytest.raises(ValueError):
        period_of("fortnight", D(2026, 1, 1))


# --- the clock and time zones ---------------------------------------------------------


@pytest.mark.parametrize(
    ("cadence", "as_of", "tz", "expected"),
    [
        # 00:30 in Berlin on 1 November is still 31 October in UTC: local dates decide.
        ("month", datetime(2026, 11, 1, 0, 30, tzinfo=BERLIN), BERLIN, "2026-10"),
        ("month", datetime(2026, 11, 1, 0, 30, tzinfo=BERLIN), UTC, "2026-09"),
        ("month", datetime(2026, 11, 30, 23, 59, tzinfo=BERLIN), BERLIN, "2026-10"),
        ("week", datetime(2026, 11, 2, 8, 0, tzinfo=BERLIN), BERLIN, "2026-W44"),
        ("week", datetime(2026, 11, 1, 23, 59, tzinfo=BERLIN), BERLIN, "2026-W43"),
        ("day", datetime(2026, 11, 2, 0, 0, tzinfo=BERLIN), BERLIN, "2026-11-01"),
        ("quarter", datetime(2027, 1, 1, 0, 0, tzinfo=BERLIN), BERLIN, "2026-Q4"),
        ("year", datetime(2027, 1, 1, 0, 0, tzinfo=BERLIN), BERLIN, "2026"),
        ("year", datetime(2026, 12, 31, 23, 59, tzinfo=BERLIN), BERLIN, "2025"),
    ],
)
def test_current_period_is_latest_complete(cadence, as_of, tz, expected):
    assert current_period(cadence, as_of, tz).key == expected


def test_local_today_needs_an_aware_moment():
    assert local_today(datetime(2026, 10, 31, 23, 30, tzinfo=UTC), BERLIN) == D(2026, 11, 1)
    with pytest.raises(ValueError):
        local_today(datetime(2026, 10, 31, 23, 30), BERLIN)


def test_utc_bounds_of_a_berlin_month_start_at_local_midnight():
    # CEST (UTC+2) on 1 October, CET (UTC+1) from 25 October on.
    october = period_of("month", D(2026, 10, 1))
    assert october.utc_bounds(BERLIN) == (datetime(2026, 9, 30, 22), datetime(2026, 10, 31, 23))


def test_utc_bounds_in_utc_are_the_dates():
    october = period_of("month", D(2026, 10, 1))
    assert october.utc_bounds(UTC) == (datetime(2026, 10, 1), datetime(2026, 11, 1))


@pytest.mark.parametrize(
    ("tz", "day", "hours", "start"),
    [
        (BERLIN, D(2026, 3, 25), 167, datetime(2026, 3, 22, 23)),  # summer time from 29 Mar
        (BERLIN, D(2026, 10, 21), 169, datetime(2026, 10, 18, 22)),  # winter time from 25 Oct
        (BERLIN, D(2026, 6, 10), 168, datetime(2026, 6, 7, 22)),
        (NEW_YORK, D(2026, 3, 4), 167, datetime(2026, 3, 2, 5)),  # EDT from 8 Mar
        (NEW_YORK, D(2026, 10, 28), 169, datetime(2026, 10, 26, 4)),  # EST from 1 Nov
    ],
)
def test_utc_bounds_of_dst_weeks(tz, day, hours, start):
    begin, end = period_of("week", day).utc_bounds(tz)
    assert begin == start
    assert end - begin == timedelta(hours=hours)


def test_utc_bounds_when_midnight_is_skipped():
    # Chile springs forward at midnight: 6 Sep 2026 starts at 01:00 local (04:00 UTC).
    santiago = ZoneInfo("America/Santiago")
    begin, end = period_of("day", D(2026, 9, 6)).utc_bounds(santiago)
    assert (begin, end) == (datetime(2026, 9, 6, 4), datetime(2026, 9, 7, 3))


# --- properties -----------------------------------------------------------------------

days_in_range = st.dates(min_value=D(1950, 1, 1), max_value=D(2100, 12, 31))
grains = st.sampled_from(GRAINS)


def ranges() -> st.SearchStrategy[Period]:
    return st.builds(
        lambda start, length: Period(start, start + timedelta(days=length), RANGE),
        days_in_range,
        st.integers(min_value=1, max_value=800),
    )


def years_to_date() -> st.SearchStrategy[Period]:
    # A span through 29 February maps to 28 February and can't map back; leave it out.
    last_days = days_in_range.filter(lambda day: (day.month, day.day) != (2, 29))
    return last_days.map(
        lambda day: Period(D(day.year, 1, 1), day + timedelta(days=1), RANGE, "year")
    )


def weeks_months_quarters_so_far(*, shortest_only: bool = False) -> st.SearchStrategy[Period]:
    """A week, month or quarter up to a day. With `shortest_only`, no longer than the shortest
    of its grain: a longer one maps to a shorter neighbour whole and can't map back."""

    def so_far(grain: str, day: date) -> Period:
        return Period(period_of(grain, day).start, day + timedelta(days=1), RANGE, grain)

    periods = st.builds(so_far, st.sampled_from(["week", "month", "quarter"]), days_in_range)
    shortest = {"week": 7, "month": 28, "quarter": 89}
    return periods.filter(lambda p: p.days <= shortest[p.so_far]) if shortest_only else periods


@given(grains, st.integers(min_value=1950, max_value=2100))
@settings(max_examples=100)
def test_periods_of_a_grain_tile_a_year(grain, year):
    day, end = D(year, 1, 1), D(year + 1, 1, 1)
    period = period_of(grain, day)
    assert period.start <= day
    while period.end < end:
        following = period.next()
        assert following.start == period.end  # no gap, no overlap
        period = following
    while day < end:
        containing = period_of(grain, day)
        assert containing.start <= day < containing.end
        day += timedelta(days=1)


@given(
    st.one_of(
        st.builds(period_of, grains, days_in_range),
        ranges(),
        years_to_date(),
        weeks_months_quarters_so_far(shortest_only=True),
    )
)
@settings(max_examples=200)
def test_previous_and_next_are_inverse(period):
    assert period.previous().next() == period
    assert period.next().previous() == period
    assert period.previous() < period < period.next()


@given(
    st.one_of(
        st.builds(period_of, grains, days_in_range),
        ranges(),
        years_to_date(),
        weeks_months_quarters_so_far(),
    )
)
@settings(max_examples=200)
def test_key_round_trips(period):
    later = datetime(2101, 1, 1, tzinfo=UTC)
    assert parse_period(period.key, later, UTC) == period


@given(st.text(max_size=40))
@settings(max_examples=200)
def test_arbitrary_text_is_a_period_or_a_period_error(text):
    for parse in (
        lambda: parse_period(text, AS_OF, BERLIN),
        lambda: parse_range(text, AS_OF, BERLIN, "month"),
    ):
        try:
            parse()
        except PeriodError:
            pass
