"""KPI numbers against values worked out by hand, including the classic traps."""

from dataclasses import replace
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from kpi import scorecard
from kpi.aggregate import NO_SCOPE, Scope, first_days
from kpi.db import session_scope
from kpi.formulas import parse_formula
from kpi.importer import load_records
from kpi.periods import Period, period_of
from kpi.service import KpiService, Viewer
from kpi.values import (
    change_of,
    data_starts,
    evaluate,
    load_catalog,
    status_of,
    target_over,
    values,
)
from kpi.views import change_line

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
OCTOBER = period_of("month", date(2026, 10, 1))
LAST_WEEK = period_of("week", date(2026, 11, 16))
SEPTEMBER = period_of("month", date(2026, 9, 1))

RECORDS = [
    # Berlin: the balance falls to 300k by month end; a later, larger one is outside October.
    ("ar_balance", date(2026, 10, 15), 500_000, {"branch": "Berlin"}),
    ("ar_balance", date(2026, 10, 31), 300_000, {"branch": "Berlin"}),
    ("ar_balance", date(2026, 11, 2), 999_999, {"branch": "Berlin"}),
    ("credit_sales", date(2026, 10, 5), 100_000, {"branch": "Berlin"}),
    ("credit_sales", date(2026, 10, 20), 50_000, {"branch": "Berlin"}),
    ("ar_balance", date(2026, 10, 30), 100_000, {"branch": "Madrid"}),
    ("credit_sales", date(2026, 10, 10), 250_000, {"branch": "Madrid"}),
    # September, for the change: (200k + 100k) / (200k + 100k) × 30 = 30 days.
    ("ar_balance", date(2026, 9, 30), 200_000, {"branch": "Berlin"}),
    ("credit_sales", date(2026, 9, 3), 200_000, {"branch": "Berlin"}),
    ("ar_balance", date(2026, 9, 30), 100_000, {"branch": "Madrid"}),
    ("credit_sales", date(2026, 9, 3), 100_000, {"branch": "Madrid"}),
    # Error rate: Berlin 2/100, Madrid 8/900.
    ("finance_errors", date(2026, 10, 7), 2, {"branch": "Berlin"}),
    ("finance_transactions", date(2026, 10, 7), 100, {"branch": "Berlin"}),
    ("finance_errors", date(2026, 10, 8), 8, {"branch": "Madrid"}),
    ("finance_transactions", date(2026, 10, 8), 900, {"branch": "Madrid"}),
    # Satisfaction (across: avg): Berlin 4.0 and 4.4 → 4.2; Madrid 3.6.
    ("satisfaction_score", date(2026, 7, 10), 4.0, {"branch": "Berlin"}),
    ("satisfaction_score", date(2026, 8, 10), 4.4, {"branch": "Berlin"}),
    ("satisfaction_score", date(2026, 9, 10), 3.6, {"branch": "Madrid"}),
]


@pytest.fixture
def store(catalog_engine):
    load_records(catalog_engine, RECORDS, tz=UTC_ZONE)
    return catalog_engine


def kpi_value(engine, key, period, scope=NO_SCOPE):
    with session_scope(engine) as session:
        kpi = load_catalog(session).kpis[key]
        return values(session, kpi, [period], scope)


def test_dso_of_two_branches_is_total_receivables_over_total_sales_not_a_mean(store):
    found = kpi_value(store, "dso", OCTOBER)
    # (300,000 + 100,000) / (150,000 + 250,000) × 31 = 31.0; the mean of 62 and 12.4 is 37.2.
    assert found[(0, None)].value == pytest.approx(31.0)
    assert found[(0, None)].inputs == {"ar_balance": 400_000, "credit_sales": 400_000}
    assert found[(0, None)].days == 31


def test_last_takes_the_latest_observation_inside_the_period(store):
    found = kpi_value(store, "dso", OCTOBER, Scope(filters=(("branch", "Berlin"),)))
    # 300,000 (31 Oct), not the larger 500,000 (15 Oct) nor 999,999 (2 Nov): 300/150 × 31 = 62.
    assert found[(0, None)].inputs["ar_balance"] == 300_000
    assert found[(0, None)].value == pytest.approx(62.0)


