import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from bot.standin import SlackStandin

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*DSO* 42 days"}}]
BAD_BLOCKS = [{"type": "section", "txt": {"type": "mrkdwn", "text": "typo"}}]


def slack_error(call) -> str:
    with pytest.raises(SlackApiError) as raised:
        call()
    return raised.value.response["error"]


def test_a_posted_message_is_recorded(web, standin):
    reply = web.chat_postMessage(channel="C0123FIN", text="DSO 42 days", blocks=BLOCKS)

    assert reply["ok"] and reply["channel"] == "C0123FIN"
    (call,) = standin.wait_for("chat.postMessage")
    assert call.args == {"channel": "C0123FIN", "text": "DSO 42 days", "blocks": BLOCKS}
    assert call.headers["authorization"] == "Bearer xoxb-test"
    assert call.ok and call.response["ts"] == reply["ts"]
    assert [m["text"] for m in standin.messages("C0123FIN")] == ["DSO 42 days"]


def test_timestamps_are_unique_and_increasing(web):
    stamps = [web.chat_postMessage(channel="C1", text=str(i))["ts"] for i in range(3)]
    assert stamps[0] == "1700000000.000100"
    assert stamps == sorted(set(stamps)) and len(stamps) == 3


def test_blocks_sent_as_a_form_string_are_decoded(standin):
    form = {"channel": "C1", "text": "t", "blocks": json.dumps(BLOCKS)}
    client = WebClient(token="xoxb-test", base_url=standin.url)
    client.api_call("chat.postMessage", params=form)
    assert standin.calls_to("chat.postMessage")[0].args["blocks"] == BLOCKS


def test_update_edits_a_known_message_and_refuses_an_unknown_one(web, standin):
    ts = web.chat_postMessage(channel="C1", text="off target")["ts"]

    web.chat_update(channel="C1", ts=ts, text="resolved", blocks=BLOCKS)
    (message,) = standin.messages("C1")
    assert message["text"] == "resolved" and message["blocks"] == BLOCKS and "edited" in message

    unknown = slack_error(lambda: web.chat_update(channel="C1", ts="1.000001", text="x"))
    assert unknown == "message_not_found"
    elsewhere = slack_error(lambda: web.chat_update(channel="C2", ts=ts, text="x"))
    assert elsewhere == "message_not_found"


def test_files_upload_v2_end_to_end(web, standin):
    parent = web.chat_postMessage(channel="C1", text="digest")["ts"]
    png = b"\x89PNG\r\n\x1a\nfake chart"

    reply = web.files_upload_v2(
        channel="C1",
        content=png,
        filename="dso.png",
        title="DSO, 12 weeks",
        initial_comment="Trend",
        thread_ts=parent,
    )

    api = [c.method for c in standin.calls if c.method != "chat.postMessage"]
    assert api == ["files.getUploadURLExternal", "upload", "files.completeUploadExternal"]
    asked, uploaded, completed = standin.calls[1:]
    assert asked.args == {"filename": "dso.png", "length": str(len(png))}
    assert uploaded.args["size"] == len(png)
    assert completed.args["files"] == [{"id": reply["file"]["id"], "title": "DSO, 12 weeks"}]
    assert completed.args["channel_id"] == "C1" and completed.args["thread_ts"] == parent
    assert standin.uploads()[0]["data"] == png
    assert reply["file"]["mimetype"] == "image/png"
    shared = standin.messages("C1")[1]
    assert shared["thread_ts"] == parent and shared["text"] == "Trend"
    assert shared["files"][0]["id"] == reply["file"]["id"]


def test_a_429_is_retried_by_the_rate_limit_handler(standin):
    standin.rate_limit("chat.postMessage", retry_after=0)
    client = WebClient(
        token="xoxb-test",
        base_url=standin.url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )

    assert client.chat_postMessage(channel="C1", text="hi")["ok"]
    first, second = standin.calls_to("chat.postMessage")
    assert first.status == 429 and first.response == {"ok": False, "error": "ratelimited"}
    assert second.ok


def test_a_429_without_retry_handler_carries_retry_after(web, standin):
    standin.rate_limit("chat.postMessage", retry_after=7)
    with pytest.raises(SlackApiError) as raised:
        web.chat_postMessage(channel="C1", text="hi")
    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "7"


