"""Store queries with a keyword-only session; none commit (the caller owns the transaction)."""

from datetime import datetime

from sqlmodel import Session, select

from kpi.models import AuditLog, Kpi, Measure, Meta, Target


def get_target(
    *, session: Session, kpi_key: str, dim: str = "", dim_value: str = ""
) -> Target | None:
    query = select(Target).where(
        Target.kpi_key == kpi_key, Target.dim == dim, Target.dim_value == dim_value
    )
    return session.exec(query).first()


def targets_of(*, session: Session, kpi_key: str) -> list[Target]:
    return list(session.exec(select(Target).where(Target.kpi_key == kpi_key)))


def target_dict(target: Target | None) -> dict | None:
    if target is None:
        return None
    due = target.due.isoformat() if target.due else None
    return {"target": target.target, "warn": target.warn, "due": due}


def all_kpis(*, session: Session) -> list[Kpi]:
    return list(session.exec(select(Kpi).order_by(Kpi.area, Kpi.key)))


def all_measures(*, session: Session) -> dict[str, Measure]:
    return {m.name: m for m in session.exec(select(Measure))}


def audit(
    *,
    session: Session,
    actor: str,
    action: str,
    subject: str,
    before: dict | None,
    after: dict | None,
    at: datetime,
) -> None:
    session.add(
        AuditLog(at=at, actor=actor, action=action, subject=subject, before=before, after=after)
    )


GENERATION = "generation"


def generation(*, session: Session) -> str:
    """Changes whenever data, targets or the catalog change: the key of every cached answer."""
    row = session.get(Meta, GENERATION)
    return row.value if row else "0"


def bump_generation(*, session: Session) -> None:
    row = session.get(Meta, GENERATION)
    if row is None:
        session.add(Meta(key=GENERATION, value="1"))
    else:
        row.value = str(int(row.value) + 1)
