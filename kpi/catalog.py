"""The KPI catalog as YAML: validated whole before anything is written, then merged."""

import re
from datetime import date, datetime
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    field_validator,
)
from sqlmodel import Session, select

from kpi import store
from kpi.errors import ConfigError
from kpi.formulas import FormulaError, parse_formula
from kpi.models import Kpi, Measure, Target
from kpi.query import name_phrase

BUILTIN = files("kpi") / "catalog.yaml"
AGGREGATIONS = Literal["sum", "avg", "last", "min", "max"]
CADENCES = Literal["day", "week", "month", "quarter"]


def _hours(value: Any) -> Any:
    """`24h`, `1d`, `90m` or a number of hours."""
    if isinstance(value, str) and value[-1:] in "hdm" and value[:-1].replace(".", "").isdigit():
        return float(value[:-1]) * {"h": 1, "d": 24, "m": 1 / 60}[value[-1]]
    return value


def _visibility(value: Any) -> Any:
    if value == "public":
        return []
    return [value] if isinstance(value, str) else value


# Slack ids a visibility list may hold: public and private channels, user groups.
_AUDIENCE_ID = re.compile(r"[CGS][A-Z0-9]+")


def _audience_ids(value: list[str]) -> list[str]:
    for item in value:
        if not _AUDIENCE_ID.fullmatch(item):
            raise ValueError(
                f"{item!r} is not a channel or user-group id (C…, G… or S…); "
                "write public or a list of ids"
            )
    return value


def _no_bool(value: Any) -> Any:
    """YAML's `true` is not a number (pydantic's lax mode would read it as 1)."""
    if isinstance(value, bool):
        raise ValueError("Input should be a number, not true or false")
    return value


Number = Annotated[float, BeforeValidator(_no_bool)]


class _YamlLoader(yaml.SafeLoader):
    """YAML without implicit dates: a date stays text for pydantic, so a bad one (2027-13-45)
    is named by its path instead of failing the whole file."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, allow_inf_nan=False)


class MeasureSpec(Strict):
    over_time: AGGREGATIONS | None = None
    across: AGGREGATIONS | None = None
    unit: str | None = None
    description: str | None = None


class TargetSpec(Strict):
    target: Number
    warn: Number | None = None
    due: date | None = None


class KpiSpec(Strict):
    name: str | None = None
    area: str | None = None
    aliases: list[str] | None = None
    description: str | None = None
    formula: str | None = None
    unit: str | None = None
    better: Literal["lower", "higher"] | None = None
    cadence: CADENCES | None = None
    target: Number | None = None
    warn: Number | None = None
    due: date | None = None
    owner: str | None = None
    channel: str | None = None
    visibility: (
        Annotated[list[str], BeforeValidator(_visibility), AfterValidator(_audience_ids)] | None
    ) = None
    alert_by: str | None = None
    renotify: Annotated[float, BeforeValidator(_hours)] | None = None
    source: str | None = None
    targets: dict[str, TargetSpec] | None = None  # per dimension value: {"branch=Berlin": {...}}

    @field_validator("targets")
    @classmethod
    def dimension_keys(cls, value: dict[str, TargetSpec] | None) -> dict[str, TargetSpec] | None:
        for key in value or {}:
            dim, _, dim_value = key.partition("=")
            if not dim.strip() or not dim_value.strip():
                raise ValueError(f"write dimension targets as dim=value, not {key!r}")
        return value


class CatalogSpec(Strict):
    measures: dict[str, MeasureSpec] = {}
    kpis: dict[str, KpiSpec] = {}


def read_spec(path: Path | str) -> CatalogSpec:
    try:
        raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_YamlLoader) or {}
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
    return parse_spec(raw)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """`line 3, column 7: expected ',' or '}', but got '<stream end>'`, in one line."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def parse_spec(raw: object) -> CatalogSpec:
    try:
        return CatalogSpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError("\n".join(_problem(e) for e in error.errors())) from None


def _problem(error: Any) -> str:
    path = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif error["type"] in ("model_type", "dict_type"):  # not "instance of KpiSpec"
        message = "should be a mapping of fields (`name: value` lines)"
    return f"{path or 'the file'}: {message}"


def warn_problem(better: str, target: float, warn: float | None) -> str | None:
    """Why `warn` cannot end the at-risk band of `target`, or None: the band runs from the
    target towards worse values, so warn lies above it where lower is better, below it where
    higher is better."""
    if warn is None or warn == target or (warn > target) == (better == "lower"):
        return None
    side, way = ("below", "up") if better == "lower" else ("above", "down")
    return (
        f"warn {warn:g} is {side} the target {target:g}; {better} is better, so the at-risk "
        f"band runs from the target {way} to warn"
    )


def check(spec: CatalogSpec, session: Session) -> None:
    """What needs the store: formulas over known measures, required fields of new KPIs, warn
    values on the worse side of their targets."""
    existing_measures = {m.name: m for m in session.exec(select(Measure))}
    measures = set(existing_measures) | set(spec.measures)
    existing_kpis = {k.key: k for k in session.exec(select(Kpi))}
    problems: list[str] = []
    for name, m in spec.measures.items():
        if name not in existing_measures and m.over_time is None:
            problems.append(f"measures.{name}.over_time: required for a new measure")
    for key, k in spec.kpis.items():
        for field in ("name", "formula"):
            if key not in existing_kpis and getattr(k, field) is None:
                problems.append(f"kpis.{key}.{field}: required for a new KPI")
        if k.formula is not None:
            try:
                parse_formula(k.formula, sorted(measures))
            except FormulaError as error:
                problems.append(f"kpis.{key}.formula: {error}")
        problems += _warn_problems(key, k, existing_kpis.get(key), session)
        problems += _name_problems(key, k, set(existing_kpis) | set(spec.kpis))
    if problems:
        raise ConfigError("\n".join(problems))


