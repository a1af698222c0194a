"""An alerts pass over ~10,000 (KPI, dimension value) series of a 10M-observation store, against
the bare SQL it reads.

    .venv/bin/python bench/alerts_bench.py [--backend sqlite|postgresql|both] [--transitions 500]
                                           [--repeat 3] [--half]

The store: bench/store_gen.py's generator and build (same measures, values, time grid and
method), with one change, because its own dimensions give at most 20 values (branch) or 10
(team) per KPI: here every (branch, team) is a team of its own, 20 × 100 = 2,000 values of
`team` per measure (20,000 series of 500 observations each). The five built-in KPIs whose
inputs store_gen generates get `alert_by: team` and a target and warn band (through
kpi.catalog) placed at the 90th and 95th percentile of their teams' values (10th and 5th for
higher-is-better), so 5 × 2,001 = 10,005 series are evaluated and about a tenth are not ok.

Per backend, in a process of its own (peak RSS is that backend's):

1. setup: alert, incident, event and delivery rows are dropped; a first `run_alerts` creates
   every alert row and opens the incidents (no alert channel yet: nothing is posted; their
   deliveries are then marked sent, as if told, or the transition pass would post them all);
2. no change: `--repeat` passes of `run_alerts` that find nothing to change, interleaved with
   the floor: the statements `kpi.evaluate.read_all` issues (its own and `kpi/aggregate.py`'s,
   captured with SQLAlchemy's `before_cursor_execute`) replayed with the same driver-level
   parameters through sqlite3 / psycopg on one open connection, fetching every row; and
   `read_all` alone, to tell reading from deciding. Goal: pass ≤ 2 × floor and ≤ 10 s;
3. transitions: `--transitions` teams that are ok (spread over the five KPIs) get their current
   period's latest input observation overwritten through `kpi.importer.load_records` so that
   they breach (and with them each KPI as a whole: 5 more); one timed pass opens their
   incidents and posts them, with charts, to the alert channel of a Slack stand-in (1 post/s
   per channel, 100 calls/s per workspace) in the parent process. Its floor is the same SQL plus
   Slack's pacing: one post a second into that channel. The overwritten values are restored
   afterwards (and at the start of a run that follows an interrupted one).

Peak RSS is read per pass (VmHWM, reset before each pass through /proc/self/clear_refs); write
statements are counted per pass (a pass that changes nothing must send none).
`--half` runs the setup and no-change passes again over a store with half the observations
(same series, same periods: the same result set, half the history) to show memory follows the
result set, not the store.
"""

import argparse
import json
import logging
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import store_gen  # noqa: E402  (bench/ is the script's directory)

AS_OF = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)  # October and ISO week 45 are complete
TZ = ZoneInfo("UTC")
DIM = "team"
ALERT_CHANNEL = "C0ALERTS"
TOKEN = "xoxb-bench"
BREACH = 1e9  # what an overwritten input becomes: every KPI below breaches with it
# The built-in KPIs whose inputs store_gen generates, and the input that, made huge, breaches.
KPIS = {
    "dso": "ar_balance",
    "finance_error_rate": "finance_errors",
    "invoice_processing_time": "invoice_processing_hours",
    "ap_turnover": "ap_balance",  # higher is better: a huge average balance, a tiny turnover
    "system_uptime": "monitored_minutes",  # higher is better
}
TARGET_QUANTILE, WARN_QUANTILE = 0.90, 0.95
GOAL_RATIO, GOAL_SECONDS = 2.0, 10.0
READ_ALL_PREFIXES = ("SELECT grp, MIN(ts)", "SELECT p.slice")


