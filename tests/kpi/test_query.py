import time as clock
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpi.errors import KpibotError, PeriodError, QueryError, UnknownKpi
from kpi.periods import Period, parse_range
from kpi.query import (
    Alerts,
    Ask,
    DigestPreview,
    Help,
    KpiName,
    ListKpis,
    Record,
    SetTarget,
    Subscribe,
    Trend,
    Unsubscribe,
    parse,
)

BERLIN = ZoneInfo("Europe/Berlin")
# Wednesday 25 November 2026: last month is October, this quarter Q4 so far, last week W47.
AS_OF = datetime(2026, 11, 25, 10, 0, tzinfo=BERLIN)

# The built-in catalog of PRODUCT.md, with aliases like the ones it ships.
KPIS = [
    KpiName("dso", "Days Sales Outstanding", ("days sales outstanding", "debtor days")),
    KpiName("ap_turnover", "Accounts Payable Turnover", ("ap turnover", "payables turnover")),
    KpiName("invoice_processing_time", "Invoice Processing Time", ("invoice cycle time",)),
    KpiName("finance_error_rate", "Finance Error Rate", ("error rate", "finance errors")),
    KpiName("time_to_hire", "Time to Hire", ("time to fill", "hiring time")),
    KpiName("employee_turnover_rate", "Employee Turnover Rate", ("turnover", "attrition")),
    KpiName("employee_satisfaction", "Employee Satisfaction", ("esat",), "quarter"),
    KpiName("training_cost_per_employee", "Training Cost per Employee", ("training cost",)),
    KpiName("system_uptime", "System Uptime", ("uptime", "availability"), "week"),
    KpiName("incident_response_time", "Incident Response Time", ("mttr",), "week"),
    KpiName("helpdesk_resolution_time", "Helpdesk Resolution Time", ("helpdesk time",), "week"),
    KpiName("security_incidents", "Security Incidents", ("incidents", "breaches")),
    KpiName("support_cost_ratio", "Support Cost Ratio", ("support costs",)),
    KpiName("cost_per_transaction", "Cost per Transaction", ("transaction cost",)),
    KpiName("back_office_complaints", "Back-office Complaints", ("complaints",), "week"),
]
AREAS = ["Finance", "HR", "IT", "Back office"]
MEASURES = ["credit_sales", "ar_balance", "finance_errors", "finance_transactions"]
DIMENSIONS = {"branch": ["Berlin", "Munich", "New York"], "team": ["AP", "AR", "Payroll"]}


def run(text: str, **changes):
    given_ = {
        "kpis": KPIS,
        "areas": AREAS,
        "measures": MEASURES,
        "dimensions": DIMENSIONS,
        "as_of": AS_OF,
        "tz": BERLIN,
    }
    return parse(text, **(given_ | changes))


