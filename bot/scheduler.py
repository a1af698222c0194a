"""One APScheduler BackgroundScheduler per `kpibot serve` process. It only *triggers* work.

What is due lives in our tables (the APScheduler 3.x guide: job stores must never be shared
between schedulers), and every trigger calls what `kpibot digest run` calls, so a missed,
doubled or late fire changes nothing: the claims in the database decide who sends what.
"""

import logging
from datetime import datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from bot import alerts as alert_job
from bot import digests as digest_job
from bot.services import Services
from kpi import digests, store
from kpi.db import session_scope

log = logging.getLogger("kpibot")
SYNC_JOB = "digests-sync"
ALERTS_JOB = "alerts"


class Schedule:
    def __init__(self, services: Services, *, tick_seconds: int = 60) -> None:
        self.services = services
        self.version: str | None = None
        self.scheduler = BackgroundScheduler(
            timezone=services.settings.kpibot_timezone,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        )
        # At start (next_run_time now) and then every tick: rebuild the digest jobs if
        # subscriptions changed anywhere, and send whatever is due — that also catches up on a
        # digest missed while every instance was down.
        self.scheduler.add_job(
            self.sync,
            "interval",
            seconds=tick_seconds,
            id=SYNC_JOB,
            replace_existing=True,
            next_run_time=datetime.now().astimezone(),
        )

        self.scheduler.add_job(
            self.alerts,
            "interval",
            minutes=services.settings.kpibot_alert_minutes,
            id=ALERTS_JOB,
            replace_existing=True,
            next_run_time=datetime.now().astimezone(),
        )

    def alerts(self) -> None:
        try:
            counts = alert_job.run_alerts(self.services, as_of=self.services.clock())
            log.info("alerts: %s", dict(counts))
        except Exception:  # a job's boundary: log, and the next run tries again
            log.exception("scheduled alert pass failed")

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)

    def sync(self) -> None:
        try:
            self.rebuild_if_changed()
            self.send_due()
        except Exception:  # a job's boundary: log, and the next tick tries again
            log.exception("scheduled digest pass failed")

    def send_due(self) -> None:
        counts = digest_job.send_due(
            self.services, as_of=self.services.clock(), since_subscribed=True
        )
        if counts:
            log.info("digests: %s", dict(counts))

    def rebuild_if_changed(self) -> None:
        with session_scope(self.services.engine) as session:
            version = store.subscriptions_version(session=session)
            if version == self.version:
                return
            subscriptions = digests.active_subscriptions(session)
        # One job per distinct (weekday, time, zone), not per subscription: a thousand channels
        # on Monday 09:00 are one fire, whose send_due sends all of them.
        wanted = {_job_id(s): s for s in subscriptions}
        for job in self.scheduler.get_jobs():
            if job.id.startswith("digest-") and job.id not in wanted:
                job.remove()
        for job_id, sub in wanted.items():
            at = digests.parse_at(sub.at)
            trigger = CronTrigger(
                day_of_week=sub.weekday, hour=at.hour, minute=at.minute, timezone=sub.tz
            )
            self.scheduler.add_job(self.send_due, trigger, id=job_id, replace_existing=True)
        self.version = version


def _job_id(sub) -> str:
    at = digests.parse_at(sub.at)
    return f"digest-{sub.weekday}-{at:%H%M}-{sub.tz}"
