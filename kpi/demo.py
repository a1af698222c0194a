"""`kpibot demo`: a realistic year of every built-in measure, with storylines that are true.

The records are a pure function of `as_of` (one seeded generator, never the clock), so a
second load upserts the same rows and changes nothing. The storylines are placed relative to
`as_of` (the last complete week, month, quarter) and their lines are computed from the
generated records the way the KPIs are: each measure aggregated over the period by its own
rule, then across series, then the formula with the catalog's targets.
"""

import random
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from kpi import catalog
from kpi.formulas import parse_formula
from kpi.importer import load_records
from kpi.periods import MONTH_NAMES

BRANCHES = ("Berlin", "Madrid", "London")
SEED = 20_261_126  # a constant: the same as_of always gives the same year
YEAR_DAYS = 365
WARMUP_DAYS = 150  # sales and purchases before the year, so balances start realistic
ONE_DAY = timedelta(days=1)
HOLIDAYS = ((1, 1), (12, 25), (12, 26))  # (month, day) on which no one books anything

# Per branch: size of the business, and how each function differs.
SCALE = {"Berlin": 1.0, "Madrid": 0.9, "London": 0.95}
REVENUE = {"Berlin": 210_000, "Madrid": 200_000, "London": 180_000}  # per working day
PURCHASES = {"Berlin": 95_000, "Madrid": 80_000, "London": 85_000}
COLLECTION_DAYS = {"Berlin": 40, "Madrid": 42, "London": 44}  # DSO before the slip
MADRID_SLIP_DAYS = 70  # how much longer Madrid's customers take at the end of the slip
INVOICES = {"Berlin": 120, "Madrid": 95, "London": 105}
FINANCE_TEAMS = {"AP": 380, "AR": 260}  # postings per working day
ERROR_RATE = {"Berlin": 0.005, "Madrid": 0.007, "London": 0.011}
HIRES = {"Berlin": 6, "Madrid": 4, "London": 5}  # per month
HEADCOUNT = {"Berlin": 430, "Madrid": 310, "London": 365}
LEAVER_WEIGHT = {"Berlin": 0.9, "Madrid": 1.0, "London": 1.15}
SATISFACTION = {"Berlin": 4.3, "Madrid": 3.95, "London": 4.15}
SYSTEMS = (
    "ERP",
    "CRM",
    "Email",
    "Payroll",
    "HR portal",
    "Helpdesk",
    "File share",
    "VPN",
    "Intranet",
    "BI",
)
INCIDENTS = {"Network": 0.9, "Application": 1.4, "Hardware": 0.7}  # per working day
TICKETS = {"Service desk": (44, 6), "Field": (11, 1)}  # per working day, per weekend day
TICKET_HOURS = {"Service desk": (3.0, 5.0), "Field": (12.0, 18.0)}
TICKET_SLOWDOWN = {"Service desk": 4.5, "Field": 5.0}  # hours multiplier after the switch
SUPPORT_COST = {"Finance": 3_600, "HR": 2_300, "IT": 3_100}  # per working day
FUNCTIONS = tuple(SUPPORT_COST)
# Months before the last complete month with confirmed security incidents, and where.
SECURITY_INCIDENTS = {9: ("London",), 6: ("Madrid", "Berlin"), 4: ("Berlin",)}

Record = tuple[str, date | datetime, float, dict[str, str]]


@dataclass(frozen=True)
class DemoSummary:
    rows: int
    measures: int
    series: int
    changed: int
    first_day: date
    last_day: date
    stories: list[str]


def first_day(as_of: date) -> date:
    """A year back, from the start of that quarter: every month and quarter shown is whole
    (a half-fed first month would read as a 290-day DSO at the start of every trend)."""
    return _quarter_start(as_of - YEAR_DAYS * ONE_DAY)


def demo_records(as_of: date) -> Iterator[Record]:
    """From `first_day(as_of)` up to and including the day before `as_of`, every measure."""
    yield from _Year(as_of).generate()


