"""Alerts: evaluate each (KPI, dimension value) with a target, decide purely, record the change.

`decide` has no session, client or clock: it maps (the open incident, if any; the new state;
now; the policy) to a transition. The job applies it with a compare-and-set on the alert row's
version, so each transition is applied — and told — by exactly one process.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class State(StrEnum):
    OK = "ok"
    AT_RISK = "at_risk"
    OFF_TARGET = "off_target"
    NO_DATA = "no_data"


STATUS_STATES = {
    "on_target": State.OK,
    "at_risk": State.AT_RISK,
    "off_target": State.OFF_TARGET,
    "no_target": State.OK,  # nothing to breach
    "no_data": State.NO_DATA,
}
RANK = {State.OK: 0, State.AT_RISK: 1, State.OFF_TARGET: 2, State.NO_DATA: 2}


class Kind(StrEnum):
    OPEN = "open"
    WORSEN = "worsen"
    IMPROVE = "improve"
    RECOVERING = "recovering"  # back to ok, waiting for the recovery to hold
    RESOLVE = "resolve"
    RENOTIFY = "renotify"
    NOTHING = "nothing"


@dataclass(frozen=True)
class Open:
    """What the decision needs of an open incident."""

    state: State
    last_notified_at: datetime | None
    acknowledged: bool = False
    snoozed_until: datetime | None = None
    recovering: int = 0  # ok evaluations in a row so far

    def snoozed(self, now: datetime) -> bool:
        return self.snoozed_until is not None and now < self.snoozed_until


@dataclass(frozen=True)
class Policy:
    renotify: timedelta = timedelta(hours=24)
    recovery_holds: int = 1  # ok evaluations before a recovery counts (one more than this)


@dataclass(frozen=True)
class Transition:
    kind: Kind
    state: State
    notify: bool  # post or thread a message (an edit of the incident's message always happens)

    @property
    def changes_anything(self) -> bool:
        return self.kind is not Kind.NOTHING


def decide(incident: Open | None, state: State, now: datetime, policy: Policy) -> Transition:
    if incident is None:
        if state is State.OK:
            return Transition(Kind.NOTHING, state, notify=False)
        return Transition(Kind.OPEN, state, notify=True)
    if state is State.OK:
        if incident.recovering >= policy.recovery_holds:
            return Transition(Kind.RESOLVE, state, notify=True)
        return Transition(Kind.RECOVERING, incident.state, notify=False)
    quiet = incident.snoozed(now)
    if state is not incident.state:
        kind = Kind.IMPROVE if RANK[state] < RANK[incident.state] else Kind.WORSEN
        return Transition(kind, state, notify=not quiet)
    if incident.recovering:  # the recovery did not hold: back to plain open
        return Transition(Kind.NOTHING, state, notify=False)
    if incident.acknowledged or quiet:
        return Transition(Kind.NOTHING, state, notify=False)
    last = incident.last_notified_at
    if last is None or now - last >= policy.renotify:
        return Transition(Kind.RENOTIFY, state, notify=True)
    return Transition(Kind.NOTHING, state, notify=False)


def state_of(status: str, stale: bool) -> State:
    """The KPI's status word as an alert state; stale data is `no_data` whatever the value."""
    if stale:
        return State.NO_DATA
    return STATUS_STATES[status]
