"""`/kpi` and `kpibot ask` in one place: parse the text, compute, return a template and its values.

Answers for complete periods only change when data, targets or the catalog change, so they are
cached under the store's generation, which every such write bumps.
"""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session

from kpi import catalog, digests, incidents, query, store
from kpi.aggregate import NO_SCOPE, Scope, dimension_values, measure_dimensions
from kpi.db import reading, session_scope
from kpi.errors import KpibotError, PermissionDenied, QueryError
from kpi.formatting import fmt, fmt_day, fmt_input
from kpi.memo import Memo
from kpi.models import Alert, Kpi
from kpi.periods import Period, current_period, default_range, local_today
from kpi.scorecard import card, digest_week, scorecard_view, selected
from kpi.values import (
    Catalog,
    Evaluated,
    KpiDef,
    Value,
    data_starts,
    evaluate,
    load_catalog,
    target_over,
    values,
)
from kpi.views import (
    Line,
    change_line,
    how_line,
    short_change,
    status_view,
    table,
    target_line,
    unit_of,
)

CACHE_SIZE = 1024
GENERATION_SQL = f"SELECT value FROM meta WHERE key = '{store.GENERATION}'"
MAX_ALERTS_SHOWN = 40
GENERATION_CHECK = 1.0  # seconds between reads of the store's generation
SEEN_BY_LIMIT = 10_000  # distinct (channel, groups) remembered per snapshot


@dataclass(frozen=True)
class Viewer:
    """Who asks, and where: visibility is decided from the channel and the user's groups."""

    user: str = ""
    channel: str = ""
    groups: frozenset[str] = frozenset()
    sees_all: bool = False  # the terminal: `kpibot ask` runs with the store's own rights

    def may_see(self, kpi: Kpi) -> bool:
        if self.sees_all or not kpi.visibility:
            return True
        allowed = set(kpi.visibility)
        return self.channel in allowed or bool(self.groups & allowed)


@dataclass
class Reply:
    """What to show: a template and its values; `trend` carries a chart's data."""

    template: str
    values: dict
    kpi: str | None = None
    trend: list[dict] | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    generation: str
    catalog: Catalog
    dimensions: dict[str, list[str]]
    # Parser vocabularies per set of visible KPIs: indexing names costs more than parsing.
    vocabularies: dict[tuple[str, ...], query.Vocabulary] = field(default_factory=dict)
    # Visible KPI keys per (channel, groups): every request needs them, the catalog rarely changes.
    seen_by: dict[tuple, tuple[str, ...]] = field(default_factory=dict)

    def visible_keys(self, viewer: "Viewer") -> tuple[str, ...]:
        who = (viewer.channel, viewer.groups, viewer.sees_all)
        found = self.seen_by.get(who)
        if found is None:
            found = tuple(d.key for d in self.catalog.kpis.values() if viewer.may_see(d.kpi))
            if len(self.seen_by) >= SEEN_BY_LIMIT:
                self.seen_by.clear()
            self.seen_by[who] = found
        return found

    @cached_property
    def names_user_groups(self) -> bool:
        """Whether any KPI's visibility lists a Slack user group (ids start with S)."""
        return any(e.startswith("S") for k in self.catalog.kpis.values() for e in k.kpi.visibility)


