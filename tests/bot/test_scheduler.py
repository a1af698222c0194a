"""The scheduler only triggers: one cron job per distinct (weekday, time, zone), rebuilt when
subscriptions change anywhere."""

from datetime import UTC, datetime, time

import pytest

from bot.scheduler import Schedule
from bot.services import build_services
from bot.settings import load_settings
from bot.standin import SlackStandin
from kpi import digests
from kpi.db import session_scope

NOW = datetime(2026, 11, 4, 12, 0, tzinfo=UTC)  # a Wednesday


@pytest.fixture
def slack():
    with SlackStandin() as standin:
        yield standin


@pytest.fixture
def schedule(catalog_engine, database_url, slack):
    settings = load_settings(slack_bot_token="xoxb-test", slack_api_url=slack.url,
                             database_url=database_url, kpibot_timezone="UTC")  # fmt: skip
    services = build_services(settings, catalog_engine)
    yield Schedule(services, tick_seconds=3600)  # never started: jobs are only inspected
    services.executor.shutdown(wait=True)


def subscribe(schedule, channel, *, weekday=0, at=time(9), tz="UTC"):
    with session_scope(schedule.services.engine) as session:
        digests.subscribe(session, channel=channel, user="U0SUB", items=[], weekday=weekday,
                          at=at, tz=tz, default_tz="UTC", now=NOW)  # fmt: skip


def digest_jobs(schedule) -> dict[str, datetime]:
    """Job id → its next fire after NOW."""
    return {
        job.id: job.trigger.get_next_fire_time(None, NOW)
        for job in schedule.scheduler.get_jobs()
        if job.id.startswith("digest-")
    }


def test_channels_sharing_a_time_share_one_job(schedule):
    for channel in ("C0A", "C0B", "C0C"):
        subscribe(schedule, channel)
    subscribe(schedule, "C0TOKYO", weekday=0, at=time(9), tz="Asia/Tokyo")
    schedule.rebuild_if_changed()
    jobs = digest_jobs(schedule)
    assert jobs == {
        "digest-0-0900-UTC": datetime(2026, 11, 9, 9, 0, tzinfo=UTC),
        # Monday 09:00 in Tokyo is Monday 00:00 UTC
        "digest-0-0900-Asia/Tokyo": datetime(2026, 11, 9, 0, 0, tzinfo=UTC),
    }
    assert all(jobs[key].utcoffset() is not None for key in jobs)


def test_jobs_follow_subscription_changes_and_only_then(schedule):
    subscribe(schedule, "C0A")
    schedule.rebuild_if_changed()
    version = schedule.version
    schedule.rebuild_if_changed()  # nothing changed: the same version, the same jobs
    assert schedule.version == version and list(digest_jobs(schedule)) == ["digest-0-0900-UTC"]

    subscribe(schedule, "C0A", weekday=4, at=time(16, 30))  # moved to Friday 16:30
    schedule.rebuild_if_changed()
    assert digest_jobs(schedule) == {"digest-4-1630-UTC": datetime(2026, 11, 6, 16, 30, tzinfo=UTC)}

    with session_scope(schedule.services.engine) as session:
        digests.unsubscribe(session, channel="C0A", user="U0SUB", now=NOW)
    schedule.rebuild_if_changed()
    assert digest_jobs(schedule) == {}


def test_a_pass_after_subscribing_waits_for_this_weeks_time(schedule, slack):
    """Subscribed on Wednesday 4 Nov (W45) to Mondays at 09:00: last Monday's digest (2 Nov,
    W45) is this week's, past its time, so it goes; subscribed to Fridays at 16:30, nothing goes
    before Friday 6 Nov 16:30 (not Friday 30 Oct's, from the week before)."""
    subscribe(schedule, "C0MONDAY")
    subscribe(schedule, "C0FRIDAY", weekday=4, at=time(16, 30))
    schedule.services.clock = lambda: NOW
    schedule.send_due()
    assert [c.args["channel"] for c in slack.calls_to("chat.postMessage")] == ["C0MONDAY"]
    schedule.services.clock = lambda: datetime(2026, 11, 6, 16, 31, tzinfo=UTC)
    schedule.send_due()
    assert [c.args["channel"] for c in slack.calls_to("chat.postMessage")][1:] == ["C0FRIDAY"]
