"""Measures aggregated in SQL from the week and month rollups the importer keeps current, and
for single days from the observations.

A measure is aggregated over time within each series by its `over_time` rule, then across the
series in scope by its `across` rule. Both steps run in the database, so a request reads one row
per series and period at most, never a measure's history.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import bindparam, text
from sqlmodel import Session
from sqlmodel.sql.sqltypes import UTCDateTime

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
    """One answer bucket: a local date range [start, end) read from rollups of one grain (days
    from the observations)."""

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
    # With `by`: series without that dimension as a group of their own (None), so a breakdown
    # adds up to the whole. Alerts, per named value, leave it out (and its outer join).
    unassigned: bool = False


NO_SCOPE = Scope()


def measure_values(
    session: Session,
    measure: Measure,
    slices: Sequence[Sequence[Bucket]],
    scope: Scope = NO_SCOPE,
) -> dict[tuple[int, str | None], float]:
    """{(slice index, group): value} for each slice of buckets — one SQL statement for all."""
    params: dict[str, object] = {"measure": measure.name}
    filters = _filter_sql(scope.filters, params)
    rows = _rows_sql(
        slices,
        filters,
        params,
        latest_only=measure.over_time == "last",
        lateral=session.get_bind().dialect.name == "postgresql",
    )
    per_series = _per_series_sql(measure.over_time, rows)
    group_join, group_col = _group_sql(scope, params, "p.series_id")
    group_by = f", {group_col}" if scope.by else ""
    sql = (
        f"SELECT p.slice, {group_col} AS grp, {ACROSS[measure.across]}(p.v) AS v "
        f"FROM ({per_series}) p {group_join} "
        f"GROUP BY p.slice{group_by}"
    )
    statement = text(sql).bindparams(
        *(bindparam(name, type_=UTCDateTime) for name in params if name.startswith("t_"))
    )
    rows = session.connection().execute(statement, params)
    return {(int(s), g): float(v) for s, g, v in rows if v is not None}


# The columns every row read for an answer has: a rollup's, or an observation's as a rollup of
# one value.
_ROLLUP_ROW = "r.total, r.count, r.minimum, r.maximum, r.last_ts, r.last_value"
_OBSERVATION_ROW = (
    "o.value AS total, 1 AS count, o.value AS minimum, o.value AS maximum, "
    "o.ts AS last_ts, o.value AS last_value"
)


def _rows_sql(
    slices: Sequence[Sequence[Bucket]],
    filters: str,
    params: dict[str, object],
    *,
    latest_only: bool = False,
    lateral: bool = False,
) -> str:
    """A SELECT of (series_id, slice, rollup columns) for every row the slices cover: week and
    month rollups as stored, and for day buckets the observations themselves (a day holds few,
    and keeping a rollup per day would double what an import writes) — or, with `latest_only`,
    each series' latest observation in each day bucket, all a balance at period end needs."""
    rollup_buckets, day_buckets = [], []
    for i, buckets in enumerate(slices):
        for j, bucket in enumerate(buckets):
            found = day_buckets if bucket.grain == "day" else rollup_buckets
            found.append((i, f"{i}_{j}", bucket))
    parts = []
    if rollup_buckets:
        slice_case, bounds = _rollup_ranges(rollup_buckets, params)
        scan = _per_series("rollup r", "r", bounds, filters, lateral)
        parts.append(f"SELECT r.series_id, {slice_case} AS slice, {_ROLLUP_ROW} {scan}")
    if latest_only:
        for i, key, bucket in day_buckets:
            latest = _latest_in_day(key, bucket, params)
            scan = _per_series("observation o", "o", f"o.ts = ({latest})", filters, lateral)
            parts.append(f"SELECT o.series_id, {i} AS slice, {_OBSERVATION_ROW} {scan}")
        return " UNION ALL ".join(parts)
    for k, nearby in enumerate(_clusters(day_buckets)):
        slice_case, bounds = _day_ranges(k, nearby, params)
        scan = _per_series("observation o", "o", bounds, filters, lateral)
        parts.append(f"SELECT o.series_id, {slice_case} AS slice, {_OBSERVATION_ROW} {scan}")
    return " UNION ALL ".join(parts)


