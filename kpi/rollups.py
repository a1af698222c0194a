"""Week and month rollups: what the query engine reads instead of raw observations (a single
day it reads from the observations themselves: a day holds few, and a rollup per day would double
what an import writes).

Every write to `observation` updates the rollups in the same transaction, so they are always
exactly current, in one of two ways:

- New observations are merge-added: `partials` computes each touched bucket's total, count,
  minimum, maximum and last value from the rows in memory (numpy over runs of rows, no SQL).
  `insert_new` stores those the caller knows are not stored yet, by plain bulk insert
  (executemany of multi-row INSERTs on SQLite, binary COPY on PostgreSQL); `merge_partials`
  upserts the others, adding totals and counts, combining extremes and keeping the later last
  value.
  `combine` sums partials of several blocks, so a bulk writer can write weeks and months once.
- Changed observations cannot be merged (the old value is not known here): `refresh` recomputes
  the weeks (Monday start) and months holding them from the observations. The touched ranges go
  into a temporary table and each grain is one `INSERT … SELECT … ON CONFLICT DO UPDATE` that
  reaches observations from it through their primary key. The SQL is the same on SQLite and
  PostgreSQL but for the first day of a week or month.

Month rollups also keep a checksum of their observations: the sum, modulo 2**40, of a 40-bit hash
of each one's (moment, value). A re-import compares a file's months with it and skips the row
lookups of every month that matches in count and checksum (see the importer). It is merged like
the totals, adjusted by the importer when a value changes, and NULL (unknown: never matches)
where it was not computed; `rebuild_all` recomputes it.

Observations are only ever added or changed, never deleted; a deletion (or a change of the
organisation's time zone) needs `rebuild_all`.
"""

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from psycopg.copy import QueuedLibpqWriter
from sqlalchemy import Column, Connection, Date, Integer, MetaData, Table, select, text
from sqlalchemy.schema import CreateTable
from sqlmodel.sql.sqltypes import UTCDateTime

from kpi.bulk import (
    DAY_US,
    PG_EPOCH_DAYS,
    PG_EPOCH_US,
    PG_HEADER,
    PG_TRAILER,
    WRITE_CHUNK,
    pg_copy_array,
    pg_copy_data,
    pg_read_arrays,
    sqlite_days,
    sqlite_insert_many,
    sqlite_times,
)
from kpi.models import Observation, Rollup
from kpi.store import bump_generation_on

GRAINS = ("week", "month")
CHECKSUM_BITS = 40
CHECKSUM_MASK = (1 << CHECKSUM_BITS) - 1
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# Touched days of one series closer than this are refreshed as one range: recomputing a few
# untouched days costs less than another range row and index probe.
MERGE_GAP_DAYS = 7
# rebuild_all refreshes this many series at a time, so its temporary table stays small.
REBUILD_BATCH = 200

_touched = Table(
    "kpi_touched",
    MetaData(),
    Column("kind", Integer, nullable=False),  # an index into GRAINS
    Column("series_id", Integer, nullable=False),
    Column("start", Date, nullable=False),  # first local day of a range of buckets
    Column("stop", Date, nullable=False),  # the day after its last
    # Bounds on the UTC timestamp wide enough for any UTC offset, so the scan of observations
    # uses their primary key (series_id, ts); `day` then selects exactly.
    Column("ts_from", UTCDateTime),
    Column("ts_to", UTCDateTime),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)

_SET_ALL = """
ON CONFLICT (series_id, grain, start) DO UPDATE SET
    total = excluded.total, count = excluded.count, minimum = excluded.minimum,
    maximum = excluded.maximum, last_ts = excluded.last_ts, last_value = excluded.last_value
"""

# Every statement starts from the small touched table (CROSS JOIN fixes that order in SQLite;
# PostgreSQL gets statistics on it) and reaches rows only through primary keys. The last value
# is a correlated lookup by primary key (as a join, PostgreSQL tends to hash a whole table).
_BUCKET_FROM_OBSERVATIONS = """
INSERT INTO rollup (grain, series_id, start, total, count, minimum, maximum, last_ts, last_value)
SELECT :grain, a.series_id, a.start, a.total, a.n, a.lo, a.hi, a.last_ts,
       (SELECT o.value FROM observation o WHERE o.series_id = a.series_id AND o.ts = a.last_ts)
FROM (
    SELECT o.series_id, {start} AS start, sum(o.value) AS total, count(*) AS n,
           min(o.value) AS lo, max(o.value) AS hi, max(o.ts) AS last_ts
    FROM kpi_touched t CROSS JOIN observation o
    WHERE t.kind = :kind AND o.series_id = t.series_id
      AND o.ts >= t.ts_from AND o.ts < t.ts_to AND o.day >= t.start AND o.day < t.stop
    GROUP BY o.series_id, {start}
) a
WHERE true
"""

