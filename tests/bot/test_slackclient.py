import json
import time
from urllib.parse import parse_qs

import pytest
from slack_bolt import App, BoltRequest
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier

from bot.slackclient import SlackClientSim

SECRET = "signing-secret-for-tests"

COMMAND_FIELDS = {
    "token",
    "team_id",
    "team_domain",
    "channel_id",
    "channel_name",
    "user_id",
    "user_name",
    "command",
    "text",
    "api_app_id",
    "is_enterprise_install",
    "response_url",
    "trigger_id",
}


@pytest.fixture
def sim(receiver, standin) -> SlackClientSim:
    return SlackClientSim(receiver.url, SECRET, standin=standin)


def _form(body: bytes) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(body.decode()).items()}


def test_a_command_is_sent_signed_as_slack_sends_it(sim, receiver, standin):
    reply = sim.command("dso last month", user_id="U0123CFO", channel_id="C0123FIN")

    assert reply.status_code == 200 and reply.json() == {"received": True}
    (request,) = receiver.requests
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert SignatureVerifier(SECRET).is_valid_request(request.body, request.headers)
    form = _form(request.body)
    assert set(form) == COMMAND_FIELDS
    assert form["command"] == "/kpi" and form["text"] == "dso last month"
    assert (form["user_id"], form["channel_id"], form["team_id"]) == (
        "U0123CFO",
        "C0123FIN",
        "T0001",
    )
    assert form["response_url"].startswith(standin.base + "/response/")


def test_a_button_click_is_a_block_actions_payload(sim, receiver):
    message = {
        "type": "message",
        "ts": "1700000000.000100",
        "text": "DSO off target",
        "blocks": [
            {
                "type": "actions",
                "block_id": "alert",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "alert_ack",
                        "text": {"type": "plain_text", "text": "Acknowledge"},
                        "value": "42",
                    }
                ],
            }
        ],
    }

    sim.block_action("alert_ack", "42", user_id="U2", message=message, block_id="alert")

    (request,) = receiver.requests
    assert SignatureVerifier(SECRET).is_valid_request(request.body, request.headers)
    payload = json.loads(_form(request.body)["payload"])
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == "U2" and payload["team"]["id"] == "T0001"
    assert payload["container"]["message_ts"] == "1700000000.000100"
    assert payload["message"] == message
    (action,) = payload["actions"]
    assert action["action_id"] == "alert_ack" and action["value"] == "42"
    assert action["block_id"] == "alert" and action["text"]["text"] == "Acknowledge"


def test_an_ephemeral_click_carries_no_message(sim, receiver):
    sim.block_action("share", "dso", ephemeral=True)
    payload = json.loads(_form(receiver.requests[0].body)["payload"])
    assert "message" not in payload and payload["container"]["is_ephemeral"] is True


def test_raw_sends_for_bad_signature_and_stale_timestamp(sim, receiver):
    stale = int(time.time()) - 10 * 60
    sim.send(b"text=x", timestamp=stale)
    sim.send(b"text=x", signature="v0=forged")

    verifier = SignatureVerifier(SECRET)
    stale_request, forged_request = receiver.requests
    assert stale_request.headers["x-slack-request-timestamp"] == str(stale)
    assert not verifier.is_valid_request(stale_request.body, stale_request.headers)
    assert forged_request.headers["x-slack-signature"] == "v0=forged"
    assert not verifier.is_valid_request(forged_request.body, forged_request.headers)


def test_error_statuses_are_answers(sim, receiver):
    receiver.status = 401
    assert sim.command("dso").status == 401


def test_env_proxies_are_ignored_for_the_app(sim, receiver, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert sim.command("dso").status == 200


@pytest.fixture
def bolt_app(standin) -> App:
    """A minimal Bolt app (not ours): proves Bolt accepts and parses what we send."""
    app = App(client=WebClient(token="xoxb-test", base_url=standin.url), signing_secret=SECRET)

    @app.command("/kpi")
    def answer(ack, command, respond):
        ack()
        respond(text=f"{command['user_id']} asked {command['text']}")

    @app.action("alert_ack")
    def acknowledge(ack, body, respond):
        ack()
        respond(text=f"acknowledged {body['actions'][0]['value']}", replace_original=False)

    return app


def _dispatch(app: App, sim: SlackClientSim, body: str, **header_options) -> int:
    return app.dispatch(
        BoltRequest(body=body, headers=sim.headers_for(body, **header_options))
    ).status


def test_bolt_accepts_our_command_and_action(bolt_app, standin):
    sim = SlackClientSim("http://unused.invalid", SECRET, standin=standin)
    asked = standin.response_url("asked")
    clicked = standin.response_url("clicked")

    assert (
        _dispatch(bolt_app, sim, sim.command_body("dso", user_id="U9", response_url=asked)) == 200
    )
    assert (
        _dispatch(bolt_app, sim, sim.block_action_body("alert_ack", "7", response_url=clicked))
        == 200
    )

    standin.wait_for("response_url", count=2)
    assert standin.responses("asked")[0]["text"] == "U9 asked dso"
    assert standin.responses("clicked")[0]["text"] == "acknowledged 7"


def test_bolt_refuses_a_stale_signature(bolt_app, standin):
    sim = SlackClientSim("http://unused.invalid", SECRET, standin=standin)
    stale = int(time.time()) - 10 * 60
    assert _dispatch(bolt_app, sim, sim.command_body("dso"), timestamp=stale) == 401
