import pytest

from kpi.formulas import FormulaError, parse_formula

MEASURES = ["ar_balance", "credit_sales", "errors", "transactions"]


@pytest.mark.parametrize(
    ("text", "values", "days", "expected"),
    [
        # 400,000 / 200,000 × 31 = 62.0
        (
            "ar_balance / credit_sales * days",
            {"ar_balance": 400e3, "credit_sales": 200e3},
            31,
            62.0,
        ),
        # 3 / 150 × 100 = 2.0
        ("errors / transactions * 100", {"errors": 3, "transactions": 150}, 30, 2.0),
        ("max(errors, 5) - 1", {"errors": 3}, 30, 4.0),
        ("-errors", {"errors": 3}, 30, -3.0),
        ("errors / transactions", {"errors": 3, "transactions": 0}, 30, None),
        ("errors / transactions", {"errors": 0, "transactions": 0}, 30, None),
        ("errors / transactions", {"errors": 1, "transactions": None}, 30, None),
        ("errors / transactions", {"errors": 1}, 30, None),
    ],
)
def test_evaluate(text, values, days, expected):
    assert parse_formula(text, MEASURES).evaluate(values, days) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ar_balanse / credit_sales", "unknown measure 'ar_balanse' (did you mean 'ar_balance'?)"),
        ("__import__('os').system('x')", "only"),
        ("errors.real", "only + − × ÷"),
        ("errors if errors else 1", "only + − × ÷"),
        ("'text'", "only numbers"),
        ("errors ** 99999", "only + − × ÷"),
        ("lambda: 1", "only + − × ÷"),
        ("[errors]", "only + − × ÷"),
        ("days * 2", "at least one measure"),
        ("errors /", "not a formula"),
        ("open(errors)", "only these functions"),
        # simpleeval would raise at every answer (and break /kpi list for everyone).
        ("min(errors)", "min() takes 2 or more arguments, not 1"),
        ("max()", "max() takes 2 or more arguments, not 0"),
        ("abs(errors, 2)", "abs() takes 1 argument, not 2"),
        ("min(*errors)", "plain arguments only"),
    ],
)
def test_rejects_anything_but_arithmetic_over_measures(text, message):
    with pytest.raises(FormulaError) as caught:
        parse_formula(text, MEASURES)
    assert message in str(caught.value)


def test_measures_are_listed_once_in_order_of_appearance():
    assert parse_formula("errors / transactions + errors", MEASURES).measures == (
        "errors",
        "transactions",
    )


def test_explain_writes_out_the_inputs():
    formula = parse_formula("ar_balance / credit_sales * days", MEASURES)
    labels = {"ar_balance": "receivables 400,000", "credit_sales": "credit sales 200,000"}
    assert formula.explain(labels.__getitem__, 31) == (
        "receivables 400,000 ÷ credit sales 200,000 × 31 days"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(1 - errors / transactions) * 100", "(1 − E ÷ T) × 100"),
        ("errors - (transactions - errors)", "E − (T − E)"),
        ("errors - transactions - errors", "E − T − E"),
        ("errors / (transactions * 2)", "E ÷ (T × 2)"),
        ("errors * transactions / 2", "E × T ÷ 2"),
        ("-(errors + transactions)", "−(E + T)"),
        ("+errors", "E"),
        ("max(errors, transactions) / 2", "max(E, T) ÷ 2"),
    ],
)
def test_explain_brackets_what_its_reading_needs(text, expected):
    labels = {"errors": "E", "transactions": "T"}
    assert parse_formula(text, MEASURES).explain(labels.__getitem__, 31) == expected