def _per_series(table: str, alias: str, bounds: str, filters: str, lateral: bool) -> str:
    """FROM … WHERE reading the measure's series first, then each one's rows by primary key.
    SQLite: CROSS JOIN fixes that order. PostgreSQL: a LATERAL subquery per series (OFFSET 0
    keeps the planner from flattening it into a plain join), as left to itself the planner
    tends to scan a whole grain of rollups and hash it."""
    if lateral:
        return (
            f"FROM series s CROSS JOIN LATERAL (SELECT * FROM {table} "
            f"WHERE {alias}.series_id = s.id AND {bounds} OFFSET 0) {alias} "
            f"WHERE s.measure = :measure {filters}"
        )
    return (
        f"FROM series s CROSS JOIN {table} "
        f"WHERE {alias}.series_id = s.id AND s.measure = :measure AND {bounds} {filters}"
    )


def _latest_in_day(key: str, bucket: Bucket, params: dict[str, object]) -> str:
    """The moment of series s's latest observation on the bucket's local days: the primary key
    read backwards from a day after the last, stopping at the first on those days."""
    suffix = f"l{key}"
    params |= {f"da{key}": bucket.start, f"db{key}": bucket.end}
    params |= _moment_bounds(suffix, bucket.start, bucket.end)
    return (
        f"SELECT x.ts FROM observation x WHERE x.series_id = s.id "
        f"AND x.ts >= :t_lo{suffix} AND x.ts < :t_hi{suffix} "
        f"AND x.day >= :da{key} AND x.day < :db{key} ORDER BY x.ts DESC LIMIT 1"
    )


def _moment_bounds(suffix: str, first: date, end: date) -> dict[str, datetime]:
    """UTC bounds a day wider than the local days [first, end) each way: enough for any UTC
    offset, so a scan seeks the primary key (series_id, ts); the local day then selects."""
    return {
        f"t_lo{suffix}": datetime.combine(first - timedelta(days=1), time(), UTC),
        f"t_hi{suffix}": datetime.combine(end + timedelta(days=1), time(), UTC),
    }


def _clusters(buckets: list[tuple[int, str, Bucket]]) -> list[list[tuple[int, str, Bucket]]]:
    """Day buckets in runs of nearby days: each run is one scan of the observations, so the
    days of this year and of last year (a year-to-date and its comparison) do not make one
    scan of the whole year between them."""
    runs: list[list[tuple[int, str, Bucket]]] = []
    for found in sorted(buckets, key=lambda item: item[2].start):
        if runs and found[2].start - max(b.end for _, _, b in runs[-1]) <= _NEARBY:
            runs[-1].append(found)
        else:
            runs.append([found])
    return runs


_NEARBY = timedelta(days=7)


def _rollup_ranges(buckets: Sequence[tuple[int, str, Bucket]], params: dict[str, object]):
    """A CASE giving each rollup row its slice number, and the WHERE that bounds the scan."""
    cases, bounds = [], []
    for i, key, b in buckets:
        params |= {f"g{key}": b.grain, f"a{key}": b.start, f"b{key}": b.end}
        condition = f"(r.grain = :g{key} AND r.start >= :a{key} AND r.start < :b{key})"
        cases.append(f"WHEN {condition} THEN {i}")
        bounds.append(condition)
    # One plain range beside the OR, so the planner can seek the primary key
    # (series_id, grain, start) of each series instead of reading every series' rollups.
    grains = sorted({b.grain for _, _, b in buckets})
    params |= {f"grain{k}": g for k, g in enumerate(grains)}
    params |= {"lo": min(b.start for _, _, b in buckets), "hi": max(b.end for _, _, b in buckets)}
    grain_list = ", ".join(f":grain{k}" for k in range(len(grains)))
    seek = f"r.grain IN ({grain_list}) AND r.start >= :lo AND r.start < :hi"
    return f"CASE {' '.join(cases)} END", f"{seek} AND ({' OR '.join(bounds)})"


def _day_ranges(k: int, buckets: Sequence[tuple[int, str, Bucket]], params: dict[str, object]):
    """A CASE giving each observation its slice number by local day, and the WHERE that bounds
    the scan (see _moment_bounds)."""
    cases, bounds = [], []
    for i, key, b in buckets:
        params |= {f"da{key}": b.start, f"db{key}": b.end}
        condition = f"(o.day >= :da{key} AND o.day < :db{key})"
        cases.append(f"WHEN {condition} THEN {i}")
        bounds.append(condition)
    first = min(b.start for _, _, b in buckets)
    params |= _moment_bounds(str(k), first, max(b.end for _, _, b in buckets))
    seek = f"o.ts >= :t_lo{k} AND o.ts < :t_hi{k}"
    return f"CASE {' '.join(cases)} END", f"{seek} AND ({' OR '.join(bounds)})"


