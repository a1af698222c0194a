"""Alert buttons: ack at once; the change and the message edit happen after the ack."""

from datetime import UTC, datetime

from slack_bolt import Ack, Respond

from bot.alerts import act_on_alert
from bot.services import Services


def alert_clicked(ack: Ack, body: dict, action: dict, respond: Respond, services: Services) -> None:
    ack()
    user = body["user"]["id"]
    channel = (body.get("channel") or {}).get("id", "")
    # The click's own time, which Slack repeats on a retry: the same click gives the same result.
    clicked_at = datetime.fromtimestamp(float(action["action_ts"]), UTC)
    services.executor.submit(
        act_on_alert,
        services,
        action["action_id"],
        action["value"],
        user,
        channel,
        clicked_at,
        respond,
    )
