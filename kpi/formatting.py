"""Numbers as people read them: units, sensible rounding, thousands separators."""

import math
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}
DECIMALS = {"days": 1, "hours": 1, "%": 2, "×": 2, "score": 2, "count": 0}
STATUS_EMOJI = {
    "on_target": ":large_green_circle:",
    "at_risk": ":large_yellow_circle:",
    "off_target": ":red_circle:",
    "no_target": ":heavy_minus_sign:",
    "no_data": ":white_circle:",
}
STATUS_WORDS = {
    "on_target": "on target",
    "at_risk": "at risk",
    "off_target": "off target",
    "no_target": "no target",
    "no_data": "no data",
}


def is_currency(unit: str) -> bool:
    return len(unit) == 3 and unit.isalpha() and unit.isupper()


def rounded(value: float, decimals: int) -> Decimal:
    """Halves away from zero, as people round (178.25 days → 178.3, 2.5 → 3), from the number
    as it is written (2.675 → 2.68, though its binary double is a hair below)."""
    return Decimal(repr(value)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def number(value: float, decimals: int) -> str:
    text = f"{rounded(value, decimals):,.{decimals}f}"
    if text.startswith("-") and not text.strip("-0.,"):  # −0.000004 % is 0.00 %, not −0.00
        text = text[1:]
    return text.replace("-", "−")


def decimals_of(value: float, unit: str) -> int:
    """The unit's precision; a count is whole, but a fraction of one (0.19 errors a day, a
    target of 5 a week pro-rated to 0.71 a day) keeps what tells it from 0."""
    if is_currency(unit):
        return 0
    if unit != "count" or float(value).is_integer() or abs(value) >= 100:
        return DECIMALS.get(unit, 2)
    return 1 if abs(value) >= 10 else 2


def fmt(value: float | None, unit: str) -> str:
    """`42.3 days`, `1.25 %`, `€1,234`, `0.82×`, `3`; `—` when there is no value."""
    if value is None or not math.isfinite(value):
        return "—"
    if is_currency(unit):
        symbol = CURRENCY_SYMBOLS.get(unit)
        amount = number(abs(value), 0)
        sign = "−" if value < 0 and amount != "0" else ""
        return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {unit}"
    text = number(value, decimals_of(value, unit))
    if unit in ("%", "×"):
        return f"{text}{unit}" if unit == "×" else f"{text} %"
    if unit in ("count", "score", ""):
        return text
    return f"{text} {unit}"


def fmt_delta(delta: float, unit: str) -> str:
    sign = "+" if delta > 0 else ""
    return sign + fmt(delta, unit) if delta >= 0 else fmt(delta, unit)


def arrow(delta: float) -> str:
    return "▲" if delta > 0 else "▼" if delta < 0 else "▶"


def rounds_to_zero(delta: float, unit: str) -> bool:
    """Whether a change shows as zero at the unit's precision (`+0.00 %` says nothing)."""
    return rounded(abs(delta), decimals_of(delta, unit)) == 0


def fmt_change(delta: float, unit: str) -> str:
    """`▲ +8.7 days`, `▼ −1.20 pp` (a % KPI moves in percentage points), `▶ no change`."""
    if rounds_to_zero(delta, unit):
        return "▶ no change"
    if unit == "%":
        return f"{arrow(delta)} {fmt_delta(delta, '%').removesuffix(' %')} pp"
    return f"{arrow(delta)} {fmt_delta(delta, unit)}"


def fmt_day(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


def fmt_input(value: float | None, unit: str) -> str:
    """A measure's aggregate in the "how it is computed" line: whole numbers unless small."""
    if value is None:
        return "—"
    if is_currency(unit):
        return fmt(value, unit)
    decimals = 0 if abs(value) >= 100 or float(value).is_integer() else 2
    return number(value, decimals)
