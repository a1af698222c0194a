"""Periods in the organisation's time zone, named by local calendar dates.

The store keeps rollups keyed by local date, so a `Period` is a half-open span of local
dates; `utc_bounds` turns it into instants only where raw timestamps must be filtered.
Nothing here reads the clock: callers pass `as_of` (aware) and the organisation's `tz`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from kpi.errors import PeriodError

GRAINS = ("day", "week", "month", "quarter", "year")
RANGE = "range"
MAX_BUCKETS = 400
# A period phrase is at most three words ("last 12 weeks", "week 44 2026", "year to date").
MAX_PHRASE_WORDS = 3
DEFAULT_BUCKETS = 12
# Years outside this window are typos, and keeping to it keeps date arithmetic far from
# date.min / date.max.
MIN_YEAR, MAX_YEAR = 1900, 2999

# English on purpose: calendar.month_name follows the process locale.
MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
MONTH_WORDS = {name.lower(): number for number, name in enumerate(MONTH_NAMES, 1)} | {
    name[:3].lower(): number for number, name in enumerate(MONTH_NAMES, 1)
}
MONTH_WORDS["sept"] = 9

PERIOD_EXAMPLE = "/kpi dso last month"
DAY_EXAMPLE = "/kpi dso 2026-10-05"
WEEK_EXAMPLE = "/kpi dso 2026-W44"
RANGE_EXAMPLE = "/kpi trend dso 12w"
ONE_DAY = timedelta(days=1)
# Periods still in progress are cut at today: their keys' prefixes, by grain.
TO_DATE = {"year": "ytd", "quarter": "qtd", "month": "mtd", "week": "wtd"}


@dataclass(frozen=True, order=True)
class Period:
    """Local dates `start` (inclusive) to `end` (exclusive) of one grain, or a "range".

    `so_far` names the grain of a range that is a week, month, quarter or year up to a day (up
    to today, when it is still in progress): its previous period is the same span of the one
    before (year to date: the same calendar days a year earlier), not the span just before it.
    """

    start: date
    end: date
    grain: str
    so_far: str = ""

    def __post_init__(self) -> None:
        if self.grain not in GRAINS and self.grain != RANGE:
            raise ValueError(f"unknown grain {self.grain!r}")
        if self.end <= self.start:
            raise ValueError(f"empty period {self.start}..{self.end}")
        if self.so_far and (self.so_far not in TO_DATE or self.grain != RANGE):
            raise ValueError(f"a {self.so_far!r} to date must be a range")

    @property
    def ytd(self) -> bool:
        return self.so_far == "year"

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def last_day(self) -> date:
        return self.end - ONE_DAY

    @property
    def label(self) -> str:
        start, last = self.start, self.last_day
        if self.grain == "week":
            iso = start.isocalendar()
            return f"week {iso.week} {iso.year} ({_day_month(start)} – {_day_month(last)})"
        if self.grain == "month":
            return f"{MONTH_NAMES[start.month - 1]} {start.year}"
        if self.grain == "quarter":
            return f"Q{_quarter_of(start)} {start.year}"
        if self.grain == "year":
            return str(start.year)
        if self.days == 1:
            return _day_month_year(start)
        if start.year == last.year:
            return f"{_day_month(start)} – {_day_month_year(last)}"
        return f"{_day_month_year(start)} – {_day_month_year(last)}"

    @property
    def key(self) -> str:
        """Canonical text; `parse_period(p.key, ...)` gives `p` back."""
        start = self.start
        if self.grain == "day":
            return start.isoformat()
        if self.grain == "week":
            iso = start.isocalendar()
            return f"{iso.year}-W{iso.week:02d}"
        if self.grain == "month":
            return f"{start.year}-{start.month:02d}"
        if self.grain == "quarter":
            return f"{start.year}-Q{_quarter_of(start)}"
        if self.grain == "year":
            return str(start.year)
        span = f"{start.isoformat()}..{self.end.isoformat()}"
        return f"{TO_DATE[self.so_far]}:{span}" if self.so_far else span

    def previous(self) -> Period:
        return self._shift(-1)

    def next(self) -> Period:
        return self._shift(1)

    def utc_bounds(self, tz: tzinfo) -> tuple[datetime, datetime]:
        """Naive UTC instants of the local midnights that open and close the period."""
        return _utc_midnight(self.start, tz), _utc_midnight(self.end, tz)

    def _shift(self, step: int) -> Period:
        if self.grain == "day":
            return period_of("day", self.start + step * ONE_DAY)
        if self.grain == "week":
            return period_of("week", self.start + step * timedelta(weeks=1))
        if self.grain in ("month", "quarter", "year"):
            months = {"month": 1, "quarter": 3, "year": 12}[self.grain]
            return period_of(self.grain, _add_months(self.start, step * months))
        if self.ytd:
            return _year_to_date(_same_day_in_year(self.last_day, self.start.year + step))
        if self.so_far:
            whole = period_of(self.so_far, self.start)._shift(step)
            days = timedelta(days=min(self.days, whole.days))
            return Period(whole.start, whole.start + days, RANGE, self.so_far)
        length = step * timedelta(days=self.days)
        return Period(self.start + length, self.end + length, RANGE)


def period_of(grain: str, day: date) -> Period:
    """The period of `grain` that contains the local date `day` (weeks run Monday–Sunday)."""
    if grain == "day":
        return Period(day, day + ONE_DAY, "day")
    if grain == "week":
        monday = day - timedelta(days=day.weekday())
        return Period(monday, monday + timedelta(weeks=1), "week")
    if grain == "month":
        first = day.replace(day=1)
        return Period(first, _add_months(first, 1), "month")
    if grain == "quarter":
        first = date(day.year, 3 * (_quarter_of(day) - 1) + 1, 1)
        return Period(first, _add_months(first, 3), "quarter")
    if grain == "year":
        return Period(date(day.year, 1, 1), date(day.year + 1, 1, 1), "year")
    raise ValueError(f"unknown grain {grain!r}; expected one of {', '.join(GRAINS)}")


def local_today(as_of: datetime, tz: tzinfo) -> date:
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        # A naive moment would silently be read in the server's zone.
        raise ValueError("as_of must be timezone-aware")
    return as_of.astimezone(tz).date()


def current_period(cadence: str, as_of: datetime, tz: tzinfo) -> Period:
    """The latest complete period of `cadence`: the one before the period containing today."""
    return period_of(cadence, local_today(as_of, tz)).previous()


def default_range(cadence: str, as_of: datetime, tz: tzinfo) -> list[Period]:
    """The trend shown when none is asked for: the last 12 complete periods of the cadence."""
    return _latest_complete(cadence, DEFAULT_BUCKETS, local_today(as_of, tz))


def is_period_text(text: str) -> bool:
    """Whether `text` has the shape of one period (it may still be invalid, like 2026-13)."""
    phrase = _normalise(text)
    return any(pattern.fullmatch(phrase) for pattern, _ in _PERIOD_FORMS)


def is_range_text(text: str) -> bool:
    """Whether `text` has the shape of a trend range such as `12w` or `last 6 months`."""
    return _RANGE_PATTERN.fullmatch(_normalise(text)) is not None


def parse_period(text: str, as_of: datetime, tz: tzinfo, cadence: str = "month") -> Period:
    """Read one period as users type it; `cadence` fills in a bare `last` or `this`."""
    phrase = _normalise(text)
    today = local_today(as_of, tz)
    if _RANGE_PATTERN.fullmatch(phrase):
        raise PeriodError(
            f"“{_echo(text)}” is a range of periods; ask for one period, like `last month`, "
            "or use it with `trend`.",
            example=RANGE_EXAMPLE,
        )
    for pattern, build in _PERIOD_FORMS:
        match = pattern.fullmatch(phrase)
        if match:
            return _so_far(_started(build(match, today, cadence), today), today)
    raise PeriodError(
        f"I can't read “{_echo(text)}” as a period. "
        "Try `last month`, `this quarter`, `2026-10`, `2026-Q3`, `2026-W44` or `ytd`.",
        example=PERIOD_EXAMPLE,
    )


def parse_range(text: str, as_of: datetime, tz: tzinfo, cadence: str) -> list[Period]:
    """The buckets of a trend, oldest first, all complete.

    `12w` is the 12 latest complete weeks; a single period (`2026`, `this year`) is the
    complete `cadence` periods inside it; blank text is the default range.
    """
    phrase = _normalise(text)
    today = local_today(as_of, tz)
    if not phrase:
        return _latest_complete(cadence, DEFAULT_BUCKETS, today)
    match = _RANGE_PATTERN.fullmatch(phrase)
    if match:
        grain = _UNIT_GRAINS[match["unit"][0]]
        return _latest_complete(grain, _bucket_count(match["count"], grain), today)
    if is_period_text(phrase):
        return _buckets_within(parse_period(phrase, as_of, tz, cadence), cadence, today)
    raise PeriodError(
        f"I can't read “{_echo(text)}” as a range. Try `12w`, `6m`, `90d` or `last 4 quarters`.",
        example=RANGE_EXAMPLE,
    )


# --- building periods from matched text -------------------------------------------------

Builder = Callable[[re.Match[str], date, str], Period]


def _relative(match: re.Match[str], today: date, cadence: str) -> Period:
    containing = period_of(match["unit"] or cadence, today)
    return containing if match["rel"] in ("this", "current") else containing.previous()


def _named_day(match: re.Match[str], today: date, cadence: str) -> Period:
    if match[0] == "today":
        return period_of("day", today)
    if match[0] == "yesterday":
        return period_of("day", today - ONE_DAY)
    return _year_to_date(today)


def _day_key(match: re.Match[str], today: date, cadence: str) -> Period:
    year = _year(match["year"])
    try:
        day = date(year, int(match["month"]), int(match["day"]))
    except ValueError:
        raise PeriodError(f"There is no day {_echo(match[0])}.", example=DAY_EXAMPLE) from None
    return period_of("day", day)


def _month_key(match: re.Match[str], today: date, cadence: str) -> Period:
    return period_of("month", date(_year(match["year"]), _month(match["month"]), 1))


def _month_name(match: re.Match[str], today: date, cadence: str) -> Period:
    month = MONTH_WORDS[match["name"]]
    if match["year"]:
        return period_of("month", date(_year(match["year"]), month, 1))
    return _latest_started(lambda year: period_of("month", date(year, month, 1)), today)


def _quarter(match: re.Match[str], today: date, cadence: str) -> Period:
    quarter = int(match["quarter"] or match["quarter2"])
    if not 1 <= quarter <= 4:
        raise PeriodError("Quarters run Q1 to Q4, like 2026-Q3.", example="/kpi dso 2026-Q3")
    year_text = match["year"] or match["year2"]
    month = 3 * (quarter - 1) + 1
    if year_text:
        return period_of("quarter", date(_year(year_text), month, 1))
    return _latest_started(lambda year: period_of("quarter", date(year, month, 1)), today)


def _week(match: re.Match[str], today: date, cadence: str) -> Period:
    week = int(match["week"] or match["week2"])
    year_text = match["year"] or match["year2"]
    if year_text:
        return _iso_week(_year(year_text), week)
    if not 1 <= week <= 53:
        raise PeriodError(f"There is no week {week}; ISO weeks run 1 to 53.", example=WEEK_EXAMPLE)
    # ISO week 53 exists only in some years: step back until one has it.
    return _latest_started(lambda year: _iso_week_or_none(year, week), today)


def _year_key(match: re.Match[str], today: date, cadence: str) -> Period:
    return period_of("year", date(_year(match[0]), 1, 1))


def _span_key(match: re.Match[str], today: date, cadence: str) -> Period:
    try:
        start, end = date.fromisoformat(match["start"]), date.fromisoformat(match["end"])
    except ValueError:
        raise PeriodError(
            f"There is no such day in “{_echo(match[0])}”.", example=PERIOD_EXAMPLE
        ) from None
    _year(match["start"][:4])
    _year(match["end"][:4])
    if end <= start:
        raise PeriodError("A span must end after it starts.", example=PERIOD_EXAMPLE)
    if not match["so_far"]:
        return Period(start, end, RANGE)
    grain = next(g for g, prefix in TO_DATE.items() if prefix == match["so_far"])
    whole = period_of(grain, start)
    if start != whole.start or end > whole.end:
        first = "1 January" if grain == "year" else f"the first day of its {grain}"
        raise PeriodError(
            f"A {grain}-to-date span runs from {first} within one {grain}.",
            example="/kpi dso ytd",
        )
    return Period(start, end, RANGE, grain)


_PERIOD_FORMS: list[tuple[re.Pattern[str], Builder]] = [
    (
        re.compile(
            r"(?P<rel>this|current|last|previous|prior|past|latest)"
            r"(?: (?P<unit>day|week|month|quarter|year))?"
        ),
        _relative,
    ),
    (re.compile(r"today|yesterday|ytd|year to date|year-to-date"), _named_day),
    (re.compile(r"(?P<year>[0-9]{4})-(?P<month>[0-9]{1,2})-(?P<day>[0-9]{1,2})"), _day_key),
    (re.compile(r"(?P<year>[0-9]{4})-(?P<month>[0-9]{1,2})"), _month_key),
    (
        re.compile(
            r"(?P<year>[0-9]{4})[- ]?q(?P<quarter>[0-9])"
            r"|q(?P<quarter2>[0-9])(?:[- ](?P<year2>[0-9]{4}))?"
        ),
        _quarter,
    ),
    (
        re.compile(
            r"(?P<year>[0-9]{4})-?w(?P<week>[0-9]{1,2})"
            r"|(?:w|week )(?P<week2>[0-9]{1,2})(?: (?P<year2>[0-9]{4}))?"
        ),
        _week,
    ),
    (re.compile(r"[0-9]{4}"), _year_key),
    (re.compile(rf"(?P<name>{'|'.join(MONTH_WORDS)})(?: (?P<year>[0-9]{{4}}))?"), _month_name),
    (
        re.compile(
            r"(?:(?P<so_far>ytd|qtd|mtd|wtd):)?(?P<start>[0-9]{4}-[0-9]{2}-[0-9]{2})\.\.(?P<end>[0-9]{4}-[0-9]{2}-[0-9]{2})"
        ),
        _span_key,
    ),
]

_RANGE_PATTERN = re.compile(
    r"(?:(?:last|past|previous|prior) )?(?P<count>[0-9]+) ?"
    r"(?P<unit>d|days?|w|wks?|weeks?|m|mos?|months?|q|qtrs?|quarters?|y|yrs?|years?)"
)
_UNIT_GRAINS = {"d": "day", "w": "week", "m": "month", "q": "quarter", "y": "year"}


# --- helpers ---------------------------------------------------------------------------


def _normalise(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".,;:!?")


def _echo(text: str) -> str:
    """User text quoted back in a message, cut so one message stays short."""
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:79] + "…"


def _year(text: str) -> int:
    year = int(text)
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise PeriodError(
            f"{year} is outside the years I know ({MIN_YEAR}–{MAX_YEAR}).", example=PERIOD_EXAMPLE
        )
    return year


def _month(text: str) -> int:
    month = int(text)
    if not 1 <= month <= 12:
        raise PeriodError(
            f"There is no month {month}; months run 01 to 12, like 2026-10.",
            example="/kpi dso 2026-10",
        )
    return month


def _weeks_in(iso_year: int) -> int:
    # 28 December always falls in the last ISO week of its year.
    return date(iso_year, 12, 28).isocalendar().week


def _iso_week_or_none(iso_year: int, week: int) -> Period | None:
    if not 1 <= week <= _weeks_in(iso_year):
        return None
    return period_of("week", date.fromisocalendar(iso_year, week, 1))


def _iso_week(iso_year: int, week: int) -> Period:
    period = _iso_week_or_none(iso_year, week)
    if period is None:
        raise PeriodError(
            f"{iso_year} has {_weeks_in(iso_year)} ISO weeks; there is no week {week}.",
            example=WEEK_EXAMPLE,
        )
    return period


def _latest_started(candidate: Callable[[int], Period | None], today: date) -> Period:
    """The latest period, over recent years, that has started by `today` (for `q3`, `oct`)."""
    # Start a year ahead: ISO week 1 of next year can begin in late December.
    for year in range(today.year + 1, today.year - 8, -1):
        period = candidate(year)
        if period is not None and period.start <= today:
            return period
    raise PeriodError("I can't find that period in recent years.", example=PERIOD_EXAMPLE)


def _so_far(period: Period, today: date) -> Period:
    """A week, month, quarter or year still in progress, up to today: its totals cover only
    the days so far, so `days` must count those alone (DSO on 27 days of November's sales
    times November's 30 days overstated it by a ninth)."""
    if period.grain in TO_DATE and period.start <= today < period.last_day:
        return Period(period.start, today + ONE_DAY, RANGE, period.grain)
    return period


def _started(period: Period, today: date) -> Period:
    if period.start > today:
        raise PeriodError(f"{period.label} hasn't started yet.", example=PERIOD_EXAMPLE)
    return period


def _bucket_count(digits: str, grain: str) -> int:
    # Check the length first: int() of thousands of digits is slow and may refuse.
    count = MAX_BUCKETS + 1 if len(digits) > 6 else int(digits)
    if count > MAX_BUCKETS:
        raise PeriodError(
            f"That range is too long; the most is {MAX_BUCKETS} {grain}s.", example=RANGE_EXAMPLE
        )
    if count == 0:
        raise PeriodError(f"A range needs at least one {grain}, like 12w.", example=RANGE_EXAMPLE)
    return count


def _latest_complete(grain: str, count: int, today: date) -> list[Period]:
    buckets = [period_of(grain, today).previous()]
    while len(buckets) < count:
        buckets.append(buckets[-1].previous())
    return buckets[::-1]


def _buckets_within(period: Period, cadence: str, today: date) -> list[Period]:
    """The complete `cadence` periods lying wholly inside `period`, oldest first."""
    bucket = period_of(cadence, period.start)
    if bucket.start < period.start:
        bucket = bucket.next()
    buckets: list[Period] = []
    while bucket.end <= period.end and bucket.end <= today:
        if len(buckets) == MAX_BUCKETS:
            raise PeriodError(
                f"That range is too long; the most is {MAX_BUCKETS} {cadence}s.",
                example=RANGE_EXAMPLE,
            )
        buckets.append(bucket)
        bucket = bucket.next()
    if not buckets:
        whole = period_of(period.so_far, period.start) if period.so_far else period
        raise PeriodError(
            f"There is no complete {cadence} in {whole.label} yet.", example=RANGE_EXAMPLE
        )
    return buckets


def _year_to_date(last_day: date) -> Period:
    return Period(date(last_day.year, 1, 1), last_day + ONE_DAY, RANGE, "year")


def _same_day_in_year(day: date, year: int) -> date:
    # 29 February becomes 28 February in a common year.
    try:
        return day.replace(year=year)
    except ValueError:
        return day.replace(year=year, day=28)


def _add_months(first_of_month: date, months: int) -> date:
    index = first_of_month.year * 12 + first_of_month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _quarter_of(day: date) -> int:
    return (day.month - 1) // 3 + 1


def _utc_midnight(day: date, tz: tzinfo) -> datetime:
    # A midnight skipped by DST resolves (fold=0) to the first instant of that local day.
    local = datetime.combine(day, time(), tzinfo=tz)
    return local.astimezone(UTC).replace(tzinfo=None)


def _day_month(day: date) -> str:
    return f"{day.day} {MONTH_NAMES[day.month - 1][:3]}"


def _day_month_year(day: date) -> str:
    return f"{_day_month(day)} {day.year}"
