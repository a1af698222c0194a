"""When a digest is due, and its claim key — pure functions, table-driven."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from kpi.digests import due, iso_week, last_scheduled
from kpi.models import Subscription

BERLIN = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("weekday", "at", "tz", "as_of", "expected"),
    [
        # Monday 09:00 UTC, asked on Monday 9 Nov 2026 at 09:00 sharp and one minute before.
        (0, time(9), UTC, datetime(2026, 11, 9, 9, 0, tzinfo=UTC), datetime(2026, 11, 9, 9)),
        (0, time(9), UTC, datetime(2026, 11, 9, 8, 59, tzinfo=UTC), datetime(2026, 11, 2, 9)),
        # Wednesday: the Monday of the same week.
        (0, time(9), UTC, datetime(2026, 11, 11, 12, tzinfo=UTC), datetime(2026, 11, 9, 9)),
        # Friday 17:00.
        (4, time(17), UTC, datetime(2026, 11, 11, 12, tzinfo=UTC), datetime(2026, 11, 6, 17)),
    ],
)
def test_last_scheduled_in_utc(weekday, at, tz, as_of, expected):
    assert last_scheduled(weekday, at, tz, as_of) == expected.replace(tzinfo=tz)


def test_the_dst_week_in_berlin_keeps_local_wall_time():
    # Summer time ends on Sunday 25 Oct 2026: Monday 09:00 is 07:00 UTC before, 08:00 UTC after.
    before = last_scheduled(0, time(9), BERLIN, datetime(2026, 10, 19, 7, 0, tzinfo=UTC))
    assert before.astimezone(UTC) == datetime(2026, 10, 19, 7, 0, tzinfo=UTC)
    after = last_scheduled(0, time(9), BERLIN, datetime(2026, 10, 26, 8, 0, tzinfo=UTC))
    assert after.astimezone(UTC) == datetime(2026, 10, 26, 8, 0, tzinfo=UTC)
    one_hour_early = last_scheduled(0, time(9), BERLIN, datetime(2026, 10, 26, 7, 59, tzinfo=UTC))
    assert one_hour_early.date().isoformat() == "2026-10-19"


def test_the_spring_dst_week_in_new_york():
    # Summer time starts on Sunday 8 Mar 2026: Monday 09:00 EDT is 13:00 UTC.
    moment = last_scheduled(0, time(9), NEW_YORK, datetime(2026, 3, 9, 13, 0, tzinfo=UTC))
    assert moment.astimezone(UTC) == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)


def test_tokyo_monday_morning_is_sunday_in_utc_and_keys_on_tokyo_week():
    # Monday 16 Nov 2026 08:30 in Tokyo is Sunday 15 Nov 23:30 UTC.
    sub = Subscription(id=1, channel="C1", weekday=0, at="08:30", tz="Asia/Tokyo",
                       created_at=datetime.now(UTC), updated_at=datetime.now(UTC))  # fmt: skip
    [early] = due([sub], datetime(2026, 11, 15, 23, 29, tzinfo=UTC))
    [on_time] = due([sub], datetime(2026, 11, 15, 23, 30, tzinfo=UTC))
    assert early.week == "2026-W46" and on_time.week == "2026-W47"
    assert on_time.scheduled.astimezone(UTC) == datetime(2026, 11, 15, 23, 30, tzinfo=UTC)
    assert not on_time.late and on_time.key == "digest:1:2026-W47"


def test_after_missed_mondays_only_the_latest_week_is_due_and_it_is_late():
    made = datetime(2026, 11, 1, tzinfo=UTC)
    sub = Subscription(id=7, channel="C1", weekday=0, at="09:00", tz="UTC",
                       created_at=made, updated_at=made)  # fmt: skip
    found = due([sub], datetime(2026, 11, 25, 10, tzinfo=UTC))  # three Mondays after 2 Nov
    assert [(d.week, d.late) for d in found] == [("2026-W48", True)]


def test_the_first_digest_of_a_subscription_set_after_its_time_is_not_late():
    # Set on Wednesday 25 Nov to Mondays at 09:00: this week's goes out, but nobody missed it.
    made = datetime(2026, 11, 25, 10, tzinfo=UTC)
    sub = Subscription(id=8, channel="C1", weekday=0, at="09:00", tz="UTC",
                       created_at=made, updated_at=made)  # fmt: skip
    [first] = due([sub], made + timedelta(minutes=1))
    assert first.week == "2026-W48" and not first.late


def test_the_scheduler_sends_nothing_from_before_the_week_of_subscribing():
    # Friday 27 Nov 2026 (W48), 02:57 UTC: subscribed to Fridays at 16:30 in Berlin.
    made = datetime(2026, 11, 27, 2, 57, tzinfo=UTC)
    sub = Subscription(id=3, channel="C1", weekday=4, at="16:30", tz="Europe/Berlin",
                       created_at=made, updated_at=made)  # fmt: skip
    # By hand, Friday 20 Nov's digest (W47) is due; the scheduler waits for this Friday's.
    assert [d.week for d in due([sub], made)] == ["2026-W47"]
    assert due([sub], made, since_subscribed=True) == []
    at_half_past_four = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)
    assert [d.week for d in due([sub], at_half_past_four, since_subscribed=True)] == ["2026-W48"]
    # Subscribed on Monday 23 Nov at 10:00 to Mondays at 09:00: this week's is past its time.
    monday = datetime(2026, 11, 23, 10, tzinfo=UTC)
    sub = Subscription(id=4, channel="C2", weekday=0, at="09:00", tz="UTC", created_at=monday,
                       updated_at=monday)  # fmt: skip
    [this_week] = due([sub], monday, since_subscribed=True)
    assert this_week.week == "2026-W48" and not this_week.late


def test_paused_and_inactive_subscriptions_are_not_due():
    now = datetime(2026, 11, 9, 10, tzinfo=UTC)
    paused = Subscription(id=1, channel="C1", paused_reason="is_archived", created_at=now,
                          updated_at=now)  # fmt: skip
    gone = Subscription(id=2, channel="C2", active=False, created_at=now, updated_at=now)
    assert due([paused, gone], now) == []


def test_iso_week_at_the_year_end():
    assert iso_week(datetime(2026, 12, 31, tzinfo=UTC)) == "2026-W53"
    assert iso_week(datetime(2027, 1, 4, tzinfo=UTC)) == "2027-W01"
