"""Weekly digests to many channels through a rate-limited Slack stand-in, against the floor.

    .venv/bin/python bench/digest_bench.py [--channels 1000] [--backend sqlite|postgresql]
        [--workspace-limit 100] [--random-429 0.05] [--floor-threads 32]

The store is small: the built-in catalog plus `kpi.demo.load_demo` (a year of every built-in
measure), so each scorecard has real content; `--channels` channels subscribe to the Monday
09:00 UTC digest and `bot.digests.send_due` runs at that Monday (AS_OF), when all are due.

The Slack stand-in (bot/standin.py) runs in this process and enforces one chat.postMessage per
second per channel, a workspace-wide limit per API method (default 100 calls/s each, as Slack
limits "per API method per workspace per app") and answers 429 with `Retry-After: 1` to a seeded
5 % of calls (slack_sdk then waits 1 s plus up to 1 s of jitter). What runs against it, each in
a process of its own (multiprocessing, spawn) so that its peak RSS is its own and the stand-in's
CPU is not:

- floor: `--floor-threads` threads posting a tiny message per channel through a WebClient with
  the product's retry handlers (`bot.services.make_slack_client`), no other work, each method's
  calls spaced evenly at 90 % of the limit (going over it costs a 1–2 s Retry-After wait per
  refused call, and 6 refusals in a row lose the post): once posts only, once each post followed
  by a tiny files v2 upload in its thread (the same Slack calls as a digest with its chart);
- one instance: `build_services` + `send_due` on `--backend`;
- two instances: two processes, each with its own services, running `send_due` at the same
  moment against one PostgreSQL database (whatever `--backend` says) and the same stand-in;
- then one more `send_due` in a warm process, after everything was sent (all skipped).

Each phase starts from no deliveries and a fresh stand-in. Times run from the moment every
child is ready (services built): **delivered** is when the stand-in accepted the last digest of
the first pass (every scorecard is in its channel; the product posts them all before any chart),
**wall** is when `send_due` has returned everywhere (charts in their threads included).
Duplicates and losses come from the stand-in's log: each channel must get exactly one top-level
chat.postMessage. Goals: 0 duplicates, 0 lost, delivered ≤ 1.2 × the posts-only floor (wall is
shown against the floor with the same calls), peak RSS ≤ 300 MB.
"""

import argparse
import logging
import multiprocessing
import os
import queue
import resource
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.standin import SlackStandin  # noqa: E402

AS_OF = datetime(2026, 11, 9, 9, 0, tzinfo=UTC)  # a Monday: every subscription is due (W46)
TZ = ZoneInfo("UTC")
OUT = ROOT / "bench" / "out"
PG_DATABASE = "kpibot_digest_bench"
TOKEN = "xoxb-bench"
SUBSCRIBER = "U0BENCH"
SEED = 20_261_109
GOAL_RATIO, GOAL_RSS_MB = 1.2, 300
PACE_SHARE = 0.9  # the floor's pace: under the workspace limit, room for retries and jitter
# A valid 1×1 PNG: the floor's chart, so its uploads cost the Slack calls and nothing else.
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


@dataclass(frozen=True)
class Limits:
    per_channel: float = 1.0
    workspace: float = 100.0
    random_429: float = 0.05
    retry_after: int = 1
    seed: int = SEED

    def standin(self) -> SlackStandin:
        return SlackStandin(
            post_limit_per_channel_per_second=self.per_channel,
            workspace_limit_per_second=self.workspace,
            random_429_fraction=self.random_429,
            seed=self.seed,
            retry_after=self.retry_after,
        ).start()


@dataclass
class Outcome:
    """What one child process reports."""

    name: str
    started: float  # time.time() when its timed work began
    finished: float
    counts: dict = field(default_factory=dict)
    rss_mb: float = 0.0
    warnings: list[str] = field(default_factory=list)


# --- the store -------------------------------------------------------------------------------


def channel_ids(count: int) -> list[str]:
    return [f"C{i:08d}" for i in range(1, count + 1)]


