"""`/kpi` end to end: signed requests into the real app, Slack played by the local stand-in."""

import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from urllib.parse import parse_qs, quote, urlencode
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine
from sqlalchemy import text as sql
from sqlalchemy.engine import make_url
from sqlmodel import select

from bot import ids
from bot.blockkit import inert, validate
from kpi import catalog, importer
from kpi.db import session_scope
from kpi.importer import load_records
from kpi.models import AuditLog, Subscription, Target
from tests.handlers.conftest import ADMIN


def reply_text(response) -> str:
    assert response.status == 200, response.text
    message = response.json()
    validate(message["blocks"], text=message["text"])
    return json.dumps(message, ensure_ascii=False)


def test_dso_answer_carries_the_hand_computed_number(served):
    response = served.client.command("dso")
    body = response.json()
    assert body["response_type"] == "ephemeral"
    text = reply_text(response)
    assert "31.0 days" in text and "October 2026" in text
    # Against September's 30.0 days: +1.0 day, worse because lower is better.
    assert "+1.0 days" in text and "worse" in text
    assert "ar balance 400,000" in text or "ar balance €400,000" in text


def test_breakdown_by_branch_uses_each_branch_own_totals(served):
    text = reply_text(served.client.command("dso last month by branch"))
    assert "62.0 days" in text and "12.4 days" in text


def test_a_breakdown_shows_the_data_without_the_dimension_as_its_own_row(served):
    # Head office: 40k of sales and 20k owed on 31 Oct, with no branch.
    load_records(served.services.engine, [("credit_sales", date(2026, 10, 9), 40_000, {}),
                                          ("ar_balance", date(2026, 10, 31), 20_000, {})],
                 tz=ZoneInfo("UTC"))  # fmt: skip
    served.services.kpis.recheck()  # this process wrote
    text = reply_text(served.client.command("dso last month by branch"))
    assert "62.0 days" in text and "12.4 days" in text
    assert "(no branch)" in text and "15.5 days" in text  # 20k / 40k × 31
    assert text.index("Madrid") < text.index("(no branch)")  # named branches first


def test_filter_by_dimension_value(served):
    assert "62.0 days" in reply_text(served.client.command("dso branch=Berlin"))
    assert "12.4 days" in reply_text(served.client.command("dso in madrid last month"))


def test_help_and_list(served):
    assert "kpibot" in reply_text(served.client.command(""))
    listing = reply_text(served.client.command("list finance"))
    assert "Days Sales Outstanding" in listing and "31.0 days" in listing


def test_a_bad_signature_and_a_stale_timestamp_are_refused(served):
    body = served.client.command_body("dso")
    assert served.client.send(body, signature="v0=" + "0" * 64).status == 401
    stale = int(time.time()) - 6 * 60
    assert served.client.send(body, timestamp=stale).status == 401


@pytest.mark.parametrize("stamp", ["abc", "", " ", "1.5", "nan", "²"])
def test_a_timestamp_that_is_not_a_number_is_refused_and_nothing_is_answered(served, stamp):
    """slack_sdk raises on such a header instead of refusing it; unguarded, the error handler
    answered the unverified request, even at the response_url it named."""
    command = served.client.command_body("dso", response_url=served.slack.response_url("forged"))
    assert served.client.send(command, timestamp=stamp, signature="v0=00").status == 401
    click = served.client.block_action_body(
        ids.SHARE, "{}", response_url=served.slack.response_url("forged")
    )
    assert served.client.send(click, timestamp=stamp, signature="v0=00").status == 401
    assert served.slack.responses("forged") == []


def test_a_payload_that_is_not_json_is_a_400_if_signed_and_a_401_if_not(served, caplog):
    body = "payload=" + quote('{"type": "block_actions", "actions": [')
    assert served.client.send(body).status == 400
    assert served.client.send(body, signature="v0=" + "0" * 64).status == 401
    assert served.client.send(body, timestamp="abc").status == 401
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_button_slack_sent_without_its_value_is_acked_and_the_user_told(served):
    body = served.client.block_action_body(
        ids.SHARE, "x", response_url=served.slack.response_url("no-value")
    )
    click = json.loads(parse_qs(body)["payload"][0])
    del click["actions"][0]["value"]
    response = served.client.send(urlencode({"payload": json.dumps(click)}))
    assert response.status == 200  # a 500 would add Slack's warning icon and a retry
    served.slack.wait_for("response_url", timeout=10)
    [told] = served.slack.responses("no-value")
    validate(told["blocks"], text=told["text"])
    assert told["response_type"] == "ephemeral"


