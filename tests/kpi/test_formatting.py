import pytest

from kpi.formatting import fmt, fmt_delta


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
        (-0.0001, "%", "0 %"),
        (None, "days", "—"),
        (float("nan"), "days", "—"),
    ],
)
def test_values_carry_their_units_and_sensible_rounding(value, unit, expected):
    assert fmt(value, unit) == expected


def test_deltas_carry_a_sign():
    assert fmt_delta(2.14, "days") == "+2.1 days"
    assert fmt_delta(-2.14, "days") == "−2.1 days"
    assert fmt_delta(-12, "EUR") == "−€12"
