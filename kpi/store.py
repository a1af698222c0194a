"""Store queries with a keyword-only session; none commit (the caller owns the transaction)."""

from datetime import datetime

from sqlalchemy import Connection
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
SUBSCRIPTIONS = "subscriptions"


def _counter(session: Session, key: str) -> str:
    row = session.get(Meta, key)
    return row.value if row else "0"


def _bump(session: Session, key: str) -> None:
    row = session.get(Meta, key)
    if row is None:
        session.add(Meta(key=key, value="1"))
    else:
        row.value = str(int(row.value) + 1)


def generation(*, session: Session) -> str:
    """Changes whenever data, targets or the catalog change: the key of every cached answer."""
    return _counter(session, GENERATION)


def bump_generation(*, session: Session) -> None:
    _bump(session, GENERATION)


def bump_generation_on(connection: Connection) -> None:
    """The same, inside a bare connection's transaction (the importer writes without the ORM)."""
    with Session(bind=connection) as session:
        bump_generation(session=session)
        session.flush()


def subscriptions_version(*, session: Session) -> str:
    """Changes whenever a subscription does, so every instance can rebuild its schedule."""
    return _counter(session, SUBSCRIPTIONS)


def bump_subscriptions(*, session: Session) -> None:
    _bump(session, SUBSCRIPTIONS)