def _name_problems(key: str, spec: KpiSpec, keys: set[str]) -> list[str]:
    """A name or alias that spells another KPI's key could never be asked for: a key always
    means its own KPI."""
    spelt = {name_phrase(other): other for other in keys if other != key}
    named = [("name", spec.name)] if spec.name else []
    named += [(f"aliases[{i}]", alias) for i, alias in enumerate(spec.aliases or [])]
    return [
        f"kpis.{key}.{path}: {text!r} is the key of another KPI ({spelt[name_phrase(text)]})"
        for path, text in named
        if name_phrase(text) in spelt
    ]


def _warn_problems(key: str, spec: KpiSpec, row: Kpi | None, session: Session) -> list[str]:
    better = spec.better or _better(session, key)
    given = {"": spec} if spec.warn is not None else {}
    given |= {f"targets.{d}.": t for d, t in (spec.targets or {}).items() if t.warn is not None}
    problems = []
    for path, t in given.items():
        target = t.target
        if target is None:  # `dso: {warn: 60}` moves the band of the stored target
            stored = store.get_target(session=session, kpi_key=key) if row is not None else None
            target = stored.target if stored is not None else None
        problem = warn_problem(better, target, t.warn) if target is not None else None
        if problem:
            problems.append(f"kpis.{key}.{path}warn: {problem}")
    return problems


def apply(spec: CatalogSpec, session: Session, *, actor: str, now: datetime) -> dict[str, int]:
    """Merge: add what is new, update only the given fields, never drop. Caller commits."""
    check(spec, session)
    counts = {"measures": 0, "kpis": 0, "targets": 0}
    for name, m in spec.measures.items():
        counts["measures"] += _merge_measure(session, name, m)
    session.flush()
    for key, k in spec.kpis.items():
        counts["kpis"] += _merge_kpi(session, key, k)
        session.flush()
        counts["targets"] += _merge_targets(session, key, k, actor=actor, now=now)
    store.bump_generation(session=session)
    return counts


def _merge_measure(session: Session, name: str, spec: MeasureSpec) -> int:
    given = spec.model_dump(exclude_none=True)
    row = session.get(Measure, name)
    if row is None:
        session.add(Measure(name=name, **given))
        return 1
    changed = any(getattr(row, f) != v for f, v in given.items())
    row.sqlmodel_update(given)
    return int(changed)


KPI_FIELDS = (
    "name",
    "area",
    "aliases",
    "description",
    "formula",
    "unit",
    "better",
    "cadence",
    "owner",
    "channel",
    "visibility",
    "alert_by",
    "source",
)


def _merge_kpi(session: Session, key: str, spec: KpiSpec) -> int:
    given = {f: getattr(spec, f) for f in KPI_FIELDS if getattr(spec, f) is not None}
    if spec.renotify is not None:
        given["renotify_hours"] = spec.renotify
    row = session.get(Kpi, key)
    if row is None:
        session.add(Kpi(key=key, **given))
        return 1
    changed = any(getattr(row, f) != v for f, v in given.items())
    row.sqlmodel_update(given)
    return int(changed)


def _merge_targets(session: Session, key: str, spec: KpiSpec, *, actor: str, now: datetime) -> int:
    changes = 0
    if spec.target is not None or spec.warn is not None or spec.due is not None:
        given = {"target": spec.target, "warn": spec.warn, "due": spec.due}
        changes += set_target(session, key, "", "", given, actor=actor, now=now)
    for dim_key, t in (spec.targets or {}).items():
        dim, _, value = (part.strip() for part in dim_key.partition("="))
        given = t.model_dump()
        changes += set_target(session, key, dim, value, given, actor=actor, now=now)
    return changes


def set_target(
    session: Session, key: str, dim: str, value: str, given: dict, *, actor: str, now: datetime
) -> int:
    current = store.get_target(session=session, kpi_key=key, dim=dim, dim_value=value)
    fields = {f: v for f, v in given.items() if v is not None}
    if current is None and "target" not in fields:
        raise ConfigError(f"kpis.{key}.target: give a target before a warn band or due date")
    before = store.target_dict(current)
    if current is None:
        current = Target(kpi_key=key, dim=dim, dim_value=value, **fields)
        session.add(current)
    else:
        current.sqlmodel_update(fields)
        # A band kept from before that now lies on the better side of a moved target bounds
        # nothing: it goes (a warn given with the target was checked before).
        if "warn" not in fields and warn_problem(
            _better(session, key), current.target, current.warn
        ):
            current.warn = None
    after = store.target_dict(current)
    if before == after:
        return 0
    subject = key if not dim else f"{key} {dim}={value}"
    store.audit(
        session=session,
        actor=actor,
        action="target.set",
        subject=subject,
        before=before,
        after=after,
        at=now,
    )
    return 1


def _better(session: Session, key: str) -> str:
    row = session.get(Kpi, key)
    return row.better if row is not None else Kpi.model_fields["better"].default


def load_builtin_if_empty(session: Session, *, now: datetime) -> bool:
    """A new store starts with the built-in catalog, so `kpibot demo` and `/kpi` work at once."""
    if session.exec(select(Kpi).limit(1)).first() is not None:
        return False
    apply(read_spec(Path(str(BUILTIN))), session, actor="kpibot", now=now)
    return True
