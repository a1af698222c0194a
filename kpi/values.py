"""KPI values: formulas over aggregated measures, targets, status, change, breakdowns, trends."""

import ast
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date

from sqlmodel import Session, select

from kpi.aggregate import NO_SCOPE, Scope, buckets_for, first_days, measure_values
from kpi.formulas import Formula, FormulaError, parse_formula
from kpi.models import Kpi, Measure, Target
from kpi.periods import Period

log = logging.getLogger("kpibot")

# `no_target`: a value with no target to judge it by (a KPI a catalog gave none).
STATUSES = ("on_target", "at_risk", "off_target", "no_target", "no_data")
LATE_SHARE = 10  # data may start up to a tenth of a previous period late, for a change


@dataclass(frozen=True)
class KpiDef:
    kpi: Kpi
    formula: Formula
    measures: dict[str, Measure]
    targets: tuple[Target, ...]

    @property
    def key(self) -> str:
        return self.kpi.key

    @property
    def adds_up(self) -> bool:
        """Whether its value over a long period is the sum of its values over the periods in
        it: a sum of `sum` measures (incidents, complaints), no ratio, no `days`. Such a KPI's
        target is per period of its cadence."""
        return _adds_up(self.formula.tree.body, self.measures)

    def target_for(self, filters: Sequence[tuple[str, str]] = ()) -> Target | None:
        """A dimension value's own target overrides the KPI's when that value is the scope."""
        by_scope = {(t.dim, t.dim_value): t for t in self.targets}
        if len(filters) == 1 and tuple(filters[0]) in by_scope:
            return by_scope[tuple(filters[0])]
        return by_scope.get(("", ""))


def _adds_up(node: ast.AST, measures: dict[str, Measure]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in measures and measures[node.id].over_time == "sum"
    if isinstance(node, ast.UnaryOp):
        return _adds_up(node.operand, measures)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
        return _adds_up(node.left, measures) and _adds_up(node.right, measures)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):  # by a constant only
        left, right = node.left, node.right
        if isinstance(left, ast.Constant):
            return _adds_up(right, measures)
        return isinstance(right, ast.Constant) and _adds_up(left, measures)
    return False


# Average days of a cadence's period: what a target per period of it is pro-rated by.
CADENCE_DAYS = {"day": 1.0, "week": 7.0, "month": 365.25 / 12, "quarter": 365.25 / 4}


def target_over(target: Target | None, kpi: KpiDef, period: Period) -> Target | None:
    """The target over `period`. A KPI that adds up over time has one per period of its
    cadence: over another period it is pro-rated by days (5 complaints a week are 236 in 331
    days), or 90 complaints this year would read as 18 times over a weekly target of 5."""
    if target is None or not kpi.adds_up or period.grain == kpi.kpi.cadence:
        return target
    share = period.days / CADENCE_DAYS[kpi.kpi.cadence]
    return Target(
        kpi_key=target.kpi_key,
        dim=target.dim,
        dim_value=target.dim_value,
        target=target.target * share,
        warn=None if target.warn is None else target.warn * share,
        due=target.due,
    )


@dataclass(frozen=True)
class Catalog:
    kpis: dict[str, KpiDef]
    measures: dict[str, Measure]

    def areas(self) -> list[str]:
        return sorted({d.kpi.area for d in self.kpis.values()})


def load_catalog(session: Session) -> Catalog:
    measures = {m.name: m for m in session.exec(select(Measure))}
    targets: dict[str, list[Target]] = {}
    for t in session.exec(select(Target)):
        targets.setdefault(t.kpi_key, []).append(t)
    kpis = {}
    for kpi in session.exec(select(Kpi).order_by(Kpi.area, Kpi.key)):
        try:
            formula = parse_formula(kpi.formula, list(measures))
        except FormulaError as error:  # stored before a check it fails: one KPI, not all
            log.warning("KPI %s left out: %s (fix it with kpibot catalog load)", kpi.key, error)
            continue
        used = {name: measures[name] for name in formula.measures}
        kpis[kpi.key] = KpiDef(kpi, formula, used, tuple(targets.get(kpi.key, ())))
    return Catalog(kpis=kpis, measures=measures)


@dataclass(frozen=True)
class Value:
    """A KPI's value for one period and scope, with the inputs that made it."""

    value: float | None
    inputs: dict[str, float | None]
    days: int
    reason: str | None = None  # why there is no value
    starts: date | None = None  # the day data starts, when that is inside the period


def status_of(value: float | None, target: Target | None, better: str) -> str:
    if value is None:
        return "no_data"
    if target is None:
        return "no_target"
    sign = 1 if better == "lower" else -1
    if sign * (value - target.target) <= 0:
        return "on_target"
    if target.warn is not None and sign * (value - target.warn) <= 0:
        return "at_risk"
    return "off_target"


@dataclass(frozen=True)
class Change:
    delta: float
    percent: float | None
    better: bool | None  # None when unchanged


def change_of(value: float | None, previous: float | None, better: str) -> Change | None:
    if value is None or previous is None:
        return None
    delta = value - previous
    percent = delta / abs(previous) * 100 if previous else None
    if delta == 0:
        return Change(0.0, percent, None)
    return Change(delta, percent, (delta < 0) == (better == "lower"))