def test_invalid_blocks_are_refused_like_slack(web, standin):
    with pytest.raises(SlackApiError) as raised:
        web.chat_postMessage(channel="C1", text="x", blocks=BAD_BLOCKS)
    assert raised.value.response["error"] == "invalid_blocks"
    assert "blocks[0].txt: unknown key" in raised.value.response["errors"]
    assert standin.messages("C1") == []
    ephemeral = slack_error(
        lambda: web.chat_postEphemeral(channel="C1", user="U1", text="x", blocks=BAD_BLOCKS)
    )
    assert ephemeral == "invalid_blocks"


def test_fail_next_fails_the_given_number_of_times(web, standin):
    standin.fail_next("chat.postMessage", "channel_not_found", times=2)
    for _ in range(2):
        assert slack_error(lambda: web.chat_postMessage(channel="C1", text="x")) == (
            "channel_not_found"
        )
    assert web.chat_postMessage(channel="C1", text="x")["ok"]


def test_fail_http_answers_a_server_error_once(web, standin):
    standin.fail_http("auth.test", status=503)
    with pytest.raises(SlackApiError) as raised:
        web.auth_test()
    assert raised.value.response.status_code == 503
    assert web.auth_test()["ok"]


def test_response_url_posts_are_recorded_and_checked(standin):
    url = standin.response_url("ask")

    good = WebhookClient(url).send(text="DSO 42 days", blocks=BLOCKS, response_type="ephemeral")
    bad = WebhookClient(url).send(text="x", blocks=BAD_BLOCKS)
    empty = WebhookClient(url).send(text="")

    assert (good.status_code, good.body) == (200, "ok")
    assert (bad.status_code, bad.body) == (400, "invalid_blocks")
    assert (empty.status_code, empty.body) == (400, "no_text")
    assert standin.responses(url) == [
        {"text": "DSO 42 days", "blocks": BLOCKS, "response_type": "ephemeral"}
    ]
    assert standin.responses("ask") == standin.responses(url)
    assert standin.response_url() != standin.response_url()


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ({"is_member": False, "is_private": True}, "not_in_channel"),
        ({"is_archived": True}, "is_archived"),
        (None, "channel_not_found"),  # strict and not registered
    ],
)
def test_channel_errors(channel, expected):
    with SlackStandin(strict_channels=True) as standin:
        if channel is not None:
            standin.set_channel("C1", name="finance", **channel)
        client = WebClient(token="xoxb-test", base_url=standin.url)
        assert slack_error(lambda: client.chat_postMessage(channel="C1", text="x")) == expected


def test_public_channels_need_no_membership(web, standin):
    standin.set_channel("C1", name="finance", is_member=False)
    assert web.chat_postMessage(channel="C1", text="chat:write.public")["ok"]
    assert web.chat_postMessage(channel="CUNKNOWN", text="not strict")["ok"]
    assert slack_error(lambda: web.chat_postMessage(channel="#finance", text="x")) == (
        "channel_not_found"
    )


@pytest.mark.parametrize("token", ["xoxp-user", "nonsense", None])
def test_a_bot_token_is_required(standin, token):
    client = WebClient(token=token, base_url=standin.url)
    assert slack_error(client.auth_test) == "invalid_auth"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_long_text_and_missing_text(web):
    too_long = "x" * 40_001
    assert slack_error(lambda: web.chat_postMessage(channel="C1", text=too_long)) == "msg_too_long"
    assert slack_error(lambda: web.chat_postMessage(channel="C1", text="")) == "no_text"


def test_directory_methods(web, standin):
    standin.set_usergroups({"S1": {"handle": "hr", "users": ["U1", "U2"]}})
    standin.set_channel("C1", name="finance")
    standin.set_user("U1", name="ann", tz="Europe/Berlin")

    groups = web.usergroups_list(include_users=True)["usergroups"]
    assert [(g["id"], g["handle"], g["users"]) for g in groups] == [("S1", "hr", ["U1", "U2"])]
    assert web.usergroups_users_list(usergroup="S1")["users"] == ["U1", "U2"]
    assert slack_error(lambda: web.usergroups_users_list(usergroup="S9")) == "no_such_subteam"
    assert web.users_info(user="U1")["user"]["tz"] == "Europe/Berlin"
    assert web.users_info(user="U7")["user"]["id"] == "U7"
    assert slack_error(lambda: web.users_info(user="nobody")) == "user_not_found"
    assert web.conversations_info(channel="C1")["channel"]["name"] == "finance"