def month(year: int, number: int) -> Period:
    return Period(date(year, number, 1), date(year + number // 12, number % 12 + 1, 1), "month")


OCTOBER = month(2026, 10)
Q3 = Period(date(2026, 7, 1), date(2026, 10, 1), "quarter")
Q4_SO_FAR = Period(date(2026, 10, 1), date(2026, 11, 26), "range", "quarter")  # through today
LAST_WEEK = Period(date(2026, 11, 16), date(2026, 11, 23), "week")


def weeks(count: int) -> list[Period]:
    return parse_range(f"{count}w", AS_OF, BERLIN, "week")


def months(count: int) -> list[Period]:
    return parse_range(f"{count}m", AS_OF, BERLIN, "month")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Help()),
        ("   ", Help()),
        ("help", Help()),
        ("HELP me", Help()),
        ("?", Help()),
        ("please", Help()),
        ("list", ListKpis(None)),
        ("list all", ListKpis(None)),
        ("list finance", ListKpis("Finance")),
        ("LIST Back Office", ListKpis("Back office")),
        # An area alone lists it; an area's words inside a KPI name do not.
        ("finance", ListKpis("Finance")),
        ("Back office", ListKpis("Back office")),
        ("list the hr kpis", ListKpis("HR")),
        ("alerts", Alerts()),
        ("ALERTS!", Alerts()),
        ("unsubscribe", Unsubscribe()),
        ("digest", DigestPreview()),
        ("digest preview", DigestPreview()),
    ],
)
def test_simple_commands(text, expected):
    assert run(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dso", Ask("dso")),
        ("DSO last month", Ask("dso", OCTOBER)),
        ("days sales outstanding", Ask("dso")),
        ("Days Sales Outstanding this quarter", Ask("dso", Q4_SO_FAR)),
        ("debtor days 2026-Q3", Ask("dso", Q3)),
        ("error rate this quarter by branch", Ask("finance_error_rate", Q4_SO_FAR, "branch")),
        ("finance_error_rate", Ask("finance_error_rate")),
        ("finance error rate", Ask("finance_error_rate")),
        ("dso branch=Berlin", Ask("dso", filters={"branch": "Berlin"})),
        ("dso BRANCH = berlin", Ask("dso", filters={"branch": "Berlin"})),
        ("dso 2026-Q3", Ask("dso", Q3)),
        ("what is our dso?", Ask("dso")),
        ("what's the DSO?", Ask("dso")),
        ("dso, please!", Ask("dso")),
        ("show me dso in berlin last month", Ask("dso", OCTOBER, filters={"branch": "Berlin"})),
        ("dso for munich", Ask("dso", filters={"branch": "Munich"})),
        ("dso in new york", Ask("dso", filters={"branch": "New York"})),
        ('dso branch="New York"', Ask("dso", filters={"branch": "New York"})),
        ("dso branch=new york", Ask("dso", filters={"branch": "New York"})),
        ("dso last month branch=Munich by team", Ask("dso", OCTOBER, "team", {"branch": "Munich"})),
        ("dso by team team=AP", Ask("dso", None, "team", {"team": "AP"})),
        ("cost per transaction per branch", Ask("cost_per_transaction", None, "branch")),
        ("system uptime last week", Ask("system_uptime", LAST_WEEK)),
        ("system_uptime last week", Ask("system_uptime", LAST_WEEK)),
        ("back-office complaints last week", Ask("back_office_complaints", LAST_WEEK)),
        ("Back office complaints", Ask("back_office_complaints")),
        ("time to hire october", Ask("time_to_hire", OCTOBER)),
        ("turnover 2026-10", Ask("employee_turnover_rate", OCTOBER)),
        ("dso 2026-10-05", Ask("dso", Period(date(2026, 10, 5), date(2026, 10, 6), "day"))),
        ("uptime 12w", Trend("system_uptime", weeks(12))),
        ("dso last 6 months", Trend("dso", months(6))),
        ("trend dso 6m", Trend("dso", months(6))),
        ("trend dso", Trend("dso", months(12))),
        ("trend uptime", Trend("system_uptime", weeks(12))),
        ("show me the trend of uptime for 12 weeks", Trend("system_uptime", weeks(12))),
        ("trend dso 2026", Trend("dso", months(10))),
        # quotes, invisible characters and odd white space
        ("“dso”", Ask("dso")),
        ('dso "last month"', Ask("dso", OCTOBER)),
        ('"days sales" outstanding', Ask("dso")),
        ("dso \u200flast month", Ask("dso", OCTOBER)),
        ("dso last\u202e month", Ask("dso", OCTOBER)),
        ("ds\u200bo", Ask("dso")),
        ("dso\tlast\nmonth", Ask("dso", OCTOBER)),
        ("dso\u00a0branch=Munich", Ask("dso", filters={"branch": "Munich"})),
    ],
)
def test_ask_and_trend(text, expected):
    assert run(text) == expected


