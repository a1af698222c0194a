"""A first import into an empty store: on PostgreSQL it loads observations and rollups without
their primary keys, streaming the rows, and builds the keys at the end; the rollups of a big one
go into a table of their own on a second connection, which then takes rollup's place. Whatever
happens, the keys are there afterwards and nothing of a rejected file is."""

import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from kpi import catalog, importer, rollups
from kpi.db import make_engine, open_store, session_scope
from kpi.errors import ImportRejected
from kpi.models import Rollup

BERLIN = ZoneInfo("Europe/Berlin")
HEADER = "measure,date,value,branch\n"


@pytest.fixture(params=["rollups in place", "rollups aside"])
def rollups_path(request, monkeypatch):
    """A test of a first import runs with the rollups loaded in place (a small import on
    PostgreSQL) and aside (a big import on PostgreSQL)."""
    if request.param == "rollups aside":
        monkeypatch.setattr(importer, "ROLLUPS_ASIDE_ROWS", 1)
    return request.param


def write(tmp_path, body: str, name: str = "measures.csv"):
    path = tmp_path / name
    path.write_text(HEADER + body, encoding="utf-8")
    return path


def run(engine, path):
    return importer.import_csv(engine, path, tz=BERLIN)


def small_blocks(monkeypatch) -> None:
    """A block per line or two, each written on its own, and rollups a few rows at a time:
    the rows span many writes."""
    monkeypatch.setattr(importer, "BLOCK_BYTES", 40)
    monkeypatch.setattr(importer, "WRITE_ROWS", 1)
    monkeypatch.setattr(rollups, "WRITE_CHUNK", 5)


def key_ids(engine) -> dict[str, int] | None:
    """PostgreSQL: the id of each primary key's index (a rebuilt key gets a new one)."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT c.conrelid::regclass::text, c.conindid::int FROM pg_constraint c"
                " WHERE c.contype = 'p' AND c.conrelid IN ('observation'::regclass,"
                " 'rollup'::regclass)"
            )
        )
        return dict(rows.all())


def assert_keys_hold(engine) -> None:
    """Both primary keys refuse a duplicate."""
    with engine.connect() as connection:
        series_id = connection.execute(text("SELECT max(id) FROM series")).scalar() or 0
    statements = [
        "INSERT INTO observation (series_id, ts, day, value)"
        " VALUES (:s, '2020-01-01 00:00:00+00', '2020-01-01', 1)",
        "INSERT INTO rollup (grain, series_id, start, total, count, minimum, maximum, last_ts,"
        " last_value) VALUES ('week', :s, '2019-12-30', 1, 1, 1, 1, '2020-01-01 00:00:00+00', 1)",
    ]
    for statement in statements:
        with pytest.raises(IntegrityError):
            with engine.begin() as connection:
                connection.execute(text(statement), {"s": series_id})
                connection.execute(text(statement), {"s": series_id})


def rollup_keys_as_stored(engine) -> list[tuple] | None:
    """PostgreSQL: rollup's keys in the order of its rows in the table."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT series_id, grain, start FROM rollup ORDER BY ctid"))
        return [tuple(row) for row in rows]


def counts(engine) -> tuple[int, int, int]:
    with engine.connect() as connection:
        return tuple(
            connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("series", "observation", "rollup")
        )


def consistent(engine) -> list[str]:
    with engine.connect() as connection:
        return rollups.discrepancies(connection, tz=BERLIN)


LINES = "".join(
    f"hires,2026-{month:02d}-{day:02d},{month * 100 + day},{branch}\n"
    for month in (9, 10, 11)
    for day in (1, 8, 15, 22)
    for branch in ("Berlin", "Madrid")
)


@pytest.mark.usefixtures("rollups_path")
def test_a_first_import_builds_the_keys_once_a_later_one_keeps_them(
    catalog_engine, tmp_path, monkeypatch
):
    small_blocks(monkeypatch)
    before = key_ids(catalog_engine)

    summary = run(catalog_engine, write(tmp_path, LINES))

    assert (summary.rows, summary.inserted) == (24, 24)
    # 2 series; each has 12 weeks (every date above is in a week of its own) and 3 months.
    assert counts(catalog_engine) == (2, 24, 2 * (12 + 3))
    assert consistent(catalog_engine) == []
    rebuilt = key_ids(catalog_engine)
    if before is not None:
        assert rebuilt.keys() == before.keys() == {"observation", "rollup"}
        assert all(rebuilt[table] != before[table] for table in before)

    more = "hires,2026-11-29,1,Berlin\nhires,2026-11-29,2,London\n"
    run(catalog_engine, write(tmp_path, more, "more.csv"))

    assert key_ids(catalog_engine) == rebuilt  # a store with rows keeps its keys
    assert counts(catalog_engine)[:2] == (3, 26)
    assert consistent(catalog_engine) == []
    assert_keys_hold(catalog_engine)