# The first day of the bucket holding a local day: the only dialect-specific bit (SQLite keeps
# dates as ISO text, so `date()` returns the same format).
_BUCKETS = {
    "sqlite": {
        "week": "date({}, 'weekday 0', '-6 days')",
        "month": "date({}, 'start of month')",
    },
    "postgresql": {
        # Through `timestamp` (without zone), so the session's time zone plays no part.
        "week": "CAST(date_trunc('week', CAST({} AS timestamp)) AS date)",
        "month": "CAST(date_trunc('month', CAST({} AS timestamp)) AS date)",
    },
}


def _bucket_statement(dialect: str, grain: str):
    start = _BUCKETS[dialect][grain].format("o.day")
    return text(_BUCKET_FROM_OBSERVATIONS.format(start=start) + _SET_ALL)


def week_start(day: date) -> date:
    """The Monday of the ISO week holding `day`."""
    return day - timedelta(days=day.weekday())


def month_start(day: date) -> date:
    return day.replace(day=1)


@dataclass(frozen=True)
class DayRanges:
    """Touched days as arrays: series ids and first/last local day of each range, as days since
    1970-01-01 (inclusive). Bulk writers build these with numpy, without a date object a row."""

    series_id: np.ndarray
    first: np.ndarray
    last: np.ndarray

    @classmethod
    def of(cls, touched: Iterable[tuple[int, date, date]]) -> "DayRanges":
        rows = list(touched)
        return cls(
            np.array([r[0] for r in rows], np.int64),
            np.array([r[1].toordinal() - _EPOCH_ORDINAL for r in rows], np.int64),
            np.array([r[2].toordinal() - _EPOCH_ORDINAL for r in rows], np.int64),
        )

    def __len__(self) -> int:
        return len(self.series_id)

    def __add__(self, other: "DayRanges") -> "DayRanges":
        return DayRanges(
            *(np.concatenate((a, b)) for a, b in zip(self.arrays(), other.arrays(), strict=True))
        )

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.series_id, self.first, self.last

    def merged(self, gap_days: int = MERGE_GAP_DAYS) -> "DayRanges":
        """Sorted and non-overlapping; ranges of a series at most `gap_days` apart are joined."""
        if not len(self):
            return self
        order = np.lexsort((self.first, self.series_id))
        sid, first, last = (a[order] for a in self.arrays())
        reach = pd.Series(last).groupby(sid).cummax().to_numpy()  # furthest day so far
        start = np.ones(len(sid), bool)
        start[1:] = (sid[1:] != sid[:-1]) | (first[1:] - reach[:-1] > gap_days)
        at = np.flatnonzero(start)
        return DayRanges(sid[at], first[at], np.maximum.reduceat(last, at))

    def tuples(self) -> list[tuple[int, date, date]]:
        return [
            (
                int(s),
                date.fromordinal(_EPOCH_ORDINAL + int(a)),
                date.fromordinal(_EPOCH_ORDINAL + int(b)),
            )
            for s, a, b in zip(*self.arrays(), strict=True)
        ]


def merge_ranges(
    touched: Iterable[tuple[int, date, date]], gap_days: int = MERGE_GAP_DAYS
) -> list[tuple[int, date, date]]:
    """Sorted, non-overlapping (series_id, first_day, last_day) ranges covering `touched`."""
    return DayRanges.of(touched).merged(gap_days).tuples()


def _week_starts(days: np.ndarray) -> np.ndarray:
    return days - (days + 3) % 7  # 1970-01-01 was a Thursday


def _month_starts(days: np.ndarray, months_later: int = 0) -> np.ndarray:
    if len(days) > 4096:
        low, high = int(days.min()), int(days.max())
        if high - low < len(days) // 4:
            # A block's many rows over a few days: each day's month once, then a lookup (numpy
            # converts to months and back at about a fifth of the speed of a gather).
            return _month_starts(np.arange(low, high + 1), months_later)[days - low]
    months = days.astype("datetime64[D]").astype("datetime64[M]") + months_later
    return months.astype("datetime64[D]").astype(np.int64)


def _touched_rows(ranges: DayRanges) -> tuple[np.ndarray, ...]:
    """(kind, series_id, start, stop) arrays, stop exclusive: a row per range of whole weeks and
    of whole months holding the day ranges."""
    parts = []
    for grain, start_of, after in (
        ("week", _week_starts, lambda days: _week_starts(days) + 7),
        ("month", _month_starts, lambda days: _month_starts(days, 1)),
    ):
        # Day ranges of one series may share a month (never a week: they are a week apart).
        buckets = DayRanges(
            ranges.series_id, start_of(ranges.first), after(ranges.last) - 1
        ).merged(gap_days=0)
        parts.append((GRAINS.index(grain), buckets.series_id, buckets.first, buckets.last + 1))
    kind = np.concatenate([np.full(len(p[1]), p[0], np.int64) for p in parts])
    return kind, *(np.concatenate([p[i] for p in parts]) for i in (1, 2, 3))


