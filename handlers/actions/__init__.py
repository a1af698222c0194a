import re

from slack_bolt import App

from bot import ids
from handlers.actions.alerts import alert_clicked
from handlers.actions.share import share_clicked
from handlers.actions.unknown import unknown_clicked


def register(app: App) -> None:
    app.action(ids.SHARE)(share_clicked)
    for action_id in (ids.ALERT_ACK, ids.ALERT_SNOOZE_DAY, ids.ALERT_SNOOZE_WEEK, ids.ALERT_TAKE):
        app.action(action_id)(alert_clicked)
    app.action(re.compile(".*"))(unknown_clicked)  # last: only what nothing above took
