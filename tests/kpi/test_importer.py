"""The measure importer on both stores: what lands where, what is rejected, what re-imports do."""

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text

from kpi import catalog, importer, rollups
from kpi.db import make_engine, session_scope
from kpi.errors import ImportRejected, KpibotError
from kpi.models import Observation, Rollup, Series, SeriesDim

BERLIN = ZoneInfo("Europe/Berlin")
TABLES = (Series, SeriesDim, Observation, Rollup)


def write(tmp_path, body: str, name: str = "measures.csv"):
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def run(engine, path, **options):
    return importer.import_csv(engine, path, tz=options.pop("tz", BERLIN), **options)


def snapshot(engine) -> dict:
    """Every row of the tables the importer writes, in key order."""
    with engine.connect() as connection:
        return {
            model.__tablename__: [
                tuple(row)
                for row in connection.execute(
                    select(model).order_by(*model.__table__.primary_key.columns)
                )
            ]
            for model in TABLES
        }


def series(engine) -> dict[int, tuple[str, str]]:
    with engine.connect() as connection:
        return {s.id: (s.measure, s.dims) for s in connection.execute(select(Series))}


def observations(engine) -> list[tuple[str, str, datetime, date, float]]:
    """(measure, dims, ts, day, value) in time order."""
    with engine.connect() as connection:
        query = (
            select(Series.measure, Series.dims, Observation.ts, Observation.day, Observation.value)
            .join(Series, Series.id == Observation.series_id)
            .order_by(Observation.ts, Series.measure, Series.dims)
        )
        return [tuple(row) for row in connection.execute(query)]


def canonical(engine) -> dict:
    """Observations and rollups keyed by (measure, dims) instead of series ids."""
    with engine.connect() as connection:
        key = {s.id: (s.measure, s.dims) for s in connection.execute(select(Series))}
        return {
            model.__tablename__: sorted(
                (*key[row.series_id], *(v for k, v in row._mapping.items() if k != "series_id"))
                for row in connection.execute(select(model))
            )
            for model in (Observation, Rollup, SeriesDim)
        }


def consistent(engine, tz=BERLIN) -> list[str]:
    with engine.connect() as connection:
        return rollups.discrepancies(connection, tz=tz)


SMALL = """measure,date,value,branch,team
credit_sales,2026-10-05,120000,Berlin,AP
credit_sales,2026-10-06,80000.5,Berlin,AP
ar_balance,2026-10-31,310000,Berlin,
"""


def test_a_small_file_lands_as_series_and_observations(catalog_engine, tmp_path):
    summary = run(catalog_engine, write(tmp_path, SMALL))

    assert (summary.rows, summary.measures, summary.series) == (3, 2, 2)
    assert (summary.inserted, summary.updated, summary.unchanged) == (3, 0, 0)
    assert summary.changed == 3 and summary.dry_run is False
    assert sorted(series(catalog_engine).values()) == [
        ("ar_balance", '{"branch":"Berlin"}'),
        ("credit_sales", '{"branch":"Berlin","team":"AP"}'),
    ]
    # Dates are local midnight in Berlin: 22:00 UTC the day before in summer, 23:00 in winter.
    assert observations(catalog_engine) == [
        ("credit_sales", '{"branch":"Berlin","team":"AP"}', datetime(2026, 10, 4, 22, tzinfo=UTC),
         date(2026, 10, 5), 120000.0),
        ("credit_sales", '{"branch":"Berlin","team":"AP"}', datetime(2026, 10, 5, 22, tzinfo=UTC),
         date(2026, 10, 6), 80000.5),
        ("ar_balance", '{"branch":"Berlin"}', datetime(2026, 10, 30, 23, tzinfo=UTC),
         date(2026, 10, 31), 310000.0),
    ]  # fmt: skip
    with catalog_engine.connect() as connection:
        dims = connection.execute(
            select(Series.measure, SeriesDim.dim, SeriesDim.value)
            .join(Series, Series.id == SeriesDim.series_id)
            .order_by(Series.measure, SeriesDim.dim)
        ).all()
    assert [tuple(d) for d in dims] == [
        ("ar_balance", "branch", "Berlin"),
        ("credit_sales", "branch", "Berlin"),
        ("credit_sales", "team", "AP"),
    ]
    assert consistent(catalog_engine) == []