# ts_from/ts_to widen a range of days by a day each way, enough for any UTC
# offset. On SQLite the text is what SQLAlchemy's Date and DateTime store there, so comparisons
# with stored values agree.
_FILL_SQLITE = """
INSERT INTO kpi_touched (kind, series_id, start, stop, ts_from, ts_to)
VALUES (?, ?, date(? * 86400, 'unixepoch'), date(? * 86400, 'unixepoch'),
        date((? - 1) * 86400, 'unixepoch') || ' 00:00:00.000000',
        date((? + 1) * 86400, 'unixepoch') || ' 00:00:00.000000')
"""


def _fill_touched(connection: Connection, rows: tuple[np.ndarray, ...]) -> None:
    """Through the driver: bulk writes come here often, and SQLAlchemy's processing of each
    parameter would cost more than the insert."""
    kind, sid, start, stop = rows
    if connection.dialect.name == "sqlite":
        columns = (a.tolist() for a in (kind, sid, start, stop, start, stop))
        connection.exec_driver_sql(_FILL_SQLITE, list(zip(*columns, strict=True)))
        return
    data = pg_copy_data(
        kind=(">i4", kind),
        series_id=(">i4", sid),
        start=(">i4", start - PG_EPOCH_DAYS),
        stop=(">i4", stop - PG_EPOCH_DAYS),
        ts_from=(">i8", (start - 1 - PG_EPOCH_DAYS) * DAY_US),
        ts_to=(">i8", (stop + 1 - PG_EPOCH_DAYS) * DAY_US),
    )
    driver = connection.connection.driver_connection
    columns = "kind, series_id, start, stop, ts_from, ts_to"
    query = f"COPY kpi_touched ({columns}) FROM STDIN (FORMAT binary)"
    with driver.cursor() as cursor, cursor.copy(query) as copy:
        copy.write(data)


# --- merge-add: rollups of new observations, from the rows in memory -----------------------


@dataclass(frozen=True)
class Partials:
    """One grain's rollups of a set of rows, one per (series, bucket): what a merge adds.
    Days count from 1970-01-01, moments in µs since 1970-01-01 UTC."""

    grain: str
    series_id: np.ndarray
    start: np.ndarray  # first local day of the bucket
    total: np.ndarray
    count: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    last_ts: np.ndarray
    last_value: np.ndarray
    checksum: np.ndarray  # stored for months only

    def __len__(self) -> int:
        return len(self.series_id)

    def take(self, rows: np.ndarray | slice) -> "Partials":
        return Partials(self.grain, *(getattr(self, name)[rows] for name in _PARTIAL_ARRAYS))


_PARTIAL_ARRAYS = [f.name for f in fields(Partials) if f.name != "grain"]


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def row_checksums(ts: np.ndarray, value: np.ndarray) -> np.ndarray:
    """A 40-bit hash of each (µs, value), as uint64: splitmix64's finaliser over the moment and
    the value's bits. Stored in checksums, so it must never change. -0.0 counts as 0.0, as it
    compares equal to it."""
    bits = (np.asarray(value, np.float64) + 0.0).view(np.uint64)
    x = np.asarray(ts, np.int64).view(np.uint64) * _GOLDEN ^ bits
    x ^= x >> np.uint64(30)
    x *= _MIX[0]
    x ^= x >> np.uint64(27)
    x *= _MIX[1]
    x ^= x >> np.uint64(31)
    return x >> np.uint64(64 - CHECKSUM_BITS)


