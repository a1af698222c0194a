"""The demo year: deterministic, complete, and its storylines true as the KPIs compute them.

The storyline checks recompute the KPIs by hand from the generated records (plain sums and
averages over calendar periods), independently of kpi/demo.py's own bookkeeping.
"""

import math
from collections import defaultdict
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import func
from sqlmodel import select

from kpi import catalog
from kpi.db import session_scope
from kpi.demo import BRANCHES, demo_records, load_demo, storylines
from kpi.formulas import parse_formula
from kpi.models import Observation

AS_OF = date(2026, 11, 26)  # a Thursday: last complete week 2026-W47, month October, Q3
# Other moments the storylines must hold for: new year, a quarter start, mid-quarter.
MORE_AS_OF = [date(2026, 1, 1), date(2026, 10, 1), date(2027, 3, 15)]
DAY = timedelta(days=1)
SPEC = yaml.safe_load(catalog.BUILTIN.read_text(encoding="utf-8"))
MEASURES = SPEC["measures"]
KPIS = SPEC["kpis"]
STORY_KPIS = {
    "dso",
    "helpdesk_resolution_time",
    "employee_turnover_rate",
    "system_uptime",
    "employee_satisfaction",
}


@pytest.fixture(scope="module")
def records():
    return list(demo_records(AS_OF))


@pytest.fixture(scope="module", params=[AS_OF, *MORE_AS_OF], ids=str)
def year(request):
    """(as_of, records) for several moments, so the stories do not depend on the calendar."""
    return request.param, list(demo_records(request.param))


# Periods and hand-made aggregation ---------------------------------------------------------