@pytest.mark.usefixtures("rollups_path")
def test_rollups_go_in_the_key_order_a_few_series_at_a_time(catalog_engine, tmp_path, monkeypatch):
    """Each of 7 series has a week and a month: chunks of 5 rows hold 2 series, so the rows of
    a chunk must still go a series at a time, not a grain at a time."""
    monkeypatch.setattr(rollups, "WRITE_CHUNK", 5)
    branches = [f"Branch {i}" for i in range(7)]
    lines = "".join(f"hires,2026-10-14,{i},{b}\n" for i, b in enumerate(branches))

    run(catalog_engine, write(tmp_path, lines))

    assert counts(catalog_engine) == (7, 7, 14)
    assert consistent(catalog_engine) == []
    stored = rollup_keys_as_stored(catalog_engine)
    if stored is not None:
        assert stored == sorted(stored)


@pytest.mark.usefixtures("rollups_path")
def test_a_first_import_rejected_late_stores_nothing_and_keeps_the_keys(
    catalog_engine, tmp_path, monkeypatch
):
    """The bad line comes after many blocks were streamed: the stream is ended with an error
    and everything rolls back, the dropped keys included."""
    small_blocks(monkeypatch)
    before = key_ids(catalog_engine)

    with pytest.raises(ImportRejected) as rejected:
        run(catalog_engine, write(tmp_path, LINES + "hires,2026-11-30,lots,Berlin\n"))

    assert rejected.value.problems == ["line 26: value 'lots' is not a number"]
    assert counts(catalog_engine) == (0, 0, 0)
    assert key_ids(catalog_engine) == before
    assert_keys_hold(catalog_engine)


@pytest.mark.usefixtures("rollups_path")
def test_a_first_import_out_of_time_order(catalog_engine, tmp_path, monkeypatch):
    """Rows going back in time need a lookup of what this import stored (the keys are built
    then, mid-import); a new series after that is created on the way."""
    small_blocks(monkeypatch)
    body = (
        "hires,2026-11-01,1,Berlin\n"
        "hires,2026-11-08,2,Berlin\n"
        "hires,2026-11-01,1,Berlin\n"  # a repeat of line 2, in a later block
        "hires,2026-11-04,3,Berlin\n"  # between stored moments: new
        "hires,2026-11-02,4,Madrid\n"
    )

    summary = run(catalog_engine, write(tmp_path, body))

    assert (summary.rows, summary.inserted, summary.unchanged) == (5, 4, 1)
    # Berlin: the weeks of 26 October (Sunday the 1st) and of 2 November (the 4th and Sunday
    # the 8th), one month; Madrid: one week, one month.
    assert counts(catalog_engine) == (2, 4, 2 + 1 + 1 + 1)
    assert consistent(catalog_engine) == []
    assert_keys_hold(catalog_engine)


@pytest.mark.usefixtures("rollups_path")
def test_a_conflicting_repeat_in_a_first_import_is_rejected(catalog_engine, tmp_path, monkeypatch):
    small_blocks(monkeypatch)
    body = "hires,2026-11-01,1,Berlin\nhires,2026-11-08,2,Berlin\nhires,2026-11-01,9,Berlin\n"

    with pytest.raises(ImportRejected):
        run(catalog_engine, write(tmp_path, body))

    assert counts(catalog_engine) == (0, 0, 0)
    assert_keys_hold(catalog_engine)


