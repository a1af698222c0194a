"""The alerts pass: read every (KPI, dimension value), decide, apply once, tell Slack.

Each change is applied with a compare-and-set on the alert row's version inside one
transaction that also writes the incident, the event log and a delivery claim; only the process
whose update won sends the message. Passes that change nothing write nothing.
"""

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from slack_sdk.errors import SlackApiError, SlackClientError
from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from bot import ids
from bot.answers import renderer
from bot.charts import TrendChart, trend_png
from bot.followups import report
from bot.notify import TOKEN_ERRORS, PermanentFailure, error_code
from bot.services import Services
from kpi import claims, incidents
from kpi.aggregate import Scope
from kpi.alerts import Kind, Open, Policy, State, Transition, decide
from kpi.db import session_scope
from kpi.evaluate import Reading, read_all
from kpi.models import Alert, AlertEvent, Incident
from kpi.periods import current_period, default_range
from kpi.service import Viewer
from kpi.values import values
from kpi.views import unit_of

log = logging.getLogger("kpibot")
SLACK_ERRORS = (PermanentFailure, SlackApiError, SlackClientError, OSError)


@dataclass
class Applied:
    """A transition this process won, and what it must tell Slack."""

    transition: Transition
    reading: Reading
    incident_id: int
    alert_id: int
    delivery: str


# Counts of a pass that are not evaluations: messages told again, and messages not told.
RETRIED, NOT_SENT = "retried", "not sent"
EVERY_CHANNEL = "*"


@dataclass
class Pass:
    """What one pass learned: the channels Slack refused (EVERY_CHANNEL for a dead token), so
    their other alerts wait without another call each; and why each alert not told was not."""

    refused: dict[str, str] = field(default_factory=dict)
    not_told: Counter = field(default_factory=Counter)  # reason → alerts

    def refusal(self, channel: str) -> str | None:
        code = self.refused.get(EVERY_CHANNEL) or self.refused.get(channel)
        return f"Slack answered {code} for {channel}" if code else None

    def refuse(self, channel: str, code: str) -> None:
        self.refused[EVERY_CHANNEL if code in TOKEN_ERRORS else channel] = code


def run_alerts(services: Services, *, as_of: datetime, this_pass: Pass | None = None) -> Counter:
    """One pass over every alert; returns counts of transitions by kind, of messages of earlier
    passes told now (RETRIED) and of messages that could not be told (NOT_SENT, and why in
    `this_pass.not_told`)."""
    this_pass = this_pass if this_pass is not None else Pass()
    counts = retry_unsent(services, as_of, this_pass)
    with Session(services.engine) as session:
        snap = services.kpis.snapshot(session)
        readings = read_all(session, snap.catalog, as_of, services.settings.tz)
        # Rows, not ORM objects: a pass only reads them, and 10,000 load ~10x faster.
        rows = session.connection().execute(select(Alert.__table__))
        alerts = {(a.kpi_key, a.dim, a.dim_value): a for a in rows}
        open_ids = [a.incident_id for a in alerts.values() if a.incident_id]
        opened = {i.id: i for i in session.exec(select(Incident).where(Incident.id.in_(open_ids)))}
    for reading in readings:
        alert = alerts.get(reading.key)
        incident = opened.get(alert.incident_id) if alert and alert.incident_id else None
        outcome, applied = apply(services, reading, alert, incident, as_of)
        counts[outcome] += 1
        if applied is not None and not tell(services, applied, as_of, this_pass):
            counts[NOT_SENT] += 1
    return counts


def apply(
    services, reading: Reading, alert: Alert | None, incident: Incident | None, now: datetime
) -> tuple[str, Applied | None]:
    """The decision applied once: its kind (or `unchanged`, or `lost` to another process) and,
    when Slack must hear of it, what to tell."""
    policy = Policy(renotify=timedelta(hours=reading.kpi.kpi.renotify_hours))
    transition = decide(_open(incident, alert), reading.state, now, policy)
    if alert is None:
        alert = _create_alert(services, reading, now)
        if alert.version != 0:
            # Another process created the row and applied a decision since this pass read the
            # alerts: ours was made without its incident, so it is not ours to apply.
            return "lost", None
    unchanged = (
        alert.state == transition.state.value
        and not alert.recovering
        and _same_value(alert.value, reading.value)
    )
    if transition.kind is Kind.NOTHING and unchanged:
        return "unchanged", None  # the common case: a pass that changes nothing writes nothing
    try:
        with session_scope(services.engine) as session:
            applied = _apply(session, reading, alert, incident, transition, now, services.instance)
    except Lost:
        return "lost", None
    return transition.kind.value, applied