def test_direct_messages(web, standin):
    dm = web.conversations_open(users="U1")["channel"]["id"]
    assert dm.startswith("D") and web.conversations_open(users="U1")["channel"]["id"] == dm
    assert web.chat_postMessage(channel="U1", text="to the DM")["channel"] == dm
    assert [m["text"] for m in standin.messages(dm)] == ["to the DM"]


def test_ephemeral_permalink_and_home_tab(web, standin):
    assert web.chat_postEphemeral(channel="C1", user="U1", text="only you")["message_ts"]
    ts = web.chat_postMessage(channel="C1", text="x")["ts"]
    link = web.chat_getPermalink(channel="C1", message_ts=ts)["permalink"]
    assert link.endswith("/archives/C1/p" + ts.replace(".", ""))
    view = {"type": "home", "blocks": BLOCKS}
    assert web.views_publish(user_id="U1", view=view)["view"]["blocks"] == BLOCKS
    bad = {"type": "home", "blocks": BAD_BLOCKS}
    assert slack_error(lambda: web.views_publish(user_id="U1", view=bad)) == "invalid_arguments"
    assert slack_error(lambda: web.api_call("chat.scheduleMessage")) == "unknown_method"


def test_get_with_a_query_string_works_too(standin):
    request = urllib.request.Request(
        standin.url + "users.info?user=U1", headers={"Authorization": "Bearer xoxb-test"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as reply:
        assert json.load(reply)["user"]["id"] == "U1"


def test_posting_limits_answer_429():
    with SlackStandin(post_limit_per_channel_per_second=1, workspace_limit_per_second=2) as slack:
        client = WebClient(token="xoxb-test", base_url=slack.url)
        assert client.chat_postMessage(channel="C1", text="1")["ok"]
        assert slack_error(lambda: client.chat_postMessage(channel="C1", text="2")) == (
            "ratelimited"
        )
        assert client.chat_postMessage(channel="C2", text="other channel")["ok"]
        # 3rd call of the method this second: over the workspace's limit for chat.postMessage
        assert slack_error(lambda: client.chat_postMessage(channel="C3", text="3")) == (
            "ratelimited"
        )
        # Slack limits each method on its own: another method still has its whole quota.
        assert client.auth_test()["ok"]
        assert client.auth_test()["ok"]
        assert slack_error(client.auth_test) == "ratelimited"


def test_random_429s_are_reproducible_with_a_seed():
    def pattern(seed: int) -> list[int]:
        with SlackStandin(random_429_fraction=0.5, seed=seed) as slack:
            client = WebClient(token="xoxb-test", base_url=slack.url)
            for i in range(12):
                try:
                    client.chat_postMessage(channel="C1", text=str(i))
                except SlackApiError:
                    pass
            return [call.status for call in slack.calls]

    first = pattern(7)
    assert first == pattern(7)
    assert {200, 429} == set(first)


def test_wait_for_waits_for_calls_from_other_threads(web, standin):
    worker = threading.Thread(target=lambda: web.chat_postMessage(channel="C1", text="later"))
    worker.start()
    assert len(standin.wait_for("chat.postMessage", timeout=5)) == 1
    worker.join()
    with pytest.raises(AssertionError, match="0 of 1 chat.update"):
        standin.wait_for("chat.update", timeout=0.05)


def _clear_proxy_env(monkeypatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_slack_sdk_sends_loopback_through_an_env_proxy(standin, monkeypatch):
    """slack_sdk reads HTTP(S)_PROXY itself (WebClient and WebhookClient); without NO_PROXY
    even 127.0.0.1 goes through the proxy. Kept as a test so we notice if that changes."""
    _clear_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    client = WebClient(token="xoxb-test", base_url=standin.url, retry_handlers=[])
    assert client.proxy == "http://127.0.0.1:9"
    with pytest.raises(urllib.error.URLError):
        client.auth_test()
    assert standin.calls == []


def test_no_proxy_keeps_loopback_direct(standin, monkeypatch):
    """urllib honours NO_PROXY even under slack_sdk's explicit ProxyHandler: the fix."""
    _clear_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    client = WebClient(token="xoxb-test", base_url=standin.url)
    assert client.auth_test()["ok"]
    assert WebhookClient(standin.response_url()).send(text="hi").status_code == 200


def test_runs_standalone():
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.standin", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        url = next(word for word in line.split() if word.startswith("http"))
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api/")
        request = urllib.request.Request(
            url + "auth.test", data=b"", headers={"Authorization": "Bearer xoxb-test"}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=5) as reply:
            assert json.load(reply)["ok"]
    finally:
        process.terminate()
        process.wait(timeout=5)