@pytest.mark.usefixtures("rollups_path")
def test_a_failure_mid_stream_leaves_nothing_and_the_store_usable(
    catalog_engine, tmp_path, monkeypatch
):
    small_blocks(monkeypatch)
    before = key_ids(catalog_engine)
    merge_add = importer._Loader._merge_add
    calls = []

    def fails_on_the_third_block(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        merge_add(self, *args)

    monkeypatch.setattr(importer._Loader, "_merge_add", fails_on_the_third_block)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run(catalog_engine, write(tmp_path, LINES))
    monkeypatch.setattr(importer._Loader, "_merge_add", merge_add)

    assert counts(catalog_engine) == (0, 0, 0)
    assert key_ids(catalog_engine) == before
    assert run(catalog_engine, write(tmp_path, LINES)).inserted == 24
    assert consistent(catalog_engine) == []


# --- PostgreSQL: a big first import's rollups, loaded aside --------------------------------

POSTGRES_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def rollup_table(engine) -> dict:
    """What of rollup a reader or an administrator sees, and any table loaded aside."""
    queries = {
        "oid": "SELECT 'rollup'::regclass::oid::int",
        "columns": "SELECT string_agg(format('%s %s %s %s', column_name, data_type, is_nullable,"
        " column_default), ', ' ORDER BY ordinal_position) FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'rollup'",
        "constraints": "SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), ', ')"
        " FROM pg_constraint WHERE conrelid = 'rollup'::regclass",
        "indexes": "SELECT string_agg(indexname, ', ' ORDER BY indexname) FROM pg_indexes"
        " WHERE schemaname = current_schema() AND tablename = 'rollup'",
        "access": "SELECT relowner::regrole::text || ' ' || coalesce(relacl::text, '')"
        " FROM pg_class WHERE oid = 'rollup'::regclass",
        "asides": "SELECT count(*) FROM pg_class WHERE relname LIKE 'kpibot_rollup_load_%'",
    }
    with engine.connect() as connection:
        return {name: connection.execute(text(query)).scalar() for name, query in queries.items()}


def frozen_pages(engine) -> tuple[int, int]:
    """rollup's pages marked all-frozen in the visibility map, and all its pages."""
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_visibility"))
        return tuple(
            connection.execute(
                text(
                    "SELECT all_frozen, pg_relation_size('rollup')"
                    " / current_setting('block_size')::int"
                    " FROM pg_visibility_map_summary('rollup')"
                )
            ).one()
        )


@pytest.fixture
def reader_role(catalog_engine):
    """A role an administrator let read rollup before the first import."""
    role = f"kpibot_reader_{uuid.uuid4().hex[:8]}"
    with catalog_engine.begin() as connection:
        connection.execute(text(f"CREATE ROLE {role}"))
        connection.execute(text(f"GRANT SELECT ON rollup TO {role}"))
    yield role
    with catalog_engine.begin() as connection:
        connection.execute(text(f"DROP OWNED BY {role}"))
        connection.execute(text(f"DROP ROLE {role}"))


@POSTGRES_ONLY
def test_rollups_loaded_aside_take_rollups_place_as_it_was(
    catalog_engine, tmp_path, rollups_path, reader_role
):
    before = rollup_table(catalog_engine)

    run(catalog_engine, write(tmp_path, LINES))

    after = rollup_table(catalog_engine)
    if rollups_path == "rollups aside":
        assert after["oid"] != before["oid"]  # a table of its own took rollup's place
        assert frozen_pages(catalog_engine) == (1, 1)  # loaded frozen: no hint bits to write
    else:
        assert after["oid"] == before["oid"]
        assert frozen_pages(catalog_engine) == (0, 1)
    assert {k: v for k, v in after.items() if k != "oid"} == {
        k: v for k, v in before.items() if k != "oid"
    }
    assert before["constraints"] == "rollup_pkey PRIMARY KEY (series_id, grain, start)"
    assert f"{reader_role}=r/" in after["access"]
    assert after["asides"] == 0
    assert counts(catalog_engine) == (2, 24, 2 * (12 + 3))
    assert consistent(catalog_engine) == []
    assert_keys_hold(catalog_engine)
    with catalog_engine.connect() as connection:  # the model still maps the table
        assert connection.execute(select(func.count()).select_from(Rollup)).scalar() == 30


@POSTGRES_ONLY
def test_a_first_import_failing_after_its_rollups_were_loaded_aside_leaves_nothing(
    catalog_engine, tmp_path, monkeypatch
):
    """The table loaded aside is committed before the import's transaction ends: when that
    rolls back, the table is dropped too."""
    monkeypatch.setattr(importer, "ROLLUPS_ASIDE_ROWS", 1)
    before = rollup_table(catalog_engine)

    def fails(connection):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(importer, "bump_generation_on", fails)  # after the swap
    with pytest.raises(RuntimeError, match="disk on fire"):
        run(catalog_engine, write(tmp_path, LINES))
    monkeypatch.undo()

    assert rollup_table(catalog_engine) == before
    assert counts(catalog_engine) == (0, 0, 0)
    assert_keys_hold(catalog_engine)
    assert run(catalog_engine, write(tmp_path, LINES)).inserted == 24
    assert consistent(catalog_engine) == []


@POSTGRES_ONLY
def test_a_failed_load_aside_fails_the_import_and_leaves_nothing(
    catalog_engine, tmp_path, monkeypatch
):
    monkeypatch.setattr(importer, "ROLLUPS_ASIDE_ROWS", 1)
    before = rollup_table(catalog_engine)

    def fails(driver, table, parts, aside):
        raise RuntimeError("no space left on device")

    monkeypatch.setattr(rollups, "copy_new", fails)
    with pytest.raises(RuntimeError, match="no space left"):
        run(catalog_engine, write(tmp_path, LINES))

    assert rollup_table(catalog_engine) == before
    assert counts(catalog_engine) == (0, 0, 0)
    assert_keys_hold(catalog_engine)


@POSTGRES_ONLY
def test_a_first_import_drops_a_table_a_killed_import_left_aside(catalog_engine, tmp_path):
    with catalog_engine.begin() as connection:
        connection.execute(text("CREATE TABLE kpibot_rollup_load_0123456789ab (x int)"))

    run(catalog_engine, write(tmp_path, LINES))

    assert rollup_table(catalog_engine)["asides"] == 0
    assert consistent(catalog_engine) == []


def test_a_store_in_a_schema_of_its_own_loads_its_rollups_aside_there(
    postgres_url, tmp_path, monkeypatch
):
    """The table loaded aside goes beside rollup, in whatever schema holds the store, even one
    that needs quoting and is not the first of the search path."""
    monkeypatch.setattr(importer, "ROLLUPS_ASIDE_ROWS", 1)
    tag = uuid.uuid4().hex[:6]
    store, other = f"Kpi-{tag}", f"Other-{tag}"
    admin = make_engine(postgres_url)
    public_rollup = rollup_table(admin)["oid"]
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{store}"'))
    url = make_url(postgres_url)
    open_store(
        url.update_query_dict({"options": f'-csearch_path="{store}"'}).render_as_string(False)
    ).dispose()
    with admin.begin() as connection:  # created after the store: the first of the path
        connection.execute(text(f'CREATE SCHEMA "{other}"'))
    path = f'-csearch_path="{other}","{store}"'
    engine = open_store(url.update_query_dict({"options": path}).render_as_string(False))
    try:
        with session_scope(engine) as session:
            catalog.load_builtin_if_empty(session, now=datetime(2026, 1, 1, tzinfo=UTC))

        run(engine, write(tmp_path, LINES))

        with admin.connect() as connection:
            where = connection.execute(
                text(
                    "SELECT relnamespace::regnamespace::text, relname FROM pg_class"
                    " WHERE relname = 'rollup' OR relname LIKE 'kpibot_rollup_load_%'"
                    " ORDER BY 1"
                )
            ).all()
        assert where == [(f'"{store}"', "rollup"), ("public", "rollup")]
        assert rollup_table(admin)["oid"] == public_rollup  # the other store's is untouched
        assert counts(engine) == (2, 24, 30)
        assert consistent(engine) == []
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{store}", "{other}" CASCADE'))
        admin.dispose()


# What an administrator may add to rollup, how to see it is still there, and how to undo it:
# with any of them the rollups load in place, since the table loaded aside would lose it.
ADDITIONS = {
    "index": (
        "CREATE INDEX rollup_by_start ON rollup (start)",
        "SELECT count(*) FROM pg_indexes WHERE indexname = 'rollup_by_start'",
        "DROP INDEX rollup_by_start",
    ),
    "view": (
        "CREATE VIEW monthly AS SELECT * FROM rollup WHERE grain = 'month'",
        "SELECT count(*) FROM monthly",
        "DROP VIEW monthly",
    ),
    "comment": (
        "COMMENT ON TABLE rollup IS 'kpibot rollups'",
        "SELECT count(*) FROM pg_description WHERE objoid = 'rollup'::regclass",
        "COMMENT ON TABLE rollup IS NULL",
    ),
    "storage setting": (
        "ALTER TABLE rollup SET (fillfactor = 90)",
        "SELECT count(*) FROM pg_class WHERE oid = 'rollup'::regclass AND reloptions IS NOT NULL",
        "ALTER TABLE rollup RESET (fillfactor)",
    ),
    "statistics target": (
        "ALTER TABLE rollup ALTER COLUMN start SET STATISTICS 500",
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'rollup'::regclass"
        " AND attstattarget = 500",
        "ALTER TABLE rollup ALTER COLUMN start SET STATISTICS -1",
    ),
    "column privilege": (
        "GRANT SELECT (series_id, total) ON rollup TO PUBLIC",
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'rollup'::regclass"
        " AND attacl IS NOT NULL",
        "REVOKE SELECT (series_id, total) ON rollup FROM PUBLIC",
    ),
    "policy": (
        "CREATE POLICY only_months ON rollup USING (grain = 'month')",
        "SELECT count(*) FROM pg_policy WHERE polname = 'only_months'",
        "DROP POLICY only_months ON rollup",
    ),
}


@POSTGRES_ONLY
@pytest.mark.parametrize("addition", ADDITIONS)
def test_a_rollup_table_an_administrator_added_to_loads_in_place_and_keeps_it(
    catalog_engine, tmp_path, monkeypatch, addition
):
    monkeypatch.setattr(importer, "ROLLUPS_ASIDE_ROWS", 1)
    add, still_there, undo = ADDITIONS[addition]
    with catalog_engine.begin() as connection:
        connection.execute(text(add))
    before = rollup_table(catalog_engine)
    try:
        run(catalog_engine, write(tmp_path, LINES))

        assert rollup_table(catalog_engine) == before  # the same table, as it was
        with catalog_engine.connect() as connection:
            assert connection.execute(text(still_there)).scalar() > 0
        assert counts(catalog_engine) == (2, 24, 30)
        assert consistent(catalog_engine) == []
    finally:
        with catalog_engine.begin() as connection:
            connection.execute(text(undo))


@POSTGRES_ONLY
def test_rollups_loaded_aside_keep_rollups_owner(catalog_engine, tmp_path, monkeypatch):
    """The import runs as a member of the role owning the store, not as that role: the new
    table is given to the owner, with the owner's and others' privileges as they were."""
    monkeypatch.setattr(importer, "ROLLUPS_ASIDE_ROWS", 1)
    owner, reader = (f"kpibot_{name}_{uuid.uuid4().hex[:8]}" for name in ("Owner", "reader"))
    with catalog_engine.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{owner}"'))
        connection.execute(text(f'CREATE ROLE "{reader}"'))
        connection.execute(text(f'ALTER TABLE rollup OWNER TO "{owner}"'))
        connection.execute(text(f'GRANT SELECT ON rollup TO "{reader}" WITH GRANT OPTION'))
        connection.execute(text("GRANT INSERT ON rollup TO PUBLIC"))
    before = rollup_table(catalog_engine)
    try:
        run(catalog_engine, write(tmp_path, LINES))

        after = rollup_table(catalog_engine)
        assert after["oid"] != before["oid"]
        assert after["access"] == before["access"]
        assert after["access"].startswith(f'"{owner}" ')
        assert f"{reader}=r*/" in after["access"] and ",=a/" in after["access"]
    finally:
        with catalog_engine.begin() as connection:
            connection.execute(text("ALTER TABLE rollup OWNER TO CURRENT_USER"))
            connection.execute(text("REVOKE ALL ON rollup FROM PUBLIC"))
            for role in (owner, reader):
                connection.execute(text(f'DROP OWNED BY "{role}"'))
                connection.execute(text(f'DROP ROLE "{role}"'))


@POSTGRES_ONLY
def test_a_left_table_still_in_use_does_not_hold_up_a_first_import(catalog_engine, tmp_path):
    """A failed import drops its table after its rollback has let the next import in: the
    next one's sweep of left tables must neither wait for that drop nor fail on it."""
    left = "kpibot_rollup_load_feedfacecafe"
    with catalog_engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {left} (x int)"))
    holding = catalog_engine.connect()
    holding.execute(text(f"LOCK TABLE {left} IN ACCESS EXCLUSIVE MODE"))  # dropping it, say
    try:
        assert run(catalog_engine, write(tmp_path, LINES)).inserted == 24
        with catalog_engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM observation")).scalar() == 24
    finally:
        holding.rollback()
        holding.close()
    assert rollup_table(catalog_engine)["asides"] == 1  # left for the next first import
    with catalog_engine.begin() as connection:
        connection.execute(text(f"DROP TABLE {left}"))


@POSTGRES_ONLY
def test_a_rollup_table_with_a_dropped_column_still_loads_aside(
    catalog_engine, tmp_path, monkeypatch
):
    """A column dropped by a migration's downgrade stays in the catalog, marked dropped (with
    a statistics target of 0): that is nothing an administrator added."""
    monkeypatch.setattr(importer, "ROLLUPS_ASIDE_ROWS", 1)
    with catalog_engine.begin() as connection:
        connection.execute(text("ALTER TABLE rollup ADD COLUMN gone int"))
        connection.execute(text("ALTER TABLE rollup DROP COLUMN gone"))
    before = rollup_table(catalog_engine)

    run(catalog_engine, write(tmp_path, LINES))

    after = rollup_table(catalog_engine)
    assert after["oid"] != before["oid"]
    assert after["columns"] == before["columns"]
    assert consistent(catalog_engine) == []
