"""Digests sent through the stand-in: exactly once per (subscription, week), whatever happens."""

import json
import threading
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from bot.blockkit import validate
from bot.digests import send_due, send_one
from bot.services import build_services
from bot.settings import load_settings
from bot.standin import SlackStandin
from kpi import claims, digests
from kpi.db import session_scope
from kpi.importer import load_records
from kpi.models import AuditLog, Delivery, Subscription

MONDAY = datetime(2026, 11, 9, 9, 0, tzinfo=UTC)  # week 46; the digest covers week 45
RECORDS = [
    ("complaints", date(2026, 11, 3), 4, {"branch": "Berlin"}),
    ("complaints", date(2026, 11, 4), 3, {"branch": "Madrid"}),  # week 45: 7 → at risk (5 / 8)
    ("complaints", date(2026, 10, 28), 2, {"branch": "Berlin"}),  # week 44: 2 → on target
    # Week 43: the data starts before week 44, so week 44 is a whole week to compare with.
    ("complaints", date(2026, 10, 21), 1, {"branch": "Berlin"}),
    ("satisfaction_score", date(2026, 8, 10), 4.2, {"branch": "Berlin"}),
]


@pytest.fixture
def slack():
    with SlackStandin() as standin:
        yield standin


@pytest.fixture
def services(catalog_engine, database_url, slack):
    load_records(catalog_engine, RECORDS, tz=ZoneInfo("UTC"))
    settings = load_settings(slack_bot_token="xoxb-test", slack_api_url=slack.url,
                             database_url=database_url, kpibot_timezone="UTC")  # fmt: skip
    built = build_services(settings, catalog_engine)
    built.clock = lambda: MONDAY
    yield built
    built.executor.shutdown(wait=True)


def subscribe(services, channel, *, user="U0SUB", items=(), weekday=0, at=time(9), tz="UTC"):
    with session_scope(services.engine) as session:
        return digests.subscribe(session, channel=channel, user=user, items=list(items),
                                 weekday=weekday, at=at, tz=tz, default_tz="UTC",
                                 now=MONDAY).subscription.id  # fmt: skip


def top_level(slack, channel):
    """The channel's own messages; the chart is a reply in the digest's thread."""
    return [m for m in slack.messages(channel) if m.get("thread_ts") in (None, m.get("ts"))]


def deliveries(services):
    with session_scope(services.engine) as session:
        return list(session.exec(select(Delivery)))


def test_a_due_digest_is_sent_once_and_recorded_with_its_ts(services, slack):
    subscribe(services, "C0FIN")
    assert send_due(services, as_of=MONDAY)["sent"] == 1
    assert send_due(services, as_of=MONDAY)["skipped"] == 1
    [message] = top_level(slack, "C0FIN")
    validate(message["blocks"], text=message["text"])
    [row] = deliveries(services)
    assert (row.key, row.state, row.message_ts) == ("digest:1:2026-W46", "sent", message["ts"])
    # The chart goes into the digest's thread.
    [upload] = slack.calls_to("files.completeUploadExternal")
    assert upload.args["thread_ts"] == message["ts"] and upload.args["channel_id"] == "C0FIN"
    # Named after the week it shows (sent in W46, the last complete week is W45).
    [file] = (
        json.loads(upload.args["files"])
        if isinstance(upload.args["files"], str)
        else upload.args["files"]
    )
    assert file["title"] == "KPIs · 2026-W45"


def test_every_digest_gets_its_chart_in_its_own_thread(services, slack):
    channels = [f"C0CHART{i}" for i in range(5)]
    for channel in channels:
        subscribe(services, channel)
    assert send_due(services, as_of=MONDAY) == {"sent": 5}  # returns once charts are done too
    uploads = slack.calls_to("files.completeUploadExternal")
    threads = {(u.args["channel_id"], u.args["thread_ts"]) for u in uploads}
    assert threads == {(c, top_level(slack, c)[0]["ts"]) for c in channels}


def test_a_failed_chart_leaves_its_digest_sent(services, slack):
    subscribe(services, "C0NOCHART")
    slack.fail_next("files.getUploadURLExternal", error="internal_error")
    assert send_due(services, as_of=MONDAY) == {"sent": 1}
    assert len(top_level(slack, "C0NOCHART")) == 1
    assert slack.calls_to("files.completeUploadExternal") == []
    [row] = deliveries(services)
    assert row.state == "sent"


