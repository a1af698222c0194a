"""How fast `kpibot import` loads a big measure file, against what the database driver alone does.

    .venv/bin/python bench/import_bench.py [--rows 1000000] [--backend sqlite|postgresql|both]
        [--rounds 3]

Generates a CSV of ROWS rows (10 measures, 2,000 series, 3 years) and one of twice as many in a
temporary directory, then per backend prints:

- the floor: the file's rows streamed into a bare table (same columns, no index, no validation)
  by the driver alone — SQLite: csv.reader into executemany in one transaction; PostgreSQL:
  COPY FROM STDIN (FORMAT csv) of the file through psycopg;
- the first import into an empty store, in rows/s and as a multiple of the floor (goal ≥ 0.5x);
- a re-import of the same file, which changes nothing (goal ≥ 1x the floor);
- peak RSS of importing ROWS and 2×ROWS rows, each in a fresh process (goal ≤ 1.2x).

The floor and the imports alternate ROUNDS times (--rounds, 3), each in a fresh store, and each
ratio is the median of the rounds' ratios, every round's shown: one floor run here can take
twice as long as the next, which made a single pair's ratio swing by 0.2x.

PostgreSQL gets a database of its own (created, then dropped); SQLite a temporary file. A script
that prints figures, not a timed test.
"""

import argparse
import csv
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kpi import catalog, importer  # noqa: E402
from kpi.db import open_store, session_scope  # noqa: E402

