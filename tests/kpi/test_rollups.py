"""Week and month rollups: worked out by hand, kept current by imports, refreshed locally; and
single days, read from the observations, against the same hand-worked values."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from alembic import command
from sqlalchemy import inspect, select, update
from sqlmodel import Session

from kpi import aggregate, importer, rollups, store
from kpi.db import alembic_config
from kpi.models import Measure, Rollup, Series

BERLIN = ZoneInfo("Europe/Berlin")

# Berlin leaves summer time on 2026-10-25, so these are all CET (UTC+1) unless given an offset.
FILE = """measure,date,value,branch
hires,2026-10-26T09:00,10,Berlin
hires,2026-10-26T17:00,4,Berlin
hires,2026-10-31T23:30:00Z,7,Berlin
hires,2026-11-01T12:00:00+01:00,1,Berlin
hires,2026-11-02,100,Berlin
"""


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# (grain, start): (total, count, minimum, maximum, last_ts, last_value), worked out by hand.
DAYS = {
    # Monday: 09:00 and 17:00 local; the later value (4) is last although 10 is larger.
    ("day", date(2026, 10, 26)): (14.0, 2, 4.0, 10.0, at(2026, 10, 26, 16), 4.0),
    # Sunday: 23:30Z on the 31st is 00:30 on the 1st in Berlin; 12:00+01:00 is 11:00Z.
    ("day", date(2026, 11, 1)): (8.0, 2, 1.0, 7.0, at(2026, 11, 1, 11), 1.0),
    # A date is local midnight: 23:00Z the day before.
    ("day", date(2026, 11, 2)): (100.0, 1, 100.0, 100.0, at(2026, 11, 1, 23), 100.0),
}
EXPECTED = {
    # ISO week from Monday 26 October to Sunday 1 November, across the month's end.
    ("week", date(2026, 10, 26)): (22.0, 4, 1.0, 10.0, at(2026, 11, 1, 11), 1.0),
    ("week", date(2026, 11, 2)): (100.0, 1, 100.0, 100.0, at(2026, 11, 1, 23), 100.0),
    ("month", date(2026, 10, 1)): (14.0, 2, 4.0, 10.0, at(2026, 10, 26, 16), 4.0),
    ("month", date(2026, 11, 1)): (108.0, 3, 1.0, 100.0, at(2026, 11, 1, 23), 100.0),
}


def write(tmp_path, body: str, name: str = "measures.csv"):
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def stored(engine, measure: str = "hires") -> dict:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Rollup)
            .join(Series, Series.id == Rollup.series_id)
            .where(Series.measure == measure)
        ).all()
    return {
        (r.grain, r.start): (r.total, r.count, r.minimum, r.maximum, r.last_ts, r.last_value)
        for r in rows
    }


def days_read(engine, days, measure: str = "hires") -> dict:
    """What an answer reads for each single day, by every rule over time: (total, count,
    minimum, maximum, last value) — the last value only, not its moment."""
    rules = {}
    with Session(engine) as session:
        for rule in ("sum", "avg", "min", "max", "last"):
            found = aggregate.measure_values(
                session,
                Measure(name=measure, over_time=rule, across="sum"),
                [[aggregate.Bucket(day, day + timedelta(days=1), "day")] for day in days],
            )
            rules[rule] = {days[i]: value for (i, _), value in found.items()}
    return {
        ("day", day): (
            rules["sum"][day],
            round(rules["sum"][day] / rules["avg"][day]),
            rules["min"][day],
            rules["max"][day],
            rules["last"][day],
        )
        for day in rules["sum"]
    }


def without_moment(expected: dict) -> dict:
    return {key: (*values[:4], values[5]) for key, values in expected.items()}


def discrepancies(engine, tz=BERLIN) -> list[str]:
    with engine.connect() as connection:
        return rollups.discrepancies(connection, tz=tz)


def small_blocks(monkeypatch, block_bytes: int) -> None:
    """With 40-byte blocks every line is a block of its own, each written on its own (days of
    a new series merge across blocks), pending weeks and months combined every time, and
    rollups written a few rows at a time."""
    monkeypatch.setattr(importer, "BLOCK_BYTES", block_bytes)
    if block_bytes < 100:
        monkeypatch.setattr(importer, "WRITE_ROWS", 1)
        monkeypatch.setattr(importer, "PENDING_ROWS", 0)
        monkeypatch.setattr(rollups, "WRITE_CHUNK", 2)


@pytest.mark.parametrize("block_bytes", [40, 1 << 20])
def test_rollups_match_hand_computed_values(catalog_engine, tmp_path, monkeypatch, block_bytes):
    small_blocks(monkeypatch, block_bytes)
    importer.import_csv(catalog_engine, write(tmp_path, FILE), tz=BERLIN)
    assert stored(catalog_engine) == EXPECTED
    assert discrepancies(catalog_engine) == []


def test_no_rollup_is_kept_per_day(catalog_engine, tmp_path):
    importer.import_csv(catalog_engine, write(tmp_path, FILE), tz=BERLIN)
    assert {grain for grain, _ in stored(catalog_engine)} == {"week", "month"}


def test_the_migration_drops_day_rollups_and_its_downgrade_rebuilds_them(catalog_engine, tmp_path):
    importer.import_csv(catalog_engine, write(tmp_path, FILE), tz=BERLIN)
    config = alembic_config(catalog_engine)
    command.downgrade(config, "0005")
    assert stored(catalog_engine) == EXPECTED | DAYS  # as a store made before 0006 had them

    command.upgrade(config, "head")

    assert stored(catalog_engine) == EXPECTED
    assert discrepancies(catalog_engine) == []


def test_the_rollup_key_leads_with_the_series_and_its_migration_keeps_every_row(
    catalog_engine, tmp_path
):
    importer.import_csv(catalog_engine, write(tmp_path, FILE), tz=BERLIN)
    config = alembic_config(catalog_engine)

    def key() -> list[str]:
        return inspect(catalog_engine).get_pk_constraint("rollup")["constrained_columns"]

    assert key() == ["series_id", "grain", "start"]
    command.downgrade(config, "0006")
    assert key() == ["grain", "series_id", "start"]
    assert stored(catalog_engine) == EXPECTED
    command.upgrade(config, "head")
    assert key() == ["series_id", "grain", "start"]
    assert stored(catalog_engine) == EXPECTED
    assert discrepancies(catalog_engine) == []


def test_a_single_day_is_read_from_its_observations(catalog_engine, tmp_path):
    importer.import_csv(catalog_engine, write(tmp_path, FILE), tz=BERLIN)
    # The 31st has nothing in Berlin: 23:30Z that evening is already the 1st.
    days = [date(2026, 10, 26), date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2)]
    assert days_read(catalog_engine, days) == without_moment(DAYS)


def test_days_a_year_apart_are_read_each_on_their_own(catalog_engine, tmp_path):
    """A year-to-date compares its last days with the same days a year earlier: two separate
    reads of the observations, and nothing of the year between them counts."""
    body = (
        "measure,date,value,branch\n"
        "hires,2025-11-01T10:00,1,Berlin\n"
        "hires,2025-11-02T10:00,2,Berlin\n"
        "hires,2026-05-01T10:00,1000,Berlin\n"
        "hires,2026-11-01T10:00,10,Berlin\n"
        "hires,2026-11-01T20:00,30,Berlin\n"
        "hires,2026-11-02T09:00,20,Berlin\n"
    )
    importer.import_csv(catalog_engine, write(tmp_path, body), tz=BERLIN)
    slices = [
        [aggregate.Bucket(date(2026, 11, 1), date(2026, 11, 3), "day")],
        [aggregate.Bucket(date(2025, 11, 1), date(2025, 11, 3), "day")],
    ]
    found = {}
    with Session(catalog_engine) as session:
        for rule in ("sum", "last", "max"):
            measure = Measure(name="hires", over_time=rule, across="sum")
            found[rule] = aggregate.measure_values(session, measure, slices)
    assert found["sum"] == {(0, None): 60.0, (1, None): 3.0}
    assert found["last"] == {(0, None): 20.0, (1, None): 2.0}
    assert found["max"] == {(0, None): 30.0, (1, None): 2.0}


# Two imports into the same series: the second one's new rows merge into stored rollups.
FIRST = """measure,date,value,branch
hires,2026-11-02T09:00,10,Berlin
hires,2026-11-03T18:00,5,Berlin
"""
SECOND = """measure,date,value,branch
hires,2026-11-04T12:00,2,Berlin
hires,2026-11-04T08:00,20,Berlin
hires,2026-11-01T10:00,-3,Berlin
hires,2026-11-03T06:00,1,Berlin
"""
MERGED_DAYS = {
    ("day", date(2026, 11, 1)): (-3.0, 1, -3.0, -3.0, at(2026, 11, 1, 9), -3.0),
    ("day", date(2026, 11, 2)): (10.0, 1, 10.0, 10.0, at(2026, 11, 2, 8), 10.0),
    # 1 at 05:00Z joins 5 at 17:00Z: the stored value stays the last.
    ("day", date(2026, 11, 3)): (6.0, 2, 1.0, 5.0, at(2026, 11, 3, 17), 5.0),
    # Written in one import, in reverse order: 2 at 11:00Z is the last.
    ("day", date(2026, 11, 4)): (22.0, 2, 2.0, 20.0, at(2026, 11, 4, 11), 2.0),
}
MERGED = {
    # Sunday the 1st is in the week of Monday 26 October, which the first import did not touch.
    ("week", date(2026, 10, 26)): (-3.0, 1, -3.0, -3.0, at(2026, 11, 1, 9), -3.0),
    # 10 + 5 stored, + 2 + 20 + 1 merged; the new 11:00Z on the 4th is the last.
    ("week", date(2026, 11, 2)): (38.0, 5, 1.0, 20.0, at(2026, 11, 4, 11), 2.0),
    # 15 stored, + 2 + 20 - 3 + 1: the minimum comes from the merge, the maximum too.
    ("month", date(2026, 11, 1)): (35.0, 6, -3.0, 20.0, at(2026, 11, 4, 11), 2.0),
}


@pytest.mark.parametrize("block_bytes", [40, 1 << 20])
def test_a_second_import_merges_into_stored_weeks_and_months(
    catalog_engine, tmp_path, monkeypatch, block_bytes
):
    small_blocks(monkeypatch, block_bytes)
    importer.import_csv(catalog_engine, write(tmp_path, FIRST, "a.csv"), tz=BERLIN)
    summary = importer.import_csv(catalog_engine, write(tmp_path, SECOND, "b.csv"), tz=BERLIN)
    assert (summary.inserted, summary.updated) == (4, 0)
    assert stored(catalog_engine) == MERGED
    assert days_read(catalog_engine, [key[1] for key in MERGED_DAYS]) == without_moment(MERGED_DAYS)
    assert discrepancies(catalog_engine) == []


def test_a_merge_and_a_changed_value_in_one_bucket(catalog_engine, tmp_path):
    """New rows are merged, a changed one recomputes its week and month: both at once."""
    importer.import_csv(catalog_engine, write(tmp_path, FIRST, "a.csv"), tz=BERLIN)
    changed = SECOND + "hires,2026-11-03T18:00,50,Berlin\n"  # was 5
    summary = importer.import_csv(catalog_engine, write(tmp_path, changed, "b.csv"), tz=BERLIN)
    assert (summary.inserted, summary.updated) == (4, 1)
    expected = dict(MERGED)
    expected[("week", date(2026, 11, 2))] = (83.0, 5, 1.0, 50.0, at(2026, 11, 4, 11), 2.0)
    expected[("month", date(2026, 11, 1))] = (80.0, 6, -3.0, 50.0, at(2026, 11, 4, 11), 2.0)
    assert stored(catalog_engine) == expected
    day = ("day", date(2026, 11, 3))
    assert days_read(catalog_engine, [day[1]]) == {day: (51.0, 2, 1.0, 50.0, 50.0)}
    assert discrepancies(catalog_engine) == []


def test_partials_combined_are_the_partials_of_all_rows():
    rng = np.random.default_rng(3)
    sid = np.repeat([4, 2, 9], 200)  # each series' rows together, in time order
    ts = np.concatenate([np.sort(rng.choice(10**12, 200, replace=False)) for _ in range(3)])
    day = ts // 86_400_000_000 // 20 * 20  # several rows a day
    value = rng.normal(size=len(sid)).round(2)
    for grain in rollups.GRAINS:
        whole, _ = rollups.partials(grain, sid, ts, day, value)
        halves = [rollups.partials(grain, sid[part], ts[part], day[part], value[part])[0]
                  for part in (slice(0, 333), slice(333, None))]  # fmt: skip
        combined = rollups.combine(halves[::-1])
        order = np.lexsort((whole.start, whole.series_id))
        for name in ("series_id", "start", "count", "minimum", "maximum", "last_ts"):
            assert getattr(combined, name).tolist() == getattr(whole, name)[order].tolist()
        assert np.allclose(combined.total, whole.total[order])
        assert combined.last_value.tolist() == whole.last_value[order].tolist()


def test_rollups_built_over_several_imports_are_the_same(catalog_engine, tmp_path):
    lines = FILE.splitlines(keepends=True)
    for n, line in enumerate(lines[1:]):
        importer.import_csv(catalog_engine, write(tmp_path, lines[0] + line, f"{n}.csv"), tz=BERLIN)
    assert stored(catalog_engine) == EXPECTED


def test_a_value_changed_later_updates_its_day_week_and_month(catalog_engine, tmp_path):
    importer.import_csv(catalog_engine, write(tmp_path, FILE), tz=BERLIN)
    changed = FILE.replace("T09:00,10,", "T09:00,20,").replace(",100,", ",50,")

    summary = importer.import_csv(catalog_engine, write(tmp_path, changed, "b.csv"), tz=BERLIN)

    assert (summary.updated, summary.unchanged) == (2, 3)
    expected = dict(EXPECTED)
    expected[("week", date(2026, 10, 26))] = (32.0, 4, 1.0, 20.0, at(2026, 11, 1, 11), 1.0)
    expected[("month", date(2026, 10, 1))] = (24.0, 2, 4.0, 20.0, at(2026, 10, 26, 16), 4.0)
    expected[("week", date(2026, 11, 2))] = (50.0, 1, 50.0, 50.0, at(2026, 11, 1, 23), 50.0)
    expected[("month", date(2026, 11, 1))] = (58.0, 3, 1.0, 50.0, at(2026, 11, 1, 23), 50.0)
    assert stored(catalog_engine) == expected
    days = [date(2026, 10, 26), date(2026, 11, 2)]
    assert days_read(catalog_engine, days) == {
        ("day", days[0]): (24.0, 2, 4.0, 20.0, 4.0),
        ("day", days[1]): (50.0, 1, 50.0, 50.0, 50.0),
    }
    assert discrepancies(catalog_engine) == []


def test_a_later_observation_becomes_the_last_value(catalog_engine, tmp_path):
    importer.import_csv(catalog_engine, write(tmp_path, FILE), tz=BERLIN)
    later = "measure,date,value,branch\nhires,2026-10-31T22:00,3,Berlin\n"  # 21:00Z, Saturday
    importer.import_csv(catalog_engine, write(tmp_path, later, "b.csv"), tz=BERLIN)

    assert stored(catalog_engine)[("month", date(2026, 10, 1))] == (
        17.0,
        3,
        3.0,
        10.0,
        at(2026, 10, 31, 21),
        3.0,
    )
    # The week's latest is still Sunday's 11:00Z.
    assert stored(catalog_engine)[("week", date(2026, 10, 26))] == (
        25.0,
        5,
        1.0,
        10.0,
        at(2026, 11, 1, 11),
        1.0,
    )


def test_a_refresh_touches_only_the_given_series_and_days(catalog_engine, tmp_path):
    body = FILE + "hires,2026-11-02,5,Köln\n"
    importer.import_csv(catalog_engine, write(tmp_path, body), tz=BERLIN)
    with catalog_engine.begin() as connection:
        berlin, cologne = connection.execute(select(Series.id).order_by(Series.id)).scalars()
        connection.execute(update(Rollup).values(total=-1.0))
        rollups.refresh(connection, [(berlin, date(2026, 11, 1), date(2026, 11, 1))])

    totals = {(r.series_id, r.grain, r.start): r.total for r in _all(catalog_engine)}
    assert totals == {
        (berlin, "week", date(2026, 10, 26)): 22.0,  # holds the 1st: recomputed whole
        (berlin, "week", date(2026, 11, 2)): -1.0,  # not touched
        (berlin, "month", date(2026, 10, 1)): -1.0,
        (berlin, "month", date(2026, 11, 1)): 108.0,
        (cologne, "week", date(2026, 11, 2)): -1.0,
        (cologne, "month", date(2026, 11, 1)): -1.0,
    }


def _all(engine) -> list:
    with engine.connect() as connection:
        return connection.execute(select(Rollup)).all()


def test_rebuild_all_restores_every_rollup(catalog_engine, tmp_path):
    importer.import_csv(catalog_engine, write(tmp_path, FILE), tz=BERLIN)
    with catalog_engine.begin() as connection:
        connection.execute(update(Rollup).where(Rollup.grain == "week").values(total=0.0))
        connection.execute(Rollup.__table__.delete().where(Rollup.grain == "month"))
        assert rollups.discrepancies(connection) != []
        before = _generation(connection)
        rollups.rebuild_all(connection)
        assert _generation(connection) != before  # kept answers are not reused
    assert stored(catalog_engine) == EXPECTED
    assert discrepancies(catalog_engine) == []


def _generation(connection) -> str:
    with Session(bind=connection) as session:
        return store.generation(session=session)


def test_rebuild_all_in_another_time_zone_moves_days(catalog_engine, tmp_path):
    importer.import_csv(catalog_engine, write(tmp_path, FILE), tz=BERLIN)
    assert discrepancies(catalog_engine, tz=ZoneInfo("UTC")) != []

    with catalog_engine.begin() as connection:
        rollups.rebuild_all(connection, tz=ZoneInfo("UTC"))

    assert discrepancies(catalog_engine, tz=ZoneInfo("UTC")) == []
    # In UTC, 23:30Z on the 31st and 23:00Z on the 1st stay on their UTC days: October gains
    # the 7 and November keeps 1 and 100.
    days = [date(2026, 10, 26), date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2)]
    assert days_read(catalog_engine, days) == {
        ("day", days[0]): (14.0, 2, 4.0, 10.0, 4.0),
        ("day", days[1]): (7.0, 1, 7.0, 7.0, 7.0),
        ("day", days[2]): (101.0, 2, 1.0, 100.0, 100.0),
    }
    months = {start: value for (grain, start), value in stored(catalog_engine).items()
              if grain == "month"}  # fmt: skip
    assert months == {
        date(2026, 10, 1): (21.0, 3, 4.0, 10.0, at(2026, 10, 31, 23, 30), 7.0),
        date(2026, 11, 1): (101.0, 2, 1.0, 100.0, at(2026, 11, 1, 23), 100.0),
    }


def test_discrepancies_name_what_is_wrong(catalog_engine, tmp_path):
    importer.import_csv(catalog_engine, write(tmp_path, FILE), tz=BERLIN)
    with catalog_engine.begin() as connection:
        connection.execute(
            update(Rollup)
            .where(Rollup.grain == "week", Rollup.start == date(2026, 11, 2))
            .values(last_value=1.0)
        )
        problems = rollups.discrepancies(connection)
    assert len(problems) == 1
    assert problems[0].startswith("week rollup of series ")
    assert problems[0].endswith("from 2026-11-02: last_value is 1.0, expected 100.0")


@pytest.mark.parametrize(
    ("day", "monday", "first"),
    [
        (date(2026, 10, 26), date(2026, 10, 26), date(2026, 10, 1)),
        (date(2026, 11, 1), date(2026, 10, 26), date(2026, 11, 1)),
        (date(2026, 1, 1), date(2025, 12, 29), date(2026, 1, 1)),
        (date(2024, 2, 29), date(2024, 2, 26), date(2024, 2, 1)),
    ],
)
def test_bucket_starts(day, monday, first):
    assert rollups.week_start(day) == monday
    assert rollups.month_start(day) == first


def test_vectorised_bucket_starts_agree_with_the_calendar():
    days = [date(2023, 12, 1) + timedelta(days=n) for n in range(4 * 366)]
    numbers = np.array([(d - date(1970, 1, 1)).days for d in days])
    assert [date(1970, 1, 1) + timedelta(days=int(n)) for n in rollups._week_starts(numbers)] == [
        rollups.week_start(d) for d in days
    ]
    assert [date(1970, 1, 1) + timedelta(days=int(n)) for n in rollups._month_starts(numbers)] == [
        rollups.month_start(d) for d in days
    ]


def test_month_starts_of_many_rows_over_a_few_days_agree_with_the_calendar():
    """Over 4,096 rows spanning few days, months are looked up per day: around a year's end."""
    days = [date(2025, 12, 15) + timedelta(days=n) for n in range(60)]
    numbers = np.repeat(np.array([(d - date(1970, 1, 1)).days for d in days]), 100)[::-1]
    on = lambda n: date(1970, 1, 1) + timedelta(days=int(n))  # noqa: E731
    expected = [rollups.month_start(on(n)) for n in numbers]
    after = [(m.replace(day=28) + timedelta(days=4)).replace(day=1) for m in expected]
    for found, wanted in (
        (rollups._month_starts(numbers), expected),
        (rollups._month_starts(numbers, 1), after),
    ):
        wrong = [
            (on(n), on(f), w) for n, f, w in zip(numbers, found, wanted, strict=True) if on(f) != w
        ]
        assert wrong[:3] == []  # (day, found, expected): a short list to read, not 6,000 rows


