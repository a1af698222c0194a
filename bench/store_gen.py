"""A big store for the query and serve benches, built fast (not through the CSV importer).

    .venv/bin/python bench/store_gen.py [--backend sqlite|postgresql|both] [--rebuild]
    .venv/bin/python bench/store_gen.py --check      # a small store of each backend, verified

10,000,000 observations of 10 built-in measures (the inputs of dso, finance_error_rate and
system_uptime among them) in 2,000 series (20 branches × 10 teams each), on one time grid over
the three years before AS_OF, in UTC. Values are deterministic (seeded).

The store is opened with `kpi.db.open_store` (migrations) and gets the built-in catalog; then
series and seriesdim rows go in as the importer writes them, observations in bulk through the
driver (SQLite: executemany in transactions of 200 series with `PRAGMA synchronous=OFF` for
the build only, `ts` and `day` as the text SQLAlchemy stores; PostgreSQL: binary COPY), and
`kpi.rollups.rebuild_all` builds the rollups, timed on its own. PostgreSQL is then analysed and
vacuumed (what autovacuum would do after such a load) so plans do not depend on when it ran.

Reuse: the SQLite file lives in bench/out/ under a name made of the parameters (renamed into
place only once complete); PostgreSQL uses the database `kpibot_bench_10m`. Each is reused when
its observation and rollup counts are the expected ones. `--rebuild` builds anew. `--check`
builds a small store of each backend the same way and compares its rollups with
`rollups.discrepancies`.
"""

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kpi import bulk, catalog, rollups  # noqa: E402
from kpi.db import open_store, session_scope  # noqa: E402