def month_start(day: date, back: int = 0) -> date:
    index = day.year * 12 + day.month - 1 - back
    return date(index // 12, index % 12 + 1, 1)


def last_month(as_of: date) -> tuple[date, date]:
    return month_start(as_of, 1), month_start(as_of)


def last_week(as_of: date) -> tuple[date, date]:
    end = as_of - as_of.weekday() * DAY
    return end - 7 * DAY, end


def last_quarter(as_of: date) -> tuple[date, date]:
    end = date(as_of.year, 3 * ((as_of.month - 1) // 3) + 1, 1)
    return month_start(end, 3), end


def in_period(records, measure, start, end, **where):
    """{series: [values in day order]} of one measure within [start, end)."""
    series = defaultdict(list)
    for name, day, value, dims in records:
        if name == measure and start <= day < end and where.items() <= dims.items():
            series[tuple(sorted(dims.items()))].append((day, value))
    return {key: [value for _day, value in sorted(points)] for key, points in series.items()}


def total(records, measure, start, end, **where):
    return sum(sum(values) for values in in_period(records, measure, start, end, **where).values())


def kpi_value(records, key, start, end, **where):
    """Each measure over time per series by its rule, then across series, then the formula."""
    rules = {"sum": sum, "avg": lambda v: sum(v) / len(v), "last": lambda v: v[-1]}
    values = {}
    formula = parse_formula(KPIS[key]["formula"], list(MEASURES))
    for measure in formula.measures:
        rule = MEASURES[measure]
        per_series = in_period(records, measure, start, end, **where).values()
        over = [rules[rule["over_time"]](v) for v in per_series]
        values[measure] = rules[rule.get("across", "sum")](over) if over else None
    return formula.evaluate(values, (end - start).days)


def status(key, value):
    kpi = KPIS[key]
    sign = 1 if kpi["better"] == "lower" else -1
    if sign * (value - kpi["target"]) <= 0:
        return "on_target"
    return "at_risk" if sign * (value - kpi["warn"]) <= 0 else "off_target"


# The records ------------------------------------------------------------------------------


def test_the_same_as_of_gives_the_same_records(records):
    assert list(demo_records(AS_OF)) == records


def test_every_measure_every_branch_a_year_of_whole_quarters_before_as_of(records):
    assert {r[0] for r in records} == set(MEASURES)
    days = {r[1] for r in records}
    # From 1 Oct 2025 (the quarter holding 26 Nov 2025, a year back) to the day before AS_OF.
    first = date(2025, 10, 1)
    assert days == {first + k * DAY for k in range((AS_OF - first).days)}
    assert AS_OF not in days and max(days) == AS_OF - DAY
    branches = defaultdict(set)
    for name, _day, _value, dims in records:
        branches[name].add(dims["branch"])
    assert all(found == set(BRANCHES) for found in branches.values()), branches


def test_one_value_per_series_and_day(records):
    keys = [(r[0], tuple(sorted(r[3].items())), r[1]) for r in records]
    assert len(keys) == len(set(keys))


def test_values_are_finite_non_negative_and_in_range(records):
    assert 50_000 <= len(records) <= 150_000
    assert all(math.isfinite(r[2]) and r[2] >= 0 for r in records)
    for name, day, value, _dims in records:
        if name == "satisfaction_score":
            assert 1 <= value <= 5 and day.day == 10
        if name == "monitored_minutes":
            assert value == 1440
        if name == "uptime_minutes":
            assert value <= 1440
        if name in ("ap_balance", "headcount"):
            assert day.weekday() == 0  # sampled weekly
    assert {r[3]["team"] for r in records if r[0] == "finance_errors"} == {"AP", "AR"}
    assert {r[3]["team"] for r in records if r[0] == "tickets_resolved"} == {
        "Service desk",
        "Field",
    }


def test_finance_books_on_working_days_only(records):
    for name in ("credit_sales", "purchases", "finance_transactions", "invoices_processed"):
        assert all(r[1].weekday() < 5 for r in records if r[0] == name), name


def test_seasons_show(records):
    june = (date(2026, 6, 1), date(2026, 7, 1))
    assert total(records, "hires", date(2026, 7, 1), date(2026, 9, 1)) < total(
        records, "hires", date(2026, 4, 1), date(2026, 6, 1)
    )
    december = total(records, "complaints", date(2025, 12, 1), date(2026, 1, 1))
    assert december > total(records, "complaints", date(2026, 3, 1), date(2026, 4, 1))
    first_half = total(records, "credit_sales", date(2026, 6, 1), date(2026, 6, 16))
    assert total(records, "credit_sales", *june) - first_half > first_half  # quarter-end rush


# The storylines, by hand ------------------------------------------------------------------


def test_dso_is_off_target_because_of_madrid(year):
    as_of, records = year
    start, end = last_month(as_of)
    days = (end - start).days
    receivables = sum(  # the last snapshot of the month, summed over branches
        v for name, day, v, _ in records if name == "ar_balance" and day == end - DAY
    )
    dso = receivables / total(records, "credit_sales", start, end) * days
    assert dso > 55
    assert dso == pytest.approx(kpi_value(records, "dso", start, end))
    madrid = kpi_value(records, "dso", start, end, branch="Madrid")
    berlin = kpi_value(records, "dso", start, end, branch="Berlin")
    assert madrid > 90 > 45 > berlin
    assert kpi_value(records, "dso", *last_month(month_start(as_of, 1))) > 55
    assert kpi_value(records, "dso", month_start(as_of, 9), month_start(as_of, 8)) < 45


def test_helpdesk_is_off_target_for_weeks(year):
    as_of, records = year
    start, end = last_week(as_of)
    hours = total(records, "ticket_resolution_hours", start, end)
    assert hours / total(records, "tickets_resolved", start, end) > 24
    assert kpi_value(records, "helpdesk_resolution_time", start - 7 * DAY, start) > 24
    long_ago = start - 20 * 7 * DAY
    assert kpi_value(records, "helpdesk_resolution_time", long_ago, long_ago + 7 * DAY) < 8


def test_turnover_is_at_risk(year):
    as_of, records = year
    start, end = last_month(as_of)
    headcount = sum(sum(v) / len(v) for v in in_period(records, "headcount", start, end).values())
    rate = total(records, "separations", start, end) / headcount * 100
    assert 1.2 < rate < 1.5
    assert status("employee_turnover_rate", rate) == "at_risk"


def test_uptime_recovered_after_an_outage(year):
    as_of, records = year
    start, end = last_week(as_of)

    def uptime(start):
        end = start + 7 * DAY
        up = total(records, "uptime_minutes", start, end)
        return up / total(records, "monitored_minutes", start, end) * 100

    assert uptime(start) >= 99.9
    earlier = [uptime(start - k * 7 * DAY) for k in range(1, 20)]
    assert min(earlier) < 99.5
    assert all(u >= 99.9 for u in earlier[:4])  # recovered for a while, not by luck


def test_satisfaction_is_on_target_and_confidential(year):
    as_of, records = year
    start, end = last_quarter(as_of)
    branches = in_period(records, "satisfaction_score", start, end).values()
    score = sum(sum(v) / len(v) for v in branches) / len(branches)  # across: avg
    assert score >= 4.0
    assert KPIS["employee_satisfaction"]["visibility"] == ["C0HRLEAD"]


def test_every_other_kpi_is_on_target_in_its_last_complete_period(year):
    as_of, records = year
    periods = {"week": last_week, "month": last_month, "quarter": last_quarter}
    for key, kpi in KPIS.items():
        if key in STORY_KPIS:
            continue
        value = kpi_value(records, key, *periods[kpi["cadence"]](as_of))
        assert value is not None and status(key, value) == "on_target", (key, value)


# Loading ----------------------------------------------------------------------------------


def test_load_demo_twice_changes_nothing_the_second_time(catalog_engine, records):
    tz = ZoneInfo("Europe/Berlin")
    first = load_demo(catalog_engine, tz=tz, as_of=AS_OF)
    series = {(r[0], tuple(sorted(r[3].items()))) for r in records}
    assert (first.rows, first.measures, first.series) == (len(records), len(MEASURES), len(series))
    assert first.changed == len(records)
    assert (first.first_day, first.last_day) == (date(2025, 10, 1), date(2026, 11, 25))
    with session_scope(catalog_engine) as session:
        assert session.exec(select(func.count()).select_from(Observation)).one() == len(records)

    again = load_demo(catalog_engine, tz=tz, as_of=AS_OF)
    assert again.changed == 0 and again.rows == len(records)
    assert again.stories == first.stories


def test_the_stories_name_their_kpis_and_the_hr_channel(records):
    stories = storylines(records, AS_OF)
    for key in STORY_KPIS:
        assert any(line.startswith(f"{key}:") for line in stories), key
    assert any("C0HRLEAD" in line for line in stories)
    assert "October 2026" in stories[0] and "off target since July 2026" in stories[0]
    assert stories[-1] == "the other 10 KPIs are on target"
