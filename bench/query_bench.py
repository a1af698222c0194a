"""How fast KpiService answers on a 10M-observation store, against the bare SQL it runs.

    .venv/bin/python bench/query_bench.py [--backend sqlite|postgresql|both] [--calls 50]

Per backend, in a subprocess of its own (so peak RSS is that backend's), over the store of
bench/store_gen.py (built first if missing), for each of `dso last month`,
`dso last month by branch`, `trend dso 12m` and `dso ytd` (ten months of rollups and the ten
days of November read from the observations, this year and last), as a Slack user would ask at
AS_OF:

- uncached: a fresh KpiService per call, so the catalog snapshot and every aggregate are
  computed anew — what the first asker pays after an import bumps the store's generation;
- new_question: a warm KpiService (catalog snapshot loaded) with its answer cache emptied
  before each call — the engine's own work for a question not asked since the last import;
- cached: one warm KpiService answering the same text again (the steady state);
- floor: the statements kpi/aggregate.py generated for that answer (captured with SQLAlchemy's
  `before_cursor_execute`), replayed with their parameters through the bare driver (sqlite3 or
  psycopg on one open connection), fetching every row.

The three are interleaved call by call, so machine noise hits them alike. Goal for both
uncached and cached: p95 ≤ 1.5 × floor p95 + 5 ms, and ≤ 50 ms. For reference, the naive
design: the same 12-month DSO trend by GROUP BY over raw observations (its values are checked
against the engine's). Then the process's peak RSS (goal ≤ 250 MB).
"""

import argparse
import math
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import store_gen  # noqa: E402  (bench/ is the script's directory)

from kpi import catalog  # noqa: E402
from kpi.db import open_store, session_scope  # noqa: E402
from kpi.service import KpiService, Viewer  # noqa: E402

QUERIES = ("dso last month", "dso last month by branch", "trend dso 12m", "dso ytd")
AS_OF = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)  # October 2026 is the last complete month
TZ = ZoneInfo("UTC")
VIEWER = Viewer(user="U0001", channel="C0001")
WARMUP = 5
NAIVE_CALLS = 5
PROFILE_CALLS = 20
GOAL_RATIO, GOAL_SLACK_MS, GOAL_MAX_MS, GOAL_RSS_MB = 1.5, 5.0, 50.0, 250


# --- figures -------------------------------------------------------------------------------


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (never interpolated below a measured value)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


@dataclass
class Samples:
    uncached: list[float]
    new_question: list[float]
    cached: list[float]
    floor: list[float]


# --- capturing and replaying the engine's SQL ----------------------------------------------


class Capture:
    """The aggregate statements (kpi/aggregate.py: measure_values) the engine sends to the
    driver, exactly as sent: statement text and driver-level parameters."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[tuple[str, object]] = []
        self.on = False
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn, _cursor, statement, parameters, _context, _many) -> None:
        if self.on and statement.startswith("SELECT p.slice"):
            self.statements.append((statement, parameters))

    def of(self, action: Callable[[], object]) -> list[tuple[str, object]]:
        self.statements, self.on = [], True
        try:
            action()
        finally:
            self.on = False
        return self.statements


class Profile:
    """Where an uncached answer's time goes: the aggregate statements, the other statements
    (store generation, catalog snapshot), and the rest (Python: parsing, evaluation)."""

    def __init__(self, engine: Engine) -> None:
        self.on = False
        self.aggregate_ms = self.other_ms = 0.0
        self.other_statements = 0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, _cursor, _statement, _parameters, _context, _many) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn, _cursor, statement, _parameters, _context, _many) -> None:
        if not self.on:
            return
        took = (time.perf_counter() - conn.info["bench_started"]) * 1000
        if statement.startswith("SELECT p.slice"):
            self.aggregate_ms += took
        else:
            self.other_ms += took
            self.other_statements += 1

    def of(self, action: Callable[[], object]) -> tuple[float, float, float, int]:
        """(total, aggregate SQL, other SQL, other statements) of one call, in ms."""
        self.aggregate_ms = self.other_ms = 0.0
        self.other_statements = 0
        self.on = True
        try:
            total = timed(action)
        finally:
            self.on = False
        return total, self.aggregate_ms, self.other_ms, self.other_statements


def driver_connection(backend: str, url: str):
    if backend == "sqlite":
        return sqlite3.connect(make_url(url).database, check_same_thread=False)
    return psycopg.connect(store_gen.driver_dsn(url), autocommit=True)


def replay(connection, statements: list[tuple[str, object]]) -> list[list[tuple]]:
    results = []
    for statement, parameters in statements:
        cursor = connection.cursor()
        cursor.execute(statement, parameters)
        results.append(cursor.fetchall())
        cursor.close()
    return results


# --- the naive design ----------------------------------------------------------------------

# One month's key per observation, and the month's statements: credit_sales summed,
# ar_balance the latest observation of each series in the month, summed across series.
_MONTH = {"sqlite": "substr(o.day, 1, 7)", "postgresql": "to_char(o.day, 'YYYY-MM')"}
_MARK = {"sqlite": "?", "postgresql": "%s"}
_NAIVE_SUM = """
SELECT {month} AS month, SUM(o.value) FROM observation o JOIN series s ON s.id = o.series_id
WHERE s.measure = {p} AND o.ts >= {p} AND o.ts < {p} GROUP BY month"""
_NAIVE_LAST = """
SELECT month, SUM(value) FROM (
    SELECT {month} AS month, o.value,
           ROW_NUMBER() OVER (PARTITION BY o.series_id, {month} ORDER BY o.ts DESC) AS n
    FROM observation o JOIN series s ON s.id = o.series_id
    WHERE s.measure = {p} AND o.ts >= {p} AND o.ts < {p}) ranked
