from slack_bolt import App

from bot import ids
from handlers.actions.share import share_clicked


def register(app: App) -> None:
    app.action(ids.SHARE)(share_clicked)