def test_by_branch_evaluates_each_branch_from_its_own_totals(store):
    found = kpi_value(store, "dso", OCTOBER, Scope(by="branch"))
    assert found[(0, "Berlin")].value == pytest.approx(62.0)
    assert found[(0, "Madrid")].value == pytest.approx(100_000 / 250_000 * 31)  # 12.4


def test_data_without_the_dimension_is_a_group_of_its_own_so_the_groups_add_up(store):
    # Head office books sales and receivables with no branch: 60k of sales, 30k owed on 31 Oct.
    load_records(
        store,
        [
            ("credit_sales", date(2026, 10, 12), 60_000, {}),
            ("ar_balance", date(2026, 10, 31), 30_000, {"branch": ""}),
        ],
        tz=UTC_ZONE,
    )
    assert {g for _, g in kpi_value(store, "dso", OCTOBER, Scope(by="branch"))} == {
        "Berlin",
        "Madrid",
    }  # alerts read named values only
    found = kpi_value(store, "dso", OCTOBER, Scope(by="branch", unassigned=True))
    assert {g for _, g in found} == {"Berlin", "Madrid", None}
    assert found[(0, None)].inputs == {"ar_balance": 30_000, "credit_sales": 60_000}
    assert found[(0, None)].value == pytest.approx(30_000 / 60_000 * 31)  # 15.5
    assert found[(0, "Berlin")].value == pytest.approx(62.0)  # unchanged
    # The groups' sales add up to the whole's: 150k + 250k + 60k.
    whole = kpi_value(store, "dso", OCTOBER)[(0, None)]
    assert whole.inputs["credit_sales"] == sum(
        found[(0, g)].inputs["credit_sales"] for g in ("Berlin", "Madrid", None)
    )


def test_a_kpi_whose_measure_lacks_the_dimension_gets_no_unassigned_group(store):
    # Errors are kept by team, transactions by branch alone: there is no split by team, not
    # a "(no team)" group holding every transaction.
    load_records(store, [("finance_errors", date(2026, 10, 9), 4, {"team": "AP"})], tz=UTC_ZONE)
    found = kpi_value(store, "finance_error_rate", OCTOBER, Scope(by="team", unassigned=True))
    assert {g for _, g in found} == {"AP"}
    assert found[(0, "AP")].value is None
    assert "no data for finance_transactions" in found[(0, "AP")].reason


def test_error_rate_across_branches_is_total_errors_over_total_transactions(store):
    found = kpi_value(store, "finance_error_rate", OCTOBER)
    # (2 + 8) / (100 + 900) × 100 = 1.0 %, not the mean of 2 % and 0.89 %.
    assert found[(0, None)].value == pytest.approx(1.0)


def test_a_score_averages_across_branches_instead_of_adding(store):
    q3 = Period(date(2026, 7, 1), date(2026, 10, 1), "quarter")
    found = kpi_value(store, "employee_satisfaction", q3)
    assert found[(0, None)].value == pytest.approx((4.2 + 3.6) / 2)  # 3.9


def test_a_quarter_has_its_own_number_of_days(store):
    q4 = Period(date(2026, 10, 1), date(2027, 1, 1), "quarter")
    found = kpi_value(store, "dso", q4)
    # The latest balances in Q4: Berlin 999,999 (2 Nov), Madrid 100,000; sales 400,000; 92 days.
    assert found[(0, None)].days == 92
    assert found[(0, None)].value == pytest.approx((999_999 + 100_000) / 400_000 * 92)