WHERE n = 1 GROUP BY month"""


def naive_dso_trend(connection, backend: str, first: date, stop: date) -> dict[str, float]:
    """{YYYY-MM: DSO} for the months in [first, stop), from raw observations only. The store is
    in UTC, so a local day range is the same UTC timestamp range (the primary key's)."""
    bounds = [datetime(d.year, d.month, d.day, tzinfo=UTC) for d in (first, stop)]
    if backend == "sqlite":
        bounds = [b.strftime("%Y-%m-%d %H:%M:%S.%f") for b in bounds]
    found = {}
    for measure, template in (("credit_sales", _NAIVE_SUM), ("ar_balance", _NAIVE_LAST)):
        sql = template.format(month=_MONTH[backend], p=_MARK[backend])
        cursor = connection.cursor()
        cursor.execute(sql, (measure, *bounds))
        found[measure] = dict(cursor.fetchall())
        cursor.close()
    return {
        month: found["ar_balance"][month] / sales * _days_in(month)
        for month, sales in found["credit_sales"].items()
        if month in found["ar_balance"]
    }


def _days_in(month: str) -> int:
    year, number = map(int, month.split("-"))
    following = date(year + number // 12, number % 12 + 1, 1)
    return (following - date(year, number, 1)).days


# --- one backend ---------------------------------------------------------------------------


def measure_query(
    engine: Engine, capture: Capture, profile: Profile, connection, text: str, calls: int
) -> tuple[Samples, int, list[tuple]]:
    """Interleaved uncached, cached and floor timings of one question; the number of aggregate
    statements per answer; then, untimed by the above, a profile of PROFILE_CALLS uncached
    calls."""
    warm = KpiService(engine, tz=TZ)

    def uncached() -> object:
        return KpiService(engine, tz=TZ).ask(text, viewer=VIEWER, as_of=AS_OF)

    def cached() -> object:
        return warm.ask(text, viewer=VIEWER, as_of=AS_OF)

    def new_question() -> object:
        warm.forget_answers()
        return warm.ask(text, viewer=VIEWER, as_of=AS_OF)

    statements = capture.of(uncached)
    if not statements:
        sys.exit(
            "no aggregate statement captured: kpi/aggregate.py's SQL no longer starts with "
            "`SELECT p.slice`; update Capture"
        )
    for _ in range(WARMUP):
        uncached(), new_question(), cached(), replay(connection, statements)
    samples = Samples([], [], [], [])
    for _ in range(calls):
        samples.uncached.append(timed(uncached))
        samples.new_question.append(timed(new_question))
        samples.cached.append(timed(cached))
        samples.floor.append(timed(lambda: replay(connection, statements)))
    profiles = [profile.of(uncached) for _ in range(PROFILE_CALLS)]
    return samples, len(statements), profiles


def verdict(p95: float, floor_p95: float) -> tuple[str, str]:
    allowed = min(GOAL_RATIO * floor_p95 + GOAL_SLACK_MS, GOAL_MAX_MS)
    status = "ok" if p95 <= allowed else f"MISSED by {p95 - allowed:.1f} ms"
    return f"{allowed:.1f} ms", status


def print_query(backend: str, text: str, samples: Samples, statements: int) -> None:
    floor_p95 = percentile(samples.floor, 95)
    floor_p50 = percentile(samples.floor, 50)
    for mode in ("uncached", "new_question", "cached"):
        runs = getattr(samples, mode)
        p50, p95 = percentile(runs, 50), percentile(runs, 95)
        allowed, status = verdict(p95, floor_p95)
        print(
            f"query {backend} {text} · {mode}: p50 {p50:.2f} ms p95 {p95:.2f} ms · "
            f"floor p50 {floor_p50:.2f} ms p95 {floor_p95:.2f} ms ({statements} statements) · "
            f"{p95 / floor_p95:.2f}x floor {p95 - floor_p95:+.2f} ms · "
            f"goal p95 ≤ 1.5x floor + 5 ms and ≤ 50 ms (= {allowed}): {status}",
            flush=True,
        )


def print_profile(backend: str, text: str, profiles: list[tuple]) -> None:
    columns = zip(*profiles, strict=True)
    total, aggregate, other, count = (statistics.median(column) for column in columns)
    print(
        f"query {backend} {text} · uncached breakdown (medians of {len(profiles)}): "
        f"total {total:.2f} ms = aggregate SQL {aggregate:.2f} ms + other SQL {other:.2f} ms "
        f"({count:.0f} statements: generation, catalog, dimensions) + Python "
        f"{total - aggregate - other:.2f} ms",
        flush=True,
    )


def naive_reference(backend: str, connection, engine: Engine, calls: int) -> None:
    reply = KpiService(engine, tz=TZ).ask("trend dso 12m", viewer=VIEWER, as_of=AS_OF)
    periods = [point["period"] for point in reply.trend]
    engine_values = {
        p.start.strftime("%Y-%m"): point["value"]
        for p, point in zip(periods, reply.trend, strict=True)
    }
    first, stop = periods[0].start, periods[-1].end
    runs, naive = [], {}
    for _ in range(calls):
        started = time.perf_counter()
        naive = naive_dso_trend(connection, backend, first, stop)
        runs.append((time.perf_counter() - started) * 1000)
    same = naive.keys() == engine_values.keys() and all(
        math.isclose(naive[m], engine_values[m], rel_tol=1e-9) for m in naive
    )
    print(
        f"query {backend} naive trend dso 12m (GROUP BY over raw observations, driver only): "
        f"p50 {percentile(runs, 50):.0f} ms, max {max(runs):.0f} ms over {calls} calls · "
        f"values {'equal the engine’s' if same else 'DIFFER from the engine’s'}",
        flush=True,
    )


def child(backend: str, url: str, calls: int) -> None:
    """Everything for one backend, in this (fresh) process."""
    engine = open_store(url)  # as `kpibot serve` opens it
    with session_scope(engine) as session:
        catalog.load_builtin_if_empty(session, now=AS_OF)
    capture = Capture(engine)
    profile = Profile(engine)
    connection = driver_connection(backend, url)
    for text in QUERIES:
        samples, statements, profiles = measure_query(
            engine, capture, profile, connection, text, calls
        )
        print_query(backend, text, samples, statements)
        print_profile(backend, text, profiles)
    naive_reference(backend, connection, engine, NAIVE_CALLS)
    connection.close()
    engine.dispose()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    status = "ok" if rss_mb <= GOAL_RSS_MB else f"MISSED by {rss_mb - GOAL_RSS_MB:.0f} MB"
    print(f"query {backend} peak RSS: {rss_mb:.0f} MB · goal ≤ {GOAL_RSS_MB} MB: {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--calls", type=int, default=50, help="timed calls per figure (≥ 50)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the stores first")
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.calls)
        return
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    urls = {b: store_gen.ensure_store(b, rebuild=args.rebuild) for b in backends}
    print(
        f"query bench · {store_gen.Spec().observations:,} observations · "
        f"as of {AS_OF:%Y-%m-%d %H:%M} UTC · {args.calls} calls per figure · "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    for backend in backends:
        command = [sys.executable, __file__, "--child", backend, urls[backend]]
        subprocess.run([*command, "--calls", str(args.calls)], check=True)


if __name__ == "__main__":
    main()