def store_url(backend: str, channels: int) -> str:
    """A new, empty store for this run."""
    if backend == "sqlite":
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / f"digest-bench-{channels}.db"
        for stale in (path, *OUT.glob(path.name + "-*")):
            stale.unlink(missing_ok=True)
        return f"sqlite:///{path}"
    # Imported here: it brings pandas, which the measured processes (children that
    # import this script) would otherwise load though the product does not.
    import store_gen  # bench/ is the script's directory

    store_gen.recreate_database(store_gen.DEFAULT_POSTGRES, PG_DATABASE)
    return store_gen.pg_url(store_gen.DEFAULT_POSTGRES, PG_DATABASE)


def fill_store(url: str, channels: list[str]) -> None:
    """Catalog, demo year and one Monday 09:00 subscription per channel, through our own code."""
    from kpi import catalog, digests
    from kpi.db import open_store, session_scope
    from kpi.demo import load_demo

    engine = open_store(url)
    with session_scope(engine) as session:
        catalog.load_builtin_if_empty(session, now=AS_OF)
    load_demo(engine, tz=TZ, as_of=AS_OF.date())
    with session_scope(engine) as session:
        for channel in channels:
            digests.subscribe(
                session,
                channel=channel,
                user=SUBSCRIBER,
                items=[],
                weekday=0,
                at=None,
                tz="UTC",
                default_tz="UTC",
                now=AS_OF,
            )
    engine.dispose()


def forget_deliveries(url: str) -> None:
    from sqlalchemy import text

    from kpi.db import make_engine

    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM delivery"))
    engine.dispose()


def delivery_states(url: str) -> Counter:
    from sqlalchemy import text

    from kpi.db import make_engine

    engine = make_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT state, count(*) FROM delivery GROUP BY state"))
        states = Counter(dict(rows.all()))
    engine.dispose()
    return states


# --- the children (spawned: no threads or sockets inherited from the stand-in's process) -----


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class WarningLog(logging.Handler):
    """The product's warnings (failed sends, failed charts), kept to be reported."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass(frozen=True)
class Child:
    """A process to start: `target(name, slack_url, ready, go, results, **options)`."""

    target: object
    name: str
    options: dict = field(default_factory=dict)


def run_instance(name, slack_url, ready, go, results, *, url, rerun) -> None:
    """One kpibot instance: its own services, `send_due` at AS_OF when told to go."""
    from bot.digests import send_due
    from bot.services import build_services
    from bot.settings import load_settings
    from kpi.db import open_store

    warnings = WarningLog()
    logging.getLogger("kpibot").addHandler(warnings)
    settings = load_settings(
        slack_bot_token=TOKEN, slack_api_url=slack_url, database_url=url, kpibot_timezone="UTC"
    )
    services = build_services(settings, open_store(url))  # as `kpibot digest run` builds them
    ready.put(name)
    go.wait()
    started = time.time()
    counts = send_due(services, as_of=AS_OF)
    outcome = Outcome(name, started, time.time(), dict(counts), peak_rss_mb(), warnings.messages)
    results.put(outcome)
    if rerun:
        started = time.time()
        counts = send_due(services, as_of=AS_OF)
        results.put(Outcome(f"{name}, again", started, time.time(), dict(counts), peak_rss_mb()))
    services.close()


class Pacer:
    """Calls spaced evenly at `rate` a second across threads: the most a client can send under
    a workspace limit without being refused (and paying a Retry-After) for going over it."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = 0.0
        self.lock = threading.Lock()

    def take(self, calls: int = 1) -> None:
        with self.lock:
            now = time.monotonic()
            slot = max(now, self.next)
            self.next = slot + calls * self.interval
        if slot > now:
            time.sleep(slot - now)


def run_floor(name, slack_url, ready, go, results, *, channels, threads, rate, with_chart):
    """The floor: the same posts (and, if asked, uploads) with no work around them, paced at
    the workspace limit; random 429s are retried by the product's retry handlers."""
    from slack_sdk.errors import SlackApiError

    from bot.services import make_slack_client
    from bot.settings import load_settings

    client = make_slack_client(load_settings(slack_bot_token=TOKEN, slack_api_url=slack_url))
    posts, upload_urls, completions = Pacer(rate), Pacer(rate), Pacer(rate)

    def deliver(channel: str) -> str:
        try:
            posts.take()
            ts = client.chat_postMessage(channel=channel, text="floor")["ts"]
            if with_chart:
                # files.getUploadURLExternal, then files.completeUploadExternal: each method has
                # a limit of its own, so each is paced on its own.
                upload_urls.take()
                completions.take()
                client.files_upload_v2(
                    channel=channel, content=TINY_PNG, filename="f.png", title="f", thread_ts=ts
                )
        except SlackApiError as error:  # retries exhausted: counted, shown with the floor
            return str(error.response.get("error"))
        return "sent"

    ready.put(name)
    go.wait()
    started = time.time()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        counts = Counter(pool.map(deliver, channels))
    results.put(Outcome(name, started, time.time(), dict(counts), peak_rss_mb()))