def test_missing_data_and_division_by_zero_give_no_data_with_a_reason(store):
    found = kpi_value(store, "dso", period_of("month", date(2025, 1, 1)))
    assert found[(0, None)].value is None
    assert "no data" in found[(0, None)].reason
    load_records(
        store,
        [("hires", date(2026, 10, 3), 0, {}), ("days_to_fill", date(2026, 10, 3), 10, {})],
        tz=UTC_ZONE,
    )
    found = kpi_value(store, "time_to_hire", OCTOBER)
    assert found[(0, None)].value is None
    assert found[(0, None)].reason == "hires is 0: the formula divides by 0"


def test_status_and_change_against_the_previous_month(store):
    with session_scope(store) as session:
        kpi = load_catalog(session).kpis["dso"]
        [item] = evaluate(session, kpi, OCTOBER, SEPTEMBER)
    assert item.previous.value == pytest.approx(30.0)
    assert item.status == "on_target"  # 31 ≤ 45
    assert item.change.delta == pytest.approx(1.0) and item.change.better is False
    assert item.change.percent == pytest.approx(1 / 30 * 100)


@pytest.mark.parametrize(
    ("value", "target", "warn", "better", "expected"),
    [
        (44, 45, 55, "lower", "on_target"),
        (45, 45, 55, "lower", "on_target"),
        (50, 45, 55, "lower", "at_risk"),
        (56, 45, 55, "lower", "off_target"),
        (46, 45, None, "lower", "off_target"),
        (99.95, 99.9, 99.5, "higher", "on_target"),
        (99.7, 99.9, 99.5, "higher", "at_risk"),
        (99.0, 99.9, 99.5, "higher", "off_target"),
        (None, 45, 55, "lower", "no_data"),
    ],
)
def test_status_table(value, target, warn, better, expected):
    from kpi.models import Target

    assert status_of(value, Target(kpi_key="k", target=target, warn=warn), better) == expected


def test_a_value_without_a_target_is_not_on_target():
    assert status_of(130_000, None, "higher") == "no_target"
    assert status_of(None, None, "higher") == "no_data"


def test_change_knows_better_from_the_direction():
    assert change_of(40, 50, "lower").better is True
    assert change_of(40, 50, "higher").better is False
    assert change_of(50, 50, "lower").better is None
    assert change_of(5, 0, "lower").percent is None


def test_a_dimension_value_target_overrides_the_kpi_target(store):
    from kpi import catalog

    with session_scope(store) as session:
        spec = catalog.parse_spec({"kpis": {"dso": {"targets": {"branch=Berlin": {"target": 70}}}}})
        catalog.apply(spec, session, actor="U1", now=datetime(2026, 11, 1, tzinfo=UTC))
    with session_scope(store) as session:
        kpi = load_catalog(session).kpis["dso"]
        [berlin] = evaluate(
            session, kpi, OCTOBER, SEPTEMBER, Scope(filters=(("branch", "Berlin"),))
        )
    assert berlin.target.target == 70 and berlin.status == "on_target"  # 62 ≤ 70


def test_a_month_in_berlin_starts_and_ends_at_local_midnight(catalog_engine):
    # 23:30 UTC on 31 Oct is 00:30 on 1 Nov in Berlin (CET, UTC+1): November's, not October's.
    records = [
        ("security_incidents", datetime(2026, 10, 31, 23, 30, tzinfo=UTC), 5, {}),
        ("security_incidents", datetime(2026, 9, 30, 22, 30, tzinfo=UTC), 1, {}),  # 1 Oct 00:30
        ("security_incidents", datetime(2026, 9, 30, 21, 30, tzinfo=UTC), 7, {}),  # 30 Sep 23:30
    ]
    load_records(catalog_engine, records, tz=BERLIN)
    assert kpi_value(catalog_engine, "security_incidents", OCTOBER)[(0, None)].value == 1
    november = period_of("month", date(2026, 11, 1))
    assert kpi_value(catalog_engine, "security_incidents", november)[(0, None)].value == 5


def test_as_of_on_the_first_of_a_month_reports_the_month_before(store):
    service = KpiService(store, tz=BERLIN)
    as_of = datetime(2026, 11, 1, 0, 30, tzinfo=BERLIN)
    reply = service.ask("dso", viewer=Viewer(sees_all=True), as_of=as_of)
    assert reply.values["a"]["period"] == "October 2026"
    assert reply.values["a"]["value"] == "31.0 days"


