from types import SimpleNamespace

import pytest

from kpi.formatting import fmt, fmt_change, fmt_delta
from kpi.values import Change
from kpi.views import change_line


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (42.345, "days", "42.3 days"),
        (5.26, "hours", "5.3 hours"),
        (1.2345, "%", "1.23 %"),
        (1234.4, "EUR", "€1,234"),
        (-43.2, "EUR", "−€43"),
        (1234567, "SEK", "1,234,567 SEK"),
        (0.823, "×", "0.82×"),
        (3.0, "count", "3"),
        (4.126, "score", "4.13"),
        (-0.0001, "%", "0.00 %"),
        (None, "days", "—"),
        (float("nan"), "days", "—"),
        # Halves round away from zero, as people do (Python's round() goes to even).
        (178.25, "days", "178.3 days"),
        (250.5, "count", "251"),
        (-250.5, "count", "−251"),
        (1234.5, "EUR", "€1,235"),
        (2.675, "%", "2.68 %"),  # as written, though its double is 2.67499…
        (1e20, "count", "100,000,000,000,000,000,000"),
        (-0.000004, "%", "0.00 %"),  # not −0.00, nor a bare 0
        (0.625, "×", "0.63×"),
        # A count is whole, but a fraction of one is not rounded to 0.
        (6 / 31, "count", "0.19"),
        (5 / 7, "count", "0.71"),
        (155 / 7, "count", "22.1"),
        (235.7, "count", "236"),
    ],
)
def test_values_carry_their_units_and_sensible_rounding(value, unit, expected):
    assert fmt(value, unit) == expected


def test_deltas_carry_a_sign():
    assert fmt_delta(2.14, "days") == "+2.1 days"
    assert fmt_delta(-2.14, "days") == "−2.1 days"
    assert fmt_delta(-12, "EUR") == "−€12"


@pytest.mark.parametrize(
    ("delta", "unit", "expected"),
    [
        (8.66, "days", "▲ +8.7 days"),
        (-2.14, "days", "▼ −2.1 days"),
        # A % KPI moves in percentage points: 12.50 % → 11.30 % is 1.20 points down.
        (11.30 - 12.50, "%", "▼ −1.20 pp"),
        (0.25, "%", "▲ +0.25 pp"),
        (-12, "EUR", "▼ −€12"),
        # What rounds to zero at the unit's precision is no change, not "▲ +0.00 %".
        (0.004, "%", "▶ no change"),
        (-0.04, "days", "▶ no change"),
        (0.4, "EUR", "▶ no change"),
        (0.0, "count", "▶ no change"),
        (3.0, "count", "▲ +3"),
        (0.06, "count", "▲ +0.06"),  # 4/30 → 6/31 errors a day: a rise, not "no change"
    ],
)
def test_changes_show_direction_and_size(delta, unit, expected):
    assert fmt_change(delta, unit) == expected


def _item(unit: str, change: Change) -> SimpleNamespace:
    """What change_line reads of an evaluated KPI: its unit and its change."""
    return SimpleNamespace(kpi=SimpleNamespace(kpi=SimpleNamespace(unit=unit), measures={}),
                           change=change)  # fmt: skip


@pytest.mark.parametrize(
    ("unit", "change", "expected"),
    [
        ("days", Change(2.1, 4.73, False), "▲ +2.1 days (+4.73 %) vs last week · worse"),
        # 12.50 % → 11.30 %: points, and no relative change (−9.60 %) beside them.
        ("%", Change(-1.2, -9.6, True), "▼ −1.20 pp vs last week · better"),
        ("days", Change(0.01, 0.02, False), "▶ no change vs last week"),
    ],
)
def test_change_lines(unit, change, expected):
    assert change_line(_item(unit, change), "last week") == expected