OUT = ROOT / "bench" / "out"
GENERATOR_VERSION = 1  # bump when the data changes, so cached stores are not reused
AS_OF = datetime(2026, 11, 10, tzinfo=UTC)
PG_DATABASE = "kpibot_bench_10m"
DEFAULT_POSTGRES = os.environ.get(
    "KPIBOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# Per measure: (low, high) of each observation; balances swing ±20 % over a year around the mean.
MEASURES = {
    "credit_sales": (500.0, 1500.0),
    "ar_balance": (150_000.0, 250_000.0),
    "finance_errors": (0.0, 3.0),
    "finance_transactions": (50.0, 150.0),
    "uptime_minutes": (0.995, 1.0),  # a share of monitored_minutes
    "monitored_minutes": (1.0, 1.0),  # the grid step in minutes
    "purchases": (300.0, 900.0),
    "ap_balance": (80_000.0, 120_000.0),
    "invoice_processing_hours": (10.0, 80.0),
    "invoices_processed": (1.0, 5.0),
}
BALANCES = ("ar_balance", "ap_balance")
COUNTS = ("finance_errors", "finance_transactions", "invoices_processed")
BRANCHES = [
    "Amsterdam", "Athens", "Barcelona", "Berlin", "Brussels", "Budapest", "Copenhagen",
    "Dublin", "Hamburg", "Helsinki", "Lisbon", "London", "Lyon", "Madrid", "Milan", "Munich",
    "Oslo", "Paris", "Prague", "Vienna",
]  # fmt: skip
TEAMS = ["AP", "AR", "Audit", "Billing", "GL", "Payroll", "Procurement", "Tax", "Treasury", "FPA"]
INSERT_BATCH_SERIES = 200  # SQLite: one transaction per this many series (1M rows)


@dataclass(frozen=True)
class Spec:
    observations: int = 10_000_000
    branches: int = len(BRANCHES)
    teams: int = len(TEAMS)
    years: int = 3
    as_of: datetime = AS_OF

    @property
    def series(self) -> list[tuple[int, str, str, str]]:
        """(id, measure, branch, team), ids from 1 in measure, branch, team order."""
        keys = [
            (m, b, t)
            for m in MEASURES
            for b in BRANCHES[: self.branches]
            for t in TEAMS[: self.teams]
        ]
        return [(i, *key) for i, key in enumerate(keys, start=1)]

    @property
    def per_series(self) -> int:
        return self.observations // len(self.series)

    @property
    def start(self) -> datetime:
        return self.as_of.replace(year=self.as_of.year - self.years)

    @property
    def step_us(self) -> int:
        span = self.as_of - self.start
        return span // timedelta(microseconds=1) // self.per_series

    def moments(self) -> np.ndarray:
        """The shared time grid: µs since 1970 (UTC), every series observed at each."""
        first = (self.start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        return first + np.arange(self.per_series, dtype=np.int64) * self.step_us

    def key(self) -> str:
        return (
            f"{self.observations}obs-{len(self.series)}series-{self.years}y-"
            f"{self.as_of.date()}-v{GENERATOR_VERSION}"
        )

    def expected_counts(self) -> tuple[int, int]:
        """(observations, rollups) of a complete store."""
        return self.observations, self.expected_rollups()

    def expected_rollups(self) -> int:
        days = np.unique(self.moments() // bulk.DAY_US)
        as_dates = [date(1970, 1, 1) + timedelta(days=int(d)) for d in days]
        weeks = {rollups.week_start(d) for d in as_dates}
        months = {rollups.month_start(d) for d in as_dates}
        return len(self.series) * (len(weeks) + len(months))


# --- data ----------------------------------------------------------------------------------


def values_for(measure: str, series_id: int, moments: np.ndarray, step_us: int) -> np.ndarray:
    """Deterministic plausible values of one series."""
    rng = np.random.default_rng(series_id)
    low, high = MEASURES[measure]
    n = len(moments)
    if measure == "monitored_minutes":
        return np.full(n, round(step_us / 60e6, 2))
    if measure == "uptime_minutes":
        return np.round(rng.uniform(low, high, n) * step_us / 60e6, 2)
    if measure in COUNTS:
        return rng.integers(int(low), int(high) + 1, n).astype(np.float64)
    if measure in BALANCES:
        year = 365.25 * 86_400e6
        swing = 1 + 0.2 * np.sin(2 * np.pi * moments / year + series_id)
        return np.round((low + high) / 2 * swing + rng.normal(0, (high - low) / 20, n), 2)
    return np.round(rng.uniform(low, high, n), 2)


def dims_json(branch: str, team: str) -> str:
    """Canonical as the importer writes it: sorted keys, no spaces."""
    return json.dumps({"branch": branch, "team": team}, separators=(",", ":"), ensure_ascii=False)


def series_rows(spec: Spec) -> list[tuple[int, str, str]]:
    return [(i, m, dims_json(b, t)) for i, m, b, t in spec.series]


def seriesdim_rows(spec: Spec) -> list[tuple[int, str, str]]:
    return [row for i, _, b, t in spec.series for row in ((i, "branch", b), (i, "team", t))]


def sqlite_texts(moments: np.ndarray) -> tuple[list[str], list[str]]:
    """`ts` and `day` as the importer writes them on SQLite (`kpi.bulk`). The day is the UTC
    date: the store's time zone is UTC."""
    return bulk.sqlite_times(moments).tolist(), bulk.sqlite_days(moments // bulk.DAY_US).tolist()


# --- common steps --------------------------------------------------------------------------


def prepare(url: str, spec: Spec) -> None:
    """Migrations and the built-in catalog, through the product's own code."""
    engine = open_store(url)
    with session_scope(engine) as session:
        catalog.load_builtin_if_empty(session, now=spec.as_of)
    engine.dispose()


def build_rollups(url: str, *, sqlite_fast: bool) -> float:
    """kpi.rollups.rebuild_all in one transaction; seconds taken."""
    engine = open_store(url)
    started = time.perf_counter()
    with engine.begin() as connection:
        if sqlite_fast:
            connection.exec_driver_sql("PRAGMA synchronous=OFF")
            connection.exec_driver_sql("PRAGMA cache_size=-262144")
        rollups.rebuild_all(connection)
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def report(backend: str, spec: Spec, timings: dict[str, float], where: str) -> None:
    total = sum(timings.values())
    parts = " · ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    print(
        f"store {backend} built: {spec.observations:,} observations · {len(spec.series):,} "
        f"series · {total:.1f} s ({parts}) · {where}",
        flush=True,
    )


# --- SQLite --------------------------------------------------------------------------------


def sqlite_path(spec: Spec) -> Path:
    return OUT / f"store-{spec.key()}.db"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def sqlite_counts(path: Path) -> tuple[int, int]:
    """(observations, rollups) of the store file at path."""
    connection = sqlite3.connect(path)
    try:
        observations = connection.execute("SELECT count(*) FROM observation").fetchone()[0]
        rollup_rows = connection.execute("SELECT count(*) FROM rollup").fetchone()[0]
    finally:
        connection.close()
    return observations, rollup_rows


def build_sqlite(path: Path, spec: Spec) -> dict[str, float]:
    """Build the store at `path` (which must not exist); seconds per step."""
    timings = {}
    started = time.perf_counter()
    prepare(sqlite_url(path), spec)
    connection = sqlite3.connect(path, isolation_level=None)
    # For the build only: the file is thrown away if the build does not finish.
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("PRAGMA cache_size=-262144")
    connection.execute("BEGIN")
    connection.executemany(
        "INSERT INTO series (id, measure, dims) VALUES (?, ?, ?)", series_rows(spec)
    )
    connection.executemany(
        "INSERT INTO seriesdim (series_id, dim, value) VALUES (?, ?, ?)", seriesdim_rows(spec)
    )
    connection.execute("COMMIT")
    moments = spec.moments()
    ts, day = sqlite_texts(moments)
    series = spec.series
    for at in range(0, len(series), INSERT_BATCH_SERIES):
        connection.execute("BEGIN")
        for series_id, measure, _, _ in series[at : at + INSERT_BATCH_SERIES]:
            values = values_for(measure, series_id, moments, spec.step_us).tolist()
            connection.executemany(
                "INSERT INTO observation (series_id, ts, day, value) VALUES (?, ?, ?, ?)",
                zip([series_id] * len(ts), ts, day, values, strict=True),
            )
        connection.execute("COMMIT")
    connection.close()
    timings["observations"] = time.perf_counter() - started
    timings["rollups (rebuild_all)"] = build_rollups(sqlite_url(path), sqlite_fast=True)
    started = time.perf_counter()
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    timings["checkpoint"] = time.perf_counter() - started
    return timings


def ensure_sqlite(spec: Spec, *, rebuild: bool = False) -> str:
    """The URL of a complete SQLite store for `spec`, built if missing (or `rebuild`)."""
    path = sqlite_path(spec)
    if path.exists() and not rebuild and sqlite_counts(path) == spec.expected_counts():
        return sqlite_url(path)
    OUT.mkdir(parents=True, exist_ok=True)
    building = path.with_name(path.name + ".building")
    for stale in [path, building, *OUT.glob(building.name + "-*"), *OUT.glob(path.name + "-*")]:
        stale.unlink(missing_ok=True)
    print(f"building the SQLite store {path.name} …", flush=True)
    timings = build_sqlite(building, spec)
    building.rename(path)  # only a finished store gets the name that is reused
    report("sqlite", spec, timings, str(path.relative_to(ROOT)))
    return sqlite_url(path)


# --- PostgreSQL ----------------------------------------------------------------------------


def pg_copy_block(series_id: int, moments: np.ndarray, values: np.ndarray) -> bytes:
    """One series' rows of the binary COPY, encoded as the importer encodes them."""
    return bulk.pg_copy_rows(
        series_id=(">i4", np.full(len(moments), series_id)),
        ts=(">i8", moments - bulk.PG_EPOCH_US),
        day=(">i4", moments // bulk.DAY_US - bulk.PG_EPOCH_DAYS),
        value=(">f8", values),
    )


def pg_url(admin_url: str, database: str) -> str:
    return make_url(admin_url).set(database=database).render_as_string(hide_password=False)


def driver_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_counts(url: str) -> tuple[int, int] | None:
    """(observations, rollups) of the store at url, or None when it is not a store."""
    try:
        with psycopg.connect(driver_dsn(url)) as connection:
            observations = connection.execute("SELECT count(*) FROM observation").fetchone()[0]
            rollup_rows = connection.execute("SELECT count(*) FROM rollup").fetchone()[0]
    except psycopg.Error:
        return None
    return observations, rollup_rows


def recreate_database(admin_url: str, database: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    admin.dispose()


def build_postgres(url: str, spec: Spec) -> dict[str, float]:
    timings = {}
    started = time.perf_counter()
    prepare(url, spec)
    moments = spec.moments()
    with psycopg.connect(driver_dsn(url)) as connection, connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO series (id, measure, dims) VALUES (%s, %s, %s)", series_rows(spec)
        )
        cursor.execute("SELECT setval('series_id_seq', (SELECT max(id) FROM series))")
        cursor.executemany(
            "INSERT INTO seriesdim (series_id, dim, value) VALUES (%s, %s, %s)",
            seriesdim_rows(spec),
        )
        query = "COPY observation (series_id, ts, day, value) FROM STDIN (FORMAT binary)"
        with cursor.copy(query) as copy:
            copy.write(bulk.PG_HEADER)
            for series_id, measure, _, _ in spec.series:
                values = values_for(measure, series_id, moments, spec.step_us)
                copy.write(pg_copy_block(series_id, moments, values))
            copy.write(bulk.PG_TRAILER)
    timings["observations"] = time.perf_counter() - started
    timings["rollups (rebuild_all)"] = build_rollups(url, sqlite_fast=False)
    started = time.perf_counter()
    with psycopg.connect(driver_dsn(url), autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    timings["vacuum analyze"] = time.perf_counter() - started
    return timings


def ensure_postgres(
    spec: Spec, *, rebuild: bool = False, admin_url: str = DEFAULT_POSTGRES, database=PG_DATABASE
) -> str:
    """The URL of database `database` holding the store for `spec`, built if its counts are
    wrong (or `rebuild`)."""
    url = pg_url(admin_url, database)
    if not rebuild and pg_counts(url) == spec.expected_counts():
        return url
    print(f"building the PostgreSQL store in database {database} …", flush=True)
    recreate_database(admin_url, database)
    timings = build_postgres(url, spec)
    report("postgresql", spec, timings, f"database {database}")
    return url


def ensure_store(backend: str, *, rebuild: bool = False, spec: Spec | None = None) -> str:
    spec = spec or Spec()
    if backend == "sqlite":
        return ensure_sqlite(spec, rebuild=rebuild)
    return ensure_postgres(spec, rebuild=rebuild)


# --- checking the method on a small store --------------------------------------------------


def check(admin_url: str) -> bool:
    """Build a small store of each backend exactly as the big one and verify its rollups."""
    spec = Spec(observations=40_000, branches=2, teams=2, years=3)  # 40 series × 1,000
    ok = True
    with tempfile.TemporaryDirectory(prefix="kpibot-storegen-") as tmp:
        stores = [("sqlite", sqlite_url(Path(tmp) / "check.db"))]
        database = f"{PG_DATABASE}_check"
        recreate_database(admin_url, database)
        stores.append(("postgresql", pg_url(admin_url, database)))
        build_sqlite(Path(tmp) / "check.db", spec)
        build_postgres(stores[1][1], spec)
        for backend, url in stores:
            ok &= check_one(backend, url, spec)
        drop = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with drop.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        drop.dispose()
    return ok


def check_one(backend: str, url: str, spec: Spec) -> bool:
    engine = open_store(url)
    with engine.connect() as connection:
        problems = rollups.discrepancies(connection, tz=ZoneInfo("UTC"))
        observations = connection.execute(text("SELECT count(*) FROM observation")).scalar()
        rollup_rows = connection.execute(text("SELECT count(*) FROM rollup")).scalar()
    engine.dispose()
    counts_ok = (observations, rollup_rows) == spec.expected_counts()
    verdict = "ok" if counts_ok and not problems else "WRONG"
    print(
        f"check {backend}: {observations:,} observations · {rollup_rows:,} rollups "
        f"(expected {spec.expected_rollups():,}) · {len(problems)} discrepancies: {verdict}"
    )
    for problem in problems[:10]:
        print(f"  {problem}")
    return verdict == "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rebuild", action="store_true", help="build anew even if cached")
    parser.add_argument("--check", action="store_true", help="verify the method on small stores")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES, help="an existing database")
    args = parser.parse_args()
    if args.check:
        sys.exit(0 if check(args.postgres_url) else 1)
    spec = Spec()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        started = time.perf_counter()
        if backend == "sqlite":
            url = ensure_sqlite(spec, rebuild=args.rebuild)
        else:
            url = ensure_postgres(spec, rebuild=args.rebuild, admin_url=args.postgres_url)
        shown = make_url(url).render_as_string(hide_password=True)
        print(f"store {backend} ready in {time.perf_counter() - started:.1f} s: {shown}")


if __name__ == "__main__":
    main()