def test_trend_default_follows_the_cadence():
    trend = run("trend esat")
    assert len(trend.periods) == 12
    assert {period.grain for period in trend.periods} == {"quarter"}
    assert trend.periods[-1].key == "2026-Q3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("target dso 45", SetTarget("dso", 45)),
        ("target dso 45 warn 55 due 2027-06-30", SetTarget("dso", 45, 55, date(2027, 6, 30))),
        ("target dso 45 due 2027-06-30 warn 55", SetTarget("dso", 45, 55, date(2027, 6, 30))),
        ("target dso 1,200", SetTarget("dso", 1200)),
        ("target dso 45.5", SetTarget("dso", 45.5)),
        ("target error rate 2.5%", SetTarget("finance_error_rate", 2.5)),
        ("target uptime 99.9% warn 99.5%", SetTarget("system_uptime", 99.9, 99.5)),
        ("target dso -5", SetTarget("dso", -5)),
        ("target dso −5", SetTarget("dso", -5)),  # a typographic minus
        ("target dso .5", SetTarget("dso", 0.5)),
    ],
)
def test_target(text, expected):
    assert run(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "record credit_sales 120000 2026-10-05 branch=Berlin",
            Record("credit_sales", 120000, date(2026, 10, 5), {"branch": "Berlin"}),
        ),
        ("record credit sales 1,200 yesterday", Record("credit_sales", 1200, date(2026, 11, 24))),
        ("record ar_balance 310000", Record("ar_balance", 310000)),
        (
            "record finance_errors 3 today branch=berlin team=AP",
            Record("finance_errors", 3, date(2026, 11, 25), {"branch": "Berlin", "team": "AP"}),
        ),
        # A new branch may be recorded: values are only matched to stored spellings.
        (
            "record credit_sales 5 branch=Hamburg",
            Record("credit_sales", 5, None, {"branch": "Hamburg"}),
        ),
        (
            'record credit_sales 5 branch="San Jose"',
            Record("credit_sales", 5, None, {"branch": "San Jose"}),
        ),
    ],
)
def test_record(text, expected):
    assert run(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("subscribe", Subscribe()),
        ("subscribe finance, hr", Subscribe(("Finance", "HR"))),
        ("subscribe finance,dso", Subscribe(("Finance", "dso"))),
        ("subscribe back office dso", Subscribe(("Back office", "dso"))),
        (
            "subscribe finance, dso weekly on monday at 09:00 tz europe/berlin",
            Subscribe(("Finance", "dso"), 0, time(9, 0), "Europe/Berlin"),
        ),
        (
            "subscribe time to hire and IT on fridays at 9 am tz UTC",
            Subscribe(("time_to_hire", "IT"), 4, time(9, 0), "UTC"),
        ),
        ("subscribe at 7:30", Subscribe(at=time(7, 30))),
        ("subscribe weekly on sun at 12pm", Subscribe(weekday=6, at=time(12, 0))),
        ("subscribe on tues at 12am", Subscribe(weekday=1, at=time(0, 0))),
        ("subscribe tz america/new_york", Subscribe(tz="America/New_York")),
        ("subscribe hr hr", Subscribe(("HR",))),
        ("subscribe all", Subscribe(every=True)),
        ("subscribe all KPIs on friday", Subscribe(weekday=4, every=True)),
        ("subscribe everything", Subscribe(every=True)),
    ],
)
def test_subscribe(text, expected):
    assert run(text) == expected


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        # KPIs
        ("dsoo", UnknownKpi, "“dsoo”. Did you mean `dso` — Days Sales Outstanding?"),
        (
            "days sales outstandng last month",
            UnknownKpi,
            "“days sales outstandng”. Did you mean `dso`",
        ),
        ("uptme 12w", UnknownKpi, "Did you mean `system_uptime` — System Uptime?"),
        ("foo bar", UnknownKpi, "I don't know a KPI called “foo bar”.$"),
        ("s", UnknownKpi, "called “s”.$"),
        ("last month", QueryError, "Which KPI"),
        ("by branch", QueryError, "Which KPI"),
        ("trend", QueryError, "Which KPI"),
        ("trend dsoo", UnknownKpi, "Did you mean `dso`"),
        # Two letters swapped in a short name are one edit away.
        ("dos", UnknownKpi, "“dos”. Did you mean `dso` — Days Sales Outstanding?"),
        ("trend dos 12w", UnknownKpi, "Did you mean `dso`"),
        # Words that read as a dimension value first (a team called Payroll) or a period.
        ("payroll eror rate", UnknownKpi, "Did you mean `finance_error_rate`"),
        ("Payroll", QueryError, "Which KPI"),
        # what follows a KPI
        ("dso foo", QueryError, "I don't understand “foo”.$"),
        ("dso lst month", QueryError, "I don't understand “lst”. Did you mean `last`?"),
        ("dso last mnth", QueryError, "Did you mean `month`?"),
        ("dso 45", QueryError, "I don't understand “45”"),
        ("dso by country", QueryError, "split by “country”. Dimensions: branch, team"),
        ("dso by", QueryError, "Name a dimension after `by`"),
        ("dso by branch by team", QueryError, "one dimension at a time"),
        ("subscribe all finance", QueryError, "not both"),
        ("subscribe on monday at 09:00 on friday", QueryError, "Give the day once"),
        ("subscribe at 09:00 at 10:00", QueryError, "Give the time once"),
        ("subscribe tz UTC tz Europe/Berlin", QueryError, "Give the time zone once"),
        ("dso colour=red", QueryError, "no dimension “colour”. Dimensions: branch, team"),
        ("dso branch=Paris", QueryError, "no branch “Paris”. Known: Berlin, Munich, New York"),
        ("dso branch=", QueryError, "value after `branch=`"),
        ("dso branch=Berlin branch=Munich", QueryError, "one value for branch"),
        ("dso last month 2026", QueryError, "one period or range"),
        ("dso 12w last month", QueryError, "one period or range"),
        ("uptime 12w by branch", QueryError, "trend covers the whole KPI"),
        ("trend dso branch=Berlin", QueryError, "trend covers the whole KPI"),
        ("trend dso 12x", QueryError, "I don't understand “12x”"),
        # periods and ranges
        ("dso 2026-13", PeriodError, "no month 13"),
        ("dso 2026-W54", PeriodError, "no week 54"),
        ("dso 2027", PeriodError, "hasn't started"),
        ("dso 0w", PeriodError, "at least one week"),
        ("dso 500w", PeriodError, "too long; the most is 400 weeks"),
        ("trend dso 99999999999999999999999m", PeriodError, "too long"),
        # targets
        ("target", QueryError, "Which KPI"),
        ("target dso", QueryError, "target as a number"),
        ("target dso abc", QueryError, "target as a number, not “abc”"),
        ("target dso 1e999", QueryError, "target as a number"),
        ("target dso nan", QueryError, "target as a number"),
        ("target dso 45 warn", QueryError, "warn value as a number"),
        ("target dso 45 warn 50 warn 55", QueryError, "I don't understand “warn”"),
        ("target dso 45 due tomorrow", QueryError, "due date as YYYY-MM-DD"),
        ("target dso 45 due 2027-02-30", QueryError, "due date as YYYY-MM-DD"),
        ("target dso 45 foo", QueryError, "I don't understand “foo”"),
        ("target dsoo 45", UnknownKpi, "“dsoo”. Did you mean `dso`"),
        # records
        ("record", QueryError, "Which measure"),
        ("record foo 5", QueryError, "measure called “foo”.$"),
        ("record credit_sale 5", QueryError, "Did you mean `credit_sales`"),
        ("record credit_sales", QueryError, "value as a number"),
        ("record credit_sales 5 2026-10", QueryError, "recorded for one day"),
        ("record credit_sales 5 by branch", QueryError, "`record` takes"),
        ("record credit_sales 5 2027-01-01", PeriodError, "hasn't started"),
        ("record credit_sales 5 colour=red", QueryError, "no dimension “colour”"),
        # commands that take nothing
        ("alerts now", QueryError, "`alerts` takes nothing after it, not “now”"),
        ("unsubscribe finance", QueryError, "`unsubscribe` takes nothing"),
        ("digest finance", QueryError, "`digest` takes nothing"),
        # list
        ("list fin", QueryError, "area called “fin”. Did you mean Finance?"),
        ("list xyz", QueryError, "Areas: Finance, HR, IT, Back office"),
        # subscribe
        ("subscribe finnance", UnknownKpi, "Did you mean the area `Finance`?"),
        ("subscribe dsoo", UnknownKpi, "Did you mean `dso`"),
        (
            "subscribe dso weekly on funday at 09:00",
            QueryError,
            "“funday” is not a day of the week. Did you mean Sunday?",
        ),
        ("subscribe finance on frday", QueryError, "Did you mean Friday?"),
        ("subscribe dso at 25:00", QueryError, "HH:MM"),
        ("subscribe dso at 9", QueryError, "HH:MM"),
        ("subscribe dso at", QueryError, "HH:MM"),
        ("subscribe dso tz Mars/Olympus", QueryError, "time zone “Mars/Olympus”"),
        ("subscribe dso tz ../../etc/passwd", QueryError, "time zone"),
        ("subscribe dso daily", QueryError, "Digests are weekly"),
    ],
)
def test_errors(text, error, message):
    with pytest.raises(KpibotError, match=message) as caught:
        run(text)
    assert type(caught.value) is error
    assert caught.value.example.startswith("/kpi")