def _filter_sql(filters: Sequence[tuple[str, str]], params: dict[str, object]) -> str:
    clauses = []
    for i, (dim, value) in enumerate(filters):
        params |= {f"fd{i}": dim, f"fv{i}": value}
        clauses.append(
            f"AND s.id IN (SELECT series_id FROM seriesdim WHERE dim = :fd{i} AND value = :fv{i})"
        )
    return " ".join(clauses)


def _per_series_sql(over_time: str, rows: str) -> str:
    if over_time != "last":
        return (
            f"SELECT r.series_id, r.slice, {OVER_TIME[over_time]} AS v "
            f"FROM ({rows}) r GROUP BY r.series_id, r.slice"
        )
    # A balance at period end: each series' latest observation inside the slice.
    ranked = (
        "SELECT r.series_id, r.slice, r.last_value AS v, "
        "ROW_NUMBER() OVER (PARTITION BY r.series_id, r.slice ORDER BY r.last_ts DESC) AS n "
        f"FROM ({rows}) r"
    )
    return f"SELECT series_id, slice, v FROM ({ranked}) ranked WHERE n = 1"


def first_days(
    session: Session, measures: Sequence[str], scope: Scope = NO_SCOPE
) -> dict[str | None, dict[str, date]]:
    """{group: {measure: the local day of its earliest observation}} over the series in scope:
    one seek of the primary key (series_id, ts) per series."""
    if not measures:
        return {}
    params: dict[str, object] = {"names": list(measures)}
    filters = _filter_sql(scope.filters, params)
    group_join, group_col = _group_sql(scope, params, "s.id")
    first = "SELECT o.day FROM observation o WHERE o.series_id = s.id ORDER BY o.ts LIMIT 1"
    sql = (
        f"SELECT x.measure, x.grp, MIN(x.first) FROM (SELECT s.measure, {group_col} AS grp, "
        f"({first}) AS first FROM series s {group_join} WHERE s.measure IN :names {filters}) x "
        "GROUP BY x.measure, x.grp"  # (a WHERE on x.first would run each seek twice)
    )
    statement = text(sql).bindparams(_expanding("names"))
    found: dict[str | None, dict[str, date]] = {}
    for measure, group, day in session.connection().execute(statement, params):
        if day is not None:  # series without observations
            found.setdefault(group, {})[measure] = _as_date(day)
    return found


def _group_sql(scope: Scope, params: dict, series_id: str) -> tuple[str, str]:
    """The join and the column that group series by `scope.by`'s value (none without it);
    with `scope.unassigned`, series without that dimension form a group of their own, NULL."""
    if not scope.by:
        return "", "NULL"
    params["by"] = scope.by
    join = "LEFT JOIN" if scope.unassigned else "JOIN"
    return f"{join} seriesdim g ON g.series_id = {series_id} AND g.dim = :by", "g.value"


def _as_date(day: object) -> date:
    return day if isinstance(day, date) else date.fromisoformat(str(day))


def dimension_values(session: Session) -> dict[str, list[str]]:
    rows = session.connection().execute(
        text("SELECT DISTINCT dim, value FROM seriesdim ORDER BY dim, value")
    )
    values: dict[str, list[str]] = {}
    for dim, value in rows:
        values.setdefault(dim, []).append(value)
    return values


def measure_dimensions(session: Session, measures: Sequence[str]) -> dict[str, set[str]]:
    """{measure: the dimensions its series have}, for the measures that have any series."""
    rows = session.connection().execute(
        text(
            "SELECT DISTINCT s.measure, d.dim FROM series s"
            " LEFT JOIN seriesdim d ON d.series_id = s.id WHERE s.measure IN :names"
        ).bindparams(_expanding("names")),
        {"names": list(measures)},
    )
    found: dict[str, set[str]] = {}
    for measure, dim in rows:
        found.setdefault(measure, set()).update([dim] if dim else [])
    return found


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
    return bindparam(name, expanding=True)
