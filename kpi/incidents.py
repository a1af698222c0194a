"""Incidents: reading them, acting on them (acknowledge, snooze, own), and what they show."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session, select

from kpi import store
from kpi.formatting import STATUS_EMOJI, fmt
from kpi.models import Alert, AlertEvent, Incident
from kpi.values import KpiDef
from kpi.views import target_line, unit_of

STATE_WORDS = {
    "ok": "on target",
    "at_risk": "at risk",
    "off_target": "off target",
    "no_data": "no recent data",
}
STATE_STATUS = {
    "ok": "on_target",
    "at_risk": "at_risk",
    "off_target": "off_target",
    "no_data": "no_data",
}
SNOOZES = {"day": timedelta(days=1), "week": timedelta(weeks=1)}


def open_incidents(session: Session) -> list[Incident]:
    query = select(Incident).where(Incident.resolved_at == None)  # noqa: E711
    return list(session.exec(query.order_by(Incident.opened_at)))


def act(session: Session, incident: Incident, *, action: str, user: str, at: datetime) -> bool:
    """Apply a button; False when it changes nothing (a double click, a retry from Slack)."""
    if incident.resolved_at is not None:
        return False
    before = {
        "acknowledged_by": incident.acknowledged_by,
        "owner": incident.owner,
        "snoozed_until": _iso(incident.snoozed_until),
    }
    if action == "ack":
        if incident.acknowledged_by:
            return False
        incident.acknowledged_by, incident.acknowledged_at = user, at
    elif action == "own":
        if incident.owner == user:
            return False
        incident.owner = user
    else:  # snooze_day | snooze_week: from the click's own moment, so a retried click is equal
        until = at + SNOOZES[action.removeprefix("snooze_")]
        if incident.snoozed_until is not None and _same(incident.snoozed_until, until):
            return False
        incident.snoozed_until, incident.snoozed_by = until, user
    after = {
        "acknowledged_by": incident.acknowledged_by,
        "owner": incident.owner,
        "snoozed_until": _iso(incident.snoozed_until),
    }
    session.add(
        AlertEvent(
            at=at,
            alert_id=incident.alert_id,
            incident_id=incident.id,
            kind=action,
            actor=user,
            to_state=incident.state,
        )
    )
    store.audit(
        session=session,
        actor=user,
        action=f"alert.{action}",
        subject=_subject(incident),
        before=before,
        after=after,
        at=at,
    )
    return True


def _same(a: datetime, b: datetime) -> bool:
    if a.tzinfo is None:  # SQLite may hand back naive UTC
        a = a.replace(tzinfo=b.tzinfo)
    return abs(a - b) < timedelta(seconds=1)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _subject(incident: Incident) -> str:
    scope = f" {incident.dim}={incident.dim_value}" if incident.dim else ""
    return f"{incident.kpi_key}{scope} #{incident.id}"


def moment(at: datetime | None, tz: ZoneInfo) -> str:
    if at is None:
        return "—"
    local = at.astimezone(tz)
    return f"{local.day} {local:%b %Y %H:%M}"


def view(incident: Incident, alert: Alert, kpi: KpiDef, tz: ZoneInfo, period: str) -> dict:
    """What the alert message shows, formatted."""
    unit = unit_of(kpi)
    target = kpi.target_for(((incident.dim, incident.dim_value),) if incident.dim else ())
    resolved = incident.resolved_at is not None
    state = "ok" if resolved else incident.state
    return {
        "key": kpi.key,
        "name": kpi.kpi.name,
        "scope": f"{incident.dim}={incident.dim_value}" if incident.dim else "",
        "state": state,
        "emoji": STATUS_EMOJI[STATE_STATUS[state]],
        "state_word": STATE_WORDS[state],
        "value": fmt(alert.value, unit),
        "target": target_line(target, kpi) or "no target",
        "off_by": _off_by(alert.value, target.target if target else None, unit, kpi.kpi.better),
        "period": period,
        "since": moment(incident.opened_at, tz),
        "owner": incident.owner or kpi.kpi.owner,
        "resolved": resolved,
        "resolved_at": moment(incident.resolved_at, tz),
        "acknowledged_by": incident.acknowledged_by,
        "snoozed_until": moment(incident.snoozed_until, tz) if incident.snoozed_until else "",
        "incident": str(incident.id),
    }


def _off_by(value: float | None, target: float | None, unit: str, better: str) -> str:
    if value is None or target is None:
        return ""
    gap = value - target if better == "lower" else target - value
    if gap <= 0:
        return ""
    side = "over" if better == "lower" else "under"
    if unit == "%":  # percentage points; a percentage of a percentage would only confuse
        return f"{fmt(gap, unit).removesuffix(' %')} pp {side} target"
    percent = f" ({gap / abs(target) * 100:.0f} %)" if target else ""
    return f"{fmt(gap, unit)} {side} target{percent}"
