"""Rows in bulk through the database drivers, encoded with numpy rather than a Python object
per value: what the importer and the rollups write and read by the million.

SQLite gets multi-row INSERTs of the texts SQLAlchemy would store; PostgreSQL gets binary COPY.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd

DAY_US = 86_400_000_000
# Rows a bulk writer encodes at a time: the memory one chunk's payload takes.
WRITE_CHUNK = 100_000


# --- SQLite ----------------------------------------------------------------------------------


def sqlite_times(ts: np.ndarray) -> np.ndarray:
    """The text SQLAlchemy's DateTime stores on SQLite: `2026-10-31 23:30:00.000000`.
    Formatted once per distinct moment (a file of dates has few), found by hashing: sorting
    would cost more than the formatting saved."""
    at, moments = pd.factorize(ts)
    text = np.datetime_as_string(moments.astype("datetime64[us]"), unit="us")
    return np.char.replace(text, "T", " ").astype(object)[at]


def sqlite_days(day: np.ndarray) -> np.ndarray:
    """The text SQLAlchemy's Date stores on SQLite: `2026-11-01`."""
    at, days = pd.factorize(day)
    return np.datetime_as_string(days.astype("datetime64[D]"), unit="D").astype(object)[at]


# Rows per INSERT statement in bulk writes on SQLite: one statement with many VALUES rows pays
# the per-statement cost (reset, VM start, a Python tuple) once for all of them.
SQLITE_ROWS_PER_INSERT = 250
SQLITE_CHUNK = 80 * SQLITE_ROWS_PER_INSERT


def sqlite_insert_many(driver, head: str, row: str, columns: Sequence, tail: str = "") -> None:
    """`head VALUES row, row, … tail` through the driver, in chunks, so the Python objects of
    only one chunk of rows exist at a time. `row` names the columns as {0}, {1}, …; one may
    appear several times, bound once."""
    width = len(columns)
    step = SQLITE_ROWS_PER_INSERT

    def values(rows: int) -> str:
        numbered = (
            row.format(*(f"?{i * width + j + 1}" for j in range(width))) for i in range(rows)
        )
        return f"{head} VALUES {', '.join(numbered)} {tail}"

    many, one = values(step), values(1)
    for at in range(0, len(columns[0]), SQLITE_CHUNK):
        chunk = [column[at : at + SQLITE_CHUNK] for column in columns]
        table = np.empty((len(chunk[0]), width), object)
        for i, column in enumerate(chunk):
            table[:, i] = column
        whole = len(table) // step * step
        if whole:
            driver.executemany(many, table[:whole].reshape(-1, width * step).tolist())
        if whole < len(table):
            driver.executemany(one, table[whole:].tolist())


# --- PostgreSQL ------------------------------------------------------------------------------

# PostgreSQL's binary COPY format: a header, rows of (field count, then length and big-endian
# value per field) and a trailer. numpy builds and reads whole blocks of it without a Python
# object per row. Timestamps count µs, dates days, from 2000-01-01.
PG_EPOCH_DAYS = 10_957  # 2000-01-01 in days since 1970-01-01
PG_EPOCH_US = PG_EPOCH_DAYS * DAY_US
PG_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
PG_TRAILER = b"\xff\xff"


def pg_copy_dtype(**fields: str) -> np.dtype:
    """The layout of one binary COPY row of the given fixed-size big-endian fields."""
    layout = [("field_count", ">i2")]
    for name, code in fields.items():
        layout += [(f"{name}_length", ">i4"), (name, code)]
    return np.dtype(layout)


def pg_copy_data(**columns: tuple[str, np.ndarray]) -> bytes:
    """A binary COPY payload from columns given as (big-endian dtype code, values)."""
    return PG_HEADER + pg_copy_rows(**columns) + PG_TRAILER


def pg_copy_rows(**columns: tuple[str, np.ndarray]) -> bytes:
    """The rows alone, for a COPY streamed in parts between PG_HEADER and PG_TRAILER."""
    count = len(next(iter(columns.values()))[1])
    return pg_copy_array(count, columns).tobytes()


def pg_copy_array(
    count: int, columns: dict[str, tuple[str, object]], *, nulls: Sequence[str] = ()
) -> np.ndarray:
    """`count` binary COPY rows as a structured array: columns as (big-endian dtype code,
    values or one value for every row), then the `nulls` columns, NULL in every row (a length of
    -1 and no value). Field counts and lengths come from one template row, repeated: assigning them
    column by column cost as much again as the values."""
    layout = pg_copy_dtype(**{name: code for name, (code, _) in columns.items()}).descr
    layout += [(f"{name}_length", ">i4") for name in nulls]
    dtype = np.dtype(layout)
    template = np.zeros(1, dtype)
    template["field_count"] = len(columns) + len(nulls)
    for name, (code, _) in columns.items():
        template[f"{name}_length"] = np.dtype(code).itemsize
    for name in nulls:
        template[f"{name}_length"] = -1
    rows = np.repeat(template, count)
    for name, (_, values) in columns.items():
        rows[name] = values
    return rows


def pg_copy_arrays(data: bytes, codes: Sequence[str]) -> list[np.ndarray]:
    """The columns of a binary COPY … TO STDOUT of one row of one-dimensional arrays without
    nulls, of fixed-size elements with the given big-endian dtype codes. (COPY sends each row as
    a message of its own, and a million messages cost more to receive than one of arrays.)"""
    at = 19 + int.from_bytes(data[15:19], "big") + 2  # header, then the row's field count
    arrays = []
    for code in codes:
        length = int.from_bytes(data[at : at + 4], "big")
        at += 4
        ndim = int.from_bytes(data[at : at + 4], "big")
        if ndim == 0:  # empty
            arrays.append(np.zeros(0, code))
        else:  # ndim, flags, element type, size, lower bound; then (length, value) each
            count = int.from_bytes(data[at + 12 : at + 16], "big")
            element = np.dtype([("length", ">i4"), ("value", code)])
            arrays.append(np.frombuffer(data, element, count, offset=at + 20)["value"])
        at += length
    return arrays


def pg_read_arrays(driver, query: str, params: Sequence, codes: Sequence[str]) -> list[np.ndarray]:
    """Run `COPY (SELECT array_agg(…), …) TO STDOUT (FORMAT binary)` and decode its arrays."""
    data = bytearray()
    with driver.cursor() as cursor, cursor.copy(query, params) as copy:
        for part in copy:
            data += part
    return pg_copy_arrays(bytes(data), codes)
