"""Plain, formatted values for the message templates: every number arrives with its unit."""

from collections.abc import Sequence
from dataclasses import dataclass

from kpi.formatting import (
    STATUS_EMOJI,
    STATUS_WORDS,
    fmt,
    fmt_change,
    fmt_day,
    fmt_delta,
    fmt_input,
    rounds_to_zero,
)
from kpi.models import Target
from kpi.periods import Period
from kpi.values import Change, Evaluated, KpiDef, target_over

TABLE_ROWS_PER_SECTION = 20
TABLE_MAX_ROWS = 100
LABEL_WIDTH = 24


def unit_of(kpi: KpiDef) -> str:
    """The KPI's unit; `currency` takes the currency of its first measure that has one."""
    unit = kpi.kpi.unit
    if unit == "currency":
        return next((m.unit for m in kpi.measures.values() if len(m.unit) == 3), "")
    return unit


def target_line(target: Target | None, kpi: KpiDef, period: Period | None = None) -> str | None:
    """`target 45.0 days · off target above 55.0 days`; over `period`, pro-rated where the KPI
    adds up over time, saying what it is per period of the cadence."""
    if target is None:
        return None
    unit = unit_of(kpi)
    over = target_over(target, kpi, period) if period is not None else target
    edge = "above" if kpi.kpi.better == "lower" else "below"
    parts = [f"target {fmt(over.target, unit)}"]
    if over.warn is not None:
        parts.append(f"off target {edge} {fmt(over.warn, unit)}")
    line = " · ".join(parts)
    if over is not target:
        line += f" ({fmt(target.target, unit)} a {kpi.kpi.cadence}, pro-rated)"
    return f"{line} · by {fmt_day(target.due)}" if target.due else line


def change_line(item: Evaluated, previous_label: str) -> str | None:
    change = item.change
    if change is None:
        starts = item.previous.starts
        if starts is not None:
            return f"▶ no comparison with {previous_label}: its data starts {fmt_day(starts)}"
        return None
    unit = unit_of(item.kpi)
    if rounds_to_zero(change.delta, unit):
        return f"▶ no change vs {previous_label}"
    # A % KPI's change is in percentage points; a relative change beside it would confuse.
    relative = change.percent is not None and unit != "%"
    percent = f" ({fmt_delta(change.percent, '%')})" if relative else ""
    verdict = {True: "better", False: "worse", None: "unchanged"}[change.better]
    return f"{fmt_change(change.delta, unit)}{percent} vs {previous_label} · {verdict}"


def how_line(item: Evaluated, measure_labels: dict[str, str]) -> str:
    inputs = item.value.inputs
    units = {name: m.unit for name, m in item.kpi.measures.items()}

    def describe(name: str) -> str:
        label = measure_labels.get(name, name.replace("_", " "))
        return f"{label} {fmt_input(inputs.get(name), units[name])}"

    return item.kpi.formula.explain(describe, item.value.days)


@dataclass(frozen=True)
class Line:
    label: str
    value: str
    status: str
    change: str


def table(lines: Sequence[Line]) -> tuple[list[str], int]:
    """Aligned rows in code-block chunks that fit a section, and how many were left out."""
    shown = list(lines[:TABLE_MAX_ROWS])
    width = min(max((len(x.label) for x in shown), default=0), LABEL_WIDTH)
    value_width = max((len(x.value) for x in shown), default=0)
    rows = [
        f"{_cut(x.label, width):<{width}}  {x.value:>{value_width}}  {x.status:<10}  {x.change}"
        for x in shown
    ]
    chunks = [
        "\n".join(rows[i : i + TABLE_ROWS_PER_SECTION])
        for i in range(0, len(rows), TABLE_ROWS_PER_SECTION)
    ]
    return chunks, len(lines) - len(shown)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def status_view(status: str) -> dict[str, str]:
    return {"status": status, "emoji": STATUS_EMOJI[status], "status_word": STATUS_WORDS[status]}


def short_change(item: Evaluated) -> str:
    return change_text(item.change, unit_of(item.kpi))


def change_text(change: Change | None, unit: str) -> str:
    """`▲ +8.7 days`; empty when there is nothing to compare with."""
    if change is None:
        return ""
    return fmt_change(change.delta, unit)
