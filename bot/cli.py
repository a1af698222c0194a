"""`kpibot`: one entry point; every error is one clear line on stderr (`--debug` shows more)."""

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.settings import Settings, load_settings
from kpi.errors import KpibotError

Command = Callable[[argparse.Namespace, Settings], int]


def as_of_type(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a moment: {value!r} (write it like 2026-11-02T09:05)"
        ) from None


def add_as_of(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as-of",
        type=as_of_type,
        metavar="TIME",
        help="act as if it were this moment (e.g. 2026-11-02T09:05, in KPIBOT_TIMEZONE)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kpibot", description="Back-office KPIs in Slack.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve", help="run the app: HTTP on $PORT at /slack/events, or Socket Mode"
    )
    serve.set_defaults(run=_lazy("bot.commands", "serve"))

    imp = sub.add_parser("import", help="load measures from a CSV file")
    imp.add_argument("file", metavar="FILE.csv")
    imp.add_argument("--dry-run", action="store_true", help="validate and report, write nothing")
    imp.set_defaults(run=_lazy("bot.commands", "import_csv"))

    catalog = sub.add_parser("catalog", help="the KPI catalog")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    load = catalog_sub.add_parser("load", help="define or update KPIs and targets from YAML")
    load.add_argument("file", metavar="FILE.yaml")
    load.set_defaults(run=_lazy("bot.commands", "catalog_load"))

    demo = sub.add_parser("demo", help="fill the store with a realistic year of demo data")
    demo.set_defaults(run=_lazy("bot.commands", "demo"))

    ask = sub.add_parser("ask", help='answer as /kpi would, e.g. kpibot ask "dso last month"')
    # Several words are one question: `kpibot ask dso last month` as `kpibot ask "dso last month"`.
    ask.add_argument("text", nargs="*", metavar="TEXT")
    add_as_of(ask)
    ask.add_argument("--json", action="store_true", help="print the Block Kit JSON")
    ask.add_argument("--out", metavar="FILE.png", help="write the trend chart to this file")
    ask.add_argument("--user", default="", help="ask as this Slack user id (for visibility)")
    ask.add_argument("--channel", default="", help="ask from this Slack channel id")
    ask.set_defaults(run=_lazy("bot.commands", "ask"))

    digest = sub.add_parser("digest", help="weekly digests")
    digest_sub = digest.add_subparsers(dest="digest_command", required=True, metavar="ACTION")
    digest_run = digest_sub.add_parser("run", help="send every digest that is due now")
    add_as_of(digest_run)
    digest_run.set_defaults(run=_lazy("bot.commands", "digest_run"))

    alerts = sub.add_parser("alerts", help="alerts on KPIs that breach their targets")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    alerts_run = alerts_sub.add_parser("run", help="evaluate alerts now")
    add_as_of(alerts_run)
    alerts_run.set_defaults(run=_lazy("bot.commands", "alerts_run"))

    db = sub.add_parser("db", help="the store's schema")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_sub.add_parser("upgrade", help="apply schema migrations (every command does this)")
    upgrade.set_defaults(run=_lazy("bot.commands", "db_upgrade"))
    return parser


def _lazy(module: str, name: str) -> Command:
    """Import a command only when it runs, so `--help` stays fast and light."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        import importlib

        return getattr(importlib.import_module(module), name)(args, settings)

    return run


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings()
        if getattr(args, "as_of", None) is not None and args.as_of.tzinfo is None:
            args.as_of = args.as_of.replace(tzinfo=ZoneInfo(settings.kpibot_timezone))
        return args.run(args, settings)
    except KpibotError as error:
        example = f" Try: {error.example}" if error.example else ""
        return _fail(args, f"{error}{example}")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `kpibot ask list | head -3`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:  # the CLI's boundary: one line, never a traceback unless asked
        logging.getLogger("kpibot").debug("failed", exc_info=True)
        return _fail(args, f"unexpected error: {type(error).__name__}: {error}")


def _fail(args: argparse.Namespace, message: str) -> int:
    if args.debug:
        import traceback

        traceback.print_exc()
    print(f"kpibot: {message}", file=sys.stderr)
    return 1