def test_an_import_refreshes_cached_answers_within_a_second(store):
    now = [0.0]
    service = KpiService(store, tz=UTC_ZONE, clock=lambda: now[0])
    as_of = datetime(2026, 11, 10, 9, tzinfo=UTC)

    def dso() -> str:
        return service.ask("dso", viewer=Viewer(sees_all=True), as_of=as_of).values["a"]["value"]

    assert dso() == "31.0 days"
    # Another process imports: Madrid's credit sales double, (300,000 + 100,000) /
    # (150,000 + 500,000) × 31 = 19.1 days.
    load_records(
        store, [("credit_sales", date(2026, 10, 10), 500_000, {"branch": "Madrid"})], tz=UTC_ZONE
    )
    now[0] = 0.9  # the generation was read less than a second ago: the kept answer
    assert dso() == "31.0 days"
    now[0] = 1.0
    assert dso() == "19.1 days"


def test_a_record_through_the_service_shows_at_once(store):
    service = KpiService(store, tz=UTC_ZONE, clock=lambda: 0.0)  # time stands still
    as_of = datetime(2026, 11, 10, 9, tzinfo=UTC)
    viewer = Viewer(sees_all=True)
    assert service.ask("dso", viewer=viewer, as_of=as_of).values["a"]["value"] == "31.0 days"
    service.ask("record credit_sales 500000 2026-10-10 branch=Madrid", viewer=viewer, as_of=as_of)
    assert service.ask("dso", viewer=viewer, as_of=as_of).values["a"]["value"] == "19.1 days"


def test_an_answer_does_not_wait_long_for_a_store_locked_by_an_import(store, monkeypatch):
    """PostgreSQL: the first import into an empty store locks observation and rollup until it
    commits; an answer gives up after READ_LOCK_TIMEOUT_MS with a message saying why, and works
    again once the import is done. SQLite: readers never wait for a writer (WAL)."""
    from time import perf_counter

    from kpi import db
    from kpi.errors import StoreBusy

    monkeypatch.setattr(db, "READ_LOCK_TIMEOUT_MS", 200)
    as_of = datetime(2026, 11, 10, 9, tzinfo=UTC)
    viewer = Viewer(sees_all=True)
    importer = store.raw_connection()
    cursor = importer.cursor()
    if store.dialect.name == "postgresql":
        cursor.execute("LOCK TABLE observation, rollup IN ACCESS EXCLUSIVE MODE")
    else:
        cursor.execute("BEGIN IMMEDIATE")
        cursor.execute("DELETE FROM rollup")  # uncommitted: readers still see the old rows
    try:
        started = perf_counter()
        if store.dialect.name == "postgresql":
            with pytest.raises(StoreBusy, match="busy loading a big import"):
                KpiService(store, tz=UTC_ZONE).ask("dso", viewer=viewer, as_of=as_of)
            assert perf_counter() - started < 2
        else:
            reply = KpiService(store, tz=UTC_ZONE).ask("dso", viewer=viewer, as_of=as_of)
            assert reply.values["a"]["value"] == "31.0 days"
    finally:
        importer.rollback()
        importer.close()
    reply = KpiService(store, tz=UTC_ZONE).ask("dso", viewer=viewer, as_of=as_of)
    assert reply.values["a"]["value"] == "31.0 days"


def test_a_kpi_is_as_fresh_as_its_stalest_input_per_branch_and_overall(store):
    from kpi.evaluate import newest

    def day(found) -> dict:
        return {key: datetime.fromisoformat(str(ts)).date() for key, ts in found.items()}

    with session_scope(store) as session:
        catalog = load_catalog(session)
        dso = catalog.kpis["dso"]
        overall = newest(session, dso, None)
        by_branch = newest(session, dso, "branch")
        # Inputs never fed: nothing to be fresh or stale about.
        never = newest(session, catalog.kpis["time_to_hire"], None)
    # Receivables run to 2 November (Berlin), sales only to 20 October: the sales decide.
    assert day(overall) == {None: date(2026, 10, 20)}
    # Berlin: sales 20 October, receivables 2 November; Madrid: sales 10 October, receivables
    # 30 October.
    assert day(by_branch) == {"Berlin": date(2026, 10, 20), "Madrid": date(2026, 10, 10)}
    assert never == {}


