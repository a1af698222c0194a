import re
from pathlib import Path

import pytest

from bot.settings import Settings, load_settings
from kpi.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_lists_exactly_the_settings():
    listed = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert listed == {name.upper() for name in Settings.model_fields}


def test_every_variable_has_a_one_line_comment():
    lines = (ROOT / ".env.example").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z_]+=", line):
            assert lines[i - 1].startswith("# "), line


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("KPIBOT_TIMEZONE", "Mars/Olympus", "KPIBOT_TIMEZONE: unknown time zone 'Mars/Olympus'"),
        ("DATABASE_URL", "not a url", "DATABASE_URL: not a database URL"),
        ("DATABASE_URL", "mysql://x@y/z", "DATABASE_URL: use sqlite:///FILE or postgresql"),
        ("PORT", "eighty", "PORT: Input should be a valid integer"),
        ("PORT", "70000", "PORT: Input should be less than or equal to 65535"),
        ("SLACK_API_URL", "notaurl", "SLACK_API_URL: not an http(s) URL: 'notaurl'"),
        ("SLACK_API_URL", "ftp://slack.com/api/", "SLACK_API_URL: not an http(s) URL"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_secrets_never_print(monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-very-secret")
    settings = load_settings()
    assert "xoxb-very-secret" not in repr(settings) and "very-secret" not in str(settings)
    assert settings.slack_bot_token.get_secret_value() == "xoxb-very-secret"


def test_values_are_read_from_dot_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KPIBOT_ADMINS", raising=False)
    (tmp_path / ".env").write_text("KPIBOT_ADMINS=U1, U2\nSLACK_API_URL=http://127.0.0.1:9/api\n")
    settings = load_settings()
    assert settings.admins == {"U1", "U2"}
    assert settings.slack_api_url == "http://127.0.0.1:9/api/"


def test_an_empty_variable_means_its_default(monkeypatch):
    for name in ("PORT", "KPIBOT_TIMEZONE", "SLACK_API_URL", "DATABASE_URL"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert (settings.port, settings.kpibot_timezone) == (3000, "UTC")
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.database_url == "sqlite:///kpibot.db"
