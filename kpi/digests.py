"""Weekly digests: which subscriptions are due, and the subscriptions themselves.

A subscription's digest is due at the latest (weekday, HH:MM) in its own time zone that is not
after `as_of`; its claim key is that moment's ISO week, so each (subscription, week) goes out
once however often the scheduler ticks. Only the latest moment counts: a bot that was down for
three Mondays sends one late digest, not three.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session, select

from kpi import store
from kpi.models import Subscription

LATE_AFTER = timedelta(hours=1)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class Due:
    subscription_id: int
    channel: str
    scheduled: datetime  # aware, in the subscription's zone
    week: str  # ISO week of `scheduled` there, e.g. 2026-W46
    late: bool

    @property
    def key(self) -> str:
        return f"digest:{self.subscription_id}:{self.week}"


def last_scheduled(weekday: int, at: time, tz: ZoneInfo, as_of: datetime) -> datetime:
    """The latest moment on `weekday` at `at` (local wall time) that is not after `as_of`."""
    local = as_of.astimezone(tz)
    day = local.date() - timedelta(days=(local.weekday() - weekday) % 7)
    moment = datetime.combine(day, at, tzinfo=tz)
    if moment > local:
        moment = datetime.combine(day - timedelta(days=7), at, tzinfo=tz)
    return moment


def iso_week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def due(
    subscriptions: Iterable[Subscription], as_of: datetime, *, since_subscribed: bool = False
) -> list[Due]:
    """The digests due at `as_of`. With `since_subscribed` (the scheduler's passes), none
    scheduled in an ISO week before the one its subscription was last set in: subscribing on a
    Friday morning to Fridays at 16:30 waits for 16:30 instead of sending last Friday's digest
    at once (and subscribing on a Monday at 10:00 to Mondays at 09:00 sends this week's). A
    digest run by hand sends what is due whenever the subscription was made."""
    found = []
    for sub in subscriptions:
        if not sub.active or sub.paused_reason:
            continue
        tz = ZoneInfo(sub.tz)
        moment = last_scheduled(sub.weekday, parse_at(sub.at), tz, as_of)
        if since_subscribed and _week(moment) < _week(sub.updated_at.astimezone(tz)):
            continue
        # Late means the bot missed its time; a subscription set after it is simply new.
        late = as_of - moment > LATE_AFTER and sub.updated_at <= moment
        found.append(Due(sub.id, sub.channel, moment, iso_week(moment), late))
    return found


def _week(moment: datetime) -> tuple[int, int]:
    return moment.isocalendar()[:2]


def parse_at(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def describe(sub: Subscription) -> dict[str, str]:
    """The parts people read back: what, when, where."""
    return {
        "items": ", ".join(sub.items) if sub.items else "every KPI this channel may see",
        "when": f"{WEEKDAYS[sub.weekday]}s at {sub.at}",
        "tz": sub.tz,
    }


# -- the store --------------------------------------------------------------------------------


def active_subscriptions(session: Session) -> list[Subscription]:
    query = select(Subscription).where(Subscription.active == True)  # noqa: E712
    return list(session.exec(query.order_by(Subscription.id)))


def get_subscription(session: Session, channel: str) -> Subscription | None:
    return session.exec(select(Subscription).where(Subscription.channel == channel)).first()


@dataclass(frozen=True)
class Change:
    subscription: Subscription
    created: bool
    changed: dict[str, tuple[str, str]]  # field → (before, after), as people read them
    resumed: str = ""  # why it had been paused, when subscribing again resumed it


def subscribe(
    session: Session,
    *,
    channel: str,
    user: str,
    items: Sequence[str],
    weekday: int | None,
    at: time | None,
    tz: str | None,
    default_tz: str,
    now: datetime,
    every: bool = False,
) -> Change:
    """Create the channel's subscription, or update only what was given (`every`: back to
    every KPI the channel may see); audited either way."""
    sub = get_subscription(session, channel)
    before = describe(sub) if sub and sub.active else None
    resumed = sub.paused_reason if sub and sub.active else ""
    if sub is None:
        sub = Subscription(
            channel=channel, created_by=user, created_at=now, updated_at=now, tz=default_tz
        )
        session.add(sub)
    if before is None:  # new, or coming back after /kpi unsubscribe: start from the defaults
        sub.items, sub.weekday, sub.at, sub.tz = [], 0, "09:00", default_tz
    if items or every or before is None:
        sub.items = list(items)
    if weekday is not None:
        sub.weekday = weekday
    if at is not None:
        sub.at = at.strftime("%H:%M")
    if tz is not None:
        sub.tz = tz
    sub.active, sub.paused_reason, sub.paused_at = True, "", None
    sub.created_by = sub.created_by or user
    sub.updated_at = now
    session.flush()
    after = describe(sub)
    changed = {k: (before[k], after[k]) for k in after if before and before[k] != after[k]}
    store.audit(
        session=session,
        actor=user,
        action="subscription.set",
        subject=channel,
        before=before,
        after=after,
        at=now,
    )
    store.bump_subscriptions(session=session)
    return Change(sub, before is None, changed, resumed)


def unsubscribe(session: Session, *, channel: str, user: str, now: datetime) -> bool:
    sub = get_subscription(session, channel)
    if sub is None or not sub.active:
        return False
    before = describe(sub)
    sub.active = False
    sub.updated_at = now
    store.audit(
        session=session,
        actor=user,
        action="subscription.remove",
        subject=channel,
        before=before,
        after=None,
        at=now,
    )
    store.bump_subscriptions(session=session)
    return True


def pause(session: Session, *, subscription_id: int, reason: str, now: datetime) -> bool:
    """Pause after a Slack error no retry can fix; True only the first time (tell them once)."""
    sub = session.get(Subscription, subscription_id)
    if sub is None or sub.paused_reason:
        return False
    sub.paused_reason, sub.paused_at, sub.updated_at = reason, now, now
    store.audit(
        session=session,
        actor="kpibot",
        action="subscription.pause",
        subject=sub.channel,
        before=None,
        after={"reason": reason},
        at=now,
    )
    store.bump_subscriptions(session=session)
    return True
