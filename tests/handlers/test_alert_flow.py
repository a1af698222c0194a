"""Alerts end to end through the stand-in: one message per incident, edited as it changes."""

import json
import logging
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select

from bot import ids
from bot.alerts import NOT_SENT, RETRIED, Pass, apply, run_alerts
from bot.blockkit import validate
from kpi import catalog
from kpi.db import session_scope
from kpi.evaluate import read_all
from kpi.importer import load_records
from kpi.models import AlertEvent, AuditLog, Incident
from kpi.values import load_catalog
from tests.handlers.conftest import ALERTS, NOW, RECORDS

UTC_ZONE = ZoneInfo("UTC")


def set_madrid_receivables(served, amount):
    # October DSO = (300,000 + amount) / 400,000 × 31 days.
    load_records(
        served.services.engine,
        [("ar_balance", date(2026, 10, 30), amount, {"branch": "Madrid"})],
        tz=UTC_ZONE,
    )


def alerts_run(served, at=NOW):
    return run_alerts(served.services, as_of=at)


def top_level(served, channel=ALERTS):
    return [m for m in served.slack.messages(channel) if m.get("thread_ts") in (None, m["ts"])]


def thread(served, ts, channel=ALERTS):
    """Notes in an incident's thread (the chart upload is there too, as a file)."""
    return [
        m
        for m in served.slack.messages(channel)
        if m.get("thread_ts") == ts and m["ts"] != ts and not m.get("files")
    ]


def about_dso(messages):
    return [m for m in messages if "Days Sales Outstanding" in json.dumps(m)]


def buttons(message):
    return {
        e["action_id"]: e
        for b in message["blocks"]
        for e in b.get("elements", [])
        if e.get("type") == "button"
    }


def test_a_breach_is_told_once_with_buttons_and_a_chart(served):
    assert alerts_run(served)["unchanged"] >= 1  # 31.0 days: on target, nothing to tell
    assert not about_dso(top_level(served))
    set_madrid_receivables(served, 1_000_000)  # (300,000 + 1,000,000) / 400,000 × 31 = 100.75
    assert alerts_run(served)["open"] == 1
    [message] = about_dso(top_level(served))
    validate(message["blocks"], text=message["text"])
    assert "100.8 days" in json.dumps(message) and "55.8 days over target" in json.dumps(message)
    assert set(buttons(message)) == {
        ids.ALERT_ACK,
        ids.ALERT_SNOOZE_DAY,
        ids.ALERT_SNOOZE_WEEK,
        ids.ALERT_TAKE,
    }
    [upload] = served.slack.calls_to("files.completeUploadExternal")
    assert upload.args["thread_ts"] == message["ts"]
    posts = len(served.slack.calls_to("chat.postMessage"))
    assert alerts_run(served).get("open", 0) == 0
    assert len(served.slack.calls_to("chat.postMessage")) == posts  # the next run: nothing


def test_worse_edits_the_message_and_notes_it_in_the_thread(served):
    set_madrid_receivables(served, 345_161)  # 645,161 / 400,000 × 31 = 50.0 days: at risk
    assert alerts_run(served)["open"] == 1
    [message] = about_dso(top_level(served))
    assert "at risk" in message["text"]
    set_madrid_receivables(served, 1_000_000)
    assert alerts_run(served)["worsen"] == 1
    [edited] = about_dso(top_level(served))
    assert edited["ts"] == message["ts"] and "off target" in edited["text"]
    [note] = thread(served, message["ts"])
    assert "Worse" in note["text"]


def click(served, message, action_id, user="U0001"):
    button = buttons(message)[action_id]
    response_url = served.slack.response_url(f"click-{action_id}-{user}")
    return served.client.block_action(
        action_id,
        button["value"],
        user_id=user,
        channel_id=ALERTS,
        message=message,
        response_url=response_url,
    )