def _same_value(stored: float | None, read: float | None) -> bool:
    """A new value in the same state is stored (so `/kpi alerts` is current) but not told."""
    if stored is None or read is None:
        return stored is read
    return math.isclose(stored, read, rel_tol=1e-9, abs_tol=1e-12)


class Lost(Exception):
    """Another process applied this evaluation first; ours is rolled back."""


def _open(incident: Incident | None, alert: Alert | None) -> Open | None:
    if incident is None or incident.resolved_at is not None:
        return None
    return Open(
        state=State(incident.state),
        last_notified_at=incident.last_notified_at,
        acknowledged=bool(incident.acknowledged_by),
        snoozed_until=incident.snoozed_until,
        recovering=alert.recovering if alert else 0,
    )


def _create_alert(services: Services, reading: Reading, now: datetime) -> Alert:
    """The alert row, created once whoever gets there first (ON CONFLICT DO NOTHING)."""
    kpi_key, dim, dim_value = reading.key
    with session_scope(services.engine) as session:
        dialect = session.get_bind().dialect.name
        insert = (postgresql if dialect == "postgresql" else sqlite).insert(Alert.__table__)
        session.connection().execute(
            insert.values(
                kpi_key=kpi_key,
                dim=dim,
                dim_value=dim_value,
                state="ok",
                since=now,
                value=reading.value,
                version=0,
                recovering=0,
                evaluated_at=now,
            ).on_conflict_do_nothing(index_elements=["kpi_key", "dim", "dim_value"])
        )
        found = session.exec(
            select(Alert).where(
                Alert.kpi_key == kpi_key, Alert.dim == dim, Alert.dim_value == dim_value
            )
        ).one()
        session.expunge(found)
        return found


def _apply(session, reading, alert: Alert, incident, transition: Transition, now, owner):
    kind = transition.kind
    changes = {"version": alert.version + 1, "evaluated_at": now, "value": reading.value}
    if transition.state.value != alert.state:
        changes |= {"state": transition.state.value, "since": now}
    changes["recovering"] = alert.recovering + 1 if kind is Kind.RECOVERING else 0
    if kind is Kind.OPEN:
        incident = Incident(
            alert_id=alert.id,
            kpi_key=alert.kpi_key,
            dim=alert.dim,
            dim_value=alert.dim_value,
            state=transition.state.value,
            opened_at=now,
        )
        session.add(incident)
        session.flush()
        changes["incident_id"] = incident.id
    elif incident is not None:
        incident = session.get(Incident, incident.id)
    if kind is Kind.RESOLVE:
        changes["incident_id"] = None
    won = session.execute(
        update(Alert.__table__)
        .where(Alert.id == alert.id, Alert.version == alert.version)
        .values(**changes)
    )
    if won.rowcount != 1:
        raise Lost(alert.id)
    if incident is None:
        return None  # a first evaluation that found everything fine
    _update_incident(incident, kind, transition, now)
    session.add(
        AlertEvent(
            at=now,
            alert_id=alert.id,
            incident_id=incident.id,
            kind=kind.value,
            from_state=alert.state,
            to_state=transition.state.value,
            value=reading.value,
        )
    )
    if kind is Kind.RECOVERING or kind is Kind.NOTHING:
        return None
    key = f"alert:{alert.id}:{alert.version + 1}"
    payload = {
        "kind": kind.value,
        "state": transition.state.value,
        "notify": transition.notify,
        "incident": incident.id,
        "alert": alert.id,
    }
    claims.claim(session, key=key, kind="alert", channel="", owner=owner, now=now, payload=payload)
    return Applied(transition, reading, incident.id, alert.id, key)


def _update_incident(incident: Incident, kind: Kind, transition: Transition, now) -> None:
    if kind in (Kind.WORSEN, Kind.IMPROVE):
        incident.state = transition.state.value
    if kind is Kind.RESOLVE:
        incident.resolved_at = now
    if transition.notify:
        incident.last_notified_at = now