# --- one phase ---------------------------------------------------------------------------------


@dataclass
class Phase:
    label: str
    wall: float  # seconds from go until every child's first pass returned
    last_post: float  # seconds from go to the first pass's last top-level post accepted
    outcomes: list[Outcome]
    posts: Counter  # channel → top-level chat.postMessage calls accepted
    uploads: int  # files.completeUploadExternal calls accepted
    refused: Counter  # method → 429s answered
    other_posts: int  # accepted top-level posts to channels that did not subscribe (DMs)


def run_phase(label: str, limits: Limits, channels: list[str], children: list[Child]) -> Phase:
    """Start the children, let them go at once when all are ready, read the stand-in's log."""
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Queue(), context.Event(), context.Queue()
    slack = limits.standin()
    try:
        processes = [
            context.Process(
                target=child.target,
                args=(child.name, slack.url, ready, go, results),
                kwargs=child.options,
            )
            for child in children
        ]
        for process in processes:
            process.start()
        for _ in processes:
            ready.get(timeout=300)
        started = time.time()
        go.set()
        firsts = _collect(results, processes, len(processes))
        finished = time.time()
        later = _collect(results, processes, _reruns(children))
        for process in processes:
            process.join()
        return _read_log(label, slack, channels, started, finished, firsts + later)
    finally:
        slack.stop()


def _reruns(children: list[Child]) -> int:
    return sum(1 for child in children if child.options.get("rerun"))


def _collect(results, processes, count: int) -> list[Outcome]:
    """`count` outcomes; a child that dies instead of reporting stops the bench."""
    found = []
    while len(found) < count:
        try:
            found.append(results.get(timeout=1.0))
        except queue.Empty:
            dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a child process failed (exit codes {dead})") from None
    return found


def _read_log(label, slack, channels, started, finished, outcomes) -> Phase:
    wanted = set(channels)
    posts: Counter = Counter()
    refused: Counter = Counter()
    uploads = other = 0
    last_post = started
    for call in slack.calls:
        if call.status == 429:
            refused[call.method] += 1
        if not call.ok:
            continue
        if call.method == "files.completeUploadExternal":
            uploads += 1
        if call.method == "chat.postMessage" and not call.args.get("thread_ts"):
            if call.args.get("channel") in wanted:
                posts[call.args["channel"]] += 1
                if call.time <= finished:  # not a later pass's retry of a failed one
                    last_post = max(last_post, call.time)
            else:
                other += 1
    return Phase(
        label, finished - started, last_post - started, outcomes, posts, uploads, refused, other
    )


# --- printing ----------------------------------------------------------------------------------


def exactly_once(phase: Phase, channels: list[str]) -> tuple[int, int]:
    """(duplicates, lost): posts beyond the first per channel, channels without one."""
    duplicates = sum(n - 1 for n in phase.posts.values() if n > 1)
    lost = sum(1 for c in channels if phase.posts[c] == 0)
    return duplicates, lost


def print_floor(phase: Phase) -> None:
    refused = sum(phase.refused.values())
    print(
        f"digest floor · {phase.label}: {phase.wall:.2f} s for {sum(phase.posts.values())} "
        f"posts, {phase.uploads} uploads ({_counts(phase.outcomes[0].counts)}) · {refused} "
        f"answered 429 · peak RSS {phase.outcomes[0].rss_mb:.0f} MB",
        flush=True,
    )


