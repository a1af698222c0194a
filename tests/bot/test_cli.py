"""The installed `kpibot` command: real processes, one clear line for every error."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

KPIBOT = [sys.executable, "-m", "bot"]


def run(*args, env=None, cwd=None):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "KPIBOT_"))}
    environment |= env or {}
    return subprocess.run(
        [*KPIBOT, *args], capture_output=True, text=True, env=environment, cwd=cwd, timeout=120
    )


@pytest.fixture
def store_env(database_url):
    return {"DATABASE_URL": database_url}


@pytest.mark.parametrize(
    "words",
    [
        ["serve"],
        ["import"],
        ["catalog", "load"],
        ["demo"],
        ["ask"],
        ["digest", "run"],
        ["alerts", "run"],
        ["db", "upgrade"],
    ],
)
def test_every_command_answers_help(words):
    result = run(*words, "--help")
    assert result.returncode == 0 and "usage: kpibot" in result.stdout


def test_ask_digest_and_alerts_take_as_of():
    for words in (["ask"], ["digest", "run"], ["alerts", "run"]):
        assert "--as-of" in run(*words, "--help").stdout


def error_line(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_bad_variable_stops_any_command_with_one_line(store_env):
    line = error_line(run("ask", "dso", env=store_env | {"KPIBOT_TIMEZONE": "Nowhere/City"}))
    assert line.startswith("kpibot: KPIBOT_TIMEZONE: unknown time zone")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sqlite:////nonexistent/dir/kpibot.db", "unable to open database file"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/test", "Connection refused"),
    ],
)
def test_a_store_that_cannot_be_opened_is_one_line_naming_the_variable(url, reason):
    line = error_line(run("ask", "dso", env={"DATABASE_URL": url}))
    assert line.startswith("kpibot: DATABASE_URL: cannot open the store:") and reason in line


def test_a_bad_as_of_is_one_line(store_env):
    result = run("ask", "dso", "--as-of", "yesterday-ish", env=store_env)
    assert result.returncode == 2 and "not a moment" in result.stderr


def test_an_unknown_kpi_is_one_line_with_a_hint(store_env):
    line = error_line(run("ask", "dsoo", env=store_env))
    assert "I don't know a KPI called" in line and "dso" in line


def test_catalog_load_names_every_problem_and_writes_nothing(store_env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kpis:\n  dso: {formula: ar_balanse / credit_sales, better: up}\n")
    result = run("catalog", "load", str(bad), env=store_env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "kpis.dso.better:" in result.stderr
    good = tmp_path / "good.yaml"
    good.write_text("kpis:\n  dso: {target: 40}\n")
    loaded = run("catalog", "load", str(good), env=store_env)
    assert loaded.returncode == 0 and "1 target added or changed" in loaded.stdout


def test_a_kpi_without_a_target_says_so(store_env, tmp_path):
    spec = tmp_path / "sales.yaml"
    spec.write_text("kpis:\n  sales: {name: Sales, formula: credit_sales, unit: EUR}\n")
    assert run("catalog", "load", str(spec), env=store_env).returncode == 0
    data = tmp_path / "sales.csv"
    data.write_text("measure,date,value\ncredit_sales,2026-10-05,130000\n")
    assert run("import", str(data), env=store_env).returncode == 0
    answer = run("ask", "sales", "--as-of", "2026-11-02T09:05", env=store_env)
    assert "€130,000 · no target" in answer.stdout and "on target" not in answer.stdout


def test_a_weekly_count_target_is_pro_rated_over_a_month(store_env, tmp_path):
    """back_office_complaints: 5 a week, at risk up to 8. October's 10 complaints are within
    5 × 31/7 = 22.1, at risk to 8 × 31/7 = 35.4 (they were 'off target', above 8)."""
    data = tmp_path / "complaints.csv"
    data.write_text("measure,date,value\ncomplaints,2026-10-05,4\ncomplaints,2026-10-20,6\n")
    assert run("import", str(data), env=store_env).returncode == 0
    answer = run("ask", "complaints last month", "--as-of", "2026-11-02T09:05", env=store_env)
    assert "10 · on target" in answer.stdout, answer.stdout
    assert "target 22.1 · off target above 35.4 (5 a week, pro-rated)" in answer.stdout


def test_a_missing_catalog_file_is_one_line(store_env, tmp_path):
    line = error_line(run("catalog", "load", str(tmp_path / "nope.yaml"), env=store_env))
    assert "cannot read" in line


def test_posting_commands_need_a_bot_token(store_env):
    line = error_line(run("digest", "run", env=store_env))
    assert line == "kpibot: SLACK_BOT_TOKEN: required to post to Slack"


def test_serve_needs_a_signing_secret(store_env):
    line = error_line(run("serve", env=store_env))
    assert "SLACK_SIGNING_SECRET" in line


def test_debug_shows_the_traceback(store_env):
    result = run("--debug", "ask", "dsoo", env=store_env)
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_ask_prints_the_answer_and_json_and_a_chart(store_env, tmp_path):
    out = tmp_path / "chart.png"
    plain = run("ask", "list", env=store_env)
    assert plain.returncode == 0 and "Days Sales Outstanding" in plain.stdout
    as_json = run("ask", "dso", "--json", "--as-of", "2026-11-02T09:05", env=store_env)
    assert as_json.returncode == 0 and '"blocks"' in as_json.stdout
    trend = run(
        "ask", "trend dso 6m", "--out", str(out), "--as-of", "2026-11-02T09:05", env=store_env
    )
    assert trend.returncode == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(out).stat().st_size < 150_000


def test_ask_takes_unquoted_words_and_says_why_it_cannot_write_a_chart(store_env, tmp_path):
    as_of = ["--as-of", "2026-11-02T09:05"]
    quoted = run("ask", "dso last month", "--json", *as_of, env=store_env)
    unquoted = run("ask", "dso", "last", "month", "--json", *as_of, env=store_env)
    assert unquoted.returncode == 0 and unquoted.stdout == quoted.stdout
    assert "share_answer" in quoted.stdout  # the JSON Slack gets, its Share button included
    line = error_line(run("ask", "trend dso 6m", "--out", str(tmp_path / "no" / "a.png"),
                          *as_of, env=store_env))  # fmt: skip
    assert line.startswith("kpibot: cannot write") and "No such file or directory" in line


def test_a_reader_that_stops_early_is_not_an_error(store_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "KPIBOT_"))}
    reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    asked = subprocess.run([*KPIBOT, "ask", "list"], stdout=reader.stdin, stderr=subprocess.PIPE,
                           text=True, env=env | store_env, timeout=120)  # fmt: skip
    reader.stdin.close()
    reader.wait(timeout=10)
    assert asked.returncode == 0 and asked.stderr == ""


def test_import_reports_every_bad_line_and_stores_nothing(store_env, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "measure,date,value,branch\ncredit_sale,2026-10-05,1,Berlin\n"
        "credit_sales,2026-13-01,1,Berlin\ncredit_sales,2026-10-05,lots,Berlin\n"
    )
    result = run("import", str(bad), env=store_env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "line 2" in result.stderr and "did you mean 'credit_sales'" in result.stderr
    assert "line 3" in result.stderr and "line 4" in result.stderr
    good = tmp_path / "good.csv"
    good.write_text("measure,date,value,branch\ncredit_sales,2026-10-05,120000,Berlin\n")
    assert "would" in run("import", str(good), "--dry-run", env=store_env).stdout
    first = run("import", str(good), env=store_env)
    assert first.returncode == 0 and "1 changed" in first.stdout
    again = run("import", str(good), env=store_env)
    assert again.returncode == 0 and "0 changed" in again.stdout


def test_import_evaluates_alerts_when_it_can_post(store_env, tmp_path):
    from bot.standin import SlackStandin

    breach = tmp_path / "breach.csv"
    breach.write_text(
        "measure,date,value\nar_balance,2026-10-31,900000\ncredit_sales,2026-10-05,100000\n"
    )
    with SlackStandin() as slack:
        env = store_env | {
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_API_URL": slack.url,
            "KPIBOT_ALERT_CHANNEL": "C0ALERTS",
        }
        result = run("import", str(breach), env=env)
        assert result.returncode == 0 and "alerts:" in result.stdout, result.stderr
        assert any("Days Sales Outstanding" in m["text"] for m in slack.messages("C0ALERTS"))


def test_alerts_run_tells_an_alert_once_a_channel_is_set_and_fails_until_then(store_env, tmp_path):
    """Without KPIBOT_ALERT_CHANNEL the breach is not told: the run exits 1, and the next run
    with a channel posts it (it used to be dropped for good)."""
    from bot.standin import SlackStandin

    breach = tmp_path / "breach.csv"
    breach.write_text(
        "measure,date,value\nar_balance,2026-10-31,900000\ncredit_sales,2026-10-05,100000\n"
    )
    assert run("import", str(breach), env=store_env).returncode == 0
    with SlackStandin() as slack:
        env = store_env | {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_API_URL": slack.url}
        as_of = ["--as-of", "2026-11-10T09:00"]
        unset = run("alerts", "run", *as_of, env=env)
        assert unset.returncode == 1 and "1 not sent" in unset.stdout, unset.stdout
        # Why, on stderr, at every run (the log warns once).
        assert "1 alert not sent: dso: no alert channel" in unset.stderr.splitlines()[-1]
        again = run("alerts", "run", *as_of, env=env)
        assert again.returncode == 1 and "dso: no alert channel" in again.stderr
        assert not slack.calls_to("chat.postMessage")
        told = run("alerts", "run", *as_of, env=env | {"KPIBOT_ALERT_CHANNEL": "C0ALERTS"})
        assert told.returncode == 0 and "1 told late" in told.stdout, told.stdout + told.stderr
        assert any("Days Sales Outstanding" in m["text"] for m in slack.messages("C0ALERTS"))
