from slack_bolt import App

from handlers.commands.kpi import kpi_command


def register(app: App) -> None:
    app.command("/kpi")(kpi_command)
