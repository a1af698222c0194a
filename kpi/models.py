"""The store's tables. Timestamps are aware UTC (sqlmodel's UTCDateTime); `day`/`start` columns
are local calendar dates in the organisation's time zone, which is what periods are made of."""

from datetime import date, datetime

from sqlalchemy import JSON, BigInteger, Column, Index, PrimaryKeyConstraint, UniqueConstraint
from sqlmodel import Field, SQLModel


class Measure(SQLModel, table=True):
    name: str = Field(primary_key=True)
    over_time: str = "sum"  # sum | avg | last | min | max
    across: str = "sum"  # how series (dimension values) combine
    unit: str = ""
    description: str = ""


class Series(SQLModel, table=True):
    """One measure with one combination of dimension values (`dims` is canonical JSON)."""

    __table_args__ = (UniqueConstraint("measure", "dims"),)
    id: int | None = Field(default=None, primary_key=True)
    measure: str = Field(foreign_key="measure.name", index=True)
    dims: str = "{}"


class SeriesDim(SQLModel, table=True):
    __table_args__ = (
        PrimaryKeyConstraint("series_id", "dim"),
        Index("ix_seriesdim_dim_value", "dim", "value"),
    )
    series_id: int = Field(foreign_key="series.id")
    dim: str
    value: str


# Observations and rollups are written in bulk by the importer alone, which creates each series
# first: no foreign key checks every row again (see migration 0004), and on SQLite the rows live
# in the primary key's B-tree (WITHOUT ROWID), not in a rowid table plus a key index.
_BULK = {"sqlite_with_rowid": False}


class Observation(SQLModel, table=True):
    __table_args__ = (PrimaryKeyConstraint("series_id", "ts"), _BULK)
    series_id: int  # a series.id
    ts: datetime
    day: date  # local date of ts, so rollups group without time-zone maths in SQL
    value: float


class Rollup(SQLModel, table=True):
    """Per series and local day/week/month: what every aggregation rule needs, kept on import."""

    __table_args__ = (PrimaryKeyConstraint("series_id", "grain", "start"), _BULK)
    grain: str  # day | week | month
    series_id: int  # a series.id
    start: date
    total: float
    count: int
    minimum: float
    maximum: float
    last_ts: datetime
    last_value: float
    # Months only: the observations' checksum (kpi.rollups), NULL where unknown.
    checksum: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class Kpi(SQLModel, table=True):
    key: str = Field(primary_key=True)
    name: str
    area: str = "Other"
    description: str = ""
    formula: str
    unit: str = ""
    better: str = "lower"  # lower | higher
    cadence: str = "month"  # day | week | month | quarter
    owner: str = ""
    channel: str = ""
    aliases: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    visibility: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    alert_by: str = ""
    renotify_hours: float = 24.0
    source: str = ""  # where its default target comes from


class Target(SQLModel, table=True):
    """A KPI's target, or one dimension value's (dim/dim_value empty for the KPI as a whole)."""

    __table_args__ = (UniqueConstraint("kpi_key", "dim", "dim_value"),)
    id: int | None = Field(default=None, primary_key=True)
    kpi_key: str = Field(foreign_key="kpi.key", index=True)
    dim: str = ""
    dim_value: str = ""
    target: float
    warn: float | None = None
    due: date | None = None


class AuditLog(SQLModel, table=True):
    """Append-only: who changed what, when, from what to what."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    actor: str
    action: str
    subject: str
    before: dict | None = Field(default=None, sa_column=Column(JSON))
    after: dict | None = Field(default=None, sa_column=Column(JSON))


class Meta(SQLModel, table=True):
    key: str = Field(primary_key=True)
    value: str


class Subscription(SQLModel, table=True):
    """A channel's weekly digest: which KPIs, when, in which zone; paused on Slack errors."""

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(unique=True)
    items: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    weekday: int = 0  # 0 = Monday
    at: str = "09:00"  # local HH:MM
    tz: str = "UTC"
    created_by: str = ""
    created_at: datetime
    updated_at: datetime
    active: bool = True
    paused_reason: str = ""
    paused_at: datetime | None = None


class Delivery(SQLModel, table=True):
    """One message that must go out exactly once, claimed by a unique `key` before it is sent.

    Digests key on (subscription, ISO week); alerts on (incident, transition). A claim older
    than its lease without a message ts is retried; one with a ts never is.
    """

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    kind: str  # digest | alert
    channel: str
    state: str = "claimed"  # claimed | sent | failed
    owner: str = ""  # the process that holds the claim
    claimed_at: datetime
    attempts: int = 1
    message_ts: str | None = None
    sent_at: datetime | None = None
    error: str = ""
    late: bool = False
    payload: dict | None = Field(default=None, sa_column=Column(JSON))  # what to (re)send


class Alert(SQLModel, table=True):
    """The alert state of one (KPI, dimension value); `version` orders its transitions, so only
    one process can apply each (a compare-and-set on it)."""

    __table_args__ = (UniqueConstraint("kpi_key", "dim", "dim_value"),)
    id: int | None = Field(default=None, primary_key=True)
    kpi_key: str = Field(foreign_key="kpi.key", index=True)
    dim: str = ""
    dim_value: str = ""
    state: str = "ok"  # ok | at_risk | off_target | no_data
    since: datetime
    value: float | None = None
    version: int = 0
    incident_id: int | None = None
    recovering: int = 0  # evaluations in a row that found it back to ok
    evaluated_at: datetime


class Incident(SQLModel, table=True):
    """One breach from opening to recovery: one Slack message, edited as it changes."""

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(foreign_key="alert.id", index=True)
    kpi_key: str
    dim: str = ""
    dim_value: str = ""
    state: str
    opened_at: datetime
    resolved_at: datetime | None = None
    channel: str = ""
    message_ts: str | None = None
    last_notified_at: datetime | None = None
    acknowledged_by: str = ""
    acknowledged_at: datetime | None = None
    snoozed_until: datetime | None = None
    snoozed_by: str = ""
    owner: str = ""


class AlertEvent(SQLModel, table=True):
    """Append-only: every evaluation that changed something, and every action on an incident."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    alert_id: int = Field(foreign_key="alert.id", index=True)
    incident_id: int | None = None
    kind: str  # open | worsen | improve | recovering | resolve | renotify | ack | snooze | own
    from_state: str = ""
    to_state: str = ""
    actor: str = "kpibot"
    value: float | None = None
