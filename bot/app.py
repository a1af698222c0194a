"""`create_app`: a fresh Bolt App from settings and services; nothing is built at import time."""

import logging
import uuid
from collections.abc import Callable

from slack_bolt import App, BoltContext, BoltResponse
from slack_bolt.context.respond import Respond

import handlers
from bot.answers import JSON_HEADERS, ephemeral_body, error_message
from bot.services import Services
from kpi.errors import KpibotError

log = logging.getLogger("kpibot")


def create_app(settings, services: Services) -> App:
    app = App(
        client=services.slack,
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        # The HTTP reply waits for the listener: fast answers travel in the ack itself, and
        # slow work (charts) goes to services.executor after ack(). See bench/serve_bench.py.
        process_before_response=True,
        # No call to Slack while building the app (auth.test); the token is checked on first use.
        token_verification_enabled=False,
        request_verification_enabled=True,
    )

    @app.middleware
    def provide_services(context: BoltContext, next_: Callable[[], None]) -> None:
        context["services"] = services
        next_()

    app.error(reply_with_error)
    handlers.register(app)
    return app


def reply_with_error(
    error: Exception, body: dict, respond: Respond, context: BoltContext, logger: logging.Logger
) -> BoltResponse | None:
    """Typed errors become a short ephemeral reply; anything else is logged with a request id."""
    if not isinstance(error, KpibotError):
        logger.error(
            "request %s failed: %s: %s",
            uuid.uuid4().hex[:12],  # to find this one in the log when someone reports it
            type(error).__name__,
            error,
            exc_info=error,
        )
    message = error_message(error)
    if body.get("command"):  # a slash command is not acked yet: answer in the HTTP reply
        return BoltResponse(status=200, body=ephemeral_body(message), headers=JSON_HEADERS)
    if respond is not None and body.get("response_url"):
        respond(**message, response_type="ephemeral", replace_original=False)
    # A button's error is told at its response_url; a 500 would only add Slack's warning icon
    # (and a retry) to it.
    return BoltResponse(status=200, body="")