def print_run(phase: Phase, channels: list[str], floors: dict[str, Phase], states) -> None:
    duplicates, lost = exactly_once(phase, channels)
    firsts = [o for o in phase.outcomes if not o.name.endswith("again")]
    rss = max(o.rss_mb for o in firsts)
    counts = " + ".join(f"{o.name} {_counts(o.counts)}" for o in firsts)
    posts_floor, same_calls_floor = floors["posts only"], floors["posts + chart uploads"]
    print(
        f"digest {phase.label}: every digest delivered in {phase.last_post:.2f} s · "
        f"{_against(phase.last_post, posts_floor)} the posts-only floor · wall with charts "
        f"{phase.wall:.2f} s · {_against(phase.wall, same_calls_floor)} the same-calls floor",
        flush=True,
    )
    once_ok = "ok" if duplicates == 0 and lost == 0 else "MISSED"
    print(
        f"digest {phase.label}: {duplicates} duplicates, {lost} lost of {len(channels)} "
        f"channels (goal 0 and 0: {once_ok}) · {phase.uploads} charts · {phase.other_posts} "
        f"other posts · 429s {dict(phase.refused)} · outcomes {counts} · deliveries "
        f"{dict(states)}",
        flush=True,
    )
    rss_ok = "ok" if rss <= GOAL_RSS_MB else f"MISSED by {rss - GOAL_RSS_MB:.0f} MB"
    per = ", ".join(f"{o.name} {o.rss_mb:.0f} MB" for o in firsts)
    print(
        f"digest {phase.label}: peak RSS {rss:.0f} MB ({per}) · goal ≤ {GOAL_RSS_MB} MB: {rss_ok}",
        flush=True,
    )
    warnings = [w for o in firsts for w in o.warnings]
    if warnings:
        print(
            f"digest {phase.label}: {len(warnings)} product warnings, e.g. {warnings[:3]}",
            flush=True,
        )
    for again in (o for o in phase.outcomes if o.name.endswith("again")):
        print(
            f"digest {phase.label}: {again.name}, everything already sent: "
            f"{again.finished - again.started:.2f} s, {_counts(again.counts)}",
            flush=True,
        )


def _against(seconds: float, floor: Phase) -> str:
    ratio = seconds / floor.wall
    status = "ok" if ratio <= GOAL_RATIO else f"MISSED by {ratio - GOAL_RATIO:.2f}x"
    return f"{ratio:.2f}x ({floor.wall:.2f} s; goal ≤ {GOAL_RATIO}x: {status})"


def _counts(counts: dict) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing"


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument(
        "--workspace-limit", type=float, default=100.0, help="calls per s per API method"
    )
    parser.add_argument("--random-429", type=float, default=0.05, help="share of calls refused")
    parser.add_argument("--floor-threads", type=int, default=32)
    args = parser.parse_args()
    limits = Limits(workspace=args.workspace_limit, random_429=args.random_429)
    channels = channel_ids(args.channels)
    print(
        f"digest bench · {len(channels)} channels · stand-in: {limits.per_channel:g} post/s per "
        f"channel, {limits.workspace:g} calls/s per method per workspace, "
        f"{limits.random_429:.0%} random "
        f"429 (Retry-After {limits.retry_after} s, seed {limits.seed}) · load average "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    floors = {}
    for label, with_chart in (("posts only", False), ("posts + chart uploads", True)):
        options = {
            "channels": channels,
            "threads": args.floor_threads,
            "rate": limits.workspace * PACE_SHARE,
            "with_chart": with_chart,
        }
        floors[label] = run_phase(label, limits, channels, [Child(run_floor, "floor", options)])
        print_floor(floors[label])
    # Two instances share PostgreSQL whatever --backend says (SQLite is one machine's file).
    runs = [(args.backend, 1), ("postgresql", 2)]
    urls: dict[str, str] = {}
    for backend, instances in runs:
        if backend not in urls:
            started = time.perf_counter()
            urls[backend] = store_url(backend, len(channels))
            fill_store(urls[backend], channels)
            print(
                f"digest store {backend}: catalog, demo year and {len(channels)} subscriptions "
                f"in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        url = urls[backend]
        forget_deliveries(url)
        children = [
            Child(
                run_instance,
                f"instance {i + 1}",
                {"url": url, "rerun": instances == 1},
            )
            for i in range(instances)
        ]
        label = f"{instances} instance{'s' if instances > 1 else ''} on {backend}"
        phase = run_phase(label, limits, channels, children)
        print_run(phase, channels, floors, delivery_states(url))


if __name__ == "__main__":
    main()