def test_first_days_are_each_measures_earliest_day_per_branch_and_overall(store):
    with session_scope(store) as session:
        names = ["credit_sales", "satisfaction_score", "ar_balance"]
        overall = first_days(session, names)
        by_branch = first_days(session, names, Scope(by="branch"))
        madrid = first_days(session, names, Scope(filters=(("branch", "Madrid"),)))
    assert overall == {
        None: {
            "credit_sales": date(2026, 9, 3),
            "satisfaction_score": date(2026, 7, 10),
            "ar_balance": date(2026, 9, 30),
        }
    }
    assert by_branch["Berlin"]["satisfaction_score"] == date(2026, 7, 10)
    assert by_branch["Madrid"]["satisfaction_score"] == date(2026, 9, 10)
    assert madrid == {
        None: {
            "credit_sales": date(2026, 9, 3),
            "satisfaction_score": date(2026, 9, 10),
            "ar_balance": date(2026, 9, 30),
        }
    }


def test_a_balance_does_not_decide_where_a_kpis_data_starts(store):
    """DSO's balance (ar_balance, `last`) starts on 30 Sep: a month-end balance is whole. Its
    sales start on 3 Sep, and they decide."""
    with session_scope(store) as session:
        kpi = load_catalog(session).kpis["dso"]
        assert data_starts(session, kpi) == {None: date(2026, 9, 3)}


def test_a_sampled_level_is_compared_from_any_of_its_samples(catalog_engine):
    """Satisfaction (avg) sampled mid-quarter: Q2 3.7 (3.5 and 3.9 on 15 and 20 May), Q3 3.75
    (Berlin 4.4; London 3.0 and 3.2 → 3.1; across branches an average: 3.75). +0.05, compared,
    though the data starts half-way into Q2."""
    records = [
        ("satisfaction_score", date(2026, 5, 15), 3.5, {"branch": "Berlin"}),
        ("satisfaction_score", date(2026, 5, 20), 3.9, {"branch": "London"}),
        ("satisfaction_score", date(2026, 8, 15), 4.4, {"branch": "Berlin"}),
        ("satisfaction_score", date(2026, 8, 15), 3.0, {"branch": "London"}),
        ("satisfaction_score", date(2026, 8, 16), 3.2, {"branch": "London"}),
    ]
    load_records(catalog_engine, records, tz=UTC_ZONE)
    q3, q2 = period_of("quarter", date(2026, 7, 1)), period_of("quarter", date(2026, 4, 1))
    with session_scope(catalog_engine) as session:
        kpi = load_catalog(session).kpis["employee_satisfaction"]
        assert data_starts(session, kpi) == {}  # nothing that adds up over time
        [item] = evaluate(session, kpi, q3, q2)
    assert item.value.value == pytest.approx(3.75) and item.previous.value == pytest.approx(3.7)
    assert item.change.delta == pytest.approx(0.05) and item.change.better is True


def late_start(first_sale: date) -> list:
    """Berlin's DSO for October, against a September whose sales start on `first_sale`."""
    return [
        ("ar_balance", date(2026, 10, 31), 300_000, {"branch": "Berlin"}),
        ("credit_sales", date(2026, 10, 5), 150_000, {"branch": "Berlin"}),
        ("ar_balance", date(2026, 9, 30), 200_000, {"branch": "Berlin"}),
        ("credit_sales", first_sale, 200_000, {"branch": "Berlin"}),
    ]