def sum_checksums(checksums: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Sums modulo 2**40 of the runs starting at `first`, as int64. uint64 sums wrap modulo
    2**64, a multiple of 2**40, so overflow does not change the result."""
    if not len(first):
        return np.zeros(0, np.int64)
    sums = np.add.reduceat(np.asarray(checksums, np.uint64), first)
    return (sums & np.uint64(CHECKSUM_MASK)).astype(np.int64)


def bucket_starts(grain: str, days: np.ndarray) -> np.ndarray:
    return _week_starts(days) if grain == "week" else _month_starts(days)


def partials(grain: str, sid: np.ndarray, ts: np.ndarray, day: np.ndarray, value: np.ndarray):
    """(Partials, index of each bucket's first row) of rows given with each series' rows
    together and in time order, so that every bucket is one run of rows: sums and extremes by
    numpy's reduceat, the last value from the end of each run."""
    start = bucket_starts(grain, day)
    first, last = _runs(sid, start)
    parts = Partials(
        grain,
        series_id=sid[first],
        start=start[first],
        total=np.add.reduceat(value, first),
        count=last - first + 1,
        minimum=np.minimum.reduceat(value, first),
        maximum=np.maximum.reduceat(value, first),
        last_ts=ts[last],
        last_value=value[last],
        checksum=(
            sum_checksums(row_checksums(ts, value), first)
            if grain == "month"
            else np.zeros(len(first), np.int64)  # not stored
        ),
    )
    return parts, first


def _runs(sid: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last index of each run of equal (series, bucket start)."""
    edge = np.ones(len(sid), bool)
    edge[1:] = (sid[1:] != sid[:-1]) | (start[1:] != start[:-1])
    first = np.flatnonzero(edge)
    return first, np.append(first[1:], len(sid)) - 1


# --- month checksums -------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthChecks:
    """Count and checksum of rows per (key, month), sorted by key and month: `key` is whatever
    the caller groups by (a series id, or the importer's series key). Months as day numbers."""

    key: np.ndarray
    month: np.ndarray
    count: np.ndarray
    checksum: np.ndarray

    @classmethod
    def of(cls, key: np.ndarray, ts: np.ndarray, day: np.ndarray, value) -> "MonthChecks":
        """Of rows given with each key's rows together and in time order."""
        month = _month_starts(day)
        first, last = _runs(key, month)
        checksum = sum_checksums(row_checksums(ts, value), first)
        return cls(key[first], month[first], last - first + 1, checksum)

    @classmethod
    def combine(cls, parts: Sequence["MonthChecks"]) -> "MonthChecks":
        key, month, count, checksum = (
            np.concatenate([getattr(p, name) for p in parts])
            for name in ("key", "month", "count", "checksum")
        )
        order = np.lexsort((month, key))
        key, month = key[order], month[order]
        first, _ = _runs(key, month)
        return cls(
            key[first],
            month[first],
            np.add.reduceat(count[order], first) if len(first) else count,
            sum_checksums(checksum[order], first) if len(first) else checksum,
        )


def stored_month_checks(
    connection: Connection, series_ids: Sequence[int], first: int, last: int
) -> MonthChecks:
    """The month rollups' counts and known checksums of the given series, for the months
    starting on days `first` to `last` (through the driver: a re-import of years reads one row
    per series and month, tens of thousands)."""
    ids = sorted(set(series_ids))
    months = [str(np.datetime64(int(day), "D")) for day in (first, last)]
    driver = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        query = (
            "COPY (SELECT coalesce(array_agg(series_id), '{}'), coalesce(array_agg(start), '{}'),"
            " coalesce(array_agg(count), '{}'), coalesce(array_agg(checksum), '{}')"
            " FROM rollup WHERE grain = 'month' AND checksum IS NOT NULL"
            " AND series_id = ANY(%s::int4[]) AND start BETWEEN %s::date AND %s::date)"
            " TO STDOUT (FORMAT binary)"
        )
        codes = (">i4", ">i4", ">i4", ">i8")
        sid, start, count, checksum = pg_read_arrays(driver, query, (ids, *months), codes)
        found = (sid, start.astype(np.int64) + PG_EPOCH_DAYS, count, checksum)
    else:
        rows = []
        for at in range(0, len(ids), 500):  # SQLite caps parameters per statement
            chunk = ids[at : at + 500]
            rows += driver.execute(
                "SELECT series_id, start, count, checksum FROM rollup WHERE grain = 'month'"
                f" AND checksum IS NOT NULL AND series_id IN ({', '.join('?' * len(chunk))})"
                " AND start BETWEEN ? AND ?",
                [*chunk, *months],
            ).fetchall()
        sid, start, count, checksum = zip(*rows, strict=True) if rows else ([], [], [], [])
        found = (sid, np.array(start, "datetime64[D]").astype(np.int64), count, checksum)
    return MonthChecks(*(np.asarray(column, np.int64) for column in found))


def adjust_checksums(connection: Connection, sid, ts, day, before, after) -> None:
    """Changed values (same series and moment, `before` → `after`): the same change to the
    checksums of their months, which stay unknown (NULL) if they were."""
    order = np.lexsort((ts, sid))
    sid, ts, day = sid[order], ts[order], day[order]
    old = row_checksums(ts, before[order])
    new = row_checksums(ts, after[order])
    delta = (new - old) & np.uint64(CHECKSUM_MASK)  # modulo 2**40, never negative
    month = _month_starts(day)
    first, _ = _runs(sid, month)
    _update_checksums(connection, sid[first], month[first], sum_checksums(delta, first), add=True)


def fill_checksums(connection: Connection, *, batch_rows: int = 250_000) -> None:
    """Compute every month rollup's checksum from the observations (what rebuild_all and the
    migration that introduced checksums need), reading runs of series of about `batch_rows`
    observations at a time, so memory stays bounded whatever the store's size."""
    sizes = connection.execute(
        text(
            "SELECT series_id, sum(count) FROM rollup WHERE grain = 'month' "
            "GROUP BY series_id ORDER BY series_id"
        )
    ).all()
    start = 0
    while start < len(sizes):
        stop, rows = start, 0
        while stop < len(sizes) and (stop == start or rows + sizes[stop][1] <= batch_rows):
            rows += sizes[stop][1]
            stop += 1
        sid, ts, day, value = _read_observations(connection, sizes[start][0], sizes[stop - 1][0])
        order = np.lexsort((ts, sid))
        checks = MonthChecks.of(sid[order], ts[order], day[order], value[order])
        _update_checksums(connection, checks.key, checks.month, checks.checksum, add=False)
        start = stop


def _read_observations(connection: Connection, lo: int, hi: int) -> tuple[np.ndarray, ...]:
    """(series_id, µs, day, value) of the series lo…hi, in no particular order."""
    if connection.dialect.name == "postgresql":
        query = (
            "COPY (SELECT coalesce(array_agg(series_id), '{}'), coalesce(array_agg(ts), '{}'),"
            " coalesce(array_agg(day), '{}'), coalesce(array_agg(value), '{}')"
            " FROM observation WHERE series_id BETWEEN %s AND %s) TO STDOUT (FORMAT binary)"
        )
        driver = connection.connection.driver_connection
        sid, ts, day, value = pg_read_arrays(driver, query, (lo, hi), (">i4", ">i8", ">i4", ">f8"))
        return (
            sid.astype(np.int64),
            ts.astype(np.int64) + PG_EPOCH_US,
            day.astype(np.int64) + PG_EPOCH_DAYS,
            value.astype(np.float64),
        )
    rows = connection.connection.driver_connection.execute(
        "SELECT series_id, ts, day, value FROM observation WHERE series_id BETWEEN ? AND ?",
        (lo, hi),
    ).fetchall()
    if not rows:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, np.zeros(0)
    sid, ts, day, value = zip(*rows, strict=True)
    return (
        np.array(sid, np.int64),
        np.array(ts, "datetime64[us]").astype(np.int64),
        np.array(day, "datetime64[D]").astype(np.int64),
        np.array(value, np.float64),
    )


def _update_checksums(connection: Connection, sid, month, checksum, *, add: bool) -> None:
    """Set (or, with `add`, add modulo 2**40 to) the checksums of the given month rollups."""
    modulus = CHECKSUM_MASK + 1
    value = f"(rollup.checksum + {{}}) % {modulus}" if add else "{}"
    driver = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        with driver.cursor() as cursor:
            cursor.execute(
                # psycopg takes % for a placeholder: the modulo is doubled.
                f"UPDATE rollup SET checksum = {value.format('c.part').replace('%', '%%')}"
                " FROM unnest(%s::int4[], %s::int4[], %s::int8[]) AS c(series_id, month, part)"
                " WHERE rollup.grain = 'month' AND rollup.series_id = c.series_id"
                " AND rollup.start = date '1970-01-01' + c.month",
                (sid.tolist(), month.tolist(), checksum.tolist()),
            )
        return
    driver.executemany(
        f"UPDATE rollup SET checksum = {value.format('?')}"
        " WHERE grain = 'month' AND series_id = ? AND start = ?",
        zip(checksum.tolist(), sid.tolist(), sqlite_days(month).tolist(), strict=True),
    )


def combine(parts: Sequence[Partials]) -> Partials:
    """One row per (series, bucket) out of partials of one grain (of several blocks, say),
    sorted by series and bucket: merge-adding them in one go or one by one is the same."""
    arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in _PARTIAL_ARRAYS}
    order = np.lexsort((arrays["last_ts"], arrays["start"], arrays["series_id"]))
    a = {name: column[order] for name, column in arrays.items()}
    first, last = _runs(a["series_id"], a["start"])
    return Partials(
        parts[0].grain,
        series_id=a["series_id"][first],
        start=a["start"][first],
        total=np.add.reduceat(a["total"], first),
        count=np.add.reduceat(a["count"], first),
        minimum=np.minimum.reduceat(a["minimum"], first),
        maximum=np.maximum.reduceat(a["maximum"], first),
        last_ts=a["last_ts"][last],
        last_value=a["last_value"][last],
        checksum=sum_checksums(a["checksum"], first),
    )


def merge_partials(connection: Connection, parts: Partials) -> None:
    """Add `parts` into the stored rollups: totals and counts add up, extremes combine, and the
    later last_ts brings its value; a bucket not stored yet is inserted.

    Only valid for rows that were not stored before (inserted, not updated): a changed value
    needs `refresh`, which recomputes from the observations."""
    for chunk in _chunks(parts):
        if connection.dialect.name == "postgresql":
            _pg_merge(connection, chunk)
        else:
            _sqlite_write(connection, chunk, merge=True)


def _chunks(parts: Partials) -> Iterator[Partials]:
    """WRITE_CHUNK rows at a time: the encoded rows of one chunk are what the memory holds."""
    for at in range(0, len(parts), WRITE_CHUNK):
        yield parts.take(slice(at, at + WRITE_CHUNK))


_ROLLUP_COLUMNS = "grain, series_id, start, total, count, minimum, maximum, last_ts, last_value"
# NULL (unknown) stays NULL: a sum with it means nothing.
_MERGE = """
ON CONFLICT (series_id, grain, start) DO UPDATE SET
    total = rollup.total + excluded.total, count = rollup.count + excluded.count,
    minimum = {least}(rollup.minimum, excluded.minimum),
    maximum = {greatest}(rollup.maximum, excluded.maximum),
    last_ts = {greatest}(rollup.last_ts, excluded.last_ts),
    last_value = CASE WHEN excluded.last_ts > rollup.last_ts
                      THEN excluded.last_value ELSE rollup.last_value END,
    checksum = (rollup.checksum + excluded.checksum) % {modulus}
"""


def _columns(grain: str) -> str:
    return _ROLLUP_COLUMNS + (", checksum" if grain == "month" else "")


def _sqlite_write(connection: Connection, parts: Partials, *, merge: bool) -> None:
    # Through the driver: SQLAlchemy's processing of each parameter would cost more than the
    # insert. The grain is one of GRAINS, so it can be part of the statement.
    insert = f"INSERT INTO rollup ({_columns(parts.grain)})"
    tail = _MERGE.format(least="min", greatest="max", modulus=CHECKSUM_MASK + 1) if merge else ""
    driver = connection.connection.driver_connection
    if (parts.count == 1).all():
        # Buckets of one row each (the weeks of a weekly series) have one value for four
        # columns: binding it once saves a good part of the insert. (Not for a mix: two passes
        # would leave key order, which costs more.)
        columns = (
            parts.series_id,
            sqlite_days(parts.start),
            parts.total,
            sqlite_times(parts.last_ts),
        )
        row = f"('{parts.grain}', {{0}}, {{1}}, {{2}}, 1, {{2}}, {{2}}, {{3}}, {{2}}"
    else:
        columns = (
            parts.series_id,
            sqlite_days(parts.start),
            parts.total,
            parts.count,
            parts.minimum,
            parts.maximum,
            sqlite_times(parts.last_ts),
            parts.last_value,
        )
        row = f"('{parts.grain}', {{0}}, {{1}}, {{2}}, {{3}}, {{4}}, {{5}}, {{6}}, {{7}}"
    if parts.grain == "month":
        columns += (parts.checksum,)
        row += f", {{{len(columns) - 1}}}"
    sqlite_insert_many(driver, insert, row + ")", columns, tail)


def _pg_merge(connection: Connection, parts: Partials) -> None:
    """Binary COPY into a temporary table, then one upsert from it into `rollup`."""
    data = PG_HEADER + _pg_rows(parts).tobytes() + PG_TRAILER
    columns = _columns(parts.grain)
    driver = connection.connection.driver_connection
    with driver.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS kpi_partial"
            " (LIKE rollup INCLUDING DEFAULTS) ON COMMIT DROP"
        )
        with cursor.copy(f"COPY kpi_partial ({columns}) FROM STDIN (FORMAT binary)") as copy:
            copy.write(data)
        cursor.execute(
            f"INSERT INTO rollup ({columns}) SELECT {columns} FROM kpi_partial"
            + _MERGE.format(least="least", greatest="greatest", modulus=CHECKSUM_MASK + 1)
        )
        cursor.execute("TRUNCATE kpi_partial")


def _pg_rows(parts: Partials, *, null_checksum: bool = False) -> np.ndarray:
    """Binary COPY rows of `parts` in the columns of `_columns(parts.grain)`; with
    `null_checksum`, a week's rows get a NULL checksum too, to go with months' in one COPY."""
    grain = parts.grain.encode()
    fields = {
        "grain": (f"S{len(grain)}", grain),
        "series_id": (">i4", parts.series_id),
        "start": (">i4", parts.start - PG_EPOCH_DAYS),
        "total": (">f8", parts.total),
        "count": (">i4", parts.count),
        "minimum": (">f8", parts.minimum),
        "maximum": (">f8", parts.maximum),
        "last_ts": (">i8", parts.last_ts - PG_EPOCH_US),
        "last_value": (">f8", parts.last_value),
    }
    if parts.grain == "month":
        fields["checksum"] = (">i8", parts.checksum)
    nulls = ["checksum"] if null_checksum and parts.grain != "month" else []
    return pg_copy_array(len(parts), fields, nulls=nulls)


def insert_new(connection: Connection, parts: Sequence[Partials]) -> None:
    """Rollups of several grains that have no stored row yet, by plain bulk insert. On
    PostgreSQL in one COPY, in the order of rollup's key (series_id, grain, start): where the
    key is built after the load (the importer's first import), a sort of rows already in order
    takes about half the time."""
    if connection.dialect.name != "postgresql":
        for part in parts:
            for chunk in _chunks(part):
                _sqlite_write(connection, chunk, merge=False)
        return
    copy_new(connection.connection.driver_connection, "rollup", parts)


def copy_new(driver, table: str, parts: Sequence[Partials], *, aside: bool = False) -> None:
    """insert_new's COPY on PostgreSQL, into `table` (rollup, or a table like it) through a
    psycopg connection. `aside`: into a table created in the same transaction, on a connection
    and thread of its own (the importer's first import). The rows are stored frozen and their
    pages all-visible (FREEZE), so the first answers to read them do not write them again to
    set hint bits."""
    parts = sorted((p for p in parts if len(p)), key=lambda p: p.grain)
    if not parts:
        return
    series = np.unique(np.concatenate([part.series_id for part in parts]))
    starts = [np.searchsorted(part.series_id, series) for part in parts]
    stops = [np.searchsorted(part.series_id, series, "right") for part in parts]
    held = np.cumsum(sum(stop - start for start, stop in zip(starts, stops, strict=True)))
    # held[k]: rows of series 0…k
    options = "FORMAT binary, FREEZE" if aside else "FORMAT binary"
    query = f"COPY {table} ({_columns('month')}) FROM STDIN ({options})"
    # psycopg's writer thread sends a chunk while the next is encoded: the client's work
    # overlaps the server's instead of taking turns with it. Aside, the connection's own
    # thread takes turns without holding anything up, and the encoded rows do not pile up in
    # the writer's queue while the server is busy with the other connection (~15 MB of peak
    # RSS for 1M rows).
    with driver.cursor() as cursor:
        writer = None if aside else QueuedLibpqWriter(cursor)
        with cursor.copy(query, writer=writer) as copy:
            copy.write(PG_HEADER)
            low = 0
            while low < len(series):  # the series of about a chunk of rows at a time
                before = int(held[low - 1]) if low else 0
                high = max(low + 1, int(np.searchsorted(held, before + WRITE_CHUNK, "right")))
                copy.write(_interleaved(parts, starts, stops, low, high))
                low = high
            copy.write(PG_TRAILER)


def _interleaved(parts: Sequence[Partials], starts, stops, low: int, high: int) -> bytes:
    """The binary COPY rows of series low…high-1 (indexes into starts and stops), a series at a
    time and each grain's rows of it in turn: rollup's key order (each part is sorted by
    series)."""
    encoded = [
        _pg_rows(part.take(slice(start[low], stop[high - 1])), null_checksum=True)
        for part, start, stop in zip(parts, starts, stops, strict=True)
    ]
    pieces = []
    for k in range(low, high):
        for rows, start, stop in zip(encoded, starts, stops, strict=True):
            base = start[low]
            pieces.append(rows[start[k] - base : stop[k] - base].tobytes())
    return b"".join(pieces)


def refresh(connection: Connection, touched: Iterable[tuple[int, date, date]] | DayRanges) -> int:
    """Recompute the week and month rollups holding every local day in the touched (series_id,
    first_day, last_day) ranges from the observations. Runs in the caller's transaction.
    Returns the number of day ranges."""
    ranges = (touched if isinstance(touched, DayRanges) else DayRanges.of(touched)).merged()
    if not len(ranges):
        return 0
    connection.execute(CreateTable(_touched, if_not_exists=True))
    connection.execute(_touched.delete())
    _fill_touched(connection, _touched_rows(ranges))
    dialect = connection.dialect.name
    if dialect == "postgresql":
        # Temporary tables are never auto-analysed; statistics tell the planner it is small.
        connection.execute(text("ANALYZE kpi_touched"))
    with primary_key_probes(connection):
        for kind, grain in enumerate(GRAINS):
            statement = _bucket_statement(dialect, grain)
            connection.execute(statement, {"grain": grain, "kind": kind})
    connection.execute(_touched.delete())
    return len(ranges)


# PostgreSQL's planner, seeing a few thousand touched rows, readily hashes them and scans all
# of `observation` or `rollup` (its estimates for "ts between the outer row's bounds" are
# generic): work proportional to the store, not to what was touched. Inside these statements
# it may only join by nested loops, which probe the primary keys; JIT is off too, as large
# estimates trigger compilation that costs more than the small work it speeds up.
PROBE_SETTINGS = {"enable_hashjoin": "off", "enable_mergejoin": "off", "jit": "off"}


@contextmanager
def primary_key_probes(connection: Connection) -> Iterator[None]:
    """Within the block, PostgreSQL joins only by nested loops (a no-op on SQLite, whose
    CROSS JOINs fix the order). The caller's settings are restored afterwards."""
    if connection.dialect.name != "postgresql":
        yield
        return
    names = list(PROBE_SETTINGS)
    before = connection.execute(
        text("SELECT " + ", ".join(f"current_setting('{n}')" for n in names))
    ).one()
    _set_local(connection, PROBE_SETTINGS)
    try:
        yield
    finally:
        _set_local(connection, dict(zip(names, before, strict=True)))


def _set_local(connection: Connection, settings: dict[str, str]) -> None:
    calls = ", ".join(f"set_config(:n{i}, :v{i}, true)" for i in range(len(settings)))
    params = {}
    for i, (name, value) in enumerate(settings.items()):
        params |= {f"n{i}": name, f"v{i}": value}
    connection.execute(text(f"SELECT {calls}"), params)


def rebuild_all(connection: Connection, *, tz: ZoneInfo | None = None) -> None:
    """Recompute every rollup from the observations, e.g. after the time zone changed.

    With `tz`, first recompute each observation's local `day` in that zone. Runs in the caller's
    transaction; the cost is proportional to the whole store.
    """
    if tz is not None:
        _recompute_days(connection, tz)
    connection.execute(text("DELETE FROM rollup"))
    spans = connection.execute(
        text(
            "SELECT series_id, min(day) AS first_day, max(day) AS last_day FROM observation "
            "GROUP BY series_id ORDER BY series_id"
        ).columns(series_id=Integer, first_day=Date, last_day=Date)
    ).all()
    for at in range(0, len(spans), REBUILD_BATCH):
        refresh(connection, [tuple(row) for row in spans[at : at + REBUILD_BATCH]])
    fill_checksums(connection)
    # Answers kept per store generation were made of the rollups just replaced.
    bump_generation_on(connection)


def _recompute_days(connection: Connection, tz: ZoneInfo) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(
            text(
                "UPDATE observation SET day = (ts AT TIME ZONE :tz)::date "
                "WHERE day <> (ts AT TIME ZONE :tz)::date"
            ),
            {"tz": str(tz)},
        )
        return

    # SQLite has no time zones: a Python function does the conversion row by row.
    @lru_cache(maxsize=65536)
    def local_day(ts: str) -> str:
        moment = datetime.fromisoformat(ts).replace(tzinfo=UTC)
        return moment.astimezone(tz).date().isoformat()

    driver = connection.connection.driver_connection
    driver.create_function("kpi_local_day", 1, local_day, deterministic=True)
    connection.execute(
        text("UPDATE observation SET day = kpi_local_day(ts) WHERE day <> kpi_local_day(ts)")
    )


def discrepancies(connection: Connection, *, tz: ZoneInfo | None = None) -> list[str]:
    """Every way the stored rollups differ from rollups recomputed in Python from all
    observations; empty when consistent. With `tz`, also checks each observation's `day`.

    Loads the whole store into memory: for tests and diagnosis, not for requests.
    """
    expected: dict[tuple[str, int, date], list] = {}
    problems: list[str] = []
    observations = connection.execute(
        select(Observation.series_id, Observation.ts, Observation.day, Observation.value)
    ).all()
    for series_id, ts, day, value in observations:
        if tz is not None and ts.astimezone(tz).date() != day:
            local = ts.astimezone(tz).date()
            problems.append(
                f"observation of series {series_id} at {ts.isoformat()}: day {day}, "
                f"but it is {local} in {tz}"
            )
        for grain, start in (("week", week_start(day)), ("month", month_start(day))):
            bucket = expected.get((grain, series_id, start))
            if bucket is None:
                expected[(grain, series_id, start)] = [value, 1, value, value, ts, value]
                continue
            bucket[0] += value
            bucket[1] += 1
            bucket[2] = min(bucket[2], value)
            bucket[3] = max(bucket[3], value)
            if ts > bucket[4]:
                bucket[4], bucket[5] = ts, value
    _expect_checksums(expected, observations)
    stored = {
        (r.grain, r.series_id, r.start): [
            r.total,
            r.count,
            r.minimum,
            r.maximum,
            r.last_ts,
            r.last_value,
            *([r.checksum] if r.grain == "month" else []),
        ]
        for r in connection.execute(select(Rollup)).all()
    }
    names = ("total", "count", "minimum", "maximum", "last_ts", "last_value", "checksum")
    for key in sorted(expected.keys() | stored.keys(), key=lambda k: (k[1], k[0], k[2])):
        label = f"{key[0]} rollup of series {key[1]} from {key[2]}"
        if key not in stored:
            problems.append(f"{label}: missing")
        elif key not in expected:
            problems.append(f"{label}: has no observations")
        else:
            for name, want, have in zip(names, expected[key], stored[key], strict=False):
                if not _same(want, have):
                    problems.append(f"{label}: {name} is {have!r}, expected {want!r}")
    return problems


def _expect_checksums(expected: dict, observations: Sequence) -> None:
    """Append each month's checksum, worked out row by row, to its expected rollup."""
    if not observations:
        return
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    ts = np.array([(o[1] - epoch) // timedelta(microseconds=1) for o in observations], np.int64)
    checks = row_checksums(ts, np.array([o[3] for o in observations], np.float64))
    sums: dict[tuple[int, date], int] = {}
    for (series_id, _, day, _), check in zip(observations, checks.tolist(), strict=True):
        key = (series_id, month_start(day))
        sums[key] = (sums.get(key, 0) + check) % (CHECKSUM_MASK + 1)
    for (series_id, start), checksum in sums.items():
        expected[("month", series_id, start)].append(checksum)


def _same(want: object, have: object) -> bool:
    if isinstance(want, float) and isinstance(have, float):
        return abs(want - have) <= 1e-9 * max(1.0, abs(want), abs(have))
    return want == have