def test_error_examples_name_the_kpi_asked_about():
    with pytest.raises(PeriodError) as caught:
        run("uptime 2026-13")
    assert caught.value.example == "/kpi system_uptime last month"
    with pytest.raises(QueryError) as caught:
        run("uptime foo")
    assert caught.value.example == "/kpi system_uptime last month by branch"


def test_error_examples_work():
    for text in ["dso foo", "target dso abc", "record credit_sales x", "subscribe dso at 99:99"]:
        with pytest.raises(KpibotError) as caught:
            run(text)
        example = caught.value.example.removeprefix("/kpi ")
        assert run(example) is not None


def test_a_value_of_several_dimensions_needs_dim_equals_value():
    dimensions = {"branch": ["Berlin", "Munich"], "site": ["berlin", "HQ"]}
    with pytest.raises(QueryError, match="write `branch=Berlin` or `site=berlin`"):
        run("dso in Berlin", dimensions=dimensions)
    assert run("dso site=BERLIN", dimensions=dimensions) == Ask("dso", filters={"site": "berlin"})


def test_a_name_shared_by_two_kpis_asks_for_the_key():
    kpis = [KpiName("cost_a", "Cost A", ("cost",)), KpiName("cost_b", "Cost B", ("cost",))]
    with pytest.raises(QueryError, match="could mean `cost_a` or `cost_b`"):
        run("cost last month", kpis=kpis)
    with pytest.raises(QueryError, match="could mean `cost_a` or `cost_b`"):
        run("subscribe cost", kpis=kpis)
    assert run("cost_b", kpis=kpis) == Ask("cost_b")