def values(
    session: Session,
    kpi: KpiDef,
    periods: Sequence[Period],
    scope: Scope = NO_SCOPE,
    starts: dict[str | None, date] | None = None,
) -> dict[tuple[int, str | None], Value]:
    """The KPI for each period (and each group when `scope.by`): one query per measure. With
    `starts` (data_starts), the periods before the latest are what it is compared with, and
    one the data starts too late in has no value (see _comparable); the latest keeps its value
    and notes where its data starts, if late into it."""
    slices = [buckets_for(p.start, p.end, p.grain) for p in periods]
    per_measure = {
        name: measure_values(session, measure, slices, scope)
        for name, measure in kpi.measures.items()
    }
    groups = {g for found in per_measure.values() for (_, g) in found} or {None}
    if scope.by and not _splits(per_measure.values()):
        groups.discard(None)
    latest = max(periods, key=lambda p: p.start) if periods else None
    result = {}
    for i, period in enumerate(periods):
        for group in groups:
            inputs = {name: found.get((i, group)) for name, found in per_measure.items()}
            value = _evaluate(kpi, inputs, period.days)
            if starts is not None:
                judge = _comparable if period != latest else _noted
                value = judge(value, period, starts.get(group))
            result[(i, group)] = value
    return result


def _splits(per_measure: Iterable[dict[tuple[int, str | None], float]]) -> bool:
    """Whether every measure has data by the dimension asked for. Then the data without it
    is a group of its own (None), so the groups add up to the whole; otherwise the KPI cannot
    be split that way and None is no group at all (`dso by team` where sales have no team)."""
    return all(any(g is not None for (_, g) in found) for found in per_measure)


def _evaluate(kpi: KpiDef, inputs: dict[str, float | None], days: int) -> Value:
    missing = [name for name, v in inputs.items() if v is None]
    if missing:
        return Value(None, inputs, days, reason=f"no data for {', '.join(missing)}")
    value = kpi.formula.evaluate(inputs, days)
    if value is None:
        zero = [name.replace("_", " ") for name, v in inputs.items() if v == 0]
        said = f"{' and '.join(zero)} {'is' if len(zero) == 1 else 'are'} 0: " if zero else ""
        return Value(None, inputs, days, reason=f"{said}the formula divides by 0")
    return Value(value, inputs, days)


@dataclass
class Evaluated:
    """One KPI in one scope: value, previous value, status, change."""

    kpi: KpiDef
    value: Value
    previous: Value
    status: str
    target: Target | None
    change: Change | None
    group: str | None = None


def evaluate(
    session: Session,
    kpi: KpiDef,
    period: Period,
    previous: Period,
    scope: Scope = NO_SCOPE,
    starts: dict[str | None, date] | None = None,
) -> list[Evaluated]:
    """The KPI for the period and the one before, per group when `scope.by` is set. `starts`
    is data_starts(session, kpi, scope), when the caller keeps it."""
    if starts is None:
        starts = data_starts(session, kpi, scope)
    found = values(session, kpi, [period, previous], scope, starts)
    groups = sorted({g for (_, g) in found}, key=lambda g: (g is None, g or ""))
    better = kpi.kpi.better
    result = []
    for group in groups:
        filters = scope.filters + ((scope.by, group),) if scope.by and group else scope.filters
        target = target_over(kpi.target_for(filters), kpi, period)
        now = found[(0, group)]
        before = found.get((1, group), Value(None, {}, previous.days, "no data"))
        result.append(
            Evaluated(
                kpi=kpi,
                value=now,
                previous=before,
                status=status_of(now.value, target, better),
                target=target,
                change=change_of(now.value, before.value, better),
                group=group,
            )
        )
    return result


def data_starts(session: Session, kpi: KpiDef, scope: Scope = NO_SCOPE) -> dict[str | None, date]:
    """{group: the day from which every measure of the KPI that adds up over time has data}.
    Only a sum needs the whole period: a balance (`last`) is whole at the period's end, and a
    sampled level (`avg`, `min`, `max`) is a fair reading from any of its samples."""
    summed = [m.name for m in kpi.measures.values() if m.over_time == "sum"]
    return {
        group: max(days.values())
        for group, days in first_days(session, summed, scope).items()
        if len(days) == len(summed)
    }


def starts_late(period: Period, starts: date | None) -> bool:
    """Whether data starting on `starts` misses more than the period's first tenth (a month's
    first sale on its 3rd is fine)."""
    return starts is not None and (starts - period.start).days > period.days // LATE_SHARE


def _comparable(before: Value, period: Period, starts: date | None) -> Value:
    """A previous period's value, or none when its data starts too late into it to compare
    with: a year-to-date against a year that holds two months of data is no comparison."""
    if before.value is None or not starts_late(period, starts):
        return before
    return Value(None, before.inputs, before.days, reason=f"data starts {starts}", starts=starts)


def _noted(value: Value, period: Period, starts: date | None) -> Value:
    """The latest period's value, noting where its data starts if late into it."""
    if value.value is None or not starts_late(period, starts):
        return value
    return replace(value, starts=starts)
