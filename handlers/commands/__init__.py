from slack_bolt import App

from handlers.commands.kpi import COMMAND, kept_answers, kpi_command


def register(app: App) -> None:
    app.middleware(kept_answers)
    app.command(COMMAND)(kpi_command)