def test_a_key_is_its_kpi_whatever_other_kpis_call_themselves():
    # Another KPI with the alias "DSO", or named like finance_error_rate: the keys still win.
    kpis = [*KPIS, KpiName("other_rate", "Other rate", ("DSO",)),
            KpiName("newarea", "Finance Error Rate")]  # fmt: skip
    assert run("dso last month", kpis=kpis) == Ask("dso", OCTOBER)
    assert run("finance_error_rate", kpis=kpis) == Ask("finance_error_rate")
    assert run("subscribe dso", kpis=kpis) == Subscribe(("dso",))
    assert run("finance error rate", kpis=kpis) == Ask("finance_error_rate")  # its key's words


def test_a_kpi_named_like_a_command_still_matches():
    kpis = [*KPIS, KpiName("alerts_handled", "Alerts handled")]
    assert run("alerts handled last month", kpis=kpis) == Ask("alerts_handled", OCTOBER)
    assert run("alerts", kpis=kpis) == Alerts()


def test_suggestions_only_come_from_visible_kpis():
    visible = [kpi for kpi in KPIS if kpi.key != "dso"]
    for text in ["dso", "days sales outstanding", "dsoo"]:
        with pytest.raises(UnknownKpi) as caught:
            run(text, kpis=visible)
        assert "Days Sales Outstanding" not in str(caught.value)
        assert "`dso`" not in str(caught.value)


