"""Month checksums: what they are, that every write keeps them exact, and what a re-import skips
because of them — never a change."""

import struct
from contextlib import contextmanager
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from alembic import command
from sqlalchemy import select, text, update

from kpi import importer, rollups
from kpi.db import alembic_config
from kpi.errors import ImportRejected
from kpi.models import Observation, Rollup

BERLIN = ZoneInfo("Europe/Berlin")
MASK64 = (1 << 64) - 1

# Three months of one series, and one month of another.
FILE = """measure,date,value,branch
hires,2026-08-03,1,Berlin
hires,2026-08-17,2,Berlin
hires,2026-09-07,3,Berlin
hires,2026-09-21,4.5,Berlin
hires,2026-10-05,5,Berlin
hires,2026-10-19,6,Berlin
hires,2026-10-19,2,Madrid
"""


def reference_checksum(ts_us: int, value: float) -> int:
    """The definition, in plain integers: splitmix64's finaliser over (µs × golden ratio) xor
    the value's IEEE bits, top 40 bits."""
    bits = struct.unpack("<Q", struct.pack("<d", value + 0.0))[0]
    x = ((ts_us & MASK64) * 0x9E3779B97F4A7C15 & MASK64) ^ bits
    x ^= x >> 30
    x = x * 0xBF58476D1CE4E5B9 & MASK64
    x ^= x >> 27
    x = x * 0x94D049BB133111EB & MASK64
    x ^= x >> 31
    return x >> 24


def micros(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // (moment.resolution)


def write(tmp_path, body: str, name: str = "measures.csv"):
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def run(engine, path, **options):
    return importer.import_csv(engine, path, tz=BERLIN, **options)


def consistent(engine) -> list[str]:
    with engine.connect() as connection:
        return rollups.discrepancies(connection, tz=BERLIN)


def month_checksums(engine) -> dict[tuple[int, date], int | None]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Rollup.series_id, Rollup.start, Rollup.checksum).where(Rollup.grain == "month")
        ).all()
    return {(sid, start): checksum for sid, start, checksum in rows}


@contextmanager
def hidden_observations(engine):
    """Rename the observation table away: whatever still works did not read it."""
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE observation RENAME TO observation_hidden"))
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE observation_hidden RENAME TO observation"))


@pytest.mark.parametrize(
    ("ts_us", "value"),
    [(0, 0.0), (1, 1.0), (1_790_000_000_000_000, 120000.5), (-86_400_000_000, -3.25)],
)
def test_row_checksums_follow_their_definition(ts_us, value):
    got = rollups.row_checksums(np.array([ts_us]), np.array([value]))
    assert got.tolist() == [reference_checksum(ts_us, value)]
    assert got[0] < 1 << 40


def test_minus_zero_has_the_checksum_of_zero():
    zero, minus = rollups.row_checksums(np.array([5, 5]), np.array([0.0, -0.0])).tolist()
    assert zero == minus


def test_a_month_checksum_is_the_sum_of_its_rows_modulo_2_40(catalog_engine, tmp_path):
    run(catalog_engine, write(tmp_path, FILE))
    with catalog_engine.connect() as connection:
        rows = connection.execute(
            select(Observation.series_id, Observation.ts, Observation.day, Observation.value)
        ).all()
    expected: dict[tuple[int, date], int] = {}
    for sid, ts, day, value in rows:
        key = (sid, day.replace(day=1))
        expected[key] = (expected.get(key, 0) + reference_checksum(micros(ts), value)) % (1 << 40)

    assert month_checksums(catalog_engine) == expected
    assert len(expected) == 4  # three months of Berlin, one of Madrid


def test_merges_and_changes_keep_checksums_exact(catalog_engine, tmp_path):
    run(catalog_engine, write(tmp_path, FILE))
    # A new row in a stored month (a merge) and a changed value in another.
    more = "measure,date,value,branch\nhires,2026-10-26,7,Berlin\nhires,2026-09-07,30,Berlin\n"
    summary = run(catalog_engine, write(tmp_path, more, "more.csv"))

    assert (summary.inserted, summary.updated) == (1, 1)
    assert consistent(catalog_engine) == []  # checksums included
    assert None not in month_checksums(catalog_engine).values()


def test_reimporting_an_unchanged_file_reads_no_observation(catalog_engine, tmp_path):
    path = write(tmp_path, FILE)
    run(catalog_engine, path)

    with hidden_observations(catalog_engine):
        summary = run(catalog_engine, path)
        dry = run(catalog_engine, path, dry_run=True)

    assert (summary.rows, summary.series, summary.changed, summary.unchanged) == (7, 2, 0, 7)
    assert summary.line().startswith("imported 7 rows · 1 measure · 2 series · 0 changed · ")
    assert (dry.changed, dry.unchanged) == (0, 7)
    assert consistent(catalog_engine) == []