def test_dimension_order_does_not_make_another_series(catalog_engine, tmp_path):
    run(
        catalog_engine,
        write(tmp_path, "measure,date,value,branch,team\nhires,2026-10-05,2,Berlin,AP\n"),
    )
    summary = run(
        catalog_engine,
        write(tmp_path, "team,branch,value,date,measure\nAP,Berlin,3,2026-10-06,hires\n", "b.csv"),
    )
    assert summary.inserted == 1
    assert list(series(catalog_engine).values()) == [("hires", '{"branch":"Berlin","team":"AP"}')]


def test_a_dimension_header_in_another_case_is_the_stored_dimension(catalog_engine, tmp_path):
    run(catalog_engine, write(tmp_path, "measure,date,value,branch\nhires,2026-10-05,2,Berlin\n"))
    summary = run(
        catalog_engine,
        write(tmp_path, "measure,date,value,Branch\nhires,2026-10-05,2,Berlin\n", "b.csv"),
    )
    assert (summary.inserted, summary.unchanged) == (0, 1)  # the same row, not a new series
    assert list(series(catalog_engine).values()) == [("hires", '{"branch":"Berlin"}')]


def test_an_empty_dimension_cell_means_no_such_dimension(catalog_engine, tmp_path):
    body = "measure,date,value,branch,team\nhires,2026-10-05,2,Berlin,\nhires,2026-10-05,1,,\n"
    run(catalog_engine, write(tmp_path, body))
    assert sorted(series(catalog_engine).values()) == [
        ("hires", '{"branch":"Berlin"}'),
        ("hires", "{}"),
    ]
    with catalog_engine.connect() as connection:
        assert connection.execute(select(SeriesDim.dim, SeriesDim.value)).all() == [
            ("branch", "Berlin")
        ]


def test_reimporting_the_same_file_changes_nothing(catalog_engine, tmp_path):
    path = write(tmp_path, SMALL)
    run(catalog_engine, path)
    before = snapshot(catalog_engine)

    summary = run(catalog_engine, path)

    assert (summary.inserted, summary.updated, summary.unchanged) == (0, 0, 3)
    assert summary.line().startswith("imported 3 rows · 2 measures · 2 series · 0 changed · ")
    assert snapshot(catalog_engine) == before


def test_a_changed_value_is_updated_with_its_rollups(catalog_engine, tmp_path):
    run(catalog_engine, write(tmp_path, SMALL))
    summary = run(catalog_engine, write(tmp_path, SMALL.replace("80000.5", "90000"), "b.csv"))

    assert (summary.inserted, summary.updated, summary.unchanged) == (0, 1, 2)
    values = [row[4] for row in observations(catalog_engine)]
    assert values == [120000.0, 90000.0, 310000.0]
    with catalog_engine.connect() as connection:
        week = connection.execute(
            select(Rollup.total).where(Rollup.grain == "week", Rollup.start == date(2026, 10, 5))
        ).scalar_one()
    assert week == 210000.0
    assert consistent(catalog_engine) == []