def test_a_button_kpibot_no_longer_knows_is_acked_and_explained(served):
    url = served.slack.response_url("old-button")
    assert served.client.block_action("kpi_old_button", "1", response_url=url).status == 200
    served.slack.wait_for("response_url", timeout=10)
    [told] = served.slack.responses("old-button")
    validate(told["blocks"], text=told["text"])
    assert "older kpibot" in told["text"] and told["response_type"] == "ephemeral"


def test_a_hidden_kpi_gets_the_same_reply_as_an_unknown_one(served):
    hidden = served.client.command("employee satisfaction", channel_id="C0PUBLIC")
    unknown = served.client.command("employee satisfactiox", channel_id="C0PUBLIC")
    assert hidden.status == unknown.status == 200
    assert hidden.text.replace("employee satisfaction", "NAME") == unknown.text.replace(
        "employee satisfactiox", "NAME"
    )
    assert "Employee Satisfaction" not in unknown.text  # never offered as a suggestion
    assert "employee_satisfaction" not in reply_text(served.client.command("list"))


def test_the_hr_channel_sees_its_confidential_kpi(served):
    text = reply_text(served.client.command("employee satisfaction q3", channel_id="C0HRLEAD"))
    assert "4.20" in text


def test_a_user_group_in_the_visibility_list_sees_the_kpi(served, catalog_engine):
    from datetime import UTC, datetime

    from kpi import catalog

    with session_scope(catalog_engine) as session:
        spec = catalog.parse_spec({"kpis": {"employee_satisfaction": {"visibility": ["S0HR"]}}})
        catalog.apply(spec, session, actor="test", now=datetime(2026, 11, 1, tzinfo=UTC))
    served.slack.set_usergroups({"S0HR": {"handle": "hr", "users": ["U0HR"]}})
    seen = reply_text(served.client.command("esat q3", user_id="U0HR", channel_id="C0PUBLIC"))
    assert "4.20" in seen
    hidden = served.client.command("esat q3", user_id="U0001", channel_id="C0PUBLIC")
    assert "don't know" in hidden.text


def test_user_text_is_never_echoed_as_a_live_mention(served):
    for text in ("<!channel> dso", "<!here>", "<@U0BOSS> please", "dso <!everyone>"):
        response = served.client.command(text)
        assert response.status == 200
        assert inert(response.json()), text


def test_a_command_containing_the_word_payload_is_routed(served):
    response = served.client.command("payload")
    assert response.status == 200
    assert "payload" in response.text and "don't know a KPI" in response.text
    assert "31.0 days" in reply_text(
        served.client.command("dso payload=x".replace("payload=x", ""))
    )


def test_a_malformed_command_gets_a_short_explanation_with_an_example(served):
    response = served.client.command("dso by nonsense_dimension")
    text = reply_text(response)
    assert "Try" in text and "Traceback" not in text


def test_only_admins_and_owners_change_targets_and_it_is_audited(served, catalog_engine):
    refused = served.client.command("target dso 40", user_id="U0SOMEONE")
    assert refused.status == 200 and "Only kpibot admins" in refused.text
    done = reply_text(served.client.command("target dso 40 warn 50", user_id=ADMIN))
    assert "target 40.0 days" in done
    with session_scope(catalog_engine) as session:
        target = session.exec(select(Target).where(Target.kpi_key == "dso", Target.dim == "")).one()
        entry = session.exec(select(AuditLog).where(AuditLog.actor == ADMIN)).one()
    assert (target.target, target.warn) == (40, 50)
    assert entry.before["target"] == 45 and entry.after["target"] == 40
    # The cached answer follows the new target at once: 31.0 ≤ 40 is still on target.
    assert "target 40.0 days" in reply_text(served.client.command("dso"))


def test_a_warn_on_the_better_side_of_the_target_is_refused(served, catalog_engine):
    refused = reply_text(served.client.command("target dso 40 warn 30", user_id=ADMIN))
    assert "warn 30 is below the target 40; lower is better" in refused
    assert "/kpi target dso 40 warn 48" in refused  # 40 + 40 / 5
    with session_scope(catalog_engine) as session:
        target = session.exec(select(Target).where(Target.kpi_key == "dso", Target.dim == "")).one()
    assert (target.target, target.warn) == (45, 55)


