"""Reading every (KPI, dimension value) that has a target, in bulk: a few queries per KPI.

What is evaluated: the KPI as a whole when it has a target; each dimension value with a target
of its own; and every value of the dimension its `alert_by` names (against that value's own
target, else the KPI's). Stale data — nothing since the start of the KPI's current period — is
`no_data` whatever the numbers say. A KPI (or dimension value) that never had data is not
evaluated: there is nothing to be stale from.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlmodel import Session

from kpi.aggregate import Scope
from kpi.alerts import State, state_of
from kpi.models import Target
from kpi.periods import Period, current_period
from kpi.values import Catalog, KpiDef, status_of, values


@dataclass(frozen=True)
class Reading:
    kpi: KpiDef
    dim: str
    dim_value: str
    state: State
    value: float | None
    target: Target | None
    period: Period

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kpi.key, self.dim, self.dim_value)


def read_all(session: Session, catalog: Catalog, as_of: datetime, tz: ZoneInfo) -> list[Reading]:
    readings: list[Reading] = []
    for kpi in catalog.kpis.values():
        if kpi.targets:
            readings.extend(read_kpi(session, kpi, as_of, tz))
    return readings


def read_kpi(session: Session, kpi: KpiDef, as_of: datetime, tz: ZoneInfo) -> Iterator[Reading]:
    period = current_period(kpi.kpi.cadence, as_of, tz)
    start = period.utc_bounds(tz)[0]
    own = {(t.dim, t.dim_value): t for t in kpi.targets if t.dim}
    overall = kpi.target_for()
    if overall is not None:
        fresh = newest(session, kpi, None).get(None)
        if fresh is not None:  # a KPI never fed has nothing to alert on
            value = values(session, kpi, [period]).get((0, None))
            yield _reading(
                kpi, "", "", value.value if value else None, overall, period, _stale(fresh, start)
            )
    dims = {dim for dim, _ in own} | ({kpi.kpi.alert_by} if kpi.kpi.alert_by else set())
    for dim in sorted(dims):
        found = values(session, kpi, [period], Scope(by=dim))
        fresh = newest(session, kpi, dim)
        wanted = {v for d, v in own if d == dim}
        if dim == kpi.kpi.alert_by:
            wanted |= {g for (_, g) in found} | set(fresh)
        for dim_value in sorted(wanted):
            target = own.get((dim, dim_value), overall)
            if target is None or dim_value not in fresh:
                continue
            value = found.get((0, dim_value))
            stale = _stale(fresh.get(dim_value), start)
            yield _reading(kpi, dim, dim_value, value.value if value else None, target, period,
                           stale)  # fmt: skip


def _reading(kpi, dim, dim_value, value, target, period, stale) -> Reading:
    state = state_of(status_of(value, target, kpi.kpi.better), stale)
    return Reading(kpi, dim, dim_value, state, value, target, period)


def _stale(newest_ts: datetime | str, start: datetime) -> bool:
    if isinstance(newest_ts, str):  # SQLite hands back text for a bare MIN/MAX
        newest_ts = datetime.fromisoformat(newest_ts)
    return newest_ts.replace(tzinfo=None) < start.replace(tzinfo=None)


def newest(session: Session, kpi: KpiDef, dim: str | None) -> dict[str | None, datetime]:
    """The oldest of the measures' newest observations, per dimension value (or overall):
    a KPI is only as fresh as its stalest input."""
    names = list(kpi.measures)
    params = {f"m{i}": name for i, name in enumerate(names)}
    in_list = ", ".join(f":m{i}" for i in range(len(names)))
    group = "g.value" if dim else "NULL"
    join = "JOIN seriesdim g ON g.series_id = s.id AND g.dim = :dim" if dim else ""
    by = ", g.value" if dim else ""
    # Each series' newest observation is the last of its latest month: one seek backwards
    # along rollup's key (series_id, grain, start) instead of reading every month it has.
    latest = (
        "(SELECT r.last_ts FROM rollup r WHERE r.series_id = s.id AND r.grain = 'month' "
        "ORDER BY r.start DESC LIMIT 1)"
    )
    sql = (
        f"SELECT grp, MIN(ts) FROM (SELECT {group} AS grp, s.measure, MAX({latest}) AS ts "
        f"FROM series s {join} "
        f"WHERE s.measure IN ({in_list}) GROUP BY s.measure{by}) m "
        f"GROUP BY grp HAVING COUNT(ts) = :n"
    )
    rows = session.connection().execute(text(sql), params | {"dim": dim, "n": len(names)})
    return dict(rows.all())