def load_demo(engine: Engine, *, tz: ZoneInfo, as_of: date) -> DemoSummary:
    """Upsert the demo year through the importer, so rollups stay current; idempotent."""
    records = list(demo_records(as_of))
    result = load_records(engine, records, tz=tz)
    return DemoSummary(
        rows=result.rows,
        measures=result.measures,
        series=result.series,
        changed=result.changed,
        first_day=first_day(as_of),
        last_day=as_of - ONE_DAY,
        stories=storylines(records, as_of),
    )


# ---------------------------------------------------------------------------------------------
# Calendar helpers


def _is_workday(day: date) -> bool:
    return day.weekday() < 5 and (day.month, day.day) not in HOLIDAYS


def _week_start(day: date) -> date:
    return day - day.weekday() * ONE_DAY


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _add_months(day: date, months: int) -> date:
    year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
    return date(year, month + 1, 1)


def _quarter_start(day: date) -> date:
    return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def _quarter_end_rush(day: date) -> float:
    """Finance books more in the second half of a quarter's last month."""
    return 1.3 if day.month % 3 == 0 and day.day >= 16 else 1.0


def _summer(day: date) -> float:
    return {6: 0.8, 7: 0.5, 8: 0.5}.get(day.month, 1.0)


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: fine for the small means used here."""
    limit, count, product = pow(2.718281828459045, -mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _spread(rng: random.Random, total: float, days: Sequence[date]) -> dict[date, float]:
    """Split an amount over days with random weights."""
    weights = [rng.expovariate(1.0) for _ in days]
    scale = total / sum(weights)
    return {day: weight * scale for day, weight in zip(days, weights, strict=True)}


# ---------------------------------------------------------------------------------------------
# The generator


class _Year:
    def __init__(self, as_of: date) -> None:
        self.rng = random.Random(SEED)
        self.first = first_day(as_of)
        self.last = as_of - ONE_DAY
        self.span = (as_of - self.first).days
        self.days = [self.first + i * ONE_DAY for i in range(self.span)]
        self.workdays = [d for d in self.days if _is_workday(d)]
        # The latest complete periods as the KPIs see them on `as_of`.
        self.last_week = _week_start(as_of) - 7 * ONE_DAY
        self.last_month = _add_months(_month_start(as_of), -1)
        self.months = self._starts(_month_start(self.first), lambda d: _add_months(d, 1))
        self.quarters = self._starts(_quarter_start(self.first), lambda d: _add_months(d, 3))
        self.weeks = self._starts(_week_start(self.first), lambda d: d + 7 * ONE_DAY)
        self.records: list[Record] = []
        self.headcount: dict[str, dict[date, int]] = {}

    def _starts(self, start: date, step: Callable[[date], date]) -> list[date]:
        starts = []
        while start <= self.last:
            starts.append(start)
            start = step(start)
        return starts

    def _in(self, days: Sequence[date], start: date, end: date) -> list[date]:
        """The days from `days` within [start, end) and within the year."""
        return [d for d in days if start <= d < end and self.first <= d <= self.last]

    def emit(self, measure: str, day: date, value: float, **dims: str) -> None:
        self.records.append((measure, day, float(value), dict(dims)))

    def generate(self) -> list[Record]:
        self.sales()
        self.purchases()
        self.invoices()
        self.postings()
        self.hiring()
        self.people()
        self.uptime()
        self.incidents()
        self.helpdesk()
        self.security()
        self.support()
        self.complaints()
        return self.records

    def growth(self, day: date) -> float:
        return 1 + 0.06 * (day - self.first).days / YEAR_DAYS

    # Finance ---------------------------------------------------------------------------------

    def collection_days(self, branch: str, day: date) -> int:
        """How many days of credit sales are outstanding; Madrid slips over four months and
        stays slipped for the last two complete months."""
        days = COLLECTION_DAYS[branch]
        if branch == "Madrid":
            start = _add_months(self.last_month, -5)
            full = _add_months(self.last_month, -1)
            progress = min(1.0, max(0.0, (day - start).days / (full - start).days))
            days += MADRID_SLIP_DAYS * progress
        return round(days)

    def sales(self) -> None:
        rng = self.rng
        start = self.first - WARMUP_DAYS * ONE_DAY
        calendar = [start + i * ONE_DAY for i in range(WARMUP_DAYS + self.span)]
        for branch in BRANCHES:
            credit: dict[date, float] = {}
            for day in calendar:
                if not _is_workday(day):
                    continue
                revenue = REVENUE[branch] * _quarter_end_rush(day) * self.growth(day)
                revenue *= rng.uniform(0.85, 1.15)
                credit[day] = revenue * rng.uniform(0.78, 0.84)
                if day >= self.first:
                    self.emit("revenue", day, round(revenue, 2), branch=branch)
                    self.emit("credit_sales", day, round(credit[day], 2), branch=branch)
            # Receivables are the credit sales of the last N days not yet collected.
            for day in self.days:
                window = self.collection_days(branch, day)
                unpaid = sum(credit.get(day - k * ONE_DAY, 0.0) for k in range(window))
                balance = unpaid * rng.uniform(0.98, 1.02)
                self.emit("ar_balance", day, round(balance, 2), branch=branch)

    def purchases(self) -> None:
        rng = self.rng
        start = self.first - WARMUP_DAYS * ONE_DAY
        calendar = [start + i * ONE_DAY for i in range(WARMUP_DAYS + self.span)]
        for branch in BRANCHES:
            bought: dict[date, float] = {}
            for day in calendar:
                if not _is_workday(day):
                    continue
                amount = PURCHASES[branch] * _quarter_end_rush(day) * self.growth(day)
                bought[day] = amount * rng.uniform(0.85, 1.15)
                if day >= self.first:
                    self.emit("purchases", day, round(bought[day], 2), branch=branch)
            # Payables are sampled each Monday: about a month of purchases not yet paid.
            for day in self.days:
                if day.weekday() == 0:
                    owed = sum(bought.get(day - k * ONE_DAY, 0.0) for k in range(1, 31))
                    balance = owed * rng.uniform(0.92, 1.04)
                    self.emit("ap_balance", day, round(balance, 2), branch=branch)

    def invoices(self) -> None:
        rng = self.rng
        for branch in BRANCHES:
            for day in self.workdays:
                rush = _quarter_end_rush(day)
                count = round(INVOICES[branch] * rush * rng.uniform(0.8, 1.2))
                hours = count * rng.uniform(30.0, 40.0) * (1.12 if rush > 1 else 1.0)
                self.emit("invoices_processed", day, count, branch=branch)
                self.emit("invoice_processing_hours", day, round(hours, 1), branch=branch)

    def postings(self) -> None:
        rng = self.rng
        for branch in BRANCHES:
            for team, per_day in FINANCE_TEAMS.items():
                for day in self.workdays:
                    rush = _quarter_end_rush(day)
                    count = round(per_day * SCALE[branch] * rush * rng.uniform(0.85, 1.15))
                    rate = ERROR_RATE[branch] * (1.15 if rush > 1 else 1.0)
                    errors = round(count * rate * rng.uniform(0.7, 1.3))
                    dims = {"branch": branch, "team": team}
                    self.emit("finance_transactions", day, count, **dims)
                    self.emit("finance_errors", day, errors, **dims)

    # HR --------------------------------------------------------------------------------------

    def hiring(self) -> None:
        """Hires per branch and month, fewer in summer; each takes 26–41 days to fill."""
        rng = self.rng
        for branch in BRANCHES:
            hires: dict[date, int] = defaultdict(int)
            days_to_fill: dict[date, float] = defaultdict(float)
            for month in self.months:
                days = self._in(self.workdays, month, _add_months(month, 1))
                if not days:
                    continue
                share = len(days) / len([d for d in self._month_days(month) if _is_workday(d)])
                count = round(HIRES[branch] * _summer(month) * rng.uniform(0.8, 1.2) * share)
                count = max(count, 1 if share > 0.5 else 0)
                low, high = (30.0, 41.0) if _summer(month) < 1 else (26.0, 40.0)
                for _ in range(count):
                    day = rng.choice(days)
                    hires[day] += 1
                    days_to_fill[day] += round(rng.uniform(low, high))
            for day in self.workdays:
                self.emit("hires", day, hires[day], branch=branch)
                self.emit("days_to_fill", day, days_to_fill[day], branch=branch)

    def _month_days(self, month: date) -> list[date]:
        end = _add_months(month, 1)
        return [month + i * ONE_DAY for i in range((end - month).days)]

    def people(self) -> None:
        rng = self.rng
        for branch in BRANCHES:
            samples = {}
            for day in self.days:
                if day.weekday() == 0:
                    level = HEADCOUNT[branch] * self.growth(day) * (0.99 if _summer(day) < 1 else 1)
                    samples[day] = round(level + rng.uniform(-3, 3))
                    self.emit("headcount", day, samples[day], branch=branch)
            self.headcount[branch] = samples
        self.separations()
        self.satisfaction()
        self.training()

    def _average_headcount(self, branch: str, start: date, end: date) -> float:
        samples = [v for d, v in self.headcount[branch].items() if start <= d < end]
        return sum(samples) / len(samples) if samples else HEADCOUNT[branch]

    def separations(self) -> None:
        """Turnover around 1 % a month, rising into the at-risk band for the last three."""
        rng = self.rng
        leavers: dict[tuple[str, date], int] = defaultdict(int)
        rising = {
            _add_months(self.last_month, -k): rate for k, rate in enumerate((1.38, 1.34, 1.28))
        }
        for month in self.months:
            end = _add_months(month, 1)
            days = self._in(self.workdays, month, end)
            if not days:
                continue
            share = len(days) / len([d for d in self._month_days(month) if _is_workday(d)])
            rate = rising.get(month) or rng.uniform(0.85, 1.1)
            heads = {b: self._average_headcount(b, month, end) for b in BRANCHES}
            count = round(rate / 100 * sum(heads.values()) * share)
            weights = [heads[b] * LEAVER_WEIGHT[b] for b in BRANCHES]
            for _ in range(count):
                branch = rng.choices(BRANCHES, weights)[0]
                leavers[branch, rng.choice(days)] += 1
        for branch in BRANCHES:
            for day in self.workdays:
                self.emit("separations", day, leavers[branch, day], branch=branch)

    def satisfaction(self) -> None:
        """A monthly pulse survey per branch, published on the 10th."""
        rng = self.rng
        for branch in BRANCHES:
            for month in self.months:
                day = month.replace(day=10)
                if self.first <= day <= self.last:
                    score = SATISFACTION[branch] + rng.uniform(-0.08, 0.08)
                    self.emit("satisfaction_score", day, round(score, 2), branch=branch)

    def training(self) -> None:
        """About 250–320 per employee a quarter (less in summer), spread over working days."""
        rng = self.rng
        for branch in BRANCHES:
            for quarter in self.quarters:
                end = _add_months(quarter, 3)
                days = self._in(self.workdays, quarter, end)
                if not days:
                    continue
                all_days = [quarter + i * ONE_DAY for i in range((end - quarter).days)]
                share = len(days) / len([d for d in all_days if _is_workday(d)])
                per_head = rng.uniform(250, 320) * (0.85 if quarter.month == 7 else 1.0)
                total = self._average_headcount(branch, quarter, end) * per_head * share
                for day, amount in _spread(rng, total, days).items():
                    self.emit("training_cost", day, round(amount, 2), branch=branch)

    # IT --------------------------------------------------------------------------------------

    @property
    def outage_week(self) -> date:
        return self.last_week - 8 * 7 * ONE_DAY

    def uptime(self) -> None:
        """Every system is monitored all day; small blips, and one big outage in London."""
        rng = self.rng
        down: dict[tuple[str, str, date], float] = defaultdict(float)
        series = [(system, branch) for branch in BRANCHES for system in SYSTEMS]
        for system, branch in series:
            for day in self.days:
                if rng.random() < 0.025:
                    down[system, branch, day] = rng.uniform(2, 25)
        # Keep ordinary weeks comfortably above three nines.
        weekly_cap = 200.0
        for week in self.weeks:
            keys = [k for k in down if week <= k[2] < week + 7 * ONE_DAY]
            total = sum(down[k] for k in keys)
            if total > weekly_cap:
                for key in keys:
                    down[key] *= weekly_cap / total
        outage = self.outage_week
        for system, branch, offset, minutes in (
            ("ERP", "London", 1, 600),
            ("ERP", "London", 2, 1440),
            ("ERP", "London", 3, 420),
            ("Email", "London", 1, 95),
            ("ERP", "Berlin", 2, 120),
            # The week after: the fix needed two more restarts.
            ("ERP", "London", 7, 240),
            ("ERP", "London", 11, 310),
        ):
            down[system, branch, outage + offset * ONE_DAY] += minutes
        for system, branch in series:
            for day in self.days:
                minutes = min(1440, round(down[system, branch, day]))
                dims = {"system": system, "branch": branch}
                self.emit("uptime_minutes", day, 1440 - minutes, **dims)
                self.emit("monitored_minutes", day, 1440, **dims)

    def incidents(self) -> None:
        rng = self.rng
        outage = self.outage_week
        for branch in BRANCHES:
            for category, per_day in INCIDENTS.items():
                for day in self.days:
                    mean = per_day * SCALE[branch] * (1.0 if _is_workday(day) else 0.3)
                    count = _poisson(rng, mean)
                    hours = sum(rng.uniform(0.8, 5.2) for _ in range(count))
                    if (branch, category) == ("London", "Application") and outage <= day < (
                        outage + 3 * ONE_DAY
                    ):
                        count, hours = count + 1, hours + rng.uniform(10, 14)
                    dims = {"branch": branch, "category": category}
                    self.emit("incidents_resolved", day, count, **dims)
                    self.emit("incident_resolution_hours", day, round(hours, 1), **dims)

    @property
    def ticket_switch(self) -> date:
        """The Monday the helpdesk moved to a new ticketing tool."""
        return self.last_week - 10 * 7 * ONE_DAY

    def slowdown(self, team: str, day: date) -> float:
        """Tickets take longer and longer for seven weeks after the switch, then stay slow."""
        progress = min(1.0, max(0.0, (day - self.ticket_switch).days / 49))
        return 1 + (TICKET_SLOWDOWN[team] - 1) * progress

    def helpdesk(self) -> None:
        rng = self.rng
        for branch in BRANCHES:
            for team, (weekday, weekend) in TICKETS.items():
                low, high = TICKET_HOURS[team]
                for day in self.days:
                    per_day = weekday if _is_workday(day) else weekend
                    count = round(per_day * SCALE[branch] * rng.uniform(0.8, 1.2))
                    hours = count * rng.uniform(low, high) * self.slowdown(team, day)
                    dims = {"branch": branch, "team": team}
                    self.emit("tickets_resolved", day, count, **dims)
                    self.emit("ticket_resolution_hours", day, round(hours, 1), **dims)

    def security(self) -> None:
        found: dict[tuple[str, date], int] = defaultdict(int)
        for months_back, branches in SECURITY_INCIDENTS.items():
            day = max(self.first, _add_months(self.last_month, -months_back).replace(day=14))
            for branch in branches:
                found[branch, day] += 1
        for branch in BRANCHES:
            for day in self.days:
                self.emit("security_incidents", day, found[branch, day], branch=branch)

    # Back office -----------------------------------------------------------------------------

    def support(self) -> None:
        """Support costs a bit over 4 % of revenue; a transaction costs about 4.2."""
        rng = self.rng
        for branch in BRANCHES:
            for function, per_day in SUPPORT_COST.items():
                for day in self.workdays:
                    cost = per_day * SCALE[branch] * rng.uniform(0.9, 1.1)
                    handled = round(cost / rng.uniform(3.8, 4.6))
                    dims = {"branch": branch, "function": function}
                    self.emit("support_cost", day, round(cost, 2), **dims)
                    self.emit("transactions", day, handled, **dims)

    def complaints(self) -> None:
        """One to three a week across the company, three to five in December's rush."""
        rng = self.rng
        counts: dict[tuple[str, str, date], int] = defaultdict(int)
        for week in self.weeks:
            days = self._in(self.workdays, week, week + 7 * ONE_DAY)
            if not days:
                continue
            december = (week + 3 * ONE_DAY).month == 12
            for _ in range(rng.randint(3, 5) if december else rng.randint(1, 3)):
                branch = rng.choices(BRANCHES, [SCALE[b] for b in BRANCHES])[0]
                counts[branch, rng.choice(FUNCTIONS), rng.choice(days)] += 1
        for branch in BRANCHES:
            for function in FUNCTIONS:
                for day in self.days:
                    count = counts[branch, function, day]
                    self.emit("complaints", day, count, branch=branch, function=function)