def test_a_due_date_already_past_is_kept_and_questioned(served):
    # The served clock says 10 Nov 2026.
    past = reply_text(served.client.command("target dso 45 warn 55 due 2025-12-31", user_id=ADMIN))
    assert "due 2025-12-31" in past and "31 Dec 2025, has already passed: check the year" in past
    ahead = reply_text(served.client.command("target dso 45 warn 55 due 2026-12-31", user_id=ADMIN))
    assert "has already passed" not in ahead


def test_a_target_moved_past_its_band_says_the_band_is_gone(served, catalog_engine):
    done = reply_text(served.client.command("target dso 60", user_id=ADMIN))
    assert "target 60.0 days" in done and "The at-risk band ended at 55.0 days" in done
    # 31.0 days against a target of 60 and no band: on target.
    assert "on target" in reply_text(served.client.command("dso"))


def test_subscribe_says_what_it_set_what_changed_and_when_nothing_did(served):
    def subscribe(text: str) -> dict:
        message = served.client.command(text, channel_id="C0FIN").json()
        validate(message["blocks"], text=message["text"])
        return message

    made = subscribe("subscribe finance")
    assert made["text"].startswith("Weekly KPI digest set up: Finance")
    assert "Mondays at 09:00" in made["text"] and "The first one comes" in json.dumps(made)
    same = subscribe("subscribe finance")
    assert same["text"].startswith("Weekly KPI digest unchanged")
    assert "Nothing changed" in json.dumps(same)
    moved = subscribe("subscribe weekly on friday at 16:30")
    assert moved["text"].startswith("Weekly KPI digest updated")
    assert "Fridays at 16:30" in moved["text"] and "Mondays at 09:00" in json.dumps(moved)
    every = subscribe("subscribe all")  # back to every KPI, the rest kept
    assert every["text"].startswith("Weekly KPI digest updated: every KPI this channel may see")
    assert "Fridays at 16:30" in every["text"] and "Finance" in json.dumps(every)
    assert "Weekly KPI digest stopped" in reply_text(
        served.client.command("unsubscribe", channel_id="C0FIN")
    )


def test_record_by_an_admin_changes_the_answer(served):
    refused = served.client.command("record credit_sales 100000 2026-10-20", user_id="U0X")
    assert "Only kpibot admins" in refused.text
    reply_text(served.client.command("record credit_sales 100000 2026-10-20 branch=Madrid",
                                     user_id=ADMIN))  # fmt: skip
    # (300,000 + 100,000) / (150,000 + 350,000) × 31 = 24.8 days.
    assert "24.8 days" in reply_text(served.client.command("dso"))
    again = reply_text(served.client.command("record credit_sales 50000 2026-10-20 branch=Madrid",
                                             user_id=ADMIN))  # fmt: skip
    assert "replacing the value it had for that day" in again
    same = reply_text(served.client.command("record credit_sales 50000 2026-10-20 branch=Madrid",
                                            user_id=ADMIN))  # fmt: skip
    assert "it already had that value" in same and "replacing" not in same


@contextmanager
def import_writing(database_url: str) -> Iterator[None]:
    """Hold what an import holds while it writes: SQLite's write lock, PostgreSQL's advisory
    lock of writers (kpi.importer)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        connection = sqlite3.connect(url.database, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    engine = create_engine(url)
    with engine.connect() as connection:
        connection.execute(sql("SELECT pg_advisory_lock(:k)"), {"k": importer._ADVISORY_LOCK})
        try:
            yield
        finally:
            connection.execute(sql("SELECT pg_advisory_unlock(:k)"), {"k": importer._ADVISORY_LOCK})
    engine.dispose()


def test_a_record_waiting_for_an_import_is_acked_in_time_and_confirmed_later(served, database_url):
    served.services.ack_wait_seconds = 0.5
    late = served.slack.response_url("late")
    record = "record credit_sales 100000 2026-10-20 branch=Madrid"
    with import_writing(database_url):
        started = time.monotonic()
        acked = served.client.command(record, user_id=ADMIN, response_url=late)
        assert time.monotonic() - started < 2.5  # Slack gives up after 3 s
        assert "Working on" in reply_text(acked)
        assert served.slack.responses("late") == []  # nothing stored, nothing confirmed yet
    served.slack.wait_for("response_url", timeout=15)
    [confirmation] = served.slack.responses("late")
    assert "Recorded" in confirmation["text"] and confirmation["replace_original"]
    validate(confirmation["blocks"], text=confirmation["text"])
    # (300,000 + 100,000) / (150,000 + 350,000) × 31 = 24.8 days.
    assert "24.8 days" in reply_text(served.client.command("dso"))


def test_a_month_in_progress_counts_its_days_so_far(served):
    """Asked on 10 November: November so far is 1–10 Nov, so DSO multiplies by 10 days, not
    by November's 30 (which would say 60.0 days)."""
    for record in ("record credit_sales 200000 2026-11-03 branch=Berlin",
                   "record ar_balance 400000 2026-11-09 branch=Berlin"):  # fmt: skip
        reply_text(served.client.command(record, user_id=ADMIN))
    # Berlin's 400,000 receivables (Madrid has none in November) ÷ 200,000 sales × 10 days.
    text = reply_text(served.client.command("dso this month"))
    assert "20.0 days" in text and "1 Nov – 10 Nov 2026" in text
    assert "20.0 days" in reply_text(served.client.command("dso 2026-11"))