@pytest.mark.parametrize(
    ("first_sale", "compared"),
    # September has 30 days: data may start 3 days (a tenth) late, on the 4th, not the 5th.
    [(date(2026, 9, 1), True), (date(2026, 9, 4), True), (date(2026, 9, 5), False)],
)
def test_a_change_needs_data_from_the_first_tenth_of_the_previous_period(
    catalog_engine, first_sale, compared
):
    load_records(catalog_engine, late_start(first_sale), tz=UTC_ZONE)
    with session_scope(catalog_engine) as session:
        kpi = load_catalog(session).kpis["dso"]
        [item] = evaluate(session, kpi, OCTOBER, SEPTEMBER)
    assert item.value.value == pytest.approx(300_000 / 150_000 * 31)  # 62 days either way
    if compared:
        # 200,000 / 200,000 × 30 = 30 days; 62 − 30 = +32, worse.
        assert item.change.delta == pytest.approx(32.0) and item.change.better is False
        assert change_line(item, "September 2026").startswith("▲ +32.0 days")
    else:
        assert item.change is None and item.previous.value is None
        assert item.previous.starts == first_sale
        assert change_line(item, "September 2026") == (
            "▶ no comparison with September 2026: its data starts 5 Sep 2026"
        )


def test_each_branch_is_compared_only_where_its_own_data_covers_the_month(catalog_engine):
    records = late_start(date(2026, 9, 1)) + [
        (measure, day, value, {"branch": "Madrid"})
        for measure, day, value, _ in late_start(date(2026, 9, 20))
    ]
    load_records(catalog_engine, records, tz=UTC_ZONE)
    with session_scope(catalog_engine) as session:
        kpi = load_catalog(session).kpis["dso"]
        found = {i.group: i for i in evaluate(session, kpi, OCTOBER, SEPTEMBER, Scope(by="branch"))}
        [overall] = evaluate(session, kpi, OCTOBER, SEPTEMBER)
    assert found["Berlin"].change.delta == pytest.approx(32.0)
    assert found["Madrid"].change is None and found["Madrid"].previous.starts == date(2026, 9, 20)
    # Together, September's sales start on the 1st (Berlin's): a branch that opened later is
    # part of the whole. (300k + 300k) / (150k + 150k) × 31 = 62 against 400k / 400k × 30 = 30.
    assert overall.change.delta == pytest.approx(32.0)


@pytest.mark.parametrize(
    ("first_sale", "compared"), [(date(2026, 9, 1), True), (date(2026, 9, 20), False)]
)
def test_a_scorecard_line_does_not_compare_with_a_month_of_partial_data(
    catalog_engine, first_sale, compared
):
    load_records(catalog_engine, late_start(first_sale), tz=UTC_ZONE)
    with session_scope(catalog_engine) as session:
        kpi = load_catalog(session).kpis["dso"]
        card = scorecard.card(session, kpi, datetime(2026, 11, 2, 9, tzinfo=UTC), UTC_ZONE)
    assert card.period == OCTOBER
    assert card.line["change"] == ("▲ +32.0 days" if compared else "")
    assert card.spark[-2] == (pytest.approx(30.0) if compared else None)
    assert card.previous_status == ("on_target" if compared else "no_data")
    assert card.status == "off_target"  # 62 days against 45, above 55
    assert card.changed is compared  # a month without a comparison has no change of status


def test_where_data_starts_is_kept_per_generation_and_looked_up_again_after_an_import(
    catalog_engine,
):
    load_records(catalog_engine, late_start(date(2026, 9, 20)), tz=UTC_ZONE)
    service = KpiService(catalog_engine, tz=UTC_ZONE, clock=lambda: 0.0)
    as_of = datetime(2026, 11, 10, 9, tzinfo=UTC)
    viewer = Viewer(sees_all=True)

    def change(question: str) -> str:
        return service.ask(question, viewer=viewer, as_of=as_of).values["a"]["change"]

    assert change("dso") == "▶ no comparison with September 2026: its data starts 20 Sep 2026"
    assert change("dso 2026-10") == change("dso")  # another question, the kept start
    # Sales of August arrive: September is whole now. 62 − (200k / 200k × 30 = 30) = +32.
    service.ask("record credit_sales 1000 2026-08-14 branch=Berlin", viewer=viewer, as_of=as_of)
    assert change("dso").startswith("▲ +32.0 days")