@pytest.mark.parametrize(
    ("touched", "merged"),
    [
        ([], []),
        ([(1, date(2026, 1, 5), date(2026, 1, 5))], [(1, date(2026, 1, 5), date(2026, 1, 5))]),
        # Overlapping ranges of a series, and those at most a week apart, merge; other series
        # stay apart.
        (
            [
                (2, date(2026, 1, 1), date(2026, 1, 2)),
                (1, date(2026, 1, 20), date(2026, 1, 21)),
                (1, date(2026, 1, 1), date(2026, 1, 10)),
                (1, date(2026, 1, 5), date(2026, 1, 6)),
                (1, date(2026, 1, 19), date(2026, 1, 19)),
            ],
            [
                (1, date(2026, 1, 1), date(2026, 1, 10)),
                (1, date(2026, 1, 19), date(2026, 1, 21)),
                (2, date(2026, 1, 1), date(2026, 1, 2)),
            ],
        ),
        (
            [(1, date(2026, 1, 1), date(2026, 1, 1)), (1, date(2026, 1, 9), date(2026, 1, 9))],
            [(1, date(2026, 1, 1), date(2026, 1, 1)), (1, date(2026, 1, 9), date(2026, 1, 9))],
        ),
    ],
)
def test_merge_ranges(touched, merged):
    assert rollups.merge_ranges(touched) == merged