def test_the_scorecard_shows_the_last_complete_week_with_status_and_change(services, slack):
    subscribe(services, "C0FIN", items=["back_office_complaints"])
    send_due(services, as_of=MONDAY)
    text = str(top_level(slack, "C0FIN")[0])
    assert "week 45 2026 (2 Nov – 8 Nov)" in text
    assert "*7*" in text and "▲ +5" in text  # 7 complaints against 2 the week before
    assert "1 at risk" in text and "Changed status" in text  # on target → at risk


def test_two_workers_racing_for_the_same_claim_send_once(services, slack):
    sub_id = subscribe(services, "C0RACE")
    with session_scope(services.engine) as session:
        sub = session.get(Subscription, sub_id)
    [due] = digests.due([sub], MONDAY)
    barrier = threading.Barrier(2)
    outcomes = []

    def worker():
        barrier.wait()
        outcomes.append(send_one(services, due, sub)[0])

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["sent", "skipped"]
    assert len(slack.calls_to("chat.postMessage")) == 1


def test_a_5xx_then_success_gives_one_message(services, slack):
    subscribe(services, "C0FLAKY")
    slack.fail_http("chat.postMessage", status=503, times=1)
    assert send_due(services, as_of=MONDAY)["sent"] == 1
    assert len(slack.calls_to("chat.postMessage", ok=True)) == 1
    assert len(top_level(slack, "C0FLAKY")) == 1


def test_a_claim_left_by_a_killed_process_is_sent_once_after_its_lease(services, slack):
    subscribe(services, "C0CRASH")
    stale = MONDAY - claims.LEASE - claims.LEASE
    with session_scope(services.engine) as session:
        claims.claim(session, key="digest:1:2026-W46", kind="digest", channel="C0CRASH",
                     owner="dead:1", now=stale)  # fmt: skip
    assert send_due(services, as_of=MONDAY)["sent"] == 1
    assert send_due(services, as_of=MONDAY)["skipped"] == 1
    assert len(top_level(slack, "C0CRASH")) == 1
    [row] = deliveries(services)
    assert row.attempts == 2 and row.owner == services.instance


def test_a_fresh_claim_of_another_process_is_left_alone(services, slack):
    subscribe(services, "C0BUSY")
    with session_scope(services.engine) as session:
        claims.claim(session, key="digest:1:2026-W46", kind="digest", channel="C0BUSY",
                     owner="other:2", now=MONDAY)  # fmt: skip
    assert send_due(services, as_of=MONDAY)["skipped"] == 1
    assert not slack.calls_to("chat.postMessage")


def test_a_restart_after_missed_mondays_sends_one_late_digest(services, slack):
    subscribe(services, "C0DOWN")
    three_weeks_later = datetime(2026, 11, 25, 12, tzinfo=UTC)
    assert send_due(services, as_of=three_weeks_later) == {"late": 1}
    [row] = deliveries(services)
    assert row.key == "digest:1:2026-W48" and row.late
    assert "late" in str(top_level(slack, "C0DOWN")[0])


def test_a_storm_of_429s_delivers_everything_once(services, slack):
    channels = [f"C0STORM{i}" for i in range(4)]
    for channel in channels:
        subscribe(services, channel)
    slack.rate_limit("chat.postMessage", times=6, retry_after=0)
    counts = send_due(services, as_of=MONDAY)
    assert counts == {"sent": 4}
    for channel in channels:
        assert len(top_level(slack, channel)) == 1


def test_an_archived_channel_pauses_the_subscription_and_tells_its_owner_once(services, slack):
    subscribe(services, "C0OLD", user="U0OWNER")
    slack.set_channel("C0OLD", is_archived=True)
    assert send_due(services, as_of=MONDAY) == {"paused": 1}
    next_week = datetime(2026, 11, 16, 9, tzinfo=UTC)
    assert send_due(services, as_of=next_week) == {}
    dms = [c for c in slack.calls_to("chat.postMessage", ok=True) if c.args["channel"] == "U0OWNER"]
    assert len(dms) == 1 and "is_archived" in str(dms[0].args)
    with session_scope(services.engine) as session:
        sub = session.exec(select(Subscription)).one()
        actions = [a.action for a in session.exec(select(AuditLog))]
    assert sub.paused_reason == "is_archived" and "subscription.pause" in actions


