"""Work done after Slack has its ack: charts, shares. Runs on the services' executor.

These are job boundaries: whatever fails is logged and told to the user, never lost silently.
"""

import logging
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime

from slack_bolt import Respond
from slack_sdk.errors import SlackApiError

from bot.answers import (
    chart_png,
    error_message,
    read_share_value,
    render_reply,
    renderer,
    share_value,
)
from bot.services import Services
from kpi.query import Ask, Request, Trend
from kpi.service import Reply, Viewer

log = logging.getLogger("kpibot")
NOT_IN_CHANNEL = ("not_in_channel", "channel_not_found")


def send_trend(
    services: Services,
    request: Request,
    viewer: Viewer,
    as_of: datetime,
    respond: Respond,
    text: str,
) -> None:
    """The trend's summary to the asker (ephemeral) and its chart in a direct message."""
    try:
        reply = services.kpis.answer(request, viewer=viewer, as_of=as_of)
        chart = upload_chart(services, reply, channel=_dm_channel(services, viewer.user))
        message = render_reply(reply, share=share_value(reply, text, as_of), chart=chart)
        respond(**message, response_type="ephemeral", replace_original=True)
    except Exception as error:  # the job's boundary: tell the user, log what is ours to fix
        report(error, respond)


def confirm_write(
    written: "Future[Reply]", respond: Respond, then: Callable[[], None] = lambda: None
) -> None:
    """A write that outlasted the ack: its confirmation (or why it failed) to the asker, and
    `then` once it is stored."""
    try:
        reply = written.result()
        respond(**render_reply(reply), response_type="ephemeral", replace_original=True)
        then()
    except Exception as error:  # the job's boundary
        report(error, respond)


def check_digest_channel(services: Services, channel: str, respond: Respond) -> None:
    """A digest goes only where the bot may post: in a private channel (or a DM) once it is
    in it. Said now, rather than by pausing the subscription at its first send."""
    try:
        info = services.slack.conversations_info(channel=channel)["channel"]
    except SlackApiError as error:
        code = error.response.get("error")
        if code not in NOT_IN_CHANNEL:  # missing_scope, say: no way to tell, so nothing said
            log.info("cannot check channel %s: %s", channel, code)
            return
    else:
        # chat:write.public covers public channels the bot has not joined.
        if info.get("is_member") or not (info.get("is_private") or info.get("is_mpim")):
            return
    try:
        respond(**_notice("invite_digest"), response_type="ephemeral", replace_original=False)
    except Exception as error:  # the job's boundary
        log.warning("could not tell %s about the digest channel: %s", channel, error)


def upload_chart(services: Services, reply: Reply, *, channel: str | None, thread_ts=None) -> str:
    if channel is None:
        return "failed"
    try:
        services.slack.files_upload_v2(
            channel=channel,
            content=chart_png(reply),
            filename=f"{reply.kpi}-trend.png",
            title=reply.extra["title"],
            thread_ts=thread_ts,
        )
    except SlackApiError as error:
        log.warning("chart upload failed: %s", error.response.get("error"))
        return "failed"
    return "dm"


def _dm_channel(services: Services, user: str) -> str | None:
    try:
        return services.slack.conversations_open(users=user)["channel"]["id"]
    except SlackApiError as error:
        log.warning("cannot open a DM with %s: %s", user, error.response.get("error"))
        return None


def share_answer(services: Services, value: str, user: str, channel: str, respond: Respond) -> None:
    """Post the same answer visibly in the channel, attributed, if the channel may see the KPI."""
    try:
        text, as_of = read_share_value(value)
        asker = services.viewer(user, channel)
        request = services.kpis.parse(text, viewer=asker, as_of=as_of)
        if not isinstance(request, Ask | Trend):  # a button's value is the sender's to write
            respond(
                **_notice("share_not_answer"), response_type="ephemeral", replace_original=False
            )
            return
        reply = services.kpis.answer(request, viewer=asker, as_of=as_of)
        if not services.kpis.may_see(reply.kpi, Viewer(channel=channel)):
            respond(**_notice("share_refused"), response_type="ephemeral", replace_original=False)
            return
        _post_shared(services, reply, user, channel, respond)
    except Exception as error:  # the job's boundary
        report(error, respond)


def _post_shared(services: Services, reply: Reply, user: str, channel: str, respond) -> None:
    message = render_reply(reply, shared_by=user)
    try:
        posted = services.slack.chat_postMessage(channel=channel, **message)
    except SlackApiError as error:
        code = error.response.get("error", "error")
        kind = "invite" if code in NOT_IN_CHANNEL else "share_failed"
        log.warning("share to %s failed: %s", channel, code)
        respond(**_notice(kind, error=code), response_type="ephemeral", replace_original=False)
        return
    if reply.trend is not None:
        upload_chart(services, reply, channel=channel, thread_ts=posted.get("ts"))
    respond(**_notice("shared"), response_type="ephemeral", replace_original=False)


def _notice(kind: str, **values: object) -> dict:
    return renderer().message("notice.json.j2", kind=kind, error=values.get("error", ""))


def report(error: Exception, respond: Respond) -> None:
    from kpi.errors import KpibotError

    if not isinstance(error, KpibotError):
        log.error("follow-up failed: %s: %s", type(error).__name__, error, exc_info=error)
    try:
        respond(**error_message(error), response_type="ephemeral", replace_original=False)
    except Exception as failed:  # Slack unreachable too: the log is all that is left
        log.error("could not tell the user: %s", failed)