def test_acknowledge_updates_the_message_and_stops_the_repeats(served, catalog_engine):
    set_madrid_receivables(served, 1_000_000)
    alerts_run(served)
    [message] = about_dso(top_level(served))
    updates = len(served.slack.calls_to("chat.update"))
    assert click(served, message, ids.ALERT_ACK).status == 200
    served.slack.wait_for("chat.update", count=updates + 1, timeout=10)
    [acked] = about_dso(top_level(served))
    assert "acknowledged by <@U0001>" in json.dumps(acked)
    assert click(served, message, ids.ALERT_ACK).status == 200  # a double click changes nothing
    # A day and more later an unacknowledged alert would repeat; this one stays quiet.
    assert alerts_run(served, NOW + timedelta(hours=30)).get("renotify", 0) == 0
    assert thread(served, message["ts"]) == []
    with session_scope(catalog_engine) as session:
        acks = [a for a in session.exec(select(AuditLog)) if a.action == "alert.ack"]
    assert len(acks) == 1 and acks[0].actor == "U0001"


def test_an_unacknowledged_alert_repeats_in_its_thread_after_renotify(served):
    set_madrid_receivables(served, 1_000_000)
    alerts_run(served)
    [message] = about_dso(top_level(served))
    assert alerts_run(served, NOW + timedelta(hours=23)).get("renotify", 0) == 0
    assert alerts_run(served, NOW + timedelta(hours=25))["renotify"] == 1
    [note] = thread(served, message["ts"])
    assert "Still off target" in note["text"]


def test_snooze_and_take_ownership_show_on_the_message(served, catalog_engine):
    set_madrid_receivables(served, 1_000_000)
    alerts_run(served)
    [message] = about_dso(top_level(served))
    click(served, message, ids.ALERT_SNOOZE_DAY, user="U0002")
    served.slack.wait_for("chat.update", count=1, timeout=10)
    click(served, message, ids.ALERT_TAKE, user="U0003")
    served.slack.wait_for("chat.update", count=2, timeout=10)
    text = json.dumps(about_dso(top_level(served))[0])
    assert "snoozed until" in text and "<@U0003>" in text
    with session_scope(catalog_engine) as session:
        incident = session.exec(select(Incident).where(Incident.kpi_key == "dso")).one()
        kinds = [e.kind for e in session.exec(select(AlertEvent).order_by(AlertEvent.id))]
    assert incident.owner == "U0003" and incident.snoozed_by == "U0002"
    assert kinds[-2:] == ["snooze_day", "own"]


def test_someone_who_may_not_see_the_kpi_cannot_act(served, catalog_engine):
    load_records(
        catalog_engine,
        [("satisfaction_score", date(2026, 9, 10), 2.0, {"branch": "Berlin"})],
        tz=UTC_ZONE,
    )
    alerts_run(served)
    hr_channel = served.slack.messages("C0HRLEAD")
    [message] = [m for m in hr_channel if "Employee Satisfaction" in m["text"]]
    response_url = served.slack.response_url("outsider")
    served.client.block_action(
        ids.ALERT_ACK,
        buttons(message)[ids.ALERT_ACK]["value"],
        user_id="U0OUT",
        channel_id="C0PUBLIC",
        response_url=response_url,
    )
    served.slack.wait_for("response_url", timeout=10)
    assert "can't act on this alert" in json.dumps(served.slack.responses("outsider"))
    assert not served.slack.calls_to("chat.update")


def test_recovery_holds_one_evaluation_then_edits_and_threads_recovered(served):
    set_madrid_receivables(served, 1_000_000)
    alerts_run(served)
    [message] = about_dso(top_level(served))
    set_madrid_receivables(served, 100_000)  # back to 31.0 days
    assert alerts_run(served)["recovering"] == 1
    assert thread(served, message["ts"]) == []
    assert alerts_run(served)["resolve"] == 1
    [resolved] = about_dso(top_level(served))
    assert "Recovered" in json.dumps(resolved) and not buttons(resolved)
    [note] = thread(served, message["ts"])
    assert "Recovered at" in note["text"]


def test_stale_data_opens_a_no_data_alert(served):
    in_january = datetime(2027, 1, 10, 9, tzinfo=UTC)  # December has no data at all
    alerts_run(served, in_january)
    [message] = about_dso(top_level(served))
    assert "no recent data" in message["text"]


