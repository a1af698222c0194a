"""Sending every digest that is due: claim, build, post, record — once per (subscription, week).

`kpibot digest run` and the scheduler's ticks both call `send_due`; correctness never depends on
how often or how exactly the scheduler fires, only on the claims in the database.
"""

import json
import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from slack_sdk.errors import SlackApiError, SlackClientError

from bot.answers import render_reply, renderer
from bot.charts import Spark, sparkline_grid_png
from bot.notify import TOKEN_ERRORS, PermanentFailure, error_code
from bot.services import Services
from kpi import claims, digests
from kpi.db import session_scope
from kpi.models import Subscription
from kpi.service import Viewer

log = logging.getLogger("kpibot")
# Senders mostly wait (on Slack, on a Retry-After): many of them keep one 429 from holding up
# the rest.
SENDERS = 32
_DRAWING = threading.Lock()
TOKEN_FAILED = "token failed"  # send_one's outcome when Slack will take nothing from this token


@dataclass(frozen=True)
class _Chart:
    """A sent digest's chart, still to be attached in its thread."""

    due: digests.Due
    ts: str
    sparks: list
    week: str  # the ISO week the digest covers


def send_due(services: Services, *, as_of: datetime, since_subscribed: bool = False) -> Counter:
    """Send what is due at `as_of` (`since_subscribed`: see kpi.digests.due); returns counts of
    sent, late, failed, paused, skipped.

    Charts go to a pool of their own as each digest is posted: Slack limits each API method on
    its own, so uploads (files.getUploadURLExternal, files.completeUploadExternal) never take a
    scorecard's turn at chat.postMessage, and no digest waits behind another's chart."""
    with session_scope(services.engine) as session:
        subscriptions = {s.id: s for s in digests.active_subscriptions(session)}
    due = digests.due(subscriptions.values(), as_of, since_subscribed=since_subscribed)
    dead_token: list[str] = []  # Slack's answer once no channel will take a digest
    with (
        ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="kpibot-chart") as charts,
        ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="kpibot-digest") as posts,
    ):

        def send(d: digests.Due) -> str:
            if dead_token:  # left for the next pass, not tried a thousand times
                return "failed"
            outcome, chart = send_one(services, d, subscriptions[d.subscription_id])
            if outcome == TOKEN_FAILED:
                dead_token.append(outcome)
                return "failed"
            if chart is not None:
                charts.submit(_attach_chart, services, chart)
            return outcome

        outcomes = Counter(posts.map(send, due))
    return outcomes


def send_one(
    services: Services, due: digests.Due, sub: Subscription
) -> tuple[str, "_Chart | None"]:
    """Claim, build and post one digest: (outcome, its chart still to attach)."""
    with session_scope(services.engine) as session:
        claim = claims.claim(
            session,
            key=due.key,
            kind="digest",
            channel=due.channel,
            owner=services.instance,
            now=services.clock(),
            late=due.late,
        )
    if claim is None:
        return "skipped", None
    try:
        ts, sparks = _deliver(services, due, sub)
    except PermanentFailure as failure:
        if failure.code in TOKEN_ERRORS:  # the token's trouble, not the channel's: no pause
            _record_failure(services, due, failure.code, final=False)
            return TOKEN_FAILED, None
        # The channel's: paused until someone subscribes again, and this week's digest is
        # kept for then (a release uses up none of its attempts).
        log.warning("digest %s to %s failed: %s", due.key, due.channel, failure.code)
        with session_scope(services.engine) as session:
            claims.release(session, key=due.key, error=failure.code)
        _pause(services, sub, failure.code)
        return "paused", None
    except (SlackApiError, SlackClientError, OSError) as error:
        _record_failure(services, due, error_code(error), final=False)
        return "failed", None
    with session_scope(services.engine) as session:
        claims.mark_sent(session, key=due.key, ts=ts, now=services.clock())
    chart = _Chart(due, ts, sparks["sparks"], sparks["week"]) if sparks["sparks"] else None
    return ("late" if due.late else "sent"), chart


def _deliver(services: Services, due: digests.Due, sub: Subscription) -> tuple[str, list]:
    # Visibility is the channel's own, checked now rather than when it subscribed.
    reply = services.kpis.scorecard(
        viewer=Viewer(channel=due.channel), items=sub.items, as_of=due.scheduled, late=due.late
    )
    posted = services.notifier.post(due.channel, render_reply(reply))
    return posted, {"sparks": reply.extra["sparks"], "week": reply.extra["week"]}


def _attach_chart(services: Services, chart: _Chart) -> None:
    """The chart goes in the digest's thread; a failed chart never undoes a sent digest."""
    due = chart.due
    try:
        png = _chart(services, chart.sparks)
        services.notifier.upload(
            due.channel,
            png,
            filename=f"kpi-digest-{chart.week}.png",
            title=f"KPIs · {chart.week}",
            thread_ts=chart.ts,
        )
    except (PermanentFailure, SlackApiError, SlackClientError, OSError) as error:
        log.warning("digest chart for %s failed: %s", due.channel, error_code(error))


def _chart(services: Services, sparks: list) -> bytes:
    """Channels with the same KPIs get the same picture: draw it once (it costs ~0.3 s of CPU).
    One drawing at a time, so thirty senders missing the cache together do not all draw it."""
    key = json.dumps(sparks, sort_keys=True, default=str)
    png = services.charts.get(key)
    if png is None:
        with _DRAWING:
            png = services.charts.get(key)
            if png is None:
                png = sparkline_grid_png([Spark(**s) for s in sparks])
                services.charts.put(key, png)
    return png


def _record_failure(services: Services, due: digests.Due, code: str, *, final: bool) -> None:
    log.warning("digest %s to %s failed: %s", due.key, due.channel, code)
    with session_scope(services.engine) as session:
        claims.mark_failed(session, key=due.key, error=code, final=final)


def _pause(services: Services, sub: Subscription, code: str) -> None:
    with session_scope(services.engine) as session:
        first = digests.pause(session, subscription_id=sub.id, reason=code, now=services.clock())
    if first and sub.created_by:
        message = renderer().message(
            "notice.json.j2", kind="digest_paused", error=code, channel=sub.channel
        )
        try:
            services.notifier.post(sub.created_by, message)
        except (PermanentFailure, SlackApiError, SlackClientError, OSError) as error:
            log.warning(
                "could not tell %s about the paused digest: %s", sub.created_by, error_code(error)
            )
