"""Two real `kpibot serve` processes on one PostgreSQL: every due digest goes out exactly once."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from bot.standin import SlackStandin
from kpi import catalog, digests
from kpi.db import make_engine, session_scope
from kpi.importer import load_records
from kpi.models import AlertEvent, Delivery

CHANNELS = [f"C0E2E{i}" for i in range(6)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port: int, deadline: float) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        try:
            with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                if json.loads(reply.read())["ok"]:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        # Polling a starting process: nothing to wait on but the clock, bounded by the deadline.
        time.sleep(0.2)


@pytest.fixture
def store(postgres_url):
    engine = make_engine(postgres_url)
    from tests.conftest import _truncate_all

    _truncate_all(engine)
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        catalog.load_builtin_if_empty(session, now=now)
        for channel in CHANNELS:
            # Due at once: the latest Monday 00:00 UTC is always in the past.
            digests.subscribe(
                session,
                channel=channel,
                user="U0SUB",
                items=["IT"],
                weekday=0,
                at=clock_time(0, 0),
                tz="UTC",
                default_tz="UTC",
                now=now,
            )
    # DSO far off target in the latest complete month: (900,000 / 100,000) × days ≈ 279 days.
    last_month_end = now.date().replace(day=1) - timedelta(days=1)
    load_records(
        engine,
        [
            ("ar_balance", last_month_end, 900_000, {"branch": "Berlin"}),
            ("credit_sales", last_month_end, 100_000, {"branch": "Berlin"}),
        ],
        tz=ZoneInfo("UTC"),
    )
    yield postgres_url, engine
    engine.dispose()


def start_serve(database_url: str, slack_url: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SLACK_API_URL": slack_url,
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": "secret",
        "SLACK_APP_TOKEN": "",
        "PORT": str(port),
        "KPIBOT_TICK_SECONDS": "1",
        "KPIBOT_ALERT_MINUTES": "0.02",
        "KPIBOT_ALERT_CHANNEL": "C0ALERTS",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_two_instances_deliver_every_due_digest_and_alert_exactly_once(store):
    database_url, engine = store
    with SlackStandin() as slack:
        ports = [free_port(), free_port()]
        processes = [start_serve(database_url, slack.url, port) for port in ports]
        try:
            for port in ports:
                healthy(port, time.monotonic() + 60)
            expected = len(CHANNELS) + 1  # the digests and one DSO alert
            try:
                slack.wait_for("chat.postMessage", count=expected, timeout=90)
            except AssertionError:
                for process in processes:
                    process.terminate()
                logs = [p.communicate(timeout=30)[1].decode()[-3000:] for p in processes]
                raise AssertionError(f"not all sent; the instances said: {logs}") from None
            # Several more ticks and alert passes of both instances must not send anything twice.
            try:
                slack.wait_for("chat.postMessage", count=expected + 1, timeout=5)
            except AssertionError:
                pass  # nothing more within 5 s
            else:
                for process in processes:
                    process.terminate()
                logs = [p.communicate(timeout=30)[1].decode()[-3000:] for p in processes]
                with session_scope(engine) as session:
                    events = [
                        (e.alert_id, e.incident_id, e.kind, e.from_state, e.to_state)
                        for e in session.exec(select(AlertEvent))
                    ]
                    sent = [(d.key, d.owner, d.state) for d in session.exec(select(Delivery))]
                pytest.fail(
                    f"more than {expected} posts: {_posts(slack)}; alert events {events}; "
                    f"deliveries {sent}; the instances: {logs}"
                )
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            codes = [p.wait(timeout=30) for p in processes]
        posted = [c.args["channel"] for c in slack.calls_to("chat.postMessage", ok=True)]
        assert sorted(posted) == sorted([*CHANNELS, "C0ALERTS"])
        [alert] = slack.messages("C0ALERTS")[:1]
        assert "Days Sales Outstanding" in alert["text"]
    assert codes == [0, 0], [p.stderr.read().decode()[-2000:] for p in processes]
    with session_scope(engine) as session:
        rows = list(session.exec(select(Delivery)))
    assert len(rows) == len(CHANNELS) + 1 and {r.state for r in rows} == {"sent"}


def _posts(slack) -> list[tuple]:
    return [
        (c.args.get("channel"), c.args.get("thread_ts"), c.ok, str(c.args.get("text"))[:60])
        for c in slack.calls_to("chat.postMessage")
    ]