def test_subscribing_again_resumes_a_paused_digest_and_its_week_still_goes_out(services, slack):
    subscribe(services, "C0GONE", user="U0OWNER")
    slack.fail_next("chat.postMessage", error="channel_not_found")
    assert send_due(services, as_of=MONDAY) == {"paused": 1}
    with session_scope(services.engine) as session:
        change = digests.subscribe(session, channel="C0GONE", user="U0OWNER", items=[],
                                   weekday=None, at=None, tz=None, default_tz="UTC",
                                   now=MONDAY + timedelta(minutes=5))  # fmt: skip
    assert change.resumed == "channel_not_found" and not change.created
    later = MONDAY + timedelta(minutes=10)
    assert send_due(services, as_of=later) == {"sent": 1}  # W46's, kept for the resumption
    assert send_due(services, as_of=later) == {"skipped": 1}
    assert len(top_level(slack, "C0GONE")) == 1


def test_a_dead_token_pauses_no_channel_and_the_next_good_pass_sends_everything(services, slack):
    for channel in ("C0TOK1", "C0TOK2", "C0TOK3"):
        subscribe(services, channel)
    slack.fail_next("chat.postMessage", error="invalid_auth", times=3)
    assert send_due(services, as_of=MONDAY) == {"failed": 3}
    with session_scope(services.engine) as session:
        assert not [s for s in session.exec(select(Subscription)) if s.paused_reason]
    assert send_due(services, as_of=MONDAY) == {"sent": 3}


def test_a_digest_includes_only_kpis_the_channel_may_see(services, slack):
    subscribe(services, "C0PUBLIC")
    subscribe(services, "C0HRLEAD")
    send_due(services, as_of=MONDAY)
    assert "Employee Satisfaction" not in str(top_level(slack, "C0PUBLIC"))
    assert "Employee Satisfaction" in str(top_level(slack, "C0HRLEAD"))


def test_subscribing_again_updates_and_says_what_changed(services):
    from kpi.service import Viewer

    viewer = Viewer(user="U1", channel="C0X")
    first = services.kpis.ask("subscribe", viewer=viewer, as_of=MONDAY)
    assert first.values["created"] and first.values["when"] == "Mondays at 09:00"
    again = services.kpis.ask("subscribe finance weekly on friday at 16:30 tz Europe/Berlin",
                              viewer=viewer, as_of=MONDAY)  # fmt: skip
    changes = {c["field"]: (c["before"], c["after"]) for c in again.values["changes"]}
    assert changes["when"] == ("Mondays at 09:00", "Fridays at 16:30")
    assert changes["tz"] == ("UTC", "Europe/Berlin")
    assert changes["items"][1] == "Finance"
    gone = services.kpis.ask("unsubscribe", viewer=viewer, as_of=MONDAY)
    assert gone.values["removed"] is True
    with session_scope(services.engine) as session:
        actions = [a.action for a in session.exec(select(AuditLog).order_by(AuditLog.id))]
    assert actions[-3:] == ["subscription.set", "subscription.set", "subscription.remove"]


def test_more_than_fifty_kpis_end_with_and_n_more(services):
    from bot.answers import render_reply
    from kpi.scorecard import MAX_LINES, scorecard_view

    line = {"key": "k", "name": "KPI <!channel>" * 5, "area": "A", "value": "1", "target": "t",
            "change": "", "period": "p", "was": "on target", "emoji": ":x:",
            "status_word": "on target", "status": "on_target"}  # fmt: skip

    class FakeCard:  # the view needs only these attributes
        def __init__(self, area):
            self.status, self.changed, self.line = "on_target", True, line | {"area": area}
            self.kpi = type("K", (), {"kpi": type("R", (), {"area": area})})

    cards = [FakeCard(f"Area {i % 13}") for i in range(63)]
    view = scorecard_view(cards, week=__import__("kpi.periods").periods.period_of(
        "week", date(2026, 11, 2)), late=True)  # fmt: skip
    assert view["more"] == 63 - MAX_LINES
    from kpi.service import Reply

    message = render_reply(Reply("digest.json.j2", {"d": view}))
    validate(message["blocks"], text=message["text"])
    assert "… and 13 more" in str(message)