def test_a_kpi_its_alert_channel_may_not_see_is_warned_once_and_posted_once_it_may(served, caplog):
    caplog.set_level(logging.WARNING, logger="kpibot")
    with session_scope(served.services.engine) as session:
        spec = catalog.parse_spec({"kpis": {"employee_satisfaction": {"channel": ALERTS}}})
        catalog.apply(spec, session, actor="test", now=NOW)
    load_records(
        served.services.engine,
        [("satisfaction_score", date(2026, 9, 10), 2.0, {"branch": "Berlin"})],
        tz=UTC_ZONE,
    )
    assert alerts_run(served)[NOT_SENT] == 1
    assert alerts_run(served)[NOT_SENT] == 1  # tried again, not warned again
    assert not [m for m in top_level(served) if "Employee Satisfaction" in m["text"]]
    warnings = [
        r
        for r in caplog.records
        if "employee_satisfaction" in r.getMessage() and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1 and "may not see" in warnings[0].getMessage()
    with session_scope(served.services.engine) as session:
        spec = catalog.parse_spec({"kpis": {"employee_satisfaction": {"visibility": [ALERTS]}}})
        catalog.apply(spec, session, actor="test", now=NOW)
    counts = alerts_run(served)
    assert counts[RETRIED] == 1 and not counts[NOT_SENT]
    assert [m for m in top_level(served) if "Employee Satisfaction" in m["text"]]


def test_kpi_alerts_lists_the_open_alerts_the_asker_may_see(served):
    set_madrid_receivables(served, 1_000_000)
    load_records(
        served.services.engine,
        [("satisfaction_score", date(2026, 9, 10), 2.0, {"branch": "Berlin"})],
        tz=UTC_ZONE,
    )
    alerts_run(served)
    listing = served.client.command("alerts", channel_id="C0PUBLIC")
    text = listing.text
    validate(listing.json()["blocks"], text=listing.json()["text"])
    assert "Days Sales Outstanding" in text and "Employee Satisfaction" not in text
    hr = served.client.command("alerts", channel_id="C0HRLEAD").text
    assert "Employee Satisfaction" in hr


@pytest.mark.parametrize("error", ["fatal_error", "channel_not_found", "not_in_channel"])
def test_an_alert_slack_failed_to_take_is_sent_on_the_next_pass(served, error):
    # A channel that is gone, or closed to the bot, can be fixed: the alert waits for it.
    set_madrid_receivables(served, 1_000_000)
    served.slack.fail_next("chat.postMessage", error=error)
    assert alerts_run(served)["open"] == 1
    assert not about_dso(top_level(served))
    counts = alerts_run(served)
    assert counts["retried"] == 1 and counts.get("open", 0) == 0
    [message] = about_dso(top_level(served))
    assert buttons(message)
    assert alerts_run(served).get("retried", 0) == 0  # told once, never again


def test_a_pass_that_read_before_another_opened_the_alert_does_not_open_it_again(served):
    set_madrid_receivables(served, 1_000_000)
    assert alerts_run(served)["open"] == 1  # another process's pass: alert row at version 1
    services = served.services
    with Session(services.engine) as session:
        snap = services.kpis.snapshot(session)
        readings = read_all(session, snap.catalog, NOW, services.settings.tz)
    [dso] = [r for r in readings if r.key == ("dso", "", "")]
    # This pass read the alerts before that commit: no row, no incident, so it decided to open.
    assert apply(services, dso, None, None, NOW) == ("lost", None)
    assert len(about_dso(top_level(served))) == 1
    with session_scope(services.engine) as session:
        assert [i.id for i in session.exec(select(Incident))] == [1]


def test_alert_by_reads_every_branch_and_leaves_data_without_one_to_the_whole(catalog_engine):
    head_office = [("credit_sales", date(2026, 10, 9), 40_000, {}),
                   ("ar_balance", date(2026, 10, 31), 20_000, {})]  # fmt: skip
    load_records(catalog_engine, RECORDS + head_office, tz=UTC_ZONE)
    with session_scope(catalog_engine) as session:
        spec = catalog.parse_spec({"kpis": {"dso": {"alert_by": "branch"}}})
        catalog.apply(spec, session, actor="test", now=NOW)
    with Session(catalog_engine) as session:
        readings = read_all(session, load_catalog(session), NOW, UTC_ZONE)
    dso = {r.key: r.value for r in readings if r.kpi.key == "dso"}
    assert dso == {
        ("dso", "", ""): pytest.approx(420_000 / 440_000 * 31),  # 29.6: every row, branch or not
        ("dso", "branch", "Berlin"): pytest.approx(62.0),  # 300k / 150k × 31
        ("dso", "branch", "Madrid"): pytest.approx(12.4),  # 100k / 250k × 31
    }


def test_a_channel_slack_refuses_is_tried_once_a_pass_and_a_dead_token_once_in_all(served):
    # Three KPIs breach: two in the alert channel, which Slack says is gone, and one in C0AP.
    set_madrid_receivables(served, 1_000_000)  # dso
    with session_scope(served.services.engine) as session:
        spec = catalog.parse_spec({"kpis": {"ap_turnover": {"channel": "C0AP"}}})
        catalog.apply(spec, session, actor="test", now=NOW)
    load_records(served.services.engine, [
        ("finance_errors", date(2026, 10, 7), 5, {}),  # 5 % against a target of 1 %
        ("finance_transactions", date(2026, 10, 7), 100, {}),
        ("purchases", date(2026, 10, 7), 100, {}),  # 0.1x against a target of 0.8x
        ("ap_balance", date(2026, 10, 7), 1000, {}),
    ], tz=UTC_ZONE)  # fmt: skip
    served.slack.fail_next("chat.postMessage", error="channel_not_found", times=2)
    this_pass = Pass()
    counts = run_alerts(served.services, as_of=NOW, this_pass=this_pass)
    assert counts[NOT_SENT] == 3
    assert len(served.slack.calls_to("chat.postMessage")) == 2  # one to each channel
    assert this_pass.not_told == {
        "dso: Slack answered channel_not_found for C0ALERTS": 1,
        "finance_error_rate: Slack answered channel_not_found for C0ALERTS": 1,
        "ap_turnover: Slack answered channel_not_found for C0AP": 1,
    }
    served.slack.fail_next("chat.postMessage", error="invalid_auth", times=1)
    assert run_alerts(served.services, as_of=NOW, this_pass=Pass())[NOT_SENT] == 3
    assert len(served.slack.calls_to("chat.postMessage")) == 3  # one call for all three
    counts = run_alerts(served.services, as_of=NOW)  # fixed: all three go out
    assert counts[RETRIED] == 3 and not counts[NOT_SENT]
    assert len(about_dso(top_level(served))) == 1


def test_a_button_says_what_happened_when_it_changes_nothing_or_slack_keeps_the_old_message(
    served, caplog
):
    set_madrid_receivables(served, 1_000_000)
    alerts_run(served)
    [message] = about_dso(top_level(served))
    click(served, message, ids.ALERT_ACK)
    served.slack.wait_for("chat.update", count=1, timeout=10)
    click(served, message, ids.ALERT_ACK, user="U0002")  # acknowledged already
    served.slack.wait_for("response_url", count=1, timeout=10)
    [same] = served.slack.responses(f"click-{ids.ALERT_ACK}-U0002")
    assert "Nothing to change" in same["text"]
    # Slack will not edit the message (deleted, say): the ownership is stored all the same.
    served.slack.fail_next("chat.update", error="message_not_found")
    click(served, message, ids.ALERT_TAKE, user="U0003")
    served.slack.wait_for("response_url", count=2, timeout=10)
    [taken] = served.slack.responses(f"click-{ids.ALERT_TAKE}-U0003")
    validate(taken["blocks"], text=taken["text"])
    assert "Done, but Slack would not update the alert message (message_not_found)" in taken["text"]
    with session_scope(served.services.engine) as session:
        assert session.exec(select(Incident)).one().owner == "U0003"
    # A value kpibot never wrote is refused, without a traceback.
    forged = served.slack.response_url("forged")
    served.client.block_action(ids.ALERT_ACK, "abc", channel_id=ALERTS, response_url=forged)
    served.slack.wait_for("response_url", count=3, timeout=10)
    assert "can't act on this alert" in served.slack.responses("forged")[0]["text"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_new_value_in_the_same_state_is_listed_but_not_told_again(served):
    set_madrid_receivables(served, 1_000_000)  # (300k + 1,000k) / 400k × 31 = 100.75 days
    alerts_run(served)
    assert "100.8 days" in served.client.command("alerts").text
    posts = len(served.slack.calls_to("chat.postMessage"))
    set_madrid_receivables(served, 2_000_000)  # (300k + 2,000k) / 400k × 31 = 178.25: still off
    assert alerts_run(served).get("nothing") == 1  # stored, not told
    served.services.kpis.recheck()
    assert "178.3 days" in served.client.command("alerts").text
    assert len(served.slack.calls_to("chat.postMessage")) == posts
    assert alerts_run(served) == {"unchanged": alerts_run(served)["unchanged"]}  # then quiet
