"""Slack listeners: one package per kind, each with a `register(app)`."""

from slack_bolt import App

from handlers import actions, commands


def register(app: App) -> None:
    commands.register(app)
    actions.register(app)