def test_one_changed_value_in_a_month_of_the_same_size_is_updated(catalog_engine, tmp_path):
    run(catalog_engine, write(tmp_path, FILE))
    before = month_checksums(catalog_engine)

    summary = run(catalog_engine, write(tmp_path, FILE.replace(",4.5,", ",4.25,"), "b.csv"))

    assert (summary.inserted, summary.updated, summary.unchanged) == (0, 1, 6)
    after = month_checksums(catalog_engine)
    assert [key for key in before if before[key] != after[key]] == [
        key for key in before if key[1] == date(2026, 9, 1)
    ]
    assert consistent(catalog_engine) == []


def test_part_of_a_stored_month_and_a_new_row_go_row_by_row(catalog_engine, tmp_path):
    run(catalog_engine, write(tmp_path, FILE))
    body = "measure,date,value,branch\nhires,2026-10-05,5,Berlin\nhires,2026-11-02,8,Berlin\n"

    summary = run(catalog_engine, write(tmp_path, body, "b.csv"))

    assert (summary.inserted, summary.updated, summary.unchanged) == (1, 0, 1)
    assert consistent(catalog_engine) == []


def test_a_repeated_line_in_a_reimport_is_still_unchanged(catalog_engine, tmp_path, monkeypatch):
    path = write(tmp_path, FILE)
    run(catalog_engine, path)
    monkeypatch.setattr(importer, "BLOCK_BYTES", 40)  # every line a block of its own
    again = write(tmp_path, FILE + "hires,2026-08-03,1,Berlin\n", "again.csv")

    summary = run(catalog_engine, again)

    assert (summary.rows, summary.changed, summary.unchanged) == (8, 0, 8)


def test_a_conflicting_repeat_in_a_reimport_is_rejected(catalog_engine, tmp_path, monkeypatch):
    path = write(tmp_path, FILE)
    run(catalog_engine, path)
    monkeypatch.setattr(importer, "BLOCK_BYTES", 40)
    again = write(tmp_path, FILE + "hires,2026-08-03,9,Berlin\n", "again.csv")

    with pytest.raises(ImportRejected) as rejected:
        run(catalog_engine, again)

    assert rejected.value.problems == [
        "line 9: same measure, dimensions and date as line 2 but another value (9 vs 1)"
    ]
    assert consistent(catalog_engine) == []


def test_months_of_unknown_checksum_are_compared_row_by_row(catalog_engine, tmp_path):
    run(catalog_engine, write(tmp_path, FILE))
    with catalog_engine.begin() as connection:
        connection.execute(update(Rollup).values(checksum=None))

    with pytest.raises(Exception):  # noqa: B017 - the row lookups need the hidden table
        with hidden_observations(catalog_engine):
            run(catalog_engine, write(tmp_path, FILE))
    summary = run(catalog_engine, write(tmp_path, FILE.replace(",4.5,", ",4.25,"), "b.csv"))

    assert (summary.updated, summary.unchanged) == (1, 6)
    assert set(month_checksums(catalog_engine).values()) == {None}  # unknown stays unknown


def test_rebuild_all_computes_checksums(catalog_engine, tmp_path):
    run(catalog_engine, write(tmp_path, FILE))
    expected = month_checksums(catalog_engine)
    with catalog_engine.begin() as connection:
        connection.execute(update(Rollup).values(checksum=None))
        rollups.rebuild_all(connection)
    assert month_checksums(catalog_engine) == expected


def test_the_migration_computes_checksums_of_a_store_made_before_them(catalog_engine, tmp_path):
    run(catalog_engine, write(tmp_path, FILE))
    expected = month_checksums(catalog_engine)
    config = alembic_config(catalog_engine)
    command.downgrade(config, "0004")
    with catalog_engine.connect() as connection:
        columns = connection.execute(select(text("*")).select_from(text("rollup"))).keys()
    assert "checksum" not in columns

    command.upgrade(config, "head")

    assert month_checksums(catalog_engine) == expected
    assert consistent(catalog_engine) == []


@pytest.mark.parametrize("batch_rows", [1, 2, 1_000])
def test_fill_checksums_reads_series_in_batches_of_any_size(catalog_engine, tmp_path, batch_rows):
    # Berlin has 6 rows and Madrid 1: batches of 1 or 2 rows still read each series whole.
    run(catalog_engine, write(tmp_path, FILE))
    expected = month_checksums(catalog_engine)
    with catalog_engine.begin() as connection:
        connection.execute(update(Rollup).values(checksum=None))
        rollups.fill_checksums(connection, batch_rows=batch_rows)
    assert month_checksums(catalog_engine) == expected