def test_a_period_its_data_starts_late_in_says_how_much_it_covers(served):
    # Q3: (200,000 + 100,000) receivables ÷ (200,000 + 100,000) sales × 92 days = 92.0 days,
    # from sales that start on 3 September: 28 of Q3's 92 days.
    text = reply_text(served.client.command("dso 2026-Q3"))
    assert "92.0 days" in text
    assert "Its data starts 3 Sep 2026: this covers 28 of the 92 days of Q3 2026." in text
    assert "Its data starts" not in reply_text(served.client.command("dso"))  # October: whole


def test_a_dimension_a_kpi_is_not_kept_by_is_named_not_answered_as_no_data(served):
    # Errors are kept by team; receivables and sales (dso) by branch alone.
    load_records(served.services.engine, [("finance_errors", date(2026, 10, 5), 3, {"team": "AP"})],
                 tz=ZoneInfo("UTC"))  # fmt: skip
    served.services.kpis.recheck()  # this process wrote
    for asked in ("dso team=AP", "dso last month by team"):
        text = reply_text(served.client.command(asked))
        assert "can't be split or filtered by team" in text and "kept by branch" in text
    assert "62.0 days" in reply_text(served.client.command("dso branch=Berlin"))


def test_a_record_with_a_new_dimension_value_asks_to_check_its_spelling(served):
    new = reply_text(served.client.command("record credit_sales 100 2026-10-20 branch=Atlantis",
                                           user_id=ADMIN))  # fmt: skip
    assert "First branch Atlantis (so far: Berlin, Madrid) — check the spelling." in new
    known = reply_text(served.client.command("record credit_sales 100 2026-10-20 branch=madrid",
                                             user_id=ADMIN))  # fmt: skip
    assert "Recorded" in known and "check the spelling" not in known


def test_a_repeated_question_is_answered_again_after_new_data(served):
    first = served.client.command("dso")
    assert "31.0 days" in reply_text(first)
    assert served.client.command("dso").json() == first.json()  # the kept answer, unchanged
    reply_text(served.client.command("record credit_sales 100000 2026-10-20 branch=Madrid",
                                     user_id=ADMIN))  # fmt: skip
    # The store moved on, so the kept answer is not used: (300,000 + 100,000) /
    # (150,000 + 350,000) × 31 = 24.8 days.
    assert "24.8 days" in reply_text(served.client.command("dso"))


def test_a_kept_answer_never_reaches_a_channel_that_may_not_see_it(served):
    asked = "employee satisfaction q3"
    assert "4.20" in reply_text(served.client.command(asked, channel_id="C0HRLEAD"))
    elsewhere = served.client.command(asked, channel_id="C0PUBLIC")
    assert elsewhere.status == 200 and "4.20" not in elsewhere.text
    assert "4.20" in reply_text(served.client.command(asked, channel_id="C0HRLEAD"))


def test_a_trend_is_acked_at_once_then_answered_with_a_chart_by_dm(served):
    response_url = served.slack.response_url("trend")
    started = time.monotonic()
    ack = served.client.command("trend dso 6m", response_url=response_url)
    assert time.monotonic() - started < 3
    assert "Working on" in reply_text(ack)
    served.slack.wait_for("files.completeUploadExternal", timeout=20)
    served.slack.wait_for("response_url", timeout=20)
    [follow_up] = served.slack.responses("trend")
    validate(follow_up["blocks"], text=follow_up.get("text"))
    assert "direct messages" in json.dumps(follow_up)
    [upload] = served.slack.uploads()
    assert upload["size"] < 150_000


