"""What listeners and jobs need, built once in the entry point and handed to the app."""

import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from threading import Lock
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from sqlalchemy.engine import Engine

from bot.notify import Notifier
from bot.settings import Settings
from kpi.memo import Memo
from kpi.service import KpiService, Snapshot, Viewer

GROUPS_TTL_SECONDS = 300
RETRY_GROUPS_SECONDS = 30
log = logging.getLogger("kpibot")


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def keep_loopback_off_proxies(url: str) -> None:
    """slack_sdk (and Bolt's `respond`) use urllib, which sends even loopback traffic through
    HTTP_PROXY/HTTPS_PROXY unless NO_PROXY names it. A stand-in or sidecar on this machine must
    be reached directly, so loopback joins NO_PROXY; real Slack still goes through the proxy."""
    if urlsplit(url).hostname not in LOOPBACK:
        return
    for name in ("NO_PROXY", "no_proxy"):
        present = [h for h in os.environ.get(name, "").split(",") if h]
        missing = [h for h in LOOPBACK if h not in present]
        if missing:
            os.environ[name] = ",".join(present + missing)


def make_slack_client(settings: Settings) -> WebClient:
    keep_loopback_off_proxies(settings.slack_api_url)
    client = WebClient(
        token=settings.slack_bot_token.get_secret_value() or None,
        base_url=settings.slack_api_url,
        timeout=10,
    )
    client.retry_handlers = retry_handlers()
    return client


class AnyServerErrorRetryHandler(ServerErrorRetryHandler):
    """slack_sdk's handler retries 500 and 503 only; a 502 or 504 is just as passing."""

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        return response is not None and 500 <= response.status_code < 600


def retry_handlers() -> list:
    """Bounded retries for what a retry can fix: dropped connections, 429s, 5xx (backoff)."""
    return [
        ConnectionErrorRetryHandler(max_retry_count=2),
        # A 429 is never final: with many senders a post can be refused several times in a row
        # (each waits its Retry-After, 1–2 s), and giving up would leave it for the next tick.
        RateLimitErrorRetryHandler(max_retry_count=10),
        AnyServerErrorRetryHandler(max_retry_count=3),
    ]


class UserGroups:
    """Which Slack user groups each user is in, read from usergroups.list and kept briefly."""

    def __init__(self, client: WebClient, ttl: float = GROUPS_TTL_SECONDS) -> None:
        self.client = client
        self.ttl = ttl
        self._members: dict[str, frozenset[str]] = {}
        self._loaded_at = -float("inf")
        self._lock = Lock()

    def of(self, user: str) -> frozenset[str]:
        with self._lock:
            if time.monotonic() - self._loaded_at > self.ttl:
                self._refresh()
            return self._members.get(user, frozenset())

    def _refresh(self) -> None:
        try:
            groups = self.client.usergroups_list(include_users=True).get("usergroups", [])
        except (SlackApiError, SlackClientError, OSError) as error:
            # Fail closed: group-only KPIs stay hidden; try again in half a minute.
            log.warning("cannot read user groups: %s", error)
            self._loaded_at = time.monotonic() - self.ttl + RETRY_GROUPS_SECONDS
            return
        members: dict[str, set[str]] = {}
        for group in groups:
            for user in group.get("users", []):
                members.setdefault(user, set()).add(group["id"])
        self._members = {user: frozenset(ids) for user, ids in members.items()}
        self._loaded_at = time.monotonic()


@dataclass
class Services:
    settings: Settings
    engine: Engine
    kpis: KpiService
    slack: WebClient
    groups: UserGroups
    executor: ThreadPoolExecutor
    notifier: Notifier
    # Writes from Slack (targets, records, subscriptions), one at a time: each may wait for a
    # lock an import holds, and the ack cannot wait with it (see handlers/commands/kpi.py).
    writer: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="kpibot-write")
    )
    # How long a slash command's ack waits for its write before saying it is working on it:
    # Slack wants the ack within 3 s.
    ack_wait_seconds: float = 2.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Digest charts by content: many channels subscribe to the same KPIs.
    charts: Memo = field(default_factory=lambda: Memo(64))
    # Rendered answers to repeated questions (keyed by store generation, so an import retires
    # them): the same `/kpi dso` all day long skips parsing, answering and rendering.
    replies: Memo = field(default_factory=lambda: Memo(1024))
    # Which process holds a claim: visible in the delivery table when something is stuck.
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def viewer(self, user: str, channel: str, snap: Snapshot | None = None) -> Viewer:
        # Slack is asked for user groups only when some KPI's visibility names one.
        groups = self.groups.of(user) if self.kpis.names_user_groups(snap) else frozenset()
        return Viewer(user=user, channel=channel, groups=groups)

    def now(self) -> datetime:
        return self.clock().astimezone(self.settings.tz)

    def close(self) -> None:
        self.writer.shutdown(wait=True, cancel_futures=False)
        self.executor.shutdown(wait=True, cancel_futures=False)
        self.engine.dispose()


def build_services(settings: Settings, engine: Engine) -> Services:
    slack = make_slack_client(settings)
    return Services(
        settings=settings,
        engine=engine,
        kpis=KpiService(engine, tz=settings.tz, admins=settings.admins),
        slack=slack,
        groups=UserGroups(slack),
        executor=ThreadPoolExecutor(max_workers=4, thread_name_prefix="kpibot-work"),
        notifier=Notifier(slack),
    )