def test_hidden_kpi_reads_like_a_missing_one():
    visible = [kpi for kpi in KPIS if kpi.key != "dso"]
    with pytest.raises(UnknownKpi) as hidden:
        run("dso", kpis=visible)
    with pytest.raises(UnknownKpi) as missing:
        run("dso", kpis=[])
    assert str(hidden.value) == str(missing.value) == "I don't know a KPI called “dso”."


def test_no_kpis_no_areas_no_dimensions():
    empty = {"kpis": [], "areas": [], "measures": [], "dimensions": {}}
    assert run("", **empty) == Help()
    assert run("list", **empty) == ListKpis(None)
    with pytest.raises(UnknownKpi):
        run("dso", **empty)
    with pytest.raises(QueryError, match="no dimensions yet"):
        run("dso by branch", **{**empty, "kpis": KPIS})
    with pytest.raises(QueryError, match="none yet"):
        run("list finance", **empty)


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("x" * 500, "x"),
        ("dso " + "y" * 500, "y"),
        ("dso by " + "z" * 500, "z"),
        ("dso branch=" + "w" * 500, "w"),
        ("target dso " + "9" * 500, "9"),
        ("list " + "v" * 500, "v"),
        ("subscribe dso tz " + "u" * 500, "u"),
        ("record " + "t" * 500 + " 5", "t"),
    ],
)
def test_echoed_text_is_cut_to_80_characters(text, letter):
    with pytest.raises(KpibotError) as caught:
        run(text)
    message = str(caught.value)
    assert letter * 79 + "…" in message  # 79 characters and an ellipsis: 80 in all
    assert letter * 80 not in message


def test_slack_markup_is_echoed_raw():
    # Escaping for Slack happens in the templates; the parser keeps the user's text.
    with pytest.raises(UnknownKpi, match="“<!channel>”"):
        run("<!channel>")


# --- arbitrary input ------------------------------------------------------------------

VOCABULARY = (
    """
    dso trend target record list subscribe alerts digest help last month 12w q3 2026-W53
    2026-13 ytd by branch team branch=Berlin berlin = == warn due 2027-06-30 at 09:00 tz
    Europe/Berlin on monday 1,200 12% -5 credit_sales what's ? <!channel> <@U123> " “ finance
""".split()
    + ["error rate", "\u202e", "\x00", "\u200b", "\n"]
)
SCHEMES = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=8)), max_size=12).map(
        " ".join
    ),
    st.text(min_size=1, max_size=20).map(lambda seed: (seed * 3000)[:3000]),
    st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=5).map(
        lambda words: ((" ".join(words) + " ") * 300)[:3000]
    ),
)


@given(SCHEMES)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_text_gives_a_request_or_a_kpibot_error(text):
    started = clock.perf_counter()
    try:
        request = run(text)
    except KpibotError as error:
        assert isinstance(error, QueryError | PeriodError)
        assert error.example
        assert len(str(error)) < 1000
    else:
        assert request is not None
    assert clock.perf_counter() - started < 2  # generous, only to catch a runaway