def share_button(message: dict) -> dict:
    for block in message["blocks"]:
        for element in block.get("elements", []):
            if element.get("action_id") == ids.SHARE:
                return element
    raise AssertionError("no share button")


def test_share_posts_the_same_answer_in_the_channel_attributed(served):
    button = share_button(served.client.command("dso", channel_id="C0FIN").json())
    response_url = served.slack.response_url("share")
    clicked = served.client.block_action(ids.SHARE, button["value"], user_id="U0001",
                                         channel_id="C0FIN", response_url=response_url)  # fmt: skip
    assert clicked.status == 200
    served.slack.wait_for("chat.postMessage", timeout=10)
    [post] = served.slack.messages("C0FIN")
    text = json.dumps(post)
    assert "31.0 days" in text and "Shared by <@U0001>" in text
    assert ids.SHARE not in text  # the shared copy has no button


def test_share_is_refused_where_the_channel_may_not_see_the_kpi(served, catalog_engine):
    # U0HR sees the KPI through a user group; the public channel it asks in does not.
    from datetime import UTC, datetime

    from kpi import catalog

    with session_scope(catalog_engine) as session:
        spec = catalog.parse_spec({"kpis": {"employee_satisfaction": {"visibility": ["S0HR"]}}})
        catalog.apply(spec, session, actor="test", now=datetime(2026, 11, 1, tzinfo=UTC))
    served.slack.set_usergroups({"S0HR": {"handle": "hr", "users": ["U0HR"]}})
    asked = served.client.command("esat q3", user_id="U0HR", channel_id="C0PUBLIC")
    button = share_button(asked.json())
    response_url = served.slack.response_url("refused")
    served.client.block_action(ids.SHARE, button["value"], user_id="U0HR", channel_id="C0PUBLIC",
                               response_url=response_url)  # fmt: skip
    served.slack.wait_for("response_url", timeout=10)
    assert "not visible in this channel" in json.dumps(served.slack.responses("refused"))
    assert not served.slack.calls_to("chat.postMessage")


def test_a_share_button_carrying_a_change_changes_nothing(served, catalog_engine):
    """Only answers are shared: a forged button value naming a target change (signed, by an
    admin) is refused and the target stays."""
    forged = json.dumps({"text": "target dso 10", "as_of": "2026-11-10T00:00:00+00:00"})
    response_url = served.slack.response_url("forged")
    served.client.block_action(ids.SHARE, forged, user_id=ADMIN, channel_id="C0FIN",
                               response_url=response_url)  # fmt: skip
    served.slack.wait_for("response_url", timeout=10)
    assert "Only answers can be shared" in json.dumps(served.slack.responses("forged"))
    with session_scope(catalog_engine) as session:
        target = session.exec(select(Target).where(Target.kpi_key == "dso")).one()
        assert target.target == 45
    assert not served.slack.calls_to("chat.postMessage")


def test_a_slack_error_on_a_follow_up_is_logged_and_the_worker_lives_on(served, caplog):
    caplog.set_level(logging.WARNING, logger="kpibot")
    served.slack.fail_next("chat.postMessage", error="not_in_channel")
    button = share_button(served.client.command("dso", channel_id="C0PRIV").json())
    response_url = served.slack.response_url("private")
    served.client.block_action(ids.SHARE, button["value"], channel_id="C0PRIV",
                               response_url=response_url)  # fmt: skip
    served.slack.wait_for("response_url", timeout=10)
    assert "/invite @kpibot" in json.dumps(served.slack.responses("private"))
    assert any("not_in_channel" in r.getMessage() for r in caplog.records)
    assert "31.0 days" in reply_text(served.client.command("dso"))