MEASURES = [
    "credit_sales",
    "ar_balance",
    "purchases",
    "ap_balance",
    "invoices_processed",
    "finance_errors",
    "finance_transactions",
    "hires",
    "separations",
    "headcount",
]
BRANCHES = [f"Branch {i:02d}" for i in range(20)]
TEAMS = ["AP", "AR", "GL", "Payroll", "Tax", "Treasury", "Audit", "FP&A", "Procurement", "IT"]
DAYS = 3 * 365
TZ = ZoneInfo("Europe/Berlin")
DEFAULT_POSTGRES = os.environ.get(
    "KPIBOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def generate(path: Path, rows: int) -> None:
    """Rows in date order, every series on evenly spread days (hours once days run out)."""
    series = [(m, b, t) for m in MEASURES for b in BRANCHES for t in TEAMS]
    per_series = rows // len(series)
    start = datetime(2024, 1, 1)
    step = timedelta(days=DAYS) / per_series
    dated = step >= timedelta(days=1)
    rng = random.Random(42)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("measure,date,value,branch,team\n")
        for k in range(per_series):
            moment = start + k * step
            when = moment.date().isoformat() if dated else moment.strftime("%Y-%m-%dT%H:%M")
            lines = [
                f"{m},{when},{rng.randrange(0, 10_000_000) / 100},{b},{t}\n" for m, b, t in series
            ]
            out.write("".join(lines))


def generate_next_day(path: Path) -> None:
    """One more day for every series, after the big file's three years: a daily import."""
    rng = random.Random(7)
    when = (datetime(2024, 1, 1) + timedelta(days=DAYS + 1)).date().isoformat()
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("measure,date,value,branch,team\n")
        for m in MEASURES:
            for b in BRANCHES:
                for t in TEAMS:
                    out.write(f"{m},{when},{rng.randrange(0, 10_000_000) / 100},{b},{t}\n")


def fresh_store(backend: str, workdir: Path, admin_url: str) -> tuple[str, object]:
    """A URL of an empty store, and a function that removes it."""
    if backend == "sqlite":
        path = workdir / f"store-{uuid.uuid4().hex[:8]}.db"
        return f"sqlite:///{path}", lambda: [p.unlink() for p in workdir.glob(path.name + "*")]
    name = f"kpibot_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def floor(backend: str, url: str, path: Path) -> float:
    """Seconds for the driver alone to put the file's rows into a bare table."""
    if backend == "sqlite":
        connection = sqlite3.connect(make_url(url).database)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("CREATE TABLE floor (measure, date, value, branch, team)")
        started = time.perf_counter()
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            next(reader)
            connection.execute("BEGIN")
            connection.executemany("INSERT INTO floor VALUES (?, ?, ?, ?, ?)", reader)
            connection.execute("COMMIT")
        seconds = time.perf_counter() - started
        connection.execute("DROP TABLE floor")
        connection.close()
        return seconds
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as connection:
        connection.execute(
            "CREATE TABLE floor (measure text, date text, value text, branch text, team text)"
        )
        connection.commit()
        started = time.perf_counter()
        with connection.cursor() as cursor, path.open("rb") as handle:
            with cursor.copy("COPY floor FROM STDIN (FORMAT csv, HEADER true)") as copy:
                while data := handle.read(1 << 20):
                    copy.write(data)
        connection.commit()
        seconds = time.perf_counter() - started
        connection.execute("DROP TABLE floor")
        connection.commit()
        return seconds


def child(url: str, path: Path) -> None:
    """In a fresh process: import into the empty store at url, then again; print figures."""
    engine = open_store(url)
    with session_scope(engine) as session:
        catalog.load_builtin_if_empty(session, now=datetime(2026, 1, 1, tzinfo=UTC))
    first = importer.import_csv(engine, path, tz=TZ)
    first_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    again = importer.import_csv(engine, path, tz=TZ)
    daily = path.with_name("next-day.csv")
    generate_next_day(daily)
    next_day = importer.import_csv(engine, daily, tz=TZ)
    engine.dispose()
    print(
        json.dumps(
            {
                "first": first.seconds,
                "first_line": first.line(),
                "first_rss_kb": first_rss,
                "again": again.seconds,
                "again_line": again.line(),
                "again_changed": again.changed,
                "daily": next_day.seconds,
                "daily_rows": next_day.changed,
                "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )


def run_child(backend: str, workdir: Path, admin_url: str, path: Path) -> dict:
    url, drop = fresh_store(backend, workdir, admin_url)
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--child", url, str(path)],
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        drop()
    return json.loads(done.stdout.strip().splitlines()[-1])


def label(rows: int) -> str:
    return f"{rows / 1e6:g}M" if rows >= 1_000_000 else f"{rows / 1e3:g}k"


def bench(
    backend: str, rows: int, files: dict[int, Path], workdir: Path, admin_url: str, rounds: int
) -> None:
    """Floor and import alternate, each in a fresh store, `rounds` times: on this machine one
    floor run can take twice as long as the next, so a ratio is the median of the rounds'
    ratios, each floor against the import right after it."""
    floors, runs = [], []
    for _ in range(rounds):
        url, drop = fresh_store(backend, workdir, admin_url)
        try:
            open_store(url).dispose()
            floors.append(rows / floor(backend, url, files[rows]))
        finally:
            drop()
        runs.append(run_child(backend, workdir, admin_url, files[rows]))
    big = run_child(backend, workdir, admin_url, files[2 * rows])

    def median_of(field: str) -> tuple[dict, float, float, str]:
        """The round whose import (`field`: its seconds) is the median against its floor:
        that run, its rows/s, its ratio, and every round's ratio."""
        ratios = [
            rows / run[field] / floor_rate for run, floor_rate in zip(runs, floors, strict=True)
        ]
        middle = sorted(range(rounds), key=lambda k: ratios[k])[rounds // 2]
        shown = ", ".join(f"{ratio:.2f}x" for ratio in ratios)
        run = runs[middle]
        return run, rows / run[field], ratios[middle], f"rounds {shown}" if rounds > 1 else ""

    how = "csv.reader → executemany" if backend == "sqlite" else "COPY FROM STDIN (FORMAT csv)"
    spread = f"{min(floors):,.0f}–{max(floors):,.0f}" if rounds > 1 else f"{floors[0]:,.0f}"
    print(f"floor {backend} {label(rows)}: {spread} rows/s ({how}, bare table)")
    small, rate, ratio, shown = median_of("first")
    print(
        f"import {backend} {label(rows)}: {rate:,.0f} rows/s = {ratio:.2f}x floor · "
        f"peak RSS {small['first_rss_kb'] / 1024:.0f} MB   [{small['first_line']}] {shown}"
    )
    again, rate, ratio, shown = median_of("again")
    print(
        f"re-import {backend} {label(rows)}: {rate:,.0f} rows/s = {ratio:.2f}x floor · "
        f"{again['again_changed']} changed   [{again['again_line']}] {shown}"
    )
    print(
        f"daily import {backend} into the {label(rows)} store: {small['daily_rows']:,} new rows "
        f"in {small['daily'] * 1000:,.0f} ms"
    )
    print(
        f"peak RSS {backend}: {label(rows)} {small['rss_kb'] / 1024:.0f} MB · "
        f"{label(2 * rows)} {big['rss_kb'] / 1024:.0f} MB = "
        f"{big['rss_kb'] / small['rss_kb']:.2f}x   "
        f"({label(2 * rows)} import {2 * rows / big['first']:,.0f} rows/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES, help="an existing database")
    parser.add_argument("--rounds", type=int, default=3, help="floor and import, alternated")
    parser.add_argument("--child", nargs=2, metavar=("URL", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory(prefix="kpibot-bench-") as tmp:
        workdir = Path(tmp)
        files = {}
        for rows in (args.rows, 2 * args.rows):
            files[rows] = workdir / f"measures-{rows}.csv"
            generate(files[rows], rows)
        print(
            f"{args.rows:,} rows: {len(MEASURES)} measures · {len(MEASURES) * 200:,} series · "
            f"{DAYS // 365} years from {date(2024, 1, 1)} · "
            f"{files[args.rows].stat().st_size / 1e6:.0f} MB"
        )
        for backend in backends:
            bench(backend, args.rows, files, workdir, args.postgres_url, args.rounds)


if __name__ == "__main__":
    main()
