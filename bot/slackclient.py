"""Plays Slack towards our app: signed slash commands and button clicks over HTTP.

Bodies are built field for field as Slack sends them, and signed the way Slack signs
(`v0=` + HMAC-SHA256 of `v0:{timestamp}:{body}` with the signing secret), so the app's
real signature check runs. To skip HTTP, build the pieces and hand them to Bolt:

    body = sim.command_body("dso")
    app.dispatch(BoltRequest(body=body, headers=sim.headers_for(body)))
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from bot.standin import BOT_USER_ID, TEAM_DOMAIN, SlackStandin

FORM = "application/x-www-form-urlencoded"
APP_ID = "A0KPIBOT"
VERIFICATION_TOKEN = "verification-token"  # deprecated by Slack, still sent
DEFAULT_RESPONSE_URL = "https://hooks.slack.com/commands/T0001/1/stand-in"

# Loopback must never go through HTTP(S)_PROXY: an empty ProxyHandler ignores the env.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class SimResponse:
    """What the app answered, shaped a little like `requests.Response`."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def status_code(self) -> int:
        return self.status

    def json(self) -> Any:
        return json.loads(self.text)


class SlackClientSim:
    """Sends what Slack would send to `app_url` (e.g. `http://127.0.0.1:3000/slack/events`)."""

    def __init__(
        self,
        app_url: str,
        signing_secret: str,
        *,
        team_id: str = "T0001",
        standin: SlackStandin | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.app_url = app_url
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.standin = standin
        self.timeout = timeout
        self._serial: Iterator[int] = itertools.count(1)

    # --- sending ------------------------------------------------------------------------

    def command(
        self,
        text: str,
        *,
        user_id: str = "U0001",
        channel_id: str = "C0001",
        command: str = "/kpi",
        response_url: str | None = None,
    ) -> SimResponse:
        body = self.command_body(
            text,
            user_id=user_id,
            channel_id=channel_id,
            command=command,
            response_url=response_url,
        )
        return self.send(body)

    def block_action(
        self,
        action_id: str,
        value: str,
        *,
        user_id: str = "U0001",
        channel_id: str = "C0001",
        message: dict[str, Any] | None = None,
        block_id: str = "b",
        response_url: str | None = None,
        ephemeral: bool = False,
    ) -> SimResponse:
        body = self.block_action_body(
            action_id,
            value,
            user_id=user_id,
            channel_id=channel_id,
            message=message,
            block_id=block_id,
            response_url=response_url,
            ephemeral=ephemeral,
        )
        return self.send(body)

    def send(
        self,
        body: bytes | str,
        *,
        timestamp: int | str | None = None,
        signature: str | None = None,
        content_type: str = FORM,
    ) -> SimResponse:
        """POST a raw body, signed unless `signature` is given (for bad-signature tests)."""
        data = body.encode() if isinstance(body, str) else body
        headers = self.headers_for(data, timestamp=timestamp, content_type=content_type)
        if signature is not None:
            headers["X-Slack-Signature"] = signature
        request = urllib.request.Request(self.app_url, data=data, headers=headers, method="POST")
        try:
            with _OPENER.open(request, timeout=self.timeout) as reply:
                return _response(reply.status, reply.headers.items(), reply.read())
        except urllib.error.HTTPError as error:  # 4xx/5xx are answers too
            return _response(error.code, error.headers.items(), error.read())

    # --- building (public so tests can `app.dispatch(BoltRequest(...))` directly) ------------

    def sign(self, body: bytes | str, timestamp: int | str) -> str:
        data = body if isinstance(body, bytes) else body.encode()
        base = b"v0:" + str(timestamp).encode() + b":" + data
        digest = hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        return f"v0={digest}"

    def headers_for(
        self, body: bytes | str, *, timestamp: int | str | None = None, content_type: str = FORM
    ) -> dict[str, str]:
        stamp = int(time.time()) if timestamp is None else timestamp
        return {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(stamp),
            "X-Slack-Signature": self.sign(body, stamp),
        }

    def command_body(
        self,
        text: str,
        *,
        user_id: str = "U0001",
        channel_id: str = "C0001",
        command: str = "/kpi",
        response_url: str | None = None,
    ) -> str:
        fields = {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel_id,
            "channel_name": _channel_name(channel_id),
            "user_id": user_id,
            "user_name": _user_name(user_id),
            "command": command,
            # As Slack does: the three characters mrkdwn reserves, as entities.
            "text": text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": response_url or self._fresh_response_url(),
            "trigger_id": self._trigger_id(),
        }
        return urlencode(fields)

    def block_action_body(
        self,
        action_id: str,
        value: str,
        *,
        user_id: str = "U0001",
        channel_id: str = "C0001",
        message: dict[str, Any] | None = None,
        block_id: str = "b",
        response_url: str | None = None,
        ephemeral: bool = False,
    ) -> str:
        message = message or {"type": "message", "user": BOT_USER_ID, "ts": _now_ts(), "text": ""}
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {
                "id": user_id,
                "username": _user_name(user_id),
                "name": _user_name(user_id),
                "team_id": self.team_id,
            },
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "container": {
                "type": "message",
                "message_ts": message.get("ts", _now_ts()),
                "channel_id": channel_id,
                "is_ephemeral": ephemeral,
            },
            "trigger_id": self._trigger_id(),
            "team": {"id": self.team_id, "domain": TEAM_DOMAIN},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": _channel_name(channel_id)},
            "state": {"values": {}},
            "response_url": response_url or self._fresh_response_url(),
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": _button_text(message, action_id),
                    "value": value,
                    "type": "button",
                    "action_ts": _now_ts(),
                }
            ],
        }
        if not ephemeral:  # Slack leaves the message out for ephemeral ones
            payload["message"] = message
        return urlencode({"payload": json.dumps(payload)})

    def _fresh_response_url(self) -> str:
        if self.standin is None:
            return DEFAULT_RESPONSE_URL
        return self.standin.response_url()

    def _trigger_id(self) -> str:
        serial = next(self._serial)
        return f"{int(time.time())}.{serial}.{uuid.uuid4().hex[:20]}"


# --- helpers -------------------------------------------------------------------------------


def _response(status: int, headers: Any, body: bytes) -> SimResponse:
    return SimResponse(status, dict(headers), body.decode("utf-8", "replace"))


def _now_ts() -> str:
    return f"{time.time():.6f}"


def _user_name(user_id: str) -> str:
    return f"user-{user_id.lower()}"


def _channel_name(channel_id: str) -> str:
    # Slack says "directmessage" for DMs and "privategroup" for private ones.
    if channel_id.startswith("D"):
        return "directmessage"
    if channel_id.startswith("G"):
        return "privategroup"
    return channel_id.lower()


def _button_text(message: dict[str, Any], action_id: str) -> dict[str, Any]:
    """The clicked button's own label when the message has it, as Slack echoes it back."""
    for block in message.get("blocks") or []:
        for element in [block.get("accessory"), *(block.get("elements") or [])]:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                if isinstance(element.get("text"), dict):
                    return element["text"]
    return {"type": "plain_text", "text": "Button", "emoji": True}
