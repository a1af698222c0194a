"""`/kpi`: parse, answer from kpi/, render, reply — fast answers in the ack, slow ones after it."""

import logging

from slack_bolt import Ack, Respond

from bot.alerts import evaluate_soon
from bot.answers import render_reply, renderer, share_value
from bot.followups import send_trend
from bot.services import Services
from kpi.query import Ask, Record, Trend


def kpi_command(
    ack: Ack, command: dict, respond: Respond, services: Services, logger: logging.Logger
) -> None:
    text = command.get("text", "")
    snap = services.kpis.current()  # one look at the store for the whole request
    viewer = services.viewer(command["user_id"], command["channel_id"], snap)
    as_of = services.now()
    asked = services.kpis.question_key(text, viewer=viewer, as_of=as_of, snap=snap)
    message = services.replies.get(asked)
    if message is not None:
        ack(response_type="ephemeral", **message)
        return
    request = services.kpis.parse(text, viewer=viewer, as_of=as_of, snap=snap)
    if isinstance(request, Trend):
        ack(response_type="ephemeral", **renderer().message("working.json.j2", text=text))
        services.executor.submit(send_trend, services, request, viewer, as_of, respond, text)
        return
    reply = services.kpis.answer(request, viewer=viewer, as_of=as_of, snap=snap)
    message = render_reply(reply, share=share_value(reply, text, as_of))
    ack(response_type="ephemeral", **message)
    if isinstance(request, Ask):  # a question, no side effects: the same answer all day
        services.replies.put(asked, message)
    if isinstance(request, Record):
        evaluate_soon(services)
