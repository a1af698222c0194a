"""The alert decision as a table: every pair of states, snoozes, acknowledgements, renotify."""

from datetime import UTC, datetime, timedelta
from itertools import product

import pytest

from kpi.alerts import Kind, Open, Policy, State, decide
from kpi.incidents import _off_by

NOW = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)
POLICY = Policy(renotify=timedelta(hours=24), recovery_holds=1)
OK, RISK, OFF, NONE = State.OK, State.AT_RISK, State.OFF_TARGET, State.NO_DATA


def incident(state, *, notified_hours_ago=1, ack=False, snoozed_hours=0, recovering=0):
    return Open(
        state=state,
        last_notified_at=NOW - timedelta(hours=notified_hours_ago),
        acknowledged=ack,
        snoozed_until=NOW + timedelta(hours=snoozed_hours) if snoozed_hours else None,
        recovering=recovering,
    )


# (open incident state or None, new state) → (kind, notify)
PAIRS = {
    (None, OK): (Kind.NOTHING, False),
    (None, RISK): (Kind.OPEN, True),
    (None, OFF): (Kind.OPEN, True),
    (None, NONE): (Kind.OPEN, True),
    (RISK, OK): (Kind.RECOVERING, False),
    (RISK, RISK): (Kind.NOTHING, False),
    (RISK, OFF): (Kind.WORSEN, True),
    (RISK, NONE): (Kind.WORSEN, True),
    (OFF, OK): (Kind.RECOVERING, False),
    (OFF, RISK): (Kind.IMPROVE, True),
    (OFF, OFF): (Kind.NOTHING, False),
    (OFF, NONE): (Kind.WORSEN, True),
    (NONE, OK): (Kind.RECOVERING, False),
    (NONE, RISK): (Kind.IMPROVE, True),
    (NONE, OFF): (Kind.WORSEN, True),
    (NONE, NONE): (Kind.NOTHING, False),
}


def test_the_table_covers_every_pair_of_states():
    assert set(PAIRS) == set(product([None, OK, RISK, OFF, NONE], [OK, RISK, OFF, NONE])) - {
        (OK, s) for s in State
    }


@pytest.mark.parametrize(("before", "after"), list(PAIRS))
def test_every_pair_of_states(before, after):
    current = incident(before) if before else None
    transition = decide(current, after, NOW, POLICY)
    assert (transition.kind, transition.notify) == PAIRS[(before, after)]


def test_a_recovery_must_hold_for_one_more_evaluation_before_it_resolves():
    first = decide(incident(OFF), OK, NOW, POLICY)
    assert first.kind is Kind.RECOVERING and first.state is OFF
    second = decide(incident(OFF, recovering=1), OK, NOW, POLICY)
    assert (second.kind, second.notify) == (Kind.RESOLVE, True)


def test_without_a_hold_recovery_resolves_at_once():
    assert decide(incident(RISK), OK, NOW, Policy(recovery_holds=0)).kind is Kind.RESOLVE


def test_a_flap_back_during_recovery_neither_notifies_nor_reopens():
    transition = decide(incident(OFF, recovering=1), OFF, NOW, POLICY)
    assert (transition.kind, transition.notify) == (Kind.NOTHING, False)


@pytest.mark.parametrize(
    ("hours_ago", "expected"),
    [(1, Kind.NOTHING), (23.9, Kind.NOTHING), (24, Kind.RENOTIFY), (72, Kind.RENOTIFY)],
)
def test_an_unacknowledged_alert_repeats_at_most_every_renotify(hours_ago, expected):
    assert decide(incident(OFF, notified_hours_ago=hours_ago), OFF, NOW, POLICY).kind is expected


def test_acknowledged_alerts_do_not_repeat_but_still_report_changes():
    assert decide(incident(OFF, notified_hours_ago=48, ack=True), OFF, NOW, POLICY).kind is (
        Kind.NOTHING
    )
    worse = decide(incident(RISK, ack=True), OFF, NOW, POLICY)
    assert (worse.kind, worse.notify) == (Kind.WORSEN, True)


def test_a_snooze_silences_repeats_and_notes_until_it_ends():
    snoozed = incident(OFF, notified_hours_ago=48, snoozed_hours=2)
    assert decide(snoozed, OFF, NOW, POLICY).kind is Kind.NOTHING
    change = decide(incident(RISK, snoozed_hours=2), OFF, NOW, POLICY)
    assert (change.kind, change.notify) == (Kind.WORSEN, False)  # the message is still edited
    ended = Open(OFF, NOW - timedelta(hours=48), snoozed_until=NOW - timedelta(minutes=1))
    assert decide(ended, OFF, NOW, POLICY).kind is Kind.RENOTIFY


def test_renotify_is_per_policy():
    weekly = Policy(renotify=timedelta(days=7))
    assert decide(incident(OFF, notified_hours_ago=48), OFF, NOW, weekly).kind is Kind.NOTHING


@pytest.mark.parametrize(
    ("value", "target", "unit", "better", "expected"),
    [
        # DSO 100.8 days against 45: 55.8 days over, 124 % of the target.
        (100.8, 45.0, "days", "lower", "55.8 days over target (124 %)"),
        # An error rate of 1.17 % against 1 %: 0.17 percentage points, not "0.17 % (17 %)".
        (1.17, 1.0, "%", "lower", "0.17 pp over target"),
        (99.5, 99.9, "%", "higher", "0.40 pp under target"),
        (40.0, 45.0, "days", "lower", ""),  # on the good side: nothing to say
    ],
)
def test_how_far_off_target_an_alert_says_it_is(value, target, unit, better, expected):
    assert _off_by(value, target, unit, better) == expected
