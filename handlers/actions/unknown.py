"""A button kpibot no longer knows (one on a message from an older version): ack, and say so,
rather than leave Slack to show an error on it."""

from slack_bolt import Ack, Respond

from bot.answers import renderer


def unknown_clicked(ack: Ack, respond: Respond) -> None:
    ack()
    notice = renderer().message("notice.json.j2", kind="button_unknown", error="")
    respond(**notice, response_type="ephemeral", replace_original=False)