def test_proxies_in_the_environment_do_not_break_loopback_calls(served, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    served.services.slack.chat_postMessage(channel="C0PROXY", text="hello")
    assert served.slack.messages("C0PROXY")


def test_healthz_checks_the_database(served):
    import urllib.request

    with urllib.request.urlopen(served.url.replace("/slack/events", "/healthz")) as reply:
        assert reply.status == 200 and json.loads(reply.read()) == {"ok": True, "database": "ok"}


@pytest.mark.parametrize("text", ["dso 2026-13", "trend dso by branch", "target dso lots"])
def test_errors_never_leak_a_traceback(served, text):
    response = served.client.command(text, user_id=ADMIN)
    assert response.status == 200
    assert "Traceback" not in response.text and "Error" not in response.json()["text"]


def test_slack_is_not_asked_for_user_groups_unless_a_kpi_names_one(served):
    reply_text(served.client.command("dso"))
    assert not served.slack.calls_to("usergroups.list")


def test_without_user_groups_from_slack_group_only_kpis_stay_hidden(served, catalog_engine):
    from datetime import UTC, datetime

    from kpi import catalog

    with session_scope(catalog_engine) as session:
        spec = catalog.parse_spec({"kpis": {"employee_satisfaction": {"visibility": ["S0HR"]}}})
        catalog.apply(spec, session, actor="test", now=datetime(2026, 11, 1, tzinfo=UTC))
    served.slack.set_usergroups({"S0HR": {"handle": "hr", "users": ["U0HR"]}})
    served.slack.fail_next("usergroups.list", error="ratelimited_forever")
    hidden = served.client.command("esat q3", user_id="U0HR", channel_id="C0PUBLIC")
    assert hidden.status == 200 and "don't know" in hidden.text


def test_subscribing_a_private_channel_the_bot_is_not_in_says_to_invite_it(served):
    served.slack.set_channel("G0SECRET", is_private=True, is_member=False)
    served.slack.set_channel("G0OURS", is_private=True, is_member=True)
    for channel in ("G0SECRET", "G0OURS", "C0FIN"):
        made = served.client.command("subscribe finance", channel_id=channel,
                                     response_url=served.slack.response_url(channel))  # fmt: skip
        assert made.json()["text"].startswith("Weekly KPI digest set up")  # kept either way
    served.services.executor.shutdown(wait=True)  # the checks after the acks are done
    [notice] = served.slack.responses("G0SECRET")
    validate(notice["blocks"], text=notice["text"])
    assert "/invite @kpibot" in notice["text"] and notice["response_type"] == "ephemeral"
    assert not served.slack.responses("G0OURS") and not served.slack.responses("C0FIN")


def test_text_slack_sends_with_entities_means_what_the_user_typed(served):
    # Slack sends `team=R&D` as `team=R&amp;D` (the simulated client does as Slack does).
    rnd = {"team": "R&D"}
    load_records(served.services.engine, [("finance_errors", date(2026, 10, 5), 2, rnd),
                                          ("finance_transactions", date(2026, 10, 5), 50, rnd)],
                 tz=ZoneInfo("UTC"))  # fmt: skip
    served.services.kpis.recheck()  # this process wrote
    answer = reply_text(served.client.command("error rate last month team=R&D"))
    assert "4.00 %" in answer  # 2 / 50 × 100, from the imported R&D series
    reply_text(served.client.command("record finance_errors 3 2026-10-06 team=R&D", user_id=ADMIN))
    with session_scope(served.services.engine) as session:
        teams = session.exec(sql("SELECT DISTINCT value FROM seriesdim WHERE dim = 'team'")).all()
    assert [t for (t,) in teams] == ["R&D"]  # no second team spelt R&amp;D


def test_subscribing_a_channel_to_a_kpi_it_may_not_see_is_refused(served):
    # UHR1 may see employee satisfaction through the HR group; the finance channel may not.
    served.slack.set_usergroups({"S0HR": {"handle": "hr", "users": ["UHR1"]}})
    with session_scope(served.services.engine) as session:
        spec = catalog.parse_spec(
            {"kpis": {"employee_satisfaction": {"visibility": ["C0HRLEAD", "S0HR"]}}}
        )
        catalog.apply(spec, session, actor="test", now=datetime(2026, 11, 10, tzinfo=UTC))
    served.services.kpis.recheck()
    assert "Employee Satisfaction" in reply_text(
        served.client.command("list hr", user_id="UHR1", channel_id="C0FIN")
    )
    refused = reply_text(
        served.client.command("subscribe employee satisfaction", user_id="UHR1", channel_id="C0FIN")
    )
    assert "This channel may not see Employee Satisfaction" in refused
    with session_scope(served.services.engine) as session:
        assert session.exec(select(Subscription)).all() == []
    made = reply_text(served.client.command("subscribe hr", user_id="UHR1", channel_id="C0FIN"))
    assert "Weekly KPI digest set up" in made  # HR's other KPIs it may see
