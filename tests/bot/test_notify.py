"""Posting for jobs: pacing per channel, and Slack's failures told apart."""

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.notify import Notifier, PermanentFailure
from bot.services import retry_handlers
from bot.standin import SlackStandin


class Clock:
    """A clock that moves only when the notifier waits, so pacing is exact and instant."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(round(seconds, 3))
        self.now += seconds


@pytest.fixture
def slack():
    with SlackStandin() as standin:
        yield standin


def notifier(slack, clock=None):
    client = WebClient(token="xoxb-test", base_url=slack.url)
    client.retry_handlers = retry_handlers()
    if clock is None:
        return Notifier(client)
    return Notifier(client, clock=clock, sleep=clock.sleep)


def test_about_one_message_per_second_per_channel_and_no_wait_across_channels(slack):
    clock = Clock()
    post = notifier(slack, clock).post
    for channel in ("C1", "C1", "C2", "C1"):
        post(channel, {"text": "hi"})
    assert clock.waits == [1.0, 1.0]  # C1's second and third; C2 went at once
    assert len(slack.messages("C1")) == 3


def test_the_next_message_waits_a_full_second_after_the_answer(slack):
    clock = Clock()

    class SlowClient(WebClient):
        def chat_postMessage(self, **kwargs):  # noqa: N802 - slack_sdk's name
            clock.now += 0.3  # the round trip
            return super().chat_postMessage(**kwargs)

    client = SlowClient(token="xoxb-test", base_url=slack.url)
    post = Notifier(client, clock=clock, sleep=clock.sleep).post
    for _ in range(3):
        post("C1", {"text": "hi"})
    # The first is answered at 100.3, so the second goes at 101.3 (a wait of 1.0 s from the
    # answer), not at 101.0 (0.7 s): a full second between what Slack receives.
    assert clock.waits == [1.0, 1.0]
    assert clock.now == pytest.approx(100.0 + 3 * 0.3 + 2 * 1.0)


@pytest.mark.parametrize(
    "code",
    ["channel_not_found", "is_archived", "not_in_channel", "invalid_auth", "account_inactive"],
)
def test_errors_no_retry_can_fix_are_permanent(slack, code):
    slack.fail_next("chat.postMessage", error=code)
    with pytest.raises(PermanentFailure) as caught:
        notifier(slack).post("C1", {"text": "hi"})
    assert caught.value.code == code
    assert len(slack.calls_to("chat.postMessage")) == 1  # not retried


def test_server_errors_are_retried_with_backoff_then_given_up(slack):
    slack.fail_http("chat.postMessage", status=502, times=2)
    assert notifier(slack).post("C1", {"text": "hi"})
    assert len(slack.calls_to("chat.postMessage")) == 3
    slack.fail_http("chat.postMessage", status=500, times=10)
    with pytest.raises(SlackApiError):
        notifier(slack).post("C2", {"text": "hi"})
    assert len(slack.calls_to("chat.postMessage")) == 3 + 4  # one try and three retries


def test_rate_limits_are_waited_out(slack):
    slack.rate_limit("chat.postMessage", times=2, retry_after=0)
    assert notifier(slack).post("C1", {"text": "hi"})
    assert len(slack.messages("C1")) == 1
