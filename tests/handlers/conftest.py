"""The real app on a real port, against the local Slack stand-in; requests signed as Slack signs."""

from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.app import create_app
from bot.services import Services, build_services
from bot.settings import load_settings
from bot.slackclient import SlackClientSim
from bot.standin import SlackStandin
from bot.web import EVENTS_PATH, KpibotWsgi, Server
from kpi.importer import load_records

SECRET = "test-signing-secret"
ADMIN = "UADMIN"
ALERTS = "C0ALERTS"
NOW = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)  # October 2026 is the latest complete month

# October: DSO = (300,000 + 100,000) / (150,000 + 250,000) × 31 = 31.0 days;
# Berlin alone 300,000 / 150,000 × 31 = 62.0, Madrid 100,000 / 250,000 × 31 = 12.4.
RECORDS = [
    ("ar_balance", date(2026, 10, 31), 300_000, {"branch": "Berlin"}),
    ("credit_sales", date(2026, 10, 5), 150_000, {"branch": "Berlin"}),
    ("ar_balance", date(2026, 10, 30), 100_000, {"branch": "Madrid"}),
    ("credit_sales", date(2026, 10, 10), 250_000, {"branch": "Madrid"}),
    # September: (200,000 + 100,000) / (200,000 + 100,000) × 30 = 30.0 days.
    ("ar_balance", date(2026, 9, 30), 200_000, {"branch": "Berlin"}),
    ("credit_sales", date(2026, 9, 3), 200_000, {"branch": "Berlin"}),
    ("ar_balance", date(2026, 9, 30), 100_000, {"branch": "Madrid"}),
    ("credit_sales", date(2026, 9, 3), 100_000, {"branch": "Madrid"}),
    # Employee satisfaction is visible only in the HR channel C0HRLEAD.
    ("satisfaction_score", date(2026, 8, 10), 4.2, {"branch": "Berlin"}),
]


@dataclass
class Served:
    url: str
    slack: SlackStandin
    client: SlackClientSim
    services: Services


@pytest.fixture
def standin():
    with SlackStandin() as slack:
        yield slack


@pytest.fixture
def served(catalog_engine, database_url, standin):
    load_records(catalog_engine, RECORDS, tz=ZoneInfo("UTC"))
    settings = load_settings(
        slack_bot_token="xoxb-test",
        slack_signing_secret=SECRET,
        slack_app_token="",
        slack_api_url=standin.url,
        database_url=database_url,
        kpibot_timezone="UTC",
        kpibot_admins=ADMIN,
        kpibot_alert_channel=ALERTS,
    )
    services = build_services(settings, catalog_engine)
    services.clock = lambda: NOW
    app = create_app(settings, services)
    server = Server(KpibotWsgi(app, catalog_engine), host="127.0.0.1", port=0, threads=4)
    thread = server.start()
    url = f"http://127.0.0.1:{server.port}{EVENTS_PATH}"
    yield Served(url, standin, SlackClientSim(url, SECRET, standin=standin), services)
    server.stop()
    thread.join(timeout=10)
    services.executor.shutdown(wait=True)
