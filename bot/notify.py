"""Posting to Slack for jobs (digests, alerts): retries that can help, none that cannot.

Retries come from slack_sdk's retry handlers on the one WebClient (429 after `Retry-After`,
5xx and dropped connections with backoff, all bounded). What no retry can fix — the channel is
gone, archived, the bot is not in it, the token is dead — surfaces as `PermanentFailure`.
"""

import threading
import time
from collections.abc import Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

PERMANENT = frozenset(
    {
        "channel_not_found",
        "is_archived",
        "not_in_channel",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "missing_scope",
        "not_authed",
    }
)
# Of those, the ones no channel will take: the token (or the workspace) is the trouble.
TOKEN_ERRORS = frozenset(
    {"invalid_auth", "account_inactive", "token_revoked", "not_authed", "missing_scope"}
)
CHANNEL_INTERVAL = 1.0  # Slack allows about one message per second per channel


class PermanentFailure(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Notifier:
    def __init__(
        self,
        client: WebClient,
        *,
        interval: float = CHANNEL_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def post(self, channel: str, message: dict, *, thread_ts: str | None = None) -> str:
        self._pace(channel)
        response = self._call(
            self.client.chat_postMessage, channel=channel, thread_ts=thread_ts, **message
        )
        self._answered(channel)
        return response["ts"]

    def update(self, channel: str, ts: str, message: dict) -> None:
        self._pace(channel)
        self._call(self.client.chat_update, channel=channel, ts=ts, **message)
        self._answered(channel)

    def upload(
        self,
        channel: str,
        content: bytes,
        *,
        filename: str,
        title: str,
        thread_ts: str | None = None,
    ) -> None:
        self._call(
            self.client.files_upload_v2,
            channel=channel,
            content=content,
            filename=filename,
            title=title,
            thread_ts=thread_ts,
        )

    def _pace(self, channel: str) -> None:
        """Wait for this channel's next slot; other channels are not held up."""
        with self._lock:
            now = self.clock()
            slot = max(now, self._next.get(channel, now))
            self._next[channel] = slot + self.interval
        if slot > now:
            self.sleep(slot - now)

    def _answered(self, channel: str) -> None:
        """The channel's next slot is a full interval after this answer: counted from the
        request's start, a slow round trip or a 429's wait let the next message in sooner
        than Slack allows (nearly every message of an alert storm was refused once)."""
        with self._lock:
            self._next[channel] = max(self._next.get(channel, 0.0), self.clock() + self.interval)

    @staticmethod
    def _call(method, **kwargs):
        try:
            return method(**kwargs)
        except SlackApiError as error:
            code = error.response.get("error", "")
            if code in PERMANENT:
                raise PermanentFailure(code) from error
            raise


def error_code(error: Exception) -> str:
    """What Slack (or the connection) said, in a word: for logs and notices."""
    if isinstance(error, PermanentFailure):
        return error.code
    if isinstance(error, SlackApiError):
        return str(error.response.get("error") or f"http {error.response.status_code}")
    return type(error).__name__