def retry_unsent(services: Services, now: datetime, this_pass: Pass) -> Counter:
    """Tell again what a crashed or failed pass decided but never got to Slack (after its
    lease), or could not tell for want of a channel."""
    counts: Counter = Counter()
    with Session(services.engine) as session:
        pending = claims.unsent(session, kind="alert")
        if not pending:
            return counts
        snap = services.kpis.snapshot(session)
        wanted = {(delivery.payload or {}).get("alert") for delivery in pending}
        rows = session.connection().execute(select(Alert.__table__).where(Alert.id.in_(wanted)))
        alerts = {a.id: a for a in rows}
    unpostable = {key: _unpostable(services, kpi) for key, kpi in snap.catalog.kpis.items()}
    for delivery in pending:
        payload = delivery.payload or {}
        alert = alerts.get(payload.get("alert"))
        kpi = snap.catalog.kpis.get(alert.kpi_key) if alert else None
        if kpi is None:
            continue
        reason = unpostable[kpi.key] or this_pass.refusal(_channel(services, kpi))
        if reason:  # still nowhere to go: no claim, no write, no log
            counts[NOT_SENT] += 1
            this_pass.not_told[f"{kpi.key}: {reason}"] += 1
            continue
        with session_scope(services.engine) as session:
            claim = claims.claim(
                session,
                key=delivery.key,
                kind="alert",
                channel="",
                owner=services.instance,
                now=services.clock(),
            )
        if claim is None:
            continue
        transition = Transition(Kind(payload["kind"]), State(payload["state"]), payload["notify"])
        scope = ((alert.dim, alert.dim_value),) if alert.dim else ()
        period = current_period(kpi.kpi.cadence, now, services.settings.tz)
        reading = Reading(
            kpi,
            alert.dim,
            alert.dim_value,
            transition.state,
            alert.value,
            kpi.target_for(scope),
            period,
        )
        applied = Applied(transition, reading, payload["incident"], alert.id, delivery.key)
        counts[RETRIED if tell(services, applied, now, this_pass) else NOT_SENT] += 1
    return counts


# -- telling Slack ------------------------------------------------------------------------------


def _channel(services: Services, kpi) -> str:
    return kpi.kpi.channel or services.settings.kpibot_alert_channel


def _unpostable(services: Services, kpi) -> str | None:
    """Why the KPI's alerts cannot be posted, or None."""
    channel = _channel(services, kpi)
    if not channel:
        return "no alert channel"
    return None if Viewer(channel=channel).may_see(kpi.kpi) else f"{channel} may not see this KPI"


def tell(services: Services, applied: Applied, now: datetime, this_pass: Pass) -> bool:
    """Post or update the alert's message; False when it could not be told (to be retried)."""
    kpi = applied.reading.kpi
    channel = _channel(services, kpi)
    reason = _unpostable(services, kpi) or this_pass.refusal(channel)
    if reason:
        return _wait(services, applied, this_pass, reason)
    try:
        ts = _send(services, applied, channel, now)
    except PermanentFailure as error:
        # Not this alert's fault but the channel's (or the token's): it waits, as for a missing
        # channel, and the first pass after the fix posts it.
        this_pass.refuse(channel, error.code)
        return _wait(services, applied, this_pass, this_pass.refusal(channel))
    except SLACK_ERRORS as error:
        log.warning("alert %s to %s failed: %s", applied.delivery, channel, error)
        with session_scope(services.engine) as session:
            claims.mark_failed(session, key=applied.delivery, error=str(error), final=False)
        return False
    _settle(services, applied, ts)
    return True


def _wait(services: Services, applied: Applied, this_pass: Pass, reason: str) -> bool:
    """An alert that cannot be told yet: released for the next pass, using up none of its
    attempts, and warned once per reason."""
    key = applied.reading.kpi.key
    with session_scope(services.engine) as session:
        first = claims.release(session, key=applied.delivery, error=reason)
    say = log.warning if first else log.debug
    say("alert on %s not posted: %s (posted once that is fixed)", key, reason)
    this_pass.not_told[f"{key}: {reason}"] += 1
    return False


def _send(services: Services, applied: Applied, channel: str, now: datetime) -> str:
    with Session(services.engine) as session:
        incident = session.get(Incident, applied.incident_id)
        alert = session.get(Alert, applied.alert_id)
    message = alert_message(
        services, incident, alert, applied.reading.kpi, applied.reading.period.label
    )
    kind = applied.transition.kind
    if kind is Kind.OPEN:
        ts = services.notifier.post(channel, message)
        with session_scope(services.engine) as session:
            stored = session.get(Incident, incident.id)
            stored.channel, stored.message_ts = channel, ts
        _attach_chart(services, applied, channel, ts, now)
        return ts
    if incident.message_ts is None:  # opened while it could not be posted
        return ""
    if kind is not Kind.RENOTIFY:
        services.notifier.update(incident.channel, incident.message_ts, message)
    if applied.transition.notify:
        note = renderer().message(
            "alert_note.json.j2", kind=kind.value, n=_note(services, incident, alert, applied, now)
        )
        services.notifier.post(incident.channel, note, thread_ts=incident.message_ts)
    return incident.message_ts


