"""What each CLI command does: open the store, call kpi/, print a short summary."""

import argparse
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from bot.settings import Settings
from kpi import catalog
from kpi.db import open_store, session_scope
from kpi.errors import KpibotError


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
    parts = [_count(counts["measures"], "measure"), _count(counts["kpis"], "KPI")]
    parts.append(_count(counts["targets"], "target"))
    print(f"catalog loaded: {', '.join(parts)} added or changed")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def serve(args: argparse.Namespace, settings: Settings) -> int:
    from bot.app import create_app
    from bot.scheduler import Schedule
    from bot.services import build_services

    socket_mode = bool(settings.slack_app_token.get_secret_value())
    if not socket_mode and not settings.slack_signing_secret.get_secret_value():
        raise KpibotError("SLACK_SIGNING_SECRET: required to verify requests from Slack")
    services = build_services(settings, open_engine(settings))
    app = create_app(settings, services)
    schedule = Schedule(services, tick_seconds=settings.kpibot_tick_seconds)
    schedule.start()
    try:
        if socket_mode:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            SocketModeHandler(app, settings.slack_app_token.get_secret_value()).start()
        else:
            from bot.web import serve_http

            serve_http(app, services.engine, port=settings.port)
    finally:
        schedule.stop()
        services.close()
    return 0


def import_csv(args: argparse.Namespace, settings: Settings) -> int:
    import sys

    from kpi import importer

    engine = open_engine(settings)
    summary = importer.import_csv(
        engine,
        args.file,
        tz=settings.tz,
        dry_run=args.dry_run,
        progress=sys.stderr.isatty(),
    )
    print(summary.line())
    if summary.changed and not args.dry_run and settings.slack_bot_token.get_secret_value():
        _alerts_after_import(settings)
    return 0


def _alerts_after_import(settings: Settings) -> None:
    """New data may breach a target: evaluate alerts at once (when kpibot can post)."""
    from bot.alerts import run_alerts
    from bot.services import build_services

    services = build_services(settings, open_engine(settings))
    try:
        print(alerts_line(run_alerts(services, as_of=services.clock())))
    finally:
        services.close()


def demo(args, settings):
    from kpi.demo import load_demo

    engine = open_engine(settings)
    as_of = datetime.now(settings.tz).date()
    summary = load_demo(engine, tz=settings.tz, as_of=as_of)
    loaded = (
        f"{summary.rows:,} rows of {summary.measures} measures in {summary.series} series, "
        f"{summary.first_day} to {summary.last_day}"
    )
    if summary.changed:
        print(f"demo data loaded: {loaded} ({summary.changed:,} rows added or changed)")
    else:
        print(f"demo data already loaded, nothing changed: {loaded}")
    print("\nstorylines:")
    for story in summary.stories:
        print(f"  • {story}")
    print("\ntry next:")
    print('  kpibot ask "dso"')
    print('  kpibot ask "error rate last quarter by branch"')
    print('  kpibot ask "trend uptime 12w" --out uptime.png')
    return 0


def ask(args: argparse.Namespace, settings: Settings) -> int:
    from bot.answers import chart_png, render_reply, share_value
    from bot.render import plain_text
    from kpi.service import KpiService, Viewer

    service = KpiService(open_engine(settings), tz=settings.tz)
    as_of = args.as_of or datetime.now(settings.tz)
    viewer = Viewer(user=args.user, channel=args.channel, sees_all=not (args.user or args.channel))
    text = " ".join(args.text)
    reply = service.ask(text, viewer=viewer, as_of=as_of)
    message = render_reply(reply, share=share_value(reply, text, as_of))  # as Slack gets it
    print(json.dumps(message, indent=2, ensure_ascii=False) if args.json else plain_text(message))
    if args.out:
        if reply.trend is None:
            raise KpibotError("--out writes a trend chart: ask for a trend, e.g. `trend dso 12m`.")
        try:
            Path(args.out).write_bytes(chart_png(reply))
        except OSError as error:
            raise KpibotError(f"cannot write {args.out}: {error.strerror or error}") from None
        print(f"chart written to {args.out}")
    return 0


def digest_run(args: argparse.Namespace, settings: Settings) -> int:
    from bot.digests import send_due
    from bot.services import build_services

    services = _posting_services(settings, build_services)
    try:
        # Now, as the scheduler would (nothing from before the week of subscribing); --as-of
        # sends what was due then, whenever the subscription was made (PRODUCT.md).
        as_of, since_subscribed = args.as_of or services.clock(), args.as_of is None
        counts = send_due(services, as_of=as_of, since_subscribed=since_subscribed)
    finally:
        services.close()
    print(
        f"digests: {counts['sent']} sent · {counts['late']} late · {counts['failed']} failed · "
        f"{counts['paused']} paused · {counts['skipped']} already sent or in progress"
    )
    return 1 if counts["failed"] else 0


def _posting_services(settings: Settings, build_services):
    if not settings.slack_bot_token.get_secret_value():
        raise KpibotError("SLACK_BOT_TOKEN: required to post to Slack")
    return build_services(settings, open_engine(settings))


def alerts_run(args: argparse.Namespace, settings: Settings) -> int:
    from bot.alerts import NOT_SENT, Pass, run_alerts
    from bot.services import build_services

    services = _posting_services(settings, build_services)
    this_pass = Pass()
    try:
        counts = run_alerts(services, as_of=args.as_of or services.clock(), this_pass=this_pass)
    finally:
        services.close()
    print(alerts_line(counts))
    if counts[NOT_SENT]:
        print(f"kpibot: {not_told_line(this_pass.not_told)}", file=sys.stderr)
    return 1 if counts[NOT_SENT] else 0


# What each count of a pass means, in the summary line.
ALERT_WORDS = {
    "open": "opened",
    "worsen": "worse",
    "improve": "better",
    "recovering": "recovering",
    "resolve": "resolved",
    "renotify": "reminded",
    "nothing": "noted",
    "lost": "taken by another pass",
    "retried": "told late",
    "not sent": "not sent",
}


def alerts_line(counts) -> str:
    from bot.alerts import NOT_SENT, RETRIED

    evaluated = sum(n for kind, n in counts.items() if kind not in (RETRIED, NOT_SENT))
    told = ", ".join(
        f"{n} {ALERT_WORDS.get(kind, kind)}"
        for kind, n in sorted(counts.items())
        if kind != "unchanged" and n
    )
    return f"alerts: {evaluated} evaluated · {told or 'no changes'}"


def not_told_line(not_told: Counter, shown: int = 3) -> str:
    """Why alerts were not sent, in one line: the first few reasons and how many more."""
    total = sum(not_told.values())
    reasons = [f"{reason} ({n})" if n > 1 else reason for reason, n in not_told.most_common()]
    more = f"; and {len(reasons) - shown} more" if len(reasons) > shown else ""
    alerts = "alert" if total == 1 else "alerts"
    return (
        f"{total} {alerts} not sent: {'; '.join(reasons[:shown])}{more} "
        "(each is sent by the first run after that is fixed)"
    )