class KpiService:
    def __init__(
        self,
        engine: Engine,
        *,
        tz: ZoneInfo,
        admins: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.monotonic,
    ):
        self.engine = engine
        self.tz = tz
        self.admins = admins
        self.clock = clock
        self._snapshot: Snapshot | None = None
        self._checked_at = -math.inf
        # Replies to questions, keyed by store generation: an import or a catalog change
        # retires them without a clear that a reply computed meanwhile could outrun.
        self._answers = Memo(CACHE_SIZE)
        self._starts = Memo(CACHE_SIZE)  # data_starts per (generation, KPI, scope)

    # -- what the store holds now -------------------------------------------------------------

    def current(self) -> Snapshot:
        """The snapshot for this request. The store's generation is read at most every
        GENERATION_CHECK seconds: under load, each read is a trip through the driver that lets
        the other request threads take the GIL, and costs far more than the read itself. So an
        import by another process shows within that time; this process's own writes at once."""
        snap = self._snapshot
        if snap is not None and self.clock() - self._checked_at < GENERATION_CHECK:
            return snap
        self._checked_at = self.clock()
        # The bare driver: Core's statement handling costs more than the query itself.
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(GENERATION_SQL)
            row = cursor.fetchone()
            cursor.close()
        finally:
            connection.close()
        generation = row[0] if row else "0"
        snap = self._snapshot
        if snap is not None and snap.generation == generation:
            return snap
        with Session(self.engine) as session:
            return self.snapshot(session, generation=generation)

    def recheck(self) -> None:
        """Read the generation on the next request: this process has just written."""
        self._checked_at = -math.inf

    def snapshot(self, session: Session, *, generation: str | None = None) -> Snapshot:
        """The snapshot of the store's `generation` (read here unless the caller just did)."""
        current = generation if generation is not None else store.generation(session=session)
        snap = self._snapshot
        if snap is None or snap.generation != current:
            snap = Snapshot(current, load_catalog(session), dimension_values(session))
            self._snapshot = snap
        return snap

    def visible(self, snap: Snapshot, viewer: Viewer) -> list[KpiDef]:
        return [snap.catalog.kpis[key] for key in snap.visible_keys(viewer)]

    def question_key(self, text: str, *, viewer: Viewer, as_of: datetime, snap: Snapshot):
        """What an answer to `text` depends on: the store's generation, the KPIs the viewer may
        see and the local day (periods are made of local dates)."""
        return (snap.generation, text, snap.visible_keys(viewer), local_today(as_of, self.tz))

    # -- asking -------------------------------------------------------------------------------

    def ask(self, text: str, *, viewer: Viewer, as_of: datetime) -> Reply:
        snap = self.current()
        request = self.parse(text, viewer=viewer, as_of=as_of, snap=snap)
        return self.answer(request, viewer=viewer, as_of=as_of, snap=snap)

    def parse(
        self, text: str, *, viewer: Viewer, as_of: datetime, snap: Snapshot | None = None
    ) -> query.Request:
        """The typed request; a KPI the viewer may not see is unknown to the parser."""
        snap = snap or self.current()
        return query.parse(
            text,
            kpis=(),
            areas=(),
            measures=(),
            dimensions={},
            as_of=as_of,
            tz=self.tz,
            vocabulary=self._vocabulary(snap, viewer),
        )

    def _vocabulary(self, snap: Snapshot, viewer: Viewer) -> query.Vocabulary:
        key = snap.visible_keys(viewer)
        found = snap.vocabularies.get(key)
        if found is None:
            visible = self.visible(snap, viewer)
            found = query.Vocabulary(
                kpis=[_name_of(d) for d in visible],
                areas=snap.catalog.areas(),
                measures=list(snap.catalog.measures),
                dimensions=snap.dimensions,
            )
            snap.vocabularies[key] = found
        return found

    def names_user_groups(self, snap: Snapshot | None = None) -> bool:
        return (snap or self.current()).names_user_groups

    def may_see(self, kpi_key: str, viewer: Viewer) -> bool:
        found = self.current().catalog.kpis.get(kpi_key)
        return found is not None and viewer.may_see(found.kpi)

    def answer(
        self,
        request: query.Request,
        *,
        viewer: Viewer,
        as_of: datetime,
        snap: Snapshot | None = None,
    ) -> Reply:
        snap = snap or self.current()
        if isinstance(request, query.Ask | query.Trend):
            # Complete periods change only with the data: answers are kept per generation.
            compute = self._ask if isinstance(request, query.Ask) else self._trend
            key = (snap.generation, repr(request), local_today(as_of, self.tz))
            return self._cached(key, lambda: self._in_session(compute, snap, request, as_of))
        with reading(self.engine) as session:
            return self._answer(session, snap, request, viewer=viewer, as_of=as_of)

    def _in_session(self, compute, *args):
        with reading(self.engine) as session:
            return compute(session, *args)

    def _answer(self, session, snap: Snapshot, request, *, viewer: Viewer, as_of: datetime):
        if isinstance(request, query.Help):
            return Reply("help.json.j2", {"areas": snap.catalog.areas()})
        if isinstance(request, query.ListKpis):
            return self._list(session, snap, request, viewer, as_of)
        if isinstance(request, query.Alerts):
            return self._alerts(session, snap, viewer)
        if isinstance(request, query.Subscribe):
            return self._subscribe(snap, request, viewer, as_of)
        if isinstance(request, query.Unsubscribe):
            return self._unsubscribe(viewer, as_of)
        if isinstance(request, query.DigestPreview):
            return self._preview(viewer, as_of)
        if isinstance(request, query.SetTarget):
            return self._set_target(snap, request, viewer, as_of)
        if isinstance(request, query.Record):
            return self._record(snap, request, viewer, as_of)
        raise KpibotError("That part of kpibot is not ready yet.", example="/kpi dso last month")

    def forget_answers(self) -> None:
        """Drop cached answers (the snapshot stays): for benchmarks of the engine's own work."""
        self._answers.clear()

    def _cached(self, key: tuple, compute):
        reply = self._answers.get(key)
        if reply is None:
            reply = compute()
            self._answers.put(key, reply)
        return reply

    def _data_starts(self, session, snap: Snapshot, kpi: KpiDef, scope: Scope = NO_SCOPE) -> dict:
        """Where the KPI's data starts changes only with the data: kept per generation, as a new
        question on a KPI (another period, say) need not look again."""
        key = (snap.generation, kpi.key, scope)
        starts = self._starts.get(key)
        if starts is None:
            starts = data_starts(session, kpi, scope)
            self._starts.put(key, starts)
        return starts

    def _ask(self, session, snap: Snapshot, request, as_of: datetime) -> Reply:
        kpi = snap.catalog.kpis[request.kpi]
        period = request.period or current_period(kpi.kpi.cadence, as_of, self.tz)
        filters = tuple(sorted(dict(request.filters).items()))
        scope = Scope(filters=filters, by=request.by, unassigned=bool(request.by))
        previous = period.previous()
        starts = self._data_starts(session, snap, kpi, scope)
        found = evaluate(session, kpi, period, previous, scope, starts)
        if all(item.value.value is None for item in found):
            _check_dimensions(session, kpi, scope)
        labels = _measure_labels(snap)
        if request.by:
            return Reply(
                "breakdown.json.j2",
                {"a": self._breakdown_view(kpi, period, previous, scope, found, labels)},
                kpi=kpi.key,
            )
        item = found[0] if found else None
        return Reply(
            "answer.json.j2",
            {"a": self._answer_view(kpi, period, previous, scope, item, labels)},
            kpi=kpi.key,
        )

    def _answer_view(self, kpi, period, previous, scope, item: Evaluated | None, labels):
        view = _header(kpi, period, scope)
        if item is None:
            return view | status_view("no_data") | {"value": "—", "reason": "no data"}
        view |= status_view(item.status)
        view |= {
            "value": fmt(item.value.value, unit_of(kpi)),
            "target": target_line(kpi.target_for(scope.filters), kpi, period),
            "change": change_line(item, previous.label),
            "how": how_line(item, labels) if item.value.value is not None else None,
            "reason": item.value.reason or _partly_covered(item.value, period),
        }
        return view

    def _breakdown_view(self, kpi, period, previous, scope, found, labels):
        view = _header(kpi, period, scope)
        lines = [
            Line(
                label=item.group if item.group is not None else f"(no {scope.by})",
                value=fmt(item.value.value, unit_of(kpi)),
                status=status_view(item.status)["status_word"],
                change=short_change(item),
            )
            for item in found
        ]
        chunks, more = table(lines)
        counts = {s: sum(1 for i in found if i.status == s) for s in ("on_target", "at_risk")}
        counts["off_target"] = sum(1 for i in found if i.status == "off_target")
        view |= {
            "by": scope.by,
            "chunks": chunks,
            "more": more,
            "summary": " · ".join(
                f"{n} {w}"
                for n, w in (
                    (counts["on_target"], "on target"),
                    (counts["at_risk"], "at risk"),
                    (counts["off_target"], "off target"),
                )
                if n
            ),
            "target": target_line(kpi.target_for(scope.filters), kpi, period),
            "previous": previous.label,
        }
        return view

    def _trend(self, session, snap: Snapshot, request, as_of: datetime) -> Reply:
        kpi = snap.catalog.kpis[request.kpi]
        periods: list[Period] = list(request.periods) or default_range(
            kpi.kpi.cadence, as_of, self.tz
        )
        # Without the period the data starts in, if late into it: half a month of sales would
        # plot as a spike of DSO at the start of the line.
        found = values(session, kpi, periods, NO_SCOPE, self._data_starts(session, snap, kpi))
        starts = next((v.starts for v in found.values() if v.starts and v.value is None), None)
        unit = unit_of(kpi)
        points = []
        for i, period in enumerate(periods):
            value = found.get((i, None))
            number = value.value if value else None
            points.append(
                {
                    "period": period,
                    "label": period.label,
                    "value": number,
                    "text": fmt(number, unit),
                }
            )
        target = kpi.target_for()
        bucket_target = target_over(target, kpi, periods[-1])  # buckets are alike in length
        known = [p for p in points if p["value"] is not None]
        view = _header(kpi, periods[0], Scope()) | {
            "period": f"{periods[0].label} – {periods[-1].label}",
            "target": target_line(target, kpi, periods[-1]),
            "latest": known[-1]["text"] if known else "—",
            "low": fmt(min(p["value"] for p in known), unit) if known else "—",
            "high": fmt(max(p["value"] for p in known), unit) if known else "—",
            "points": len(known),
            "buckets": len(points),
            "starts": fmt_day(starts) if starts else None,
        }
        chart = {
            "title": f"{kpi.kpi.name} · {periods[0].key} – {periods[-1].key}",
            "unit": unit,
            "target": bucket_target.target if bucket_target else None,
            "warn": bucket_target.warn if bucket_target else None,
            "better": kpi.kpi.better,
        }
        return Reply("trend.json.j2", {"a": view}, kpi=kpi.key, trend=points, extra=chart)

    def _list(self, session, snap: Snapshot, request, viewer: Viewer, as_of: datetime) -> Reply:
        kpis = [
            d
            for d in self.visible(snap, viewer)
            if request.area is None or d.kpi.area.lower() == request.area.lower()
        ]
        areas: dict[str, list[dict]] = {}
        for kpi in kpis:
            period = current_period(kpi.kpi.cadence, as_of, self.tz)
            starts = self._data_starts(session, snap, kpi)
            found = evaluate(session, kpi, period, period.previous(), NO_SCOPE, starts)
            item = found[0] if found else None
            status = item.status if item else "no_data"
            areas.setdefault(kpi.kpi.area, []).append(
                {
                    "key": kpi.key,
                    "name": kpi.kpi.name,
                    "value": fmt(item.value.value if item else None, unit_of(kpi)),
                    "period": period.label,
                    "change": short_change(item) if item else "",
                }
                | status_view(status)
            )
        if not areas and request.area:
            raise KpibotError(
                f"No KPIs in an area called “{request.area}”.", example="/kpi list Finance"
            )
        return Reply("list.json.j2", {"areas": [{"name": a, "kpis": k} for a, k in areas.items()]})

    def _alerts(self, session: Session, snap: Snapshot, viewer: Viewer) -> Reply:
        """The open alerts on KPIs the asker may see, oldest first."""
        rows = []
        for incident in incidents.open_incidents(session):
            kpi = snap.catalog.kpis.get(incident.kpi_key)
            alert = session.get(Alert, incident.alert_id)
            if kpi is None or alert is None or not viewer.may_see(kpi.kpi):
                continue
            rows.append(incidents.view(incident, alert, kpi, self.tz, ""))
        shown = rows[:MAX_ALERTS_SHOWN]
        return Reply(
            "alerts.json.j2",
            {"alerts": shown, "total": len(rows), "more": len(rows) - len(shown)},
        )

    # -- digests -------------------------------------------------------------------------------

    def scorecard(
        self, *, viewer: Viewer, items: Sequence[str], as_of: datetime, late: bool = False
    ) -> Reply:
        """The digest of the KPIs `items` names (all when empty) that the viewer may see."""
        with Session(self.engine) as session:
            snap = self.snapshot(session)
            kpis = selected(self.visible(snap, viewer), items)
            key = f"cards:{[k.key for k in kpis]}@{local_today(as_of, self.tz)}"
            cards = self._cached(key, lambda: [card(session, k, as_of, self.tz) for k in kpis])
        view = scorecard_view(cards, week=digest_week(as_of, self.tz), late=late)
        sparks = [
            {
                "name": c.kpi.kpi.name,
                "status": c.status,
                "values": c.spark,
                "target": c.kpi.target_for().target if c.kpi.target_for() else None,
            }
            for c in cards
        ]
        week = digest_week(as_of, self.tz).start.isocalendar()
        extra = {"sparks": sparks, "week": f"{week.year}-W{week.week:02d}"}  # the one it covers
        return Reply("digest.json.j2", {"d": view}, extra=extra)

    def _subscribe(self, snap: Snapshot, request, viewer: Viewer, as_of: datetime) -> Reply:
        if not viewer.channel:
            raise KpibotError(
                "A digest belongs to a channel: subscribe in Slack, or name the channel.",
                example="kpibot ask subscribe --channel C0123FIN",
            )
        self._check_channel_sees(snap, request.items, viewer)
        with session_scope(self.engine) as session:
            change = digests.subscribe(
                session,
                channel=viewer.channel,
                user=viewer.user,
                items=request.items,
                weekday=request.weekday,
                at=request.at,
                tz=request.tz,
                default_tz=self.tz.key,
                now=as_of,
                every=request.every,
            )
            sub = change.subscription
            values = {
                "created": change.created,
                "changes": [
                    {"field": k, "before": b, "after": a} for k, (b, a) in change.changed.items()
                ],
                "channel": viewer.channel,
                "resumed": change.resumed,
            } | digests.describe(sub)
        return Reply("subscribed.json.j2", values)

    def _check_channel_sees(self, snap: Snapshot, items: Sequence[str], viewer: Viewer) -> None:
        """A digest shows what its channel may see, whoever subscribed: a KPI (or a whole area)
        the channel may not see would make an empty digest, so it is refused, named only to
        someone who may see it."""
        channel = Viewer(channel=viewer.channel)
        for item in items:
            named = selected(list(snap.catalog.kpis.values()), [item])
            if named and not selected(self.visible(snap, channel), [item]):
                what = named[0].kpi.name if len(named) == 1 else f"the {item} area"
                raise KpibotError(
                    f"This channel may not see {what}, so it can't be in its digest: "
                    "subscribe in a channel that may.",
                    example="/kpi subscribe finance",
                )

    def _unsubscribe(self, viewer: Viewer, as_of: datetime) -> Reply:
        with session_scope(self.engine) as session:
            removed = digests.unsubscribe(
                session, channel=viewer.channel, user=viewer.user, now=as_of
            )
        return Reply("unsubscribed.json.j2", {"removed": removed, "channel": viewer.channel})

    def _preview(self, viewer: Viewer, as_of: datetime) -> Reply:
        """What this channel's digest would say now: the channel's own visibility, not yours."""
        with Session(self.engine) as session:
            sub = digests.get_subscription(session, viewer.channel)
        items = sub.items if sub is not None and sub.active else []
        return self.scorecard(viewer=Viewer(channel=viewer.channel), items=items, as_of=as_of)

    # -- changing things (admins and owners) -------------------------------------------------

    def may_change(self, kpi: Kpi, viewer: Viewer) -> bool:
        if viewer.sees_all or viewer.user in self.admins:
            return True
        return bool(kpi.owner) and viewer.user == kpi.owner

    def _set_target(self, snap: Snapshot, request, viewer: Viewer, as_of: datetime) -> Reply:
        kpi = snap.catalog.kpis[request.kpi]
        if not self.may_change(kpi.kpi, viewer):
            raise PermissionDenied(
                f"Only kpibot admins and the owner of {kpi.kpi.name} can change its target."
            )
        problem = catalog.warn_problem(kpi.kpi.better, request.target, request.warn)
        if problem:
            raise KpibotError(f"That {problem}.", example=_target_example(kpi.kpi, request.target))
        fields = {"target": request.target, "warn": request.warn, "due": request.due}
        actor = viewer.user or "cli"
        with session_scope(self.engine) as session:
            before = store.target_dict(store.get_target(session=session, kpi_key=kpi.key))
            catalog.set_target(session, kpi.key, "", "", fields, actor=actor, now=as_of)
            after = store.target_dict(store.get_target(session=session, kpi_key=kpi.key))
            store.bump_generation(session=session)
        self.recheck()
        unit = unit_of(kpi)
        values = {
            "name": kpi.kpi.name,
            "key": kpi.key,
            "before": _target_text(before, unit),
            "after": _target_text(after, unit),
            "user": viewer.user,
            # The old band, when the moved target left it on the wrong side (catalog.set_target).
            "dropped": fmt(before["warn"], unit)
            if before and before["warn"] is not None and after["warn"] is None
            else None,
            # Kept (a goal can be set after the fact), but most likely a mistyped year.
            "past_due": fmt_day(request.due)
            if request.due is not None and request.due < local_today(as_of, self.tz)
            else None,
        }
        return Reply("target_set.json.j2", values, kpi=kpi.key)

    def _record(self, snap: Snapshot, request, viewer: Viewer, as_of: datetime) -> Reply:
        owners = {d.kpi.owner for d in snap.catalog.kpis.values() if request.measure in d.measures}
        if not (viewer.sees_all or viewer.user in self.admins or viewer.user in owners):
            raise PermissionDenied(
                "Only kpibot admins and the owners of KPIs built on "
                f"{request.measure} can record its values."
            )
        # Imported here: the importer brings pandas and Arrow (~100 MB of memory), which a
        # serving or digest process otherwise never needs.
        from kpi import importer

        day = request.day or local_today(as_of, self.tz)
        dims = dict(request.dims)
        summary = importer.load_records(
            self.engine, [(request.measure, day, request.value, dims)], tz=self.tz
        )
        with session_scope(self.engine) as session:
            after = {"day": day.isoformat(), "value": request.value, "dims": dims}
            store.audit(
                session=session,
                actor=viewer.user or "cli",
                action="measure.record",
                subject=request.measure,
                before=None,
                after=after,
                at=as_of,
            )
            store.bump_generation(session=session)
        self.recheck()
        values = {
            "measure": request.measure,
            "value": fmt_input(request.value, snap.catalog.measures[request.measure].unit),
            "day": fmt_day(day),
            "dims": ", ".join(f"{k}={v}" for k, v in dims.items()),
            "changed": summary.changed,
            "replaced": summary.updated > 0,
            "new_values": _new_values(dims, snap.dimensions),
        }
        return Reply("recorded.json.j2", values)