def test_a_scorecard_keeps_the_value_of_a_latest_period_its_data_starts_in(catalog_engine):
    """Only periods compared with are judged by where the data starts: October's value stays
    though its sales start on the 5th, more than a tenth into it."""
    load_records(catalog_engine, late_start(date(2026, 9, 20))[:2], tz=UTC_ZONE)  # October
    with session_scope(catalog_engine) as session:
        kpi = load_catalog(session).kpis["dso"]
        card = scorecard.card(session, kpi, datetime(2026, 11, 2, 9, tzinfo=UTC), UTC_ZONE)
    assert card.spark[-1] == pytest.approx(62.0) and card.spark[-2] is None
    assert card.line["value"] == "62.0 days" and card.line["change"] == ""


@pytest.mark.parametrize(
    ("first_sale", "points", "low", "starts"),
    [(date(2026, 9, 1), 2, "30.0 days", None), (date(2026, 9, 20), 1, "62.0 days", "20 Sep 2026")],
)
def test_a_trend_leaves_out_the_period_its_data_starts_late_in(
    catalog_engine, first_sale, points, low, starts
):
    """August has no data, October is whole; September is a point only when its sales start
    in its first tenth (30 days from 200k of sales and 200k owed), not on the 20th."""
    load_records(catalog_engine, late_start(first_sale), tz=UTC_ZONE)
    service = KpiService(catalog_engine, tz=UTC_ZONE)
    as_of = datetime(2026, 11, 10, 9, tzinfo=UTC)
    reply = service.ask("trend dso 3m", viewer=Viewer(sees_all=True), as_of=as_of)
    view = reply.values["a"]
    assert (view["points"], view["buckets"]) == (points, 3)
    assert (view["latest"], view["low"], view["high"]) == ("62.0 days", low, "62.0 days")
    assert view["starts"] == starts
    assert [p["value"] for p in reply.trend][0] is None  # August


@pytest.mark.parametrize(
    ("formula", "adds_up"),
    [
        ("complaints", True),
        ("security_incidents + complaints", True),
        ("2 * complaints - security_incidents", True),
        ("-complaints", True),
        ("support_cost / revenue * 100", False),  # a ratio
        ("ar_balance / credit_sales * days", False),
        ("headcount", False),  # avg over time: a level, not a flow
        ("complaints * complaints", False),
        ("complaints + 5", False),
        ("max(complaints, security_incidents)", False),
    ],
)
def test_which_kpis_add_up_over_time(catalog_engine, formula, adds_up):
    with session_scope(catalog_engine) as session:
        catalog = load_catalog(session)
    kpi = catalog.kpis["back_office_complaints"]
    formula = parse_formula(formula, sorted(catalog.measures))
    custom = replace(kpi, formula=formula, measures=dict(catalog.measures))
    assert custom.adds_up is adds_up


def test_a_target_per_week_is_pro_rated_over_other_periods(catalog_engine):
    """back_office_complaints: 5 a week, at risk up to 8."""
    with session_scope(catalog_engine) as session:
        catalog = load_catalog(session)
    complaints, dso = catalog.kpis["back_office_complaints"], catalog.kpis["dso"]
    weekly = complaints.target_for()
    assert target_over(weekly, complaints, LAST_WEEK) is weekly
    over_october = target_over(weekly, complaints, OCTOBER)
    # 31 days of a 7-day week: × 31/7 → 22.14 and 35.43.
    assert over_october.target == pytest.approx(5 * 31 / 7)
    assert over_october.warn == pytest.approx(8 * 31 / 7)
    # A ratio's target holds over any period.
    assert target_over(dso.target_for(), dso, period_of("year", date(2026, 1, 1))).target == 45
