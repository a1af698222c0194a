"""`/kpi`: parse, answer from kpi/, render, reply — fast answers in the ack, slow ones after it."""

import logging
from dataclasses import dataclass
from datetime import datetime

from slack_bolt import Ack, BoltContext, BoltResponse, Respond

from bot.alerts import evaluate_soon
from bot.answers import JSON_HEADERS, ephemeral_body, render_reply, renderer, share_value
from bot.followups import check_digest_channel, confirm_write, send_trend
from bot.services import Services
from kpi.query import Ask, Record, SetTarget, Subscribe, Trend, Unsubscribe
from kpi.service import Reply, Snapshot, Viewer

COMMAND = "/kpi"
WRITES = (SetTarget, Record, Subscribe, Unsubscribe)


@dataclass(frozen=True)
class Asked:
    """One look at the store for the whole request, who asks, and what the answer depends on."""

    text: str
    snap: Snapshot
    viewer: Viewer
    as_of: datetime
    key: tuple


def kept_answers(
    body: dict, context: BoltContext, services: Services, next_
) -> BoltResponse | None:
    """Middleware: a question asked before (same store generation, text, KPIs the asker may see
    and day) gets its kept answer before any listener runs; Slack's signature, checked by Bolt's
    own middleware, has been verified by then."""
    if body.get("command") != COMMAND:
        return next_()
    text = slack_text(body.get("text", ""))
    snap = services.kpis.current()
    viewer = services.viewer(body.get("user_id", ""), body.get("channel_id", ""), snap)
    as_of = services.now()
    key = services.kpis.question_key(text, viewer=viewer, as_of=as_of, snap=snap)
    kept = services.replies.get(key)
    if kept is not None:
        return BoltResponse(status=200, body=kept, headers=JSON_HEADERS)
    context["asked"] = Asked(text, snap, viewer, as_of, key)
    return next_()


def slack_text(raw: str) -> str:
    """What the user typed: Slack sends `&`, `<` and `>` as HTML entities (and nothing else),
    so `team=R&D` arrives as `team=R&amp;D`."""
    return raw.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def kpi_command(
    ack: Ack, asked: Asked, respond: Respond, services: Services, logger: logging.Logger
) -> None:
    text, snap, viewer, as_of = asked.text, asked.snap, asked.viewer, asked.as_of
    request = services.kpis.parse(text, viewer=viewer, as_of=as_of, snap=snap)
    if isinstance(request, Trend):
        ack(response_type="ephemeral", **renderer().message("working.json.j2", text=text))
        services.executor.submit(send_trend, services, request, viewer, as_of, respond, text)
        return
    if isinstance(request, WRITES):
        reply = written_within_ack(services, request, asked, ack, respond)
        if reply is None:
            return
    else:
        reply = services.kpis.answer(request, viewer=viewer, as_of=as_of, snap=snap)
    message = render_reply(reply, share=share_value(reply, text, as_of))
    ack(response_type="ephemeral", **message)
    if isinstance(request, Ask):  # a question, no side effects: the same answer all day
        services.replies.put(asked.key, ephemeral_body(message))
    after_write(services, request, asked, respond)


def written_within_ack(
    services: Services, request, asked: Asked, ack: Ack, respond: Respond
) -> Reply | None:
    """The write's reply if it is stored while the ack may still wait. A write can wait for a
    lock an import holds (on SQLite up to its busy timeout): then the ack says it is being
    worked on, and the confirmation follows at the response_url."""
    written = services.writer.submit(
        services.kpis.answer, request, viewer=asked.viewer, as_of=asked.as_of, snap=asked.snap
    )
    try:
        return written.result(timeout=services.ack_wait_seconds)
    except TimeoutError:
        ack(response_type="ephemeral", **renderer().message("working.json.j2", text=asked.text))
        then = lambda: after_write(services, request, asked, respond)  # noqa: E731
        written.add_done_callback(lambda done: confirm_write(done, respond, then))
        return None


def after_write(services: Services, request, asked: Asked, respond: Respond) -> None:
    if isinstance(request, Record):  # new data: alerts may change
        evaluate_soon(services)
    if isinstance(request, Subscribe):
        channel = asked.viewer.channel
        services.executor.submit(check_digest_channel, services, channel, respond)
