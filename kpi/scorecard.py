"""The weekly scorecard: every KPI a channel may see, latest complete period, status, change."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session

from kpi.aggregate import NO_SCOPE
from kpi.formatting import STATUS_WORDS, fmt
from kpi.periods import Period, current_period, period_of
from kpi.values import STATUSES, KpiDef, change_of, data_starts, status_of, values
from kpi.views import change_text, status_view, target_line, unit_of

SPARK_PERIODS = 8
MAX_LINES = 50
ORDER = ("off_target", "at_risk", "on_target", "no_target", "no_data")


@dataclass(frozen=True)
class Card:
    kpi: KpiDef
    period: Period
    status: str
    previous_status: str
    line: dict  # formatted values for the template
    spark: list[float | None]  # oldest first, the last is `period`

    @property
    def changed(self) -> bool:
        return self.previous_status != self.status and self.previous_status != "no_data"


def selected(kpis: Sequence[KpiDef], items: Sequence[str]) -> list[KpiDef]:
    """KPIs named by key or by area; all of them when nothing is named."""
    if not items:
        return list(kpis)
    wanted = {item.casefold() for item in items}
    return [k for k in kpis if k.key.casefold() in wanted or k.kpi.area.casefold() in wanted]


def card(session: Session, kpi: KpiDef, as_of: datetime, tz: ZoneInfo) -> Card:
    """One KPI's latest complete period of its cadence and the periods before it, one query."""
    period = current_period(kpi.kpi.cadence, as_of, tz)
    periods = [period]
    for _ in range(SPARK_PERIODS - 1):
        periods.insert(0, periods[0].previous())
    found = values(session, kpi, periods, NO_SCOPE, data_starts(session, kpi))
    spark = [found[(i, None)].value if (i, None) in found else None for i in range(len(periods))]
    now, before = spark[-1], spark[-2]
    target = kpi.target_for()
    better = kpi.kpi.better
    status = status_of(now, target, better)
    previous_status = status_of(before, target, better)
    change = change_of(now, before, better)
    line = {
        "key": kpi.key,
        "name": kpi.kpi.name,
        "area": kpi.kpi.area,
        "value": fmt(now, unit_of(kpi)),
        "target": target_line(target, kpi) or "no target",
        "change": change_text(change, unit_of(kpi)),
        "period": period.label,
        "was": STATUS_WORDS[previous_status],
    } | status_view(status)
    return Card(kpi, period, status, previous_status, line, spark)


def scorecard_view(cards: Sequence[Card], *, week: Period, late: bool) -> dict:
    counts = {s: sum(1 for c in cards if c.status == s) for s in ORDER}
    summary = " · ".join(f"{counts[s]} {STATUS_WORDS[s]}" for s in STATUSES if counts[s])
    shown = list(cards)[:MAX_LINES]
    areas: dict[str, list[dict]] = {}
    for c in shown:
        areas.setdefault(c.kpi.kpi.area, []).append(c.line)
    return {
        "week": week.label,
        "summary": summary or "no KPIs",
        "changed": [c.line for c in cards if c.changed][:10],
        "areas": [{"name": name, "kpis": lines} for name, lines in areas.items()],
        "more": max(0, len(cards) - MAX_LINES),
        "late": late,
    }


def digest_week(as_of: datetime, tz: ZoneInfo) -> Period:
    """The last complete ISO week as of the digest's moment, in the organisation's zone."""
    local = as_of.astimezone(tz).date()
    return period_of("week", local - timedelta(days=7))
