"""The Share-in-channel button: ack at once, post after the ack."""

from slack_bolt import Ack, Respond

from bot.followups import share_answer
from bot.services import Services


def share_clicked(ack: Ack, body: dict, action: dict, respond: Respond, services: Services) -> None:
    ack()
    user = body["user"]["id"]
    channel = (body.get("channel") or {}).get("id", "")
    services.executor.submit(share_answer, services, action["value"], user, channel, respond)