def test_headers_tolerate_case_spaces_bom_crlf_and_blank_lines(catalog_engine, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(
        "\ufeffMeasure , Date,VALUE,Branch\r\nhires,2026-10-05, 2 ,Berlin\r\n\r\n,,,\r\n".encode()
    )
    summary = run(catalog_engine, path)
    assert (summary.rows, summary.inserted) == (1, 1)
    assert list(series(catalog_engine).values()) == [("hires", '{"Branch":"Berlin"}')]


def test_a_header_alone_imports_nothing(catalog_engine, tmp_path):
    summary = run(catalog_engine, write(tmp_path, "measure,date,value,branch\n"))
    assert (summary.rows, summary.series, summary.changed) == (0, 0, 0)


def test_quoted_fields_may_hold_commas(catalog_engine, tmp_path):
    body = (
        'measure,date,value,branch\nhires,2026-10-05,2,"Berlin, Mitte"\nhires,"2026-10-06",3,Köln\n'
    )
    assert run(catalog_engine, write(tmp_path, body)).inserted == 2
    assert sorted(series(catalog_engine).values()) == [
        ("hires", '{"branch":"Berlin, Mitte"}'),
        ("hires", '{"branch":"Köln"}'),
    ]


BAD = [
    (
        "measure,date,value\ncredit_sales,2026-10-05,1\ncredit_sale,2026-10-05,1\n",
        ["line 3: unknown measure 'credit_sale' (did you mean 'credit_sales'?)"],
    ),
    ("measure,date,value\nzzz,2026-10-05,1\n", ["line 2: unknown measure 'zzz'"]),
    (
        "measure,date,value\nhires,2026-02-30,1\nhires,05.10.2026,1\nhires,,1\n",
        [
            "line 2: bad date '2026-02-30' (write 2026-10-05 or an ISO 8601 time like "
            "2026-10-05T14:30)",
            "line 3: bad date '05.10.2026'",
            "line 4: no date",
        ],
    ),
    (
        "measure,date,value\nhires,2026-10-05,abc\nhires,2026-10-06,\nhires,2026-10-07,nan\n"
        "hires,2026-10-08,inf\n",
        [
            "line 2: value 'abc' is not a number",
            "line 3: no value",
            "line 4: value 'nan' is not a finite number",
            "line 5: value 'inf' is not a finite number",
        ],
    ),
    (
        # Numbers that parse but are not finite are quoted as written.
        "measure,date,value\nhires,2026-10-05,NaN\nhires,2026-10-06,1e400\n"
        "hires,2026-10-07,Infinity\nhires,2026-10-08,2\n",
        [
            "line 2: value 'NaN' is not a finite number",
            "line 3: value '1e400' is not a finite number",
            "line 4: value 'Infinity' is not a finite number",
        ],
    ),
    (
        "measure,date,value,branch\nhires,2026-10-05,1\nhires,2026-10-06,1,Berlin,AP\n",
        ["line 2: 3 columns, but the header has 4", "line 3: 5 columns, but the header has 4"],
    ),
    (
        'measure,date,value,branch\nhires,2026-10-05,1,"Berlin"\nhires,2026-10-06,1,"A","B"\n',
        ["line 3: 5 columns, but the header has 4"],
    ),
    (
        "measure,date,value\nhires,2026-10-05,1\n\nhires,2026-10-05,2\nhires,2026-10-05,1\n",
        ["line 4: same measure, dimensions and date as line 2 but another value (2 vs 1)"],
    ),
    (
        "measure,date,value\nhires,2026-10-05,1\nhires,2026-10-05T00:00+02:00,2\n",
        ["line 3: same measure, dimensions and date as line 2 but another value (2 vs 1)"],
    ),
    (
        "measure,date,value\nhires,2026-03-29T02:30,1\n",
        ["line 2: 2026-03-29T02:30 does not exist in Europe/Berlin (the clocks skip it)"],
    ),
    ("measure,date,amount\nhires,2026-10-05,1\n", ["line 1: the header has no value column"]),
    (
        "measure;date;value\nhires;2026-10-05;1\n",
        ["line 1: the header has no measure, date, value"],
    ),
    ("measure,date,value,,team,Team\n", ["line 1: column 4 has no name", "'Team' appears twice"]),
    ("", ["line 1: the file is empty (expected a header: measure,date,value)"]),
]


@pytest.mark.parametrize(("body", "expected"), BAD)
def test_a_bad_file_is_rejected_whole_naming_its_lines(catalog_engine, tmp_path, body, expected):
    run(catalog_engine, write(tmp_path, SMALL, "good.csv"))
    before = snapshot(catalog_engine)
    good_rows = "hires,2026-11-01,1\n" if body.startswith("measure,date,value\n") else ""

    with pytest.raises(ImportRejected) as caught:
        run(catalog_engine, write(tmp_path, body + good_rows))

    message = str(caught.value)
    for part in expected:
        assert part in message
    assert caught.value.total == len(caught.value.problems) == len(expected)
    assert message.startswith(f"rejected: {len(expected)} bad line")
    assert snapshot(catalog_engine) == before


def test_undecodable_lines_are_named(catalog_engine, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("measure,date,value,branch\nhires,2026-10-05,1,Zürich\n".encode("latin-1"))
    with pytest.raises(ImportRejected, match="line 2: not UTF-8 text"):
        run(catalog_engine, path)
    assert snapshot(catalog_engine)["observation"] == []


def test_a_missing_file_is_one_clear_line(catalog_engine, tmp_path):
    with pytest.raises(KpibotError) as caught:
        run(catalog_engine, tmp_path / "nope.csv")
    assert isinstance(caught.value, ImportRejected)
    assert str(caught.value) == f"cannot read {tmp_path / 'nope.csv'}: No such file or directory"


def test_more_than_fifty_bad_lines_show_the_first_fifty_and_the_total(catalog_engine, tmp_path):
    lines = [f"hires,2026-10-{1 + i % 28:02d},x{i}\n" for i in range(120)]
    with pytest.raises(ImportRejected) as caught:
        run(catalog_engine, write(tmp_path, "measure,date,value\n" + "".join(lines)))
    error = caught.value
    assert error.total == 120 and len(error.problems) == 50
    assert error.problems[0] == "line 2: value 'x0' is not a number"
    assert error.problems[-1] == "line 51: value 'x49' is not a number"
    assert str(error).endswith("\n… and 70 more bad lines")


def test_bad_lines_are_counted_across_blocks(catalog_engine, tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "BLOCK_BYTES", 64)
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(90)]
    lines = [f"hires,{day},{'x' if i % 3 == 0 else i}\n" for i, day in enumerate(days)]
    with pytest.raises(ImportRejected) as caught:
        run(catalog_engine, write(tmp_path, "measure,date,value\n" + "".join(lines)))
    assert caught.value.total == 30
    assert caught.value.problems[:2] == [
        "line 2: value 'x' is not a number",
        "line 5: value 'x' is not a number",
    ]
    assert snapshot(catalog_engine)["observation"] == []


def test_a_dry_run_counts_what_would_change_and_writes_nothing(catalog_engine, tmp_path):
    run(catalog_engine, write(tmp_path, SMALL))
    before = snapshot(catalog_engine)
    changed = SMALL.replace("80000.5", "1") + "hires,2026-10-05,3,Berlin,AP\nhires,2026-10-06,4,,\n"

    summary = run(catalog_engine, write(tmp_path, changed, "b.csv"), dry_run=True)

    assert summary.dry_run is True
    assert (summary.rows, summary.measures, summary.series) == (5, 3, 4)
    assert (summary.inserted, summary.updated, summary.unchanged) == (2, 1, 2)
    assert summary.line().startswith("would import 5 rows · 3 measures · 4 series · 3 would change")
    assert snapshot(catalog_engine) == before
    with pytest.raises(ImportRejected):
        run(
            catalog_engine, write(tmp_path, "measure,date,value\nnope,2026-10-05,1\n"), dry_run=True
        )


@pytest.mark.parametrize(
    ("written", "ts", "day"),
    [
        # An offset is converted; the local day is Berlin's.
        ("2026-10-31T23:30:00Z", datetime(2026, 10, 31, 23, 30, tzinfo=UTC), date(2026, 11, 1)),
        ("2026-10-31T23:30:00+00:00", datetime(2026, 10, 31, 23, 30, tzinfo=UTC),
         date(2026, 11, 1)),
        ("2026-11-01T00:30+01:00", datetime(2026, 10, 31, 23, 30, tzinfo=UTC), date(2026, 11, 1)),
        ("2026-10-31T21:59:59-01:00", datetime(2026, 10, 31, 22, 59, 59, tzinfo=UTC),
         date(2026, 10, 31)),
        # A naive time is local: CEST (+2) in summer, CET (+1) after 2026-10-25.
        ("2026-10-05T14:30", datetime(2026, 10, 5, 12, 30, tzinfo=UTC), date(2026, 10, 5)),
        ("2026-10-26 00:15:00.25", datetime(2026, 10, 25, 23, 15, 0, 250000, tzinfo=UTC),
         date(2026, 10, 26)),
        ("2026-03-29T01:30", datetime(2026, 3, 29, 0, 30, tzinfo=UTC), date(2026, 3, 29)),
        # The repeated hour when clocks go back is read as its first occurrence (CEST).
        ("2026-10-25T02:30", datetime(2026, 10, 25, 0, 30, tzinfo=UTC), date(2026, 10, 25)),
        ("2026-10-05", datetime(2026, 10, 4, 22, tzinfo=UTC), date(2026, 10, 5)),
        ("2026-11-05", datetime(2026, 11, 4, 23, tzinfo=UTC), date(2026, 11, 5)),
    ],
)  # fmt: skip
def test_times_land_on_their_local_day(catalog_engine, tmp_path, written, ts, day):
    run(catalog_engine, write(tmp_path, f"measure,date,value\nhires,{written},1\n"))
    assert observations(catalog_engine) == [("hires", "{}", ts, day, 1.0)]
    with catalog_engine.connect() as connection:
        buckets = connection.execute(select(Rollup.grain, Rollup.start, Rollup.last_ts)).all()
    assert sorted(buckets) == [
        ("month", rollups.month_start(day), ts),
        ("week", rollups.week_start(day), ts),
    ]


def test_a_repeat_in_a_later_block_with_another_value_names_both_lines(
    catalog_engine, tmp_path, monkeypatch
):
    monkeypatch.setattr(importer, "BLOCK_BYTES", 48)
    lines = [f"hires,2026-10-{day:02d},{day}\n" for day in range(1, 21)]
    lines.append("hires,2026-10-03,99\n")  # line 22 repeats line 4 with another value
    lines.append("hires,2026-10-05,5\n")  # line 23 repeats line 6 with the same value
    path = write(tmp_path, "measure,date,value\n" + "".join(lines))

    with pytest.raises(ImportRejected) as caught:
        run(catalog_engine, path)

    assert caught.value.problems == [
        "line 22: same measure, dimensions and date as line 4 but another value (99 vs 3)"
    ]
    assert snapshot(catalog_engine)["observation"] == []


def test_a_repeat_in_a_newest_first_file_is_found_too(catalog_engine, tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "BLOCK_BYTES", 48)
    lines = [f"hires,2026-10-{day:02d},{day}\n" for day in range(20, 0, -1)]
    lines.append("hires,2026-10-17,99\n")  # line 22 repeats line 5
    with pytest.raises(ImportRejected) as caught:
        run(catalog_engine, write(tmp_path, "measure,date,value\n" + "".join(lines)))
    assert caught.value.problems == [
        "line 22: same measure, dimensions and date as line 5 but another value (99 vs 17)"
    ]


def test_a_repeat_with_the_same_value_is_harmless_in_any_block(
    catalog_engine, tmp_path, monkeypatch
):
    monkeypatch.setattr(importer, "BLOCK_BYTES", 48)
    lines = [f"hires,2026-10-{day:02d},{day}\n" for day in range(1, 21)]
    path = write(tmp_path, "measure,date,value\n" + "".join(lines + lines[2:5] + lines[7:8]))

    dry = run(catalog_engine, path, dry_run=True)
    summary = run(catalog_engine, path)

    assert (summary.rows, summary.inserted, summary.updated, summary.unchanged) == (24, 20, 0, 4)
    assert (dry.rows, dry.inserted, dry.updated, dry.unchanged) == (24, 20, 0, 4)
    assert len(observations(catalog_engine)) == 20
    assert consistent(catalog_engine) == []


@pytest.mark.parametrize("order", ["shuffled", "newest first"])
def test_block_size_and_row_order_do_not_change_the_store(
    database_url, tmp_path, monkeypatch, order
):
    """Small blocks exercise the per-block paths: lookups, rollup merges, out-of-order rows."""
    rng = random.Random(7)
    rows = [
        f"{m},2026-{month:02d}-{day:02d}T{hour:02d}:00,{rng.randint(-50, 500)},{b}\n"
        for m in ("hires", "headcount")
        for b in ("Berlin", "", "Köln")
        for month in (9, 10, 11)
        for day in (1, 3, 14, 28, 30)
        for hour in (7, 23)
    ]
    if order == "shuffled":
        rng.shuffle(rows)
    else:
        rows.sort(key=lambda row: row.split(",")[1], reverse=True)
    path = write(tmp_path, "measure,date,value,branch\n" + "".join(rows))

    def imported(block_bytes: int) -> dict:
        monkeypatch.setattr(importer, "BLOCK_BYTES", block_bytes)
        monkeypatch.setattr(importer, "WRITE_ROWS", block_bytes // 10)  # a block or two
        store = make_engine(database_url)
        with session_scope(store) as session:
            catalog.load_builtin_if_empty(session, now=datetime(2026, 1, 1, tzinfo=UTC))
        first = run(store, path)
        assert (first.inserted, first.updated, first.unchanged) == (len(rows), 0, 0)
        again = run(store, path)
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, len(rows))
        assert consistent(store) == []
        result = canonical(store)
        with store.begin() as connection:
            for model in reversed(TABLES):
                connection.execute(model.__table__.delete())
        store.dispose()
        return result

    assert imported(200) == imported(1 << 20)


def test_raw_driver_writes_store_what_the_orm_stores(catalog_engine, tmp_path):
    """The importer bypasses the ORM; queries through either must see the same values."""
    moment = datetime(2026, 10, 31, 23, 30, 0, 123456, tzinfo=UTC)
    with session_scope(catalog_engine) as session:
        by_orm = Series(measure="hires", dims='{"branch":"ORM"}')
        session.add(by_orm)
        session.flush()
        session.add(Observation(series_id=by_orm.id, ts=moment, day=date(2026, 11, 1), value=2.5))
        orm_id = by_orm.id
    body = "measure,date,value,branch\nhires,2026-10-31T23:30:00.123456Z,2.5,Importer\n"
    run(catalog_engine, write(tmp_path, body))

    with catalog_engine.connect() as connection:
        raw = connection.execute(
            text(
                "SELECT series_id = :orm_id, CAST(ts AS VARCHAR), CAST(day AS VARCHAR), value"
                " FROM observation ORDER BY series_id"
            ),
            {"orm_id": orm_id},
        ).all()
        found = connection.execute(
            select(Observation.series_id).where(
                Observation.ts == moment, Observation.day == date(2026, 11, 1)
            )
        ).all()
        rollup = connection.execute(
            select(Rollup.last_ts).where(Rollup.grain == "week").order_by(Rollup.series_id)
        ).all()
    assert raw[0][1:] == raw[1][1:]  # stored alike, byte for byte
    assert len(found) == 2
    assert rollup == [(moment,)]  # only the importer keeps rollups


def test_load_records_takes_dates_and_times_local_in_the_zone(catalog_engine):
    records = [
        ("hires", date(2026, 10, 5), 2, {"branch": "Berlin"}),
        ("hires", datetime(2026, 10, 5, 14, 30), 1.5, {"branch": "Berlin", "team": ""}),
        ("hires", datetime(2026, 10, 31, 23, 30, tzinfo=UTC), 4, {}),
    ]
    summary = importer.load_records(catalog_engine, records, tz=BERLIN)
    assert (summary.rows, summary.series, summary.inserted) == (3, 2, 3)
    assert observations(catalog_engine) == [
        ("hires", '{"branch":"Berlin"}', datetime(2026, 10, 4, 22, tzinfo=UTC), date(2026, 10, 5),
         2.0),
        ("hires", '{"branch":"Berlin"}', datetime(2026, 10, 5, 12, 30, tzinfo=UTC),
         date(2026, 10, 5), 1.5),
        ("hires", "{}", datetime(2026, 10, 31, 23, 30, tzinfo=UTC), date(2026, 11, 1), 4.0),
    ]  # fmt: skip
    assert importer.load_records(catalog_engine, records, tz=BERLIN).changed == 0
    assert consistent(catalog_engine) == []


def test_load_records_rejects_unknown_measures_and_bad_values(catalog_engine):
    records = [
        ("hires", date(2026, 10, 5), 2, {}),
        ("hire", date(2026, 10, 5), 2, {}),
        ("hires", "2026-10-05", float("nan"), {}),
    ]
    with pytest.raises(ImportRejected) as caught:
        importer.load_records(catalog_engine, records, tz=BERLIN)
    assert caught.value.problems == [
        "record 2: unknown measure 'hire' (did you mean 'hires'?)",
        "record 3: bad date '2026-10-05' (give a date or datetime); "
        "value nan is not a finite number",
    ]
    assert snapshot(catalog_engine)["observation"] == []


def test_load_records_checks_repeats_across_blocks(catalog_engine, monkeypatch):
    monkeypatch.setattr(importer, "RECORD_BLOCK", 3)
    records = [("hires", date(2026, 10, d), d, {}) for d in range(1, 10)]
    with pytest.raises(
        ImportRejected, match=r"record 10: .* as record 1 but another value \(7 vs 1\)"
    ):
        importer.load_records(
            catalog_engine, [*records, ("hires", date(2026, 10, 1), 7, {})], tz=BERLIN
        )
    summary = importer.load_records(catalog_engine, [*records, records[0]], tz=BERLIN)
    assert (summary.inserted, summary.unchanged) == (9, 1)


@pytest.mark.parametrize(
    ("summary", "line"),
    [
        (importer.ImportSummary(1_000_000, 12, 340, 2_000, 113, 997_887, 4.24, False),
         "imported 1,000,000 rows · 12 measures · 340 series · 2,113 changed · 4.2 s"),
        (importer.ImportSummary(1, 1, 1, 0, 1, 0, 0.01, True),
         "would import 1 row · 1 measure · 1 series · 1 would change · 0.0 s"),
    ],
)  # fmt: skip
def test_summary_line(summary, line):
    assert summary.line() == line


def test_progress_needs_a_terminal(catalog_engine, tmp_path):
    # Under pytest stderr is not a TTY: asking for progress must just import quietly.
    assert run(catalog_engine, write(tmp_path, SMALL), progress=True).inserted == 3


def _rows(rng, moments, branches=("Berlin", "Köln", "")) -> list[str]:
    return [
        f"{m},{when},{rng.randint(-50, 500)},{b}\n"
        for m in ("hires", "headcount")
        for b in branches
        for when in moments
    ]


def _changed(row: str) -> str:
    measure, when, value, branch = row.split(",")
    return f"{measure},{when},{int(value) + 1000},{branch}"


def test_rollups_stay_exact_through_any_sequence_of_writes(catalog_engine, tmp_path, monkeypatch):
    """New rows are merged into stored rollups, changed ones recomputed: after every kind of
    import, in small blocks (so buckets span blocks), the rollups equal a recomputation."""
    monkeypatch.setattr(importer, "BLOCK_BYTES", 700)
    monkeypatch.setattr(importer, "WRITE_ROWS", 50)  # every two blocks or so
    monkeypatch.setattr(importer, "PENDING_ROWS", 10)
    rng = random.Random(11)
    head = "measure,date,value,branch\n"
    days = [date(2026, 9, 1) + timedelta(days=3 * i) for i in range(30)]
    in_order = _rows(rng, [f"{d}T{h:02d}:00" for d in days for h in (6, 20)])
    first = run(catalog_engine, write(tmp_path, head + "".join(in_order), "first.csv"))
    assert (first.inserted, first.updated) == (len(in_order), 0)
    assert consistent(catalog_engine) == []

    assert run(catalog_engine, write(tmp_path, head + "".join(in_order), "again.csv")).changed == 0

    # Overlapping: every tenth row changed, new hours inside stored days, a new branch.
    overlap = [_changed(row) if i % 10 == 0 else row for i, row in enumerate(in_order)]
    overlap += _rows(rng, [f"{d}T12:00" for d in days[5:20]], ("Berlin", "Hamburg"))
    summary = run(catalog_engine, write(tmp_path, head + "".join(overlap), "overlap.csv"))
    assert summary.updated > 0 and summary.inserted > 0
    assert consistent(catalog_engine) == []

    # Out of order: newest first, and shuffled, each with rows before, inside and after.
    later = [date(2026, 8, 1) + timedelta(days=5 * i) for i in range(40)]
    shuffled = _rows(rng, [f"{d}T09:30" for d in later])
    rng.shuffle(shuffled)
    run(catalog_engine, write(tmp_path, head + "".join(shuffled), "shuffled.csv"))
    assert consistent(catalog_engine) == []
    newest_first = sorted(_rows(rng, [f"{d}T03:15" for d in later]), reverse=True)
    run(catalog_engine, write(tmp_path, head + "".join(newest_first), "newest.csv"))
    assert consistent(catalog_engine) == []

    # A daily append, then records (new, changed and unchanged) through load_records.
    daily = _rows(rng, ["2027-01-04"], ("Berlin", "Köln", "", "Hamburg", "München"))
    assert run(catalog_engine, write(tmp_path, head + "".join(daily), "daily.csv")).inserted == 10
    records = [
        ("hires", datetime(2027, 1, 4, 18), 7, {"branch": "Berlin"}),  # new, same day
        ("hires", date(2027, 1, 4), 1234, {"branch": "Köln"}),  # changed
        ("headcount", date(2027, 1, 5), 3, {"branch": "Berlin", "team": "AP"}),  # new series
    ]
    summary = importer.load_records(catalog_engine, records, tz=BERLIN)
    assert (summary.inserted, summary.updated) == (2, 1)
    assert consistent(catalog_engine) == []


def _frame_as_rows(frame) -> tuple:
    """A parsed block as plain values: line numbers, each column's values, the problems."""
    columns = {}
    for name, column in frame.columns.items():
        if isinstance(column, importer._Coded):
            columns[name] = [column.uniques[c] for c in column.codes]
        else:
            columns[name] = [str(v) for v in column]
    return frame.lines.tolist(), columns, frame.problems, frame.bad_lines


@pytest.mark.parametrize(
    "block",
    [
        b"hires,2026-10-05,2,Berlin\nhires,2026-10-06,3,Madrid\n",
        b"hires,2026-10-05,2,Berlin\r\nhires,2026-10-06,3,Madrid\r\n",
        b"hires,2026-10-05,2,Berlin\nhires,2026-10-06,3,Madrid",  # no newline at the end
        b"hires,2026-10-05,2,Berlin\n\nhires,2026-10-06,3,Madrid\n",  # a blank line
        b"hires,2026-10-05,2,Berlin\r\n\r\nhires,2026-10-06,3,Madrid\r\n",
        b"\nhires,2026-10-05,2,Berlin\n",
        b"hires,2026-10-05,2,Berlin\n\r",
        b"hires,2026-10-05,2,Berlin\rhires,2026-10-06,3,Madrid\n",  # a lone carriage return
        # As many rows as lines, but not a row per line: the carriage return splits one line
        # and the blank line gives none.
        b"hires,2026-10-05,2,Berlin\rhires,2026-10-06,3,Madrid\n\nhires,2026-10-07,4,London\n",
        b"hires,2026-10-05,2,Berlin,extra\nhires,2026-10-06,3,Madrid\n",
        b"hires,2026-10-05,2\nhires,2026-10-06,3,Madrid\n",
        b"hires,2026-10-05,NaN,Berlin\nhires,2026-10-06,lots,Madrid\n",
        b"hires,2026-10-05, 2 ,Berlin\nhires,2026-10-06,,Madrid\n",
    ],
)
def test_a_plain_block_reads_as_the_line_by_line_parse_reads_it(block):
    """Arrow alone reads a block whose lines are each a row; anything else goes line by line.
    Either way, the same lines, values and problems."""
    names = ["measure", "date", "value", "branch"]
    fast = _frame_as_rows(importer._parse_plain(block, 7, names))
    assert fast == _frame_as_rows(importer._parse_lines(block, 7, names))


def test_an_import_keeps_the_collector_off_older_objects_and_gives_them_back(
    catalog_engine, tmp_path, monkeypatch
):
    """While a file is read, objects made before it are frozen (no full collection walks the
    whole process); afterwards, even after a rejected file, they are collectable again."""
    import gc

    frozen = []
    prepare = importer._prepare_frame

    def noting(*args):
        frozen.append(gc.get_freeze_count())
        return prepare(*args)

    monkeypatch.setattr(importer, "_prepare_frame", noting)
    gc.unfreeze()
    header = "measure,date,value,branch\n"
    run(catalog_engine, write(tmp_path, header + "hires,2026-10-05,2,Berlin\n"))
    assert frozen and all(count > 0 for count in frozen)
    assert gc.get_freeze_count() == 0

    with pytest.raises(ImportRejected):
        run(catalog_engine, write(tmp_path, header + "hires,soon,2,Berlin\n", "bad.csv"))
    assert gc.get_freeze_count() == 0
