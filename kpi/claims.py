"""Exactly once through the database: claim a delivery's unique key before sending it.

`INSERT … ON CONFLICT DO NOTHING` makes one process the sender (rowcount 1). A claim whose
sender died before the message went out (no message ts, older than its lease) is taken over
with a compare-and-set on `claimed_at`, so two processes cannot both take it over either.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from kpi.models import Delivery

LEASE = timedelta(minutes=10)
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Claim:
    key: str
    attempt: int
    late: bool


def claim(
    session: Session,
    *,
    key: str,
    kind: str,
    channel: str,
    owner: str,
    now: datetime,
    late: bool = False,
    lease: timedelta = LEASE,
    payload: dict | None = None,
) -> Claim | None:
    """This process's claim on `key`, or None when another one holds it or it was sent."""
    values = {
        "key": key,
        "kind": kind,
        "channel": channel,
        "owner": owner,
        "claimed_at": now,
        "late": late,
        "state": "claimed",
        "attempts": 1,
        "error": "",
        "payload": payload,
    }
    dialect = session.get_bind().dialect.name
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(Delivery.__table__)
    statement = insert.values(**values).on_conflict_do_nothing(index_elements=["key"])
    # RETURNING tells both backends apart reliably: a row back means this process inserted it.
    inserted = session.connection().execute(statement.returning(Delivery.id)).first()
    if inserted is not None:
        return Claim(key, 1, late)
    return _take_over(session, key=key, owner=owner, now=now, lease=lease)


def _take_over(session: Session, *, key: str, owner: str, now: datetime, lease: timedelta):
    row = session.exec(select(Delivery).where(Delivery.key == key)).one()
    if row.message_ts is not None or row.state == "sent" or row.attempts >= MAX_ATTEMPTS:
        return None
    if row.state == "claimed" and row.claimed_at > now - lease:
        return None  # someone is (or may be) sending it right now
    taken = session.execute(
        update(Delivery)
        .where(
            Delivery.key == key,
            Delivery.claimed_at == row.claimed_at,
            Delivery.attempts == row.attempts,  # equal clocks must not let two take it over
        )
        .values(owner=owner, claimed_at=now, state="claimed", attempts=row.attempts + 1)
    )
    return Claim(key, row.attempts + 1, row.late) if taken.rowcount == 1 else None


def mark_sent(session: Session, *, key: str, ts: str, now: datetime) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.key == key)
        .values(state="sent", message_ts=ts, sent_at=now, error="")
    )


def mark_failed(session: Session, *, key: str, error: str, final: bool) -> None:
    """A failed send: taken over by the next pass unless `final` (then never retried)."""
    values = {"state": "failed", "error": error[:500]}
    if final:
        values["attempts"] = MAX_ATTEMPTS
    session.execute(update(Delivery).where(Delivery.key == key).values(**values))


def release(session: Session, *, key: str, error: str) -> bool:
    """A send that could not start for want of configuration (no channel to post to): the next
    pass tries again, and the wait uses up none of its attempts. True the first time for this
    reason (tell someone once)."""
    before = session.exec(select(Delivery.error).where(Delivery.key == key)).first()
    session.execute(
        update(Delivery)
        .where(Delivery.key == key)
        .values(state="failed", error=error[:500], attempts=Delivery.attempts - 1)
    )
    return before != error[:500]


def unsent(session: Session, *, kind: str) -> list:
    """(key, payload) of the deliveries of `kind` that never went out and may still be
    retried, oldest first. Rows, not ORM objects: a thousand alerts waiting for a channel are
    read on every pass."""
    query = select(Delivery.key, Delivery.payload).where(
        Delivery.kind == kind,
        Delivery.message_ts == None,  # noqa: E711
        Delivery.state != "sent",
        Delivery.attempts < MAX_ATTEMPTS,
    )
    return list(session.connection().execute(query.order_by(Delivery.id)))
