"""What each CLI command does: open the store, call kpi/, print a short summary."""

import argparse
from datetime import UTC, datetime

from bot.settings import Settings
from kpi import catalog
from kpi.db import open_store, session_scope
from kpi.errors import KpibotError


class NotYet(KpibotError):
    pass


def now() -> datetime:
    return datetime.now(UTC)


def open_engine(settings: Settings):
    engine = open_store(settings.database_url)
    with session_scope(engine) as session:
        catalog.load_builtin_if_empty(session, now=now())
    return engine


def db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    open_store(settings.database_url)
    print("store is up to date")
    return 0


def catalog_load(args: argparse.Namespace, settings: Settings) -> int:
    spec = catalog.read_spec(args.file)
    engine = open_engine(settings)
    with session_scope(engine) as session:
        counts = catalog.apply(spec, session, actor="cli", now=now())
    print(
        f"catalog loaded: {counts['measures']} measures, {counts['kpis']} KPIs, "
        f"{counts['targets']} targets added or changed"
    )
    return 0


def _not_yet(what: str, issue: str) -> int:
    raise NotYet(f"`kpibot {what}` is not available yet ({issue}).")


def serve(args, settings):
    return _not_yet("serve", "it arrives with the Slack app")


def import_csv(args, settings):
    return _not_yet("import", "it arrives with the importer")


def demo(args, settings):
    return _not_yet("demo", "it arrives with the demo data")


def ask(args, settings):
    return _not_yet("ask", "it arrives with the KPI engine")


def digest_run(args, settings):
    return _not_yet("digest run", "it arrives with weekly digests")


def alerts_run(args, settings):
    return _not_yet("alerts run", "it arrives with alerts")