def _new_values(dims: dict[str, str], known: dict[str, list[str]]) -> list[str]:
    """`branch Atlantis (so far: Berlin, London, Madrid)` for each value the store had not seen:
    a misspelt one would split the data."""
    return [
        f"{dim} {value} (so far: {', '.join(known.get(dim, [])) or 'none'})"
        for dim, value in dims.items()
        if value not in known.get(dim, [])
    ]


def _name_of(kpi: KpiDef) -> query.KpiName:
    return query.KpiName(
        key=kpi.key, name=kpi.kpi.name, aliases=tuple(kpi.kpi.aliases), cadence=kpi.kpi.cadence
    )


def _measure_labels(snap: Snapshot) -> dict[str, str]:
    return {name: name.replace("_", " ") for name in snap.catalog.measures}


def _header(kpi: KpiDef, period, scope: Scope) -> dict:
    filters = ", ".join(f"{d}={v}" for d, v in scope.filters)
    return {
        "key": kpi.key,
        "name": kpi.kpi.name,
        "area": kpi.kpi.area,
        "description": kpi.kpi.description,
        "period": period.label,
        "scope": filters,
    }


def _check_dimensions(session, kpi: KpiDef, scope: Scope) -> None:
    """No value by or for a dimension some measure of the KPI does not have: say so, rather
    than `no data` (`dso team=AP` where receivables are kept by branch alone)."""
    asked = [dim for dim, _ in scope.filters] + ([scope.by] if scope.by else [])
    if not asked:
        return
    has = measure_dimensions(session, list(kpi.measures))
    for dim in asked:
        for measure, dims in has.items():
            if dim not in dims:
                kept = " and ".join(sorted(dims)) or "no dimension"
                example = f"/kpi {kpi.key} by {min(dims)}" if dims else f"/kpi {kpi.key}"
                raise QueryError(
                    f"{kpi.kpi.name} can't be split or filtered by {dim}: its {measure} data "
                    f"is kept by {kept}.",
                    example=example,
                )


def _partly_covered(value: Value, period: Period) -> str | None:
    """A value whose data starts late into its period covers only the rest of it."""
    if value.starts is None or value.value is None:
        return None
    covered = (period.end - value.starts).days
    return (
        f"Its data starts {fmt_day(value.starts)}: this covers {covered} of the "
        f"{period.days} days of {period.label}."
    )


def _target_example(kpi: Kpi, target: float) -> str:
    """The command with a warn value a fifth worse than the target."""
    step = (abs(target) / 5 or 1) * (1 if kpi.better == "lower" else -1)
    return f"/kpi target {kpi.key} {target:g} warn {round(target + step, 2):g}"


def _target_text(target: dict | None, unit: str) -> str:
    if target is None:
        return "none"
    text = f"target {fmt(target['target'], unit)}"
    if target.get("warn") is not None:
        text += f", warn {fmt(target['warn'], unit)}"
    if target.get("due"):
        text += f", due {target['due']}"
    return text