def _attach_chart(services: Services, applied: Applied, channel: str, ts: str, now) -> None:
    """A small trend of the breached KPI (in its scope) in the alert's thread."""
    reading = applied.reading
    kpi = reading.kpi
    periods = default_range(kpi.kpi.cadence, now, services.settings.tz)
    scope = Scope(filters=((reading.dim, reading.dim_value),)) if reading.dim else Scope()
    with Session(services.engine) as session:
        found = values(session, kpi, periods, scope)
    target = reading.target
    chart = TrendChart(
        title=f"{kpi.kpi.name}{f' · {reading.dim_value}' if reading.dim else ''}",
        unit=unit_of(kpi),
        labels=[p.key for p in periods],
        values=[
            found[(i, None)].value if (i, None) in found else None for i in range(len(periods))
        ],
        target=target.target if target else None,
        warn=target.warn if target else None,
        better=kpi.kpi.better,
    )
    try:
        services.notifier.upload(
            channel,
            trend_png(chart),
            filename=f"{kpi.key}-alert.png",
            title=chart.title,
            thread_ts=ts,
        )
    except SLACK_ERRORS as error:
        log.warning("alert chart for %s failed: %s", kpi.key, error)


def alert_message(services: Services, incident: Incident, alert: Alert, kpi, period: str) -> dict:
    values = incidents.view(incident, alert, kpi, services.settings.tz, period)
    return renderer().message("alert.json.j2", a=values)


def _note(services, incident, alert, applied: Applied, now: datetime) -> dict:
    values = incidents.view(
        incident, alert, applied.reading.kpi, services.settings.tz, applied.reading.period.label
    )
    return values | {"at": incidents.moment(now, services.settings.tz)}


def _settle(services: Services, applied: Applied, ts: str) -> None:
    with session_scope(services.engine) as session:
        claims.mark_sent(session, key=applied.delivery, ts=ts, now=services.clock())


# -- buttons ------------------------------------------------------------------------------------

ACTIONS = {
    ids.ALERT_ACK: "ack",
    ids.ALERT_SNOOZE_DAY: "snooze_day",
    ids.ALERT_SNOOZE_WEEK: "snooze_week",
    ids.ALERT_TAKE: "own",
}


def act_on_alert(
    services: Services,
    action_id: str,
    value: str,
    user: str,
    channel: str,
    clicked_at: datetime,
    respond,
) -> None:
    """A button on an alert: anyone who may see the KPI, on whichever instance, idempotently."""
    try:
        incident_id = int(value) if value.isdigit() else None  # a value we never wrote: refused
        outcome = _act(services, ACTIONS[action_id], incident_id, user, channel, clicked_at)
        if isinstance(outcome, str):
            _notice(respond, outcome)
        elif outcome is None:
            _notice(respond, "alert_unchanged")
        else:
            _show(services, outcome, respond)
    except Exception as error:  # the job's boundary: tell the user, log what is ours to fix
        report(error, respond)


def _show(services: Services, outcome: tuple, respond) -> None:
    """The action is stored: a message Slack will not edit is said, not reported as a failure
    of the action."""
    try:
        services.notifier.update(*outcome)
    except SLACK_ERRORS as error:
        log.warning("alert message %s not updated: %s", outcome[1], error_code(error))
        _notice(respond, "alert_done_not_shown", error=error_code(error))


def _notice(respond, kind: str, error: str = "") -> None:
    notice = renderer().message("notice.json.j2", kind=kind, error=error)
    respond(**notice, response_type="ephemeral", replace_original=False)


def _act(services, action, incident_id, user, channel, clicked_at):
    """The action stored: "alert_…" (a notice kind) when refused or closed, None when it
    changed nothing, else where the message is and what it now says."""
    with session_scope(services.engine) as session:
        incident = session.get(Incident, incident_id) if incident_id is not None else None
        snap = services.kpis.snapshot(session)
        kpi = snap.catalog.kpis.get(incident.kpi_key) if incident else None
        if kpi is None or not services.viewer(user, channel).may_see(kpi.kpi):
            return "alert_refused"
        if incident.resolved_at is not None:
            return "alert_closed"
        if not incidents.act(session, incident, action=action, user=user, at=clicked_at):
            return None
        alert = session.get(Alert, incident.alert_id)
        period = current_period(kpi.kpi.cadence, clicked_at, services.settings.tz).label
        message = alert_message(services, incident, alert, kpi, period)
        where = (incident.channel, incident.message_ts)
    return (*where, message) if where[1] else "alert_done"


def evaluate_soon(services: Services) -> None:
    """After new data (an import, `/kpi record`): an alerts pass on the executor."""

    def run() -> None:
        try:
            run_alerts(services, as_of=services.clock())
        except Exception:  # a job's boundary: the scheduled pass will try again
            log.exception("alerts pass after new data failed")

    services.executor.submit(run)
