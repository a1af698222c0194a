from datetime import UTC, datetime

import pytest
from sqlmodel import select

from kpi import catalog
from kpi.errors import ConfigError
from kpi.models import AuditLog, Kpi, Measure, Target

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def load(engine, raw):
    from kpi.db import session_scope

    with session_scope(engine) as session:
        return catalog.apply(catalog.parse_spec(raw), session, actor="U1", now=NOW)


def rows(engine, model):
    from kpi.db import session_scope

    with session_scope(engine) as session:
        return list(session.exec(select(model)))


def test_builtin_catalog_has_the_fifteen_kpis_of_the_product(catalog_engine):
    keys = {k.key for k in rows(catalog_engine, Kpi)}
    assert keys == {
        "dso", "ap_turnover", "invoice_processing_time", "finance_error_rate", "time_to_hire",
        "employee_turnover_rate", "employee_satisfaction", "training_cost_per_employee",
        "system_uptime", "incident_response_time", "helpdesk_resolution_time",
        "security_incidents", "support_cost_ratio", "cost_per_transaction",
        "back_office_complaints",
    }  # fmt: skip
    for kpi in rows(catalog_engine, Kpi):
        assert kpi.name and kpi.description and kpi.aliases and kpi.source, kpi.key
        assert kpi.better in ("lower", "higher") and kpi.cadence in (
            "day",
            "week",
            "month",
            "quarter",
        )
    assert len(rows(catalog_engine, Target)) == 15


def test_builtin_catalog_loads_only_into_an_empty_store(catalog_engine):
    from kpi.db import session_scope

    with session_scope(catalog_engine) as session:
        assert catalog.load_builtin_if_empty(session, now=NOW) is False


def test_aggregation_rules_follow_the_product(catalog_engine):
    measures = {m.name: m for m in rows(catalog_engine, Measure)}
    assert measures["ar_balance"].over_time == "last"
    assert measures["headcount"].over_time == "avg" and measures["headcount"].across == "sum"
    assert measures["satisfaction_score"].across == "avg"
    assert measures["credit_sales"].over_time == "sum"


def test_an_entry_for_an_existing_kpi_changes_only_the_fields_it_gives(catalog_engine):
    counts = load(catalog_engine, {"kpis": {"dso": {"target": 40}}})
    assert counts == {"measures": 0, "kpis": 0, "targets": 1}
    dso = next(k for k in rows(catalog_engine, Kpi) if k.key == "dso")
    assert (
        dso.name == "Days Sales Outstanding" and dso.formula == "ar_balance / credit_sales * days"
    )
    target = next(t for t in rows(catalog_engine, Target) if t.kpi_key == "dso")
    assert (target.target, target.warn) == (40, 55)


def test_a_warn_on_the_better_side_of_its_target_is_named_and_nothing_is_written(
    catalog_engine,
):
    raw = {
        "kpis": {
            "dso": {"target": 40, "warn": 30},  # lower is better: the band lies above 40
            "system_uptime": {"warn": 99.95},  # higher is better: below the stored 99.9
            "security_incidents": {"targets": {"branch=Berlin": {"target": 2, "warn": 1}}},
            "finance_error_rate": {"target": 1, "warn": 1.5},  # a band where it belongs
        }
    }
    with pytest.raises(ConfigError) as caught:
        load(catalog_engine, raw)
    assert str(caught.value).splitlines() == [
        "kpis.dso.warn: warn 30 is below the target 40; lower is better, so the at-risk band "
        "runs from the target up to warn",
        "kpis.system_uptime.warn: warn 99.95 is above the target 99.9; higher is better, so the "
        "at-risk band runs from the target down to warn",
        "kpis.security_incidents.targets.branch=Berlin.warn: warn 1 is below the target 2; lower "
        "is better, so the at-risk band runs from the target up to warn",
    ]
    assert {(t.kpi_key, t.target, t.warn) for t in rows(catalog_engine, Target)} >= {
        ("dso", 45, 55),
        ("finance_error_rate", 1, 2),
    }