@dataclass(frozen=True)
class WideSpec(store_gen.Spec):
    """store_gen's store with `teams` teams of its own per branch (names unique across
    branches), so `team` has branches × teams values per measure."""

    teams: int = 100

    @property
    def series(self) -> list[tuple[int, str, str, str]]:
        keys = [
            (measure, branch, f"{branch}-{team:03d}")
            for measure in store_gen.MEASURES
            for branch in store_gen.BRANCHES[: self.branches]
            for team in range(1, self.teams + 1)
        ]
        return [(i, *key) for i, key in enumerate(keys, start=1)]

    def key(self) -> str:
        return f"{super().key()}-wide{self.teams}"


def ensure_store(backend: str, observations: int) -> str:
    spec = WideSpec(observations=observations)
    if backend == "sqlite":
        return store_gen.ensure_sqlite(spec)
    database = f"kpibot_bench_alerts_{observations // 1_000_000}m"
    return store_gen.ensure_postgres(spec, database=database)


# --- measuring -------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak RSS since the last `reset_peak_rss` (VmHWM)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


def reset_peak_rss() -> float:
    """Start a new peak (VmHWM) from the current RSS, which is returned, in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def timed(action: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


class Capture:
    """The statements `read_all` sends to the driver, exactly as sent."""

    def __init__(self, engine: Engine) -> None:
        self.statements: list[tuple[str, object]] = []
        self.on = False
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn, _cursor, statement, parameters, _context, _many) -> None:
        if self.on and statement.startswith(READ_ALL_PREFIXES):
            self.statements.append((statement, parameters))

    def of(self, action: Callable[[], object]) -> list[tuple[str, object]]:
        self.statements, self.on = [], True
        try:
            action()
        finally:
            self.on = False
        return self.statements


class Writes:
    """Write statements sent to the store: a pass that changes nothing must send none."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn, _cursor, statement, _parameters, _context, _many) -> None:
        if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            self.count += 1


def driver_connection(backend: str, url: str):
    if backend == "sqlite":
        return sqlite3.connect(make_url(url).database)
    return psycopg.connect(store_gen.driver_dsn(url), autocommit=True)


def replay(connection, statements: list[tuple[str, object]]) -> int:
    rows = 0
    for statement, parameters in statements:
        cursor = connection.cursor()
        cursor.execute(statement, parameters)
        rows += len(cursor.fetchall())
        cursor.close()
    return rows


# --- the store's alert configuration and state -----------------------------------------------


def forget_alerts(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in ("alertevent", "incident", "alert", "delivery"):
            connection.execute(text(f"DELETE FROM {table}"))


def settle_setup(engine: Engine) -> None:
    """The setup's alerts count as told: left waiting for a channel, the transition pass would
    post all thousand of them (at one a second) besides its own."""
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE delivery SET state = 'sent', message_ts = 'setup' WHERE state <> 'sent'")
        )


def configure(engine: Engine) -> dict[str, tuple[float, float]]:
    """alert_by team, and a target and warn band at the teams' percentiles, for each KPI."""
    from sqlmodel import Session

    from kpi import catalog
    from kpi.aggregate import Scope
    from kpi.db import session_scope
    from kpi.periods import current_period
    from kpi.values import load_catalog, values

    bands = {}
    with Session(engine) as session:
        defs = load_catalog(session).kpis
        for key in KPIS:
            kpi = defs[key]
            period = current_period(kpi.kpi.cadence, AS_OF, TZ)
            found = values(session, kpi, [period], Scope(by=DIM))
            ranked = sorted(v.value for v in found.values() if v.value is not None)
            lower = kpi.kpi.better == "lower"
            quantiles = (TARGET_QUANTILE, WARN_QUANTILE) if lower else (0.10, 0.05)
            bands[key] = tuple(ranked[int(q * (len(ranked) - 1))] for q in quantiles)
    spec = catalog.parse_spec(
        {"kpis": {k: {"alert_by": DIM, "target": t, "warn": w} for k, (t, w) in bands.items()}}
    )
    with session_scope(engine) as session:
        catalog.apply(spec, session, actor="alerts-bench", now=AS_OF)
    return bands


