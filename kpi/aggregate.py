"""Measures aggregated in SQL from the rollups the importer keeps current.

A measure is aggregated over time within each series by its `over_time` rule, then across the
series in scope by its `across` rule. Both steps run in the database, so a request reads one row
per series and period at most, never a measure's history.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import text
from sqlmodel import Session

from kpi.models import Measure

FILTERABLE_GRAINS = ("day", "week", "month")
ACROSS = {"sum": "SUM", "avg": "AVG", "min": "MIN", "max": "MAX", "last": "SUM"}
OVER_TIME = {
    "sum": "SUM(r.total)",
    "avg": "SUM(r.total) / SUM(r.count)",
    "min": "MIN(r.minimum)",
    "max": "MAX(r.maximum)",
}


@dataclass(frozen=True)
class Bucket:
    """One answer bucket: a local date range [start, end) read from rollups of one grain."""

    start: date
    end: date
    grain: str  # day | week | month


def buckets_for(start: date, end: date, grain: str) -> list[Bucket]:
    """Rollup slices covering [start, end): the grain itself when it has rollups, else months and
    the odd days at either edge (a quarter is three months; a year-to-date is months plus days)."""
    if grain in FILTERABLE_GRAINS:
        return [Bucket(start, end, grain)]
    first = start if start.day == 1 else _next_month(start)
    last = date(end.year, end.month, 1)
    if first >= last:
        return [Bucket(start, end, "day")]
    slices = [Bucket(first, last, "month")]
    if start < first:
        slices.insert(0, Bucket(start, first, "day"))
    if last < end:
        slices.append(Bucket(last, end, "day"))
    return slices


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


@dataclass(frozen=True)
class Scope:
    """Which series count: dimension filters (ANDed) and an optional dimension to group by."""

    filters: tuple[tuple[str, str], ...] = ()
    by: str | None = None


NO_SCOPE = Scope()


def measure_values(
    session: Session,
    measure: Measure,
    slices: Sequence[Sequence[Bucket]],
    scope: Scope = NO_SCOPE,
) -> dict[tuple[int, str | None], float]:
    """{(slice index, group): value} for each slice of buckets — one SQL statement for all."""
    params: dict[str, object] = {"measure": measure.name}
    ranges = _range_sql(slices, params)
    filters = _filter_sql(scope.filters, params)
    per_series = _per_series_sql(measure.over_time, ranges, filters)
    group_join, group_col, group_by = "", "NULL", ""
    if scope.by:
        params["by"] = scope.by
        group_join = "JOIN seriesdim g ON g.series_id = p.series_id AND g.dim = :by"
        group_col, group_by = "g.value", ", g.value"
    sql = (
        f"SELECT p.slice, {group_col} AS grp, {ACROSS[measure.across]}(p.v) AS v "
        f"FROM ({per_series}) p {group_join} "
        f"GROUP BY p.slice{group_by}"
    )
    rows = session.connection().execute(text(sql), params)
    return {(int(s), g): float(v) for s, g, v in rows if v is not None}


def _range_sql(slices: Sequence[Sequence[Bucket]], params: dict[str, object]) -> tuple[str, str]:
    """A CASE giving each rollup row its slice number, and the WHERE that bounds the scan."""
    cases, bounds = [], []
    for i, buckets in enumerate(slices):
        for j, b in enumerate(buckets):
            key = f"{i}_{j}"
            params |= {f"g{key}": b.grain, f"a{key}": b.start, f"b{key}": b.end}
            condition = f"(r.grain = :g{key} AND r.start >= :a{key} AND r.start < :b{key})"
            cases.append(f"WHEN {condition} THEN {i}")
            bounds.append(condition)
    # One plain range beside the OR, so the planner can seek the primary key
    # (grain, series_id, start) instead of reading every series' rollups.
    buckets = [b for found in slices for b in found]
    grains = sorted({b.grain for b in buckets})
    params |= {f"grain{k}": g for k, g in enumerate(grains)}
    params |= {"lo": min(b.start for b in buckets), "hi": max(b.end for b in buckets)}
    grain_list = ", ".join(f":grain{k}" for k in range(len(grains)))
    seek = f"r.grain IN ({grain_list}) AND r.start >= :lo AND r.start < :hi"
    return f"CASE {' '.join(cases)} END", f"{seek} AND ({' OR '.join(bounds)})"


def _filter_sql(filters: Sequence[tuple[str, str]], params: dict[str, object]) -> str:
    clauses = []
    for i, (dim, value) in enumerate(filters):
        params |= {f"fd{i}": dim, f"fv{i}": value}
        clauses.append(
            f"AND s.id IN (SELECT series_id FROM seriesdim WHERE dim = :fd{i} AND value = :fv{i})"
        )
    return " ".join(clauses)


def _per_series_sql(over_time: str, ranges: tuple[str, str], filters: str) -> str:
    slice_case, bounds = ranges
    # CROSS JOIN fixes SQLite's join order: the measure's series first, then each one's rollups
    # by primary key (PostgreSQL plans it as any join).
    scan = (
        f"FROM series s CROSS JOIN rollup r "
        f"WHERE r.series_id = s.id AND s.measure = :measure AND {bounds} {filters}"
    )
    if over_time != "last":
        return (
            f"SELECT r.series_id, {slice_case} AS slice, {OVER_TIME[over_time]} AS v "
            f"{scan} GROUP BY r.series_id, {slice_case}"
        )
    # A balance at period end: each series' latest observation inside the slice.
    ranked = (
        f"SELECT r.series_id, {slice_case} AS slice, r.last_value AS v, "
        f"ROW_NUMBER() OVER (PARTITION BY r.series_id, {slice_case} "
        f"ORDER BY r.last_ts DESC) AS n {scan}"
    )
    return f"SELECT series_id, slice, v FROM ({ranked}) ranked WHERE n = 1"


def dimension_values(session: Session) -> dict[str, list[str]]:
    rows = session.connection().execute(
        text("SELECT DISTINCT dim, value FROM seriesdim ORDER BY dim, value")
    )
    values: dict[str, list[str]] = {}
    for dim, value in rows:
        values.setdefault(dim, []).append(value)
    return values


def newest_observation(session: Session, measures: Sequence[str]) -> Mapping[str, object]:
    """The latest `last_ts` of each measure, for staleness."""
    rows = session.connection().execute(
        text(
            "SELECT s.measure, MAX(r.last_ts) FROM rollup r JOIN series s ON s.id = r.series_id "
            "WHERE r.grain = 'month' AND s.measure IN :names GROUP BY s.measure"
        ).bindparams(_expanding("names")),
        {"names": list(measures)},
    )
    return dict(rows.all())


def _expanding(name: str):
    from sqlalchemy import bindparam

    return bindparam(name, expanding=True)