def test_values_yaml_or_pydantic_would_take_wrongly_are_named_by_their_path(
    catalog_engine, tmp_path
):
    """A bad date failed the whole parse; NaN reached the database; `true` became a target of
    1; a word as visibility hid the KPI from everyone."""
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "kpis:\n"
        "  dso: {due: 2027-13-45, target: .nan}\n"
        "  system_uptime: {target: true, warn: .inf}\n"
        "  security_incidents: {visibility: secret}\n"
        "  back_office_complaints: {visibility: [C0FIN, hr team]}\n"
        "  finance_error_rate: {due: 2027-06-30, visibility: [C0FIN, S0HR]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        catalog.read_spec(path)
    lines = str(caught.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "kpis.dso.target",
        "kpis.dso.due",
        "kpis.system_uptime.target",
        "kpis.system_uptime.warn",
        "kpis.security_incidents.visibility",
        "kpis.back_office_complaints.visibility",
    ]
    assert "finite number" in lines[0] and "not true or false" in lines[2]
    assert "'secret' is not a channel or user-group id" in lines[4]
    path.write_text("kpis:\n  dso: {due: 2027-06-30, visibility: [C0FIN, S0HR]}\n")
    spec = catalog.read_spec(path)
    assert spec.kpis["dso"].due.isoformat() == "2027-06-30"
    assert spec.kpis["dso"].visibility == ["C0FIN", "S0HR"]


def test_a_target_moved_past_its_band_drops_the_band(catalog_engine):
    """dso is 45 with a band up to 55: a target of 60 leaves 55 on its better side, where it
    would bound nothing."""
    load(catalog_engine, {"kpis": {"dso": {"target": 60}}})
    target = next(t for t in rows(catalog_engine, Target) if t.kpi_key == "dso")
    assert (target.target, target.warn) == (60, None)
    entry = [a for a in rows(catalog_engine, AuditLog) if a.subject == "dso"][-1]
    assert entry.after == {"target": 60.0, "warn": None, "due": None}


def test_a_target_change_is_audited_with_before_and_after(catalog_engine):
    load(catalog_engine, {"kpis": {"dso": {"target": 40, "due": "2027-06-30"}}})
    entry = [a for a in rows(catalog_engine, AuditLog) if a.subject == "dso"][-1]
    assert entry.actor == "U1" and entry.action == "target.set"
    assert entry.before == {"target": 45.0, "warn": 55.0, "due": None}
    assert entry.after == {"target": 40.0, "warn": 55.0, "due": "2027-06-30"}


def test_reloading_the_same_entry_changes_nothing_and_audits_nothing(catalog_engine):
    load(catalog_engine, {"kpis": {"dso": {"target": 40}}})
    before = len(rows(catalog_engine, AuditLog))
    assert load(catalog_engine, {"kpis": {"dso": {"target": 40}}})["targets"] == 0
    assert len(rows(catalog_engine, AuditLog)) == before


def test_new_measures_and_kpis_are_added_and_nothing_is_dropped(catalog_engine):
    load(catalog_engine, {
        "measures": {"refunds": {"over_time": "sum", "unit": "EUR"}},
        "kpis": {"refund_rate": {"name": "Refund rate", "formula": "refunds / revenue * 100",
                                 "unit": "%", "targets": {"branch=Berlin": {"target": 2}}}},
    })  # fmt: skip
    assert len(rows(catalog_engine, Kpi)) == 16
    berlin = [t for t in rows(catalog_engine, Target) if t.kpi_key == "refund_rate"]
    assert [(t.dim, t.dim_value, t.target) for t in berlin] == [("branch", "Berlin", 2.0)]