# ---------------------------------------------------------------------------------------------
# Storylines: KPI values computed from the records as the KPIs compute them


class _Book:
    """The records by measure and day, with the built-in catalog's rules and targets."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.by_day: dict[str, dict[date, list[tuple[str, float]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for measure, when, value, dims in records:
            day = when.date() if isinstance(when, datetime) else when
            key = ",".join(f"{k}={dims[k]}" for k in sorted(dims))
            self.by_day[measure][day].append((key, value))
        spec = catalog.read_spec(Path(str(catalog.BUILTIN)))
        self.measures = spec.measures
        self.kpis = spec.kpis

    def measure(self, name: str, start: date, end: date, where: Mapping[str, str]) -> float | None:
        """Aggregated over time per series in [start, end), then across series."""
        rule = self.measures[name]
        wanted = [f"{k}={v}" for k, v in where.items()]
        per_series: dict[str, list[float]] = defaultdict(list)
        day = start
        while day < end:
            for key, value in self.by_day[name].get(day, ()):
                if all(w in key.split(",") for w in wanted):
                    per_series[key].append(value)
            day += ONE_DAY
        if not per_series:
            return None
        over = [_aggregate(rule.over_time or "sum", values) for values in per_series.values()]
        return _aggregate(rule.across or "sum", over)

    def kpi(self, key: str, start: date, end: date, **where: str) -> float | None:
        spec = self.kpis[key]
        formula = parse_formula(spec.formula or "", list(self.measures))
        values = {m: self.measure(m, start, end, where) for m in formula.measures}
        return formula.evaluate(values, (end - start).days)

    def current(self, key: str, as_of: date) -> float | None:
        """The KPI over the latest complete period of its cadence."""
        start, end = last_complete(self.kpis[key].cadence or "month", as_of)
        return self.kpi(key, start, end)

    def target(self, key: str) -> str:
        return f"{self.kpis[key].target:g}"

    def band(self, key: str, unit: str) -> str:
        return f"target {self.target(key)}{unit}, warn {self.kpis[key].warn:g}{unit}"

    def status(self, key: str, value: float | None) -> str:
        spec = self.kpis[key]
        if value is None:
            return "no_data"
        sign = 1 if spec.better == "lower" else -1
        if spec.target is None or sign * (value - spec.target) <= 0:
            return "on_target"
        if spec.warn is not None and sign * (value - spec.warn) <= 0:
            return "at_risk"
        return "off_target"


def last_complete(cadence: str, as_of: date) -> tuple[date, date]:
    """[start, end) of the latest period of `cadence` that ended before `as_of`."""
    if cadence == "day":
        return as_of - ONE_DAY, as_of
    if cadence == "week":
        end = _week_start(as_of)
        return end - 7 * ONE_DAY, end
    if cadence == "quarter":
        end = _quarter_start(as_of)
        return _add_months(end, -3), end
    end = _month_start(as_of)
    return _add_months(end, -1), end


def _aggregate(rule: str, values: Sequence[float]) -> float:
    if rule == "sum":
        return sum(values)
    if rule == "avg":
        return sum(values) / len(values)
    if rule == "last":
        return values[-1]  # values are in day order
    return min(values) if rule == "min" else max(values)


def _month_name(month: date) -> str:
    return f"{MONTH_NAMES[month.month - 1]} {month.year}"  # not strftime: it follows the locale


def _week_name(week: date) -> str:
    year, number, _ = week.isocalendar()
    return f"{year}-W{number:02d}"


def _periods(last: date, step: Callable[[date, int], date], count: int) -> list[date]:
    """The starts of the `count` periods ending with the one starting at `last`, oldest first."""
    return [step(last, -k) for k in range(count - 1, -1, -1)]


def _run_since(
    book: _Book, key: str, starts: Sequence[date], step: Callable[[date, int], date], status: str
) -> int:
    """How many of the latest periods in a row have `status`."""
    run = 0
    for start in reversed(starts):
        if book.status(key, book.kpi(key, start, step(start, 1))) != status:
            break
        run += 1
    return run


def storylines(records: Sequence[Record], as_of: date) -> list[str]:
    """One line per storyline, with the numbers the KPIs will show on `as_of`."""
    book = _Book(records)
    year = _Year(as_of)

    def month_step(d: date, n: int) -> date:
        return _add_months(d, n)

    def week_step(d: date, n: int) -> date:
        return d + 7 * n * ONE_DAY

    last_month, last_week = year.last_month, year.last_week
    months = _periods(last_month, month_step, 10)
    weeks = _periods(last_week, week_step, 20)
    next_month = _add_months(last_month, 1)
    next_week = last_week + 7 * ONE_DAY
    stories = []

    dso = book.kpi("dso", last_month, next_month)
    madrid = book.kpi("dso", last_month, next_month, branch="Madrid")
    run = _run_since(book, "dso", months, month_step, "off_target")
    stories.append(
        f"dso: Madrid's collections slipped — {dso:.0f} days in {_month_name(last_month)} "
        f"(target {book.target('dso')}, Madrid alone {madrid:.0f}), off target since "
        f"{_month_name(_add_months(last_month, 1 - run))}"
    )

    helpdesk = book.kpi("helpdesk_resolution_time", last_week, next_week)
    run = _run_since(book, "helpdesk_resolution_time", weeks, week_step, "off_target")
    stories.append(
        f"helpdesk_resolution_time: tickets slowed after the switch to a new ticketing tool in "
        f"{_week_name(year.ticket_switch)} — {helpdesk:.1f} h a ticket in {_week_name(last_week)} "
        f"({book.band('helpdesk_resolution_time', ' h')}), off target for {run} weeks"
    )

    turnover = book.kpi("employee_turnover_rate", last_month, next_month)
    run = _run_since(book, "employee_turnover_rate", months, month_step, "at_risk")
    stories.append(
        f"employee_turnover_rate: at risk — {turnover:.2f} % in {_month_name(last_month)} "
        f"({book.band('employee_turnover_rate', ' %')}), in the at-risk band for {run} months"
    )

    outage = year.outage_week
    worst = book.kpi("system_uptime", outage, outage + 7 * ONE_DAY)
    uptime = book.kpi("system_uptime", last_week, next_week)
    stories.append(
        f"system_uptime: recovering — London's ERP outage took {_week_name(outage)} to "
        f"{worst:.2f} % (target {book.target('system_uptime')} %); {uptime:.2f} % in "
        f"{_week_name(last_week)}, "
        "back on target"
    )

    quarter = _add_months(_quarter_start(as_of), -3)
    score = book.kpi("employee_satisfaction", quarter, _add_months(quarter, 3))
    channels = ", ".join(book.kpis["employee_satisfaction"].visibility or ["everyone"])
    stories.append(
        f"employee_satisfaction: {score:.2f} of 5 in {quarter.year}-Q{(quarter.month + 2) // 3}, "
        f"on target — confidential: only {channels} sees it"
    )

    told = {"dso", "helpdesk_resolution_time", "employee_turnover_rate", "system_uptime"}
    told.add("employee_satisfaction")
    others = {
        key: book.status(key, book.current(key, as_of)) for key in book.kpis if key not in told
    }
    astray = [
        f"{key} ({status.replace('_', ' ')})"
        for key, status in others.items()
        if status != "on_target"
    ]
    if astray:
        stories.append(f"also not on target: {', '.join(astray)}")
    else:
        stories.append(f"the other {len(others)} KPIs are on target")
    return stories