def saved_path(url: str) -> Path:
    name = make_url(url).database.rsplit("/", 1)[-1]
    return store_gen.OUT / f"alerts-bench-overwritten-{name}.json"


def restore(engine: Engine, url: str) -> int:
    """Put back the observations a previous run overwrote (if it was interrupted, too)."""
    from kpi.importer import load_records

    path = saved_path(url)
    if not path.exists():
        return 0
    saved = json.loads(path.read_text())
    records = [(m, datetime.fromisoformat(ts), value, dims) for m, ts, value, dims in saved]
    load_records(engine, records, tz=TZ)
    path.unlink()
    return len(records)


def breach(engine: Engine, url: str, readings: list, count: int) -> int:
    """Overwrite the latest input observation in the current period of `count` ok teams (as
    evenly as possible over the KPIs) with BREACH; the originals are saved first."""
    from kpi.alerts import State
    from kpi.importer import load_records

    chosen: dict[str, list] = {key: [] for key in KPIS}
    for reading in sorted(readings, key=lambda r: r.key):
        if reading.dim == DIM and reading.state is State.OK and reading.kpi.key in KPIS:
            chosen[reading.kpi.key].append(reading)
    per_kpi = -(-count // len(KPIS))
    originals, records = [], []
    for key, candidates in chosen.items():
        picked = candidates[:per_kpi][: count - len(originals)]
        for measure, ts, value, dims in latest_inputs(engine, KPIS[key], picked):
            originals.append((measure, ts.isoformat(), value, dims))
            records.append((measure, ts, BREACH, dims))
    saved_path(url).write_text(json.dumps(originals))
    load_records(engine, records, tz=TZ)
    return len(records)


def latest_inputs(engine: Engine, measure: str, readings: list) -> list[tuple]:
    """(measure, ts, value, dims) of the latest observation of `measure` in each reading's
    period, for its team."""
    if not readings:
        return []
    start, end = readings[0].period.utc_bounds(TZ)
    teams = [r.dim_value for r in readings]
    sql = text(
        "SELECT s.dims, o.ts, o.value FROM series s "
        "JOIN seriesdim d ON d.series_id = s.id AND d.dim = :dim "
        "JOIN observation o ON o.series_id = s.id "
        "WHERE s.measure = :measure AND d.value IN :teams AND o.ts >= :start AND o.ts < :end "
        "ORDER BY o.series_id, o.ts"
    ).bindparams(_expanding("teams"))
    params = {"dim": DIM, "measure": measure, "teams": teams, "start": start, "end": end}
    latest = {}
    with engine.connect() as connection:
        for dims, ts, value in connection.execute(sql, params):
            latest[dims] = (ts, value)  # ordered by ts: the last one stays
    found = []
    for dims, (ts, value) in latest.items():
        moment = datetime.fromisoformat(ts) if isinstance(ts, str) else ts
        found.append((measure, moment.replace(tzinfo=UTC), value, json.loads(dims)))
    return found


def _expanding(name: str):
    from sqlalchemy import bindparam

    return bindparam(name, expanding=True)


# --- one backend (in a child process) --------------------------------------------------------


def make_services(engine: Engine, url: str, slack_url: str, alert_channel: str):
    from bot.services import build_services
    from bot.settings import load_settings

    settings = load_settings(
        slack_bot_token=TOKEN,
        slack_api_url=slack_url,
        database_url=url,
        kpibot_timezone="UTC",
        kpibot_alert_channel=alert_channel,
    )
    return build_services(settings, engine)


@dataclass
class Pass:
    seconds: float
    rss_mb: float  # peak during the pass
    before_mb: float  # RSS when it started
    counts: Counter
    writes: int  # INSERT, UPDATE and DELETE statements sent


def alerts_pass(services, writes: Writes) -> Pass:
    from bot.alerts import run_alerts

    before, written = reset_peak_rss(), writes.count
    seconds, counts = timed(lambda: run_alerts(services, as_of=AS_OF))
    return Pass(seconds, peak_rss_mb(), before, counts, writes.count - written)


def _counts(counts: Counter) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


class PacingClock:
    """The Notifier's sleep, timed: how long a pass waits for Slack's per-channel pacing."""

    def __init__(self) -> None:
        self.slept = 0.0

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        time.sleep(seconds)


def child(backend: str, url: str, slack_url: str, args: argparse.Namespace) -> None:
    from sqlmodel import Session

    from kpi.db import open_store
    from kpi.evaluate import read_all

    name = f"{backend} {args.label}"
    engine = open_store(url)
    writes = Writes(engine)
    restored = restore(engine, url)
    forget_alerts(engine)
    bands = configure(engine)
    shown = ", ".join(f"{k} {t:.4g}/{w:.4g}" for k, (t, w) in bands.items())
    print(f"alerts {name}: targets/warn at the teams' percentiles: {shown}", flush=True)

    logging.getLogger("kpibot").setLevel(logging.ERROR)  # setup: "no alert channel", 1,000×
    services = make_services(engine, url, slack_url, alert_channel="")
    setup = alerts_pass(services, writes)
    settle_setup(engine)
    print(
        f"alerts {name} setup pass (creates every alert row, opens incidents, posts nothing): "
        f"{setup.seconds:.2f} s · {sum(setup.counts.values())} series: "
        f"{_counts(setup.counts)} · peak RSS {setup.rss_mb:.0f} MB"
        + (f" · {restored} overwritten observations restored first" if restored else ""),
        flush=True,
    )
    logging.getLogger("kpibot").setLevel(logging.WARNING)

    def read() -> list:
        with Session(engine) as session:
            snap = services.kpis.snapshot(session)
            return read_all(session, snap.catalog, AS_OF, TZ)

    statements = Capture(engine).of(read)
    connection = driver_connection(backend, url)
    floors, reads, passes = [], [], []
    for _ in range(args.repeat):
        floors.append(timed(lambda: replay(connection, statements)))
        reads.append(timed(read))
        passes.append(alerts_pass(services, writes))
    print_no_change(name, statements, floors, reads, passes)
    if args.transitions:
        floor = statistics.median(s for s, _ in floors)
        transitions(name, engine, url, slack_url, read(), args.transitions, floor, writes)
    connection.close()
    engine.dispose()


def print_no_change(name, statements, floors, reads, passes) -> None:
    floor = statistics.median(s for s, _ in floors)
    read_s = statistics.median(s for s, _ in reads)
    pass_s = statistics.median(p.seconds for p in passes)
    series = len(reads[0][1])
    rows = floors[0][1]
    per_run = " ".join(f"{p.seconds:.2f}/{f:.2f}" for p, (f, _) in zip(passes, floors, strict=True))
    ratio = pass_s / floor
    ok = ratio <= GOAL_RATIO and pass_s <= GOAL_SECONDS
    status = "ok" if ok else f"MISSED ({ratio:.2f}x, {pass_s:.2f} s)"
    unchanged = all(set(p.counts) == {"unchanged"} for p in passes)
    written = sum(p.writes for p in passes)
    wrote = "wrote nothing" if unchanged and not written else f"CHANGED THINGS ({written} writes)"
    print(
        f"alerts {name} no-change pass: {pass_s:.2f} s for {series} series (median of "
        f"{len(passes)}; pass/floor each: {per_run}) · floor {floor:.2f} s ({len(statements)} "
        f"statements, {rows} rows) · {ratio:.2f}x floor · goal ≤ {GOAL_RATIO}x floor and ≤ "
        f"{GOAL_SECONDS:g} s: {status} · {wrote}",
        flush=True,
    )
    print(
        f"alerts {name} no-change pass: read_all {read_s:.2f} s ({read_s / floor:.2f}x floor), "
        f"the rest (alert rows, incidents, decisions) {pass_s - read_s:.2f} s",
        flush=True,
    )
    rss = max(p.rss_mb for p in passes)
    before = min(p.before_mb for p in passes)
    print(
        f"alerts {name} no-change pass: peak RSS {rss:.0f} MB ({before:.0f} MB before it)",
        flush=True,
    )


class WarningCount(logging.Handler):
    """The product's warnings during a pass (failed posts, failed charts), by their start."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: Counter = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.seen[record.getMessage().split(":")[0]] += 1


def transitions(name, engine, url, slack_url, readings, count, sql_floor: float, writes) -> None:
    from bot.notify import Notifier

    started = time.perf_counter()
    changed = breach(engine, url, readings, count)
    loaded = time.perf_counter() - started
    services = make_services(engine, url, slack_url, alert_channel=ALERT_CHANNEL)
    pacing = PacingClock()
    services.notifier = Notifier(services.slack, sleep=pacing.sleep)
    warnings = WarningCount()
    logging.getLogger("kpibot").addHandler(warnings)
    result = alerts_pass(services, writes)
    restore(engine, url)
    moved = sum(n for kind, n in result.counts.items() if kind != "unchanged")
    print(
        f"alerts {name} transition pass: {result.seconds:.2f} s · {moved} transitions "
        f"({_counts(result.counts)}; {result.seconds / max(moved, 1):.2f} s each) after "
        f"{changed} observations overwritten through load_records ({loaded:.1f} s, untimed) · "
        f"{pacing.slept:.1f} s of it waiting for per-channel pacing · SQL floor "
        f"{sql_floor:.2f} s ({result.seconds / sql_floor:.1f}x) · peak RSS "
        f"{result.rss_mb:.0f} MB" + (f" · warnings {dict(warnings.seen)}" if warnings.seen else ""),
        flush=True,
    )
    services.executor.shutdown(wait=True)


# --- main ------------------------------------------------------------------------------------


def run_backend(backend: str, url: str, args: argparse.Namespace, label: str, moves: int):
    """The child for one backend and store, with a stand-in in this process; its log read."""
    from bot.standin import SlackStandin

    slack = SlackStandin(post_limit_per_channel_per_second=1, workspace_limit_per_second=100)
    with slack:
        command = [sys.executable, __file__, "--child", backend, url, slack.url]
        options = ["--repeat", str(args.repeat), "--transitions", str(moves), "--label", label]
        subprocess.run([*command, *options], check=True)
        calls = Counter(c.method for c in slack.calls if c.ok)
        refused = Counter(c.method for c in slack.calls if c.status == 429)
    if moves:
        posts = calls["chat.postMessage"]
        print(
            f"alerts {backend} {label} transition pass at the stand-in: {posts} posts, "
            f"{calls['chat.update']} updates, {calls['files.completeUploadExternal']} charts, "
            f"429s {dict(refused)} · Slack floor for {posts} posts into one channel at 1/s: "
            f"{max(posts - 1, 0)} s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--transitions", type=int, default=500, help="teams made to breach")
    parser.add_argument("--repeat", type=int, default=3, help="no-change passes (≥ 1)")
    parser.add_argument("--half", action="store_true", help="also a store of 5M observations")
    parser.add_argument("--label", default="10M", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args)
        return
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    stores = [(10_000_000, "10M", args.transitions)]
    if args.half:
        stores.append((5_000_000, "5M", 0))
    urls = {(b, n): ensure_store(b, n) for b in backends for n, _, _ in stores}
    print(
        f"alerts bench · {WideSpec().observations:,} observations in {len(WideSpec().series):,} "
        f"series · alert_by {DIM} on {len(KPIS)} KPIs · as of {AS_OF:%Y-%m-%d %H:%M} UTC · "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    for backend in backends:
        for observations, label, moves in stores:
            run_backend(backend, urls[(backend, observations)], args, label, moves)


if __name__ == "__main__":
    main()