def test_every_problem_is_named_by_its_yaml_path_and_nothing_is_written(catalog_engine):
    raw = {
        "measures": {"x": {"over_time": "median"}},
        "kpis": {
            "dso": {"formula": "ar_balanse / credit_sales", "better": "up", "target": "high"},
            "fresh": {"cadence": "yearly", "colour": "red"},
        },
    }
    with pytest.raises(ConfigError) as caught:
        load(catalog_engine, raw)
    message = str(caught.value)
    assert "measures.x.over_time:" in message
    assert "kpis.dso.better:" in message and "kpis.dso.target:" in message
    assert "kpis.fresh.cadence:" in message and "kpis.fresh.colour: unknown field" in message
    assert len(rows(catalog_engine, Measure)) == 25


def test_unknown_measure_in_a_formula_suggests_the_closest(catalog_engine):
    with pytest.raises(ConfigError) as caught:
        load(catalog_engine, {"kpis": {"dso": {"formula": "ar_balanse / credit_sales * days"}}})
    assert str(caught.value) == (
        "kpis.dso.formula: unknown measure 'ar_balanse' (did you mean 'ar_balance'?)"
    )


def test_a_new_kpi_needs_a_name_and_a_formula(catalog_engine):
    with pytest.raises(ConfigError) as caught:
        load(catalog_engine, {"kpis": {"fresh": {"unit": "%"}}})
    assert "kpis.fresh.name: required" in str(caught.value)
    assert "kpis.fresh.formula: required" in str(caught.value)


def test_visibility_public_or_a_list_and_renotify_in_hours(catalog_engine):
    load(
        catalog_engine,
        {
            "kpis": {
                "dso": {"visibility": ["C1", "S1"], "renotify": "2d"},
                "ap_turnover": {"visibility": "public"},
            }
        },
    )
    kpis = {k.key: k for k in rows(catalog_engine, Kpi)}
    assert kpis["dso"].visibility == ["C1", "S1"] and kpis["dso"].renotify_hours == 48
    assert kpis["ap_turnover"].visibility == []


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("kpis: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        catalog.read_spec(path)


def test_a_stored_formula_a_later_check_refuses_leaves_out_that_kpi_only(catalog_engine, caplog):
    from sqlalchemy import text

    from kpi.db import session_scope
    from kpi.values import load_catalog

    with session_scope(catalog_engine) as session:  # as an older kpibot could have stored it
        session.exec(text("UPDATE kpi SET formula = 'min(finance_errors)' WHERE key = 'dso'"))
    with session_scope(catalog_engine) as session:
        kpis = load_catalog(session).kpis
    assert "dso" not in kpis and len(kpis) == 14
    assert "KPI dso left out: min() takes 2 or more arguments" in caplog.text


def test_a_name_or_alias_that_spells_another_kpis_key_is_refused(catalog_engine):
    raw = {
        "kpis": {
            "other_rate": {"name": "Other rate", "aliases": ["error rate", "DSO"],
                           "formula": "finance_errors"},
            "newarea": {"name": "Finance Error Rate", "formula": "finance_errors"},
        }
    }  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        load(catalog_engine, raw)
    assert str(caught.value).splitlines() == [
        "kpis.other_rate.aliases[1]: 'DSO' is the key of another KPI (dso)",
        "kpis.newarea.name: 'Finance Error Rate' is the key of another KPI (finance_error_rate)",
    ]
    assert "other_rate" not in {k.key for k in rows(catalog_engine, Kpi)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "kpis: {dso: {target: 4",
            "bad.yaml: not valid YAML: line 1, column 23: expected ',' or '}'",
        ),
        ("- dso\n", "the file: should be a mapping of fields"),
        ("measures: {bar: 5}\n", "measures.bar: should be a mapping of fields"),
        ("kpis: {dso: null}\n", "kpis.dso: should be a mapping of fields"),
    ],
)
def test_a_file_of_the_wrong_shape_is_named_in_words_not_class_names(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        catalog.read_spec(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert "Spec" not in str(caught.value)
