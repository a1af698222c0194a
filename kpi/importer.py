"""Loading measures: a CSV file (`kpibot import`) or records from code (demo data,
`/kpi record`), through one write path.

A file is read in blocks of whole lines, never whole. Each block is parsed by Arrow's CSV reader
and validated with vectorised checks; while no bad line has been seen, its rows are compared
with the stored values and only new or changed ones are written — all in one transaction. A bad
line anywhere rolls everything back once the rest of the file has been read, so every bad line
is reported and nothing is stored.

New rows are buffered over blocks (WRITE_ROWS at a time, and before any lookup or update of
stored rows) and written sorted by primary key, so each place of the B-trees takes many rows at
once. Their week and month rollups are computed from those rows in memory, summed over the
writes (about one row per bucket) and written once at the end in key order. A bucket of a series
this import created cannot be stored yet and goes in by plain bulk insert
(`rollups.insert_new`); any other is upserted so that totals and counts add up
(`rollups.merge_partials`). A changed value cannot be merged: its
weeks and months are recomputed from the observations (`rollups.refresh`) at the end, after the
pending merge. Memory: one block, the write buffer and the pending weeks and months, whatever
the file's size.

The first import into an empty PostgreSQL store drops the primary keys of `observation` and
`rollup`, streams each block's rows into one COPY that a psycopg thread sends while the next
block is parsed, writes the rollups in key order and builds both keys at the end: ~2x faster
than keeping B-trees current row by row (see bench/README.md). Anything that needs a key on the
way (a lookup of rows out of time order, a merge) builds them first. When there are many
rollups (ROLLUPS_ASIDE_ROWS), a second connection loads them into a table of their own and keys
it while this one builds the observations' key, so the server does both at once; that table,
committed, then replaces the empty `rollup` inside the import's transaction.

Duplicates (same measure, dimensions and moment) with different values are rejected. Inside a
block they are found by sorting; across blocks a row can only repeat an earlier one if its
moment lies between the earliest and the latest already seen for its series, so only such
out-of-order rows are remembered, and the file is read a second time to find their first
occurrence only if there are any. Files in time order, either way and maybe grouped by series,
therefore need memory for one block plus two numbers per series. (Shuffled files need about
40 bytes per out-of-order row.)
"""

import csv
import gc
import io
import json
import math
import re
import sys
import time as clock
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import Copy
from psycopg.copy import QueuedLibpqWriter
from rapidfuzz import fuzz, process
from sqlalchemy import Connection, Engine, func, select

from kpi import bulk, rollups
from kpi.errors import ImportRejected
from kpi.models import Measure, Series, SeriesDim
from kpi.store import bump_generation_on

REQUIRED = ("measure", "date", "value")
BLOCK_BYTES = 4 << 20  # about 100,000 lines of a typical measure file
PARSE_AHEAD = 2  # blocks parsed while the rows before them are written
RECORD_BLOCK = 50_000
# Pending week and month rollups are combined once they hold twice this or twice the rows of
# the combined ones.
PENDING_ROWS = 100_000
# New rows are buffered (32 bytes each) and written this many at a time, sorted by key; any
# lookup or update of stored rows writes them first.
WRITE_ROWS = 500_000
SHOWN_PROBLEMS = 50
# Rows of one series closer than this are looked up (and refreshed) as one range.
RANGE_GAP_US = rollups.MERGE_GAP_DAYS * 86_400_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)?"
)
_INSERTED, _UPDATED, _UNCHANGED, _UNKNOWN = 1, 2, 0, -1
_NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class ImportSummary:
    rows: int
    measures: int
    series: int
    inserted: int
    updated: int
    unchanged: int
    seconds: float
    dry_run: bool

    @property
    def changed(self) -> int:
        return self.inserted + self.updated

    def line(self) -> str:
        """e.g. `imported 1,000,000 rows · 12 measures · 340 series · 2,113 changed · 4.2 s`."""
        head = "would import" if self.dry_run else "imported"
        change = "would change" if self.dry_run else "changed"
        return (
            f"{head} {_count(self.rows, 'row')} · {_count(self.measures, 'measure')} · "
            f"{self.series:,} series · {self.changed:,} {change} · {self.seconds:.1f} s"
        )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


class UnreadableFile(ImportRejected):
    """The file cannot be opened or read at all: one line, not a list of bad lines."""

    def __init__(self, message: str) -> None:
        ImportRejected.__init__(self, [message], 1)
        self.message = message
        self.args = (message,)


def import_csv(
    engine: Engine,
    path: str | Path,
    *,
    tz: ZoneInfo,
    dry_run: bool = False,
    progress: bool = False,
) -> ImportSummary:
    """Validate a measure CSV whole and upsert it in one transaction (or, with `dry_run`, only
    count what would change). Raises ImportRejected, with every bad line, and stores nothing."""
    started = clock.perf_counter()
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as error:
        raise UnreadableFile(f"cannot read {path}: {error.strerror or error}") from None
    with handle, _old_objects_left_alone():
        try:
            names, body_at = _read_header(handle)
            size = path.stat().st_size
        except OSError as error:
            raise UnreadableFile(f"cannot read {path}: {error.strerror or error}") from None

        def frames(advance: Callable[[int], None] = lambda _: None) -> Iterator[_Frame]:
            # Blocks are parsed a few ahead by a thread of their own: Arrow's CSV reader and the
            # database driver both work without the GIL, so parsing overlaps the writes.
            handle.seek(body_at)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kpibot-parse") as pool:
                ahead: deque = deque()
                for first_line, block in _blocks(handle):
                    advance(len(block))
                    ahead.append(pool.submit(_parse_block, block, first_line, names))
                    if len(ahead) > PARSE_AHEAD:
                        yield ahead.popleft().result()
                while ahead:
                    yield ahead.popleft().result()

        with _transaction(engine, tz, dry_run) as loader:
            # A header `Branch` files under the store's `branch`, not a second dimension.
            names[:] = [loader.dimension_named(name) for name in names]
            dims = [name for name in names if name not in REQUIRED]

            def batches(advance: Callable[[int], None] = lambda _: None) -> Iterator[_Batch]:
                return (_prepare_frame(frame, dims, loader) for frame in frames(advance))

            unchanged = None
            if loader.stored_series:
                with _progress_bar(progress, size - body_at, "comparing") as advance:
                    unchanged = _unchanged_months(loader, batches(advance))
            if unchanged is not None and unchanged.everything:  # no second pass needed
                loader.count_unchanged(unchanged.rows, unchanged.keys)
            else:
                with _progress_bar(progress, size - body_at, "importing") as advance:
                    for batch in batches(advance):
                        loader.add(batch, unchanged)
            loader.finish(batches)
    return loader.summary(clock.perf_counter() - started)


@contextmanager
def _old_objects_left_alone() -> Iterator[None]:
    """Python's cyclic garbage collector leaves every object made before the import alone
    while it runs: the first blocks make many small objects, which triggered a full collection
    over the whole process (its libraries, the catalog): 0.14 s of a 1M-row import's 3 s.
    Objects the import makes are collected as usual."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def load_records(
    engine: Engine,
    records: Iterable[tuple[str, date | datetime, float, Mapping[str, str]]],
    *,
    tz: ZoneInfo,
) -> ImportSummary:
    """Upsert (measure, date or moment, value, dimensions) records through the import's write
    path, in one transaction. Measures must exist; naive moments and dates are local in `tz`.
    Raises ImportRejected naming the bad records (counted from 1) and stores nothing.

    Records cannot be read twice, so their keys stay in memory until the end (about 40 bytes
    a record): fine for demo data and `/kpi record`; big files go through `import_csv`."""
    started = clock.perf_counter()
    with _transaction(engine, tz, dry_run=False) as loader:
        loader.label = "record"
        loader.keep_history = True
        iterator = iter(records)
        number = 1
        while chunk := list(islice(iterator, RECORD_BLOCK)):
            loader.add(_prepare_records(chunk, number, loader))
            number += len(chunk)
        loader.finish(None)
    return loader.summary(clock.perf_counter() - started)


@contextmanager
def _transaction(engine: Engine, tz: ZoneInfo, dry_run: bool) -> Iterator["_Loader"]:
    options = {}
    if dry_run and engine.dialect.name == "postgresql":
        # One snapshot for every lookup, and the database itself guarantees nothing is written.
        options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    kind = _PostgresStore if engine.dialect.name == "postgresql" else _SqliteStore
    with engine.connect().execution_options(**options) as connection:
        store = kind(connection)
        try:
            with connection.begin():
                store.begin(dry_run)
                try:
                    yield _Loader(connection, store, tz=tz, dry_run=dry_run)
                except BaseException as error:
                    store.close(error)
                    raise
                store.close(None)
        except BaseException:
            store.discard()  # once the transaction has rolled back
            raise


# --- reading the file ----------------------------------------------------------------------


def _read_header(handle) -> tuple[list[str], int]:
    """The column names in file order (measure, date, value in lower case) and where rows begin."""
    raw = handle.readline()
    if not raw.strip() and not handle.read(1):
        raise ImportRejected(
            ["line 1: the file is empty (expected a header: measure,date,value)"], 1
        )
    try:
        header = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRejected(["line 1: not UTF-8 text (save the file as CSV UTF-8)"], 1) from None
    fields = [name.strip() for name in next(csv.reader([header]), [])]
    names = [name.lower() if name.lower() in REQUIRED else name for name in fields]
    problems = []
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        problems.append(
            f"line 1: the header has no {', '.join(missing)} column"
            f"{'s' if len(missing) > 1 else ''} (expected measure,date,value and dimensions, "
            f"found {','.join(fields) or 'nothing'})"
        )
    for position, name in enumerate(fields, start=1):
        if not name:
            problems.append(f"line 1: column {position} has no name")
    seen = set()
    for name in names:
        if name and name.lower() in seen:
            problems.append(f"line 1: column '{name}' appears twice")
        seen.add(name.lower())
    if problems:
        raise ImportRejected(problems, len(problems))
    return names, handle.tell()


def _blocks(handle) -> Iterator[tuple[int, bytes]]:
    """(number of its first line, bytes) for blocks of whole records after the header line."""
    line = 2
    rest = b""
    # The first blocks are small and grow to BLOCK_BYTES: the database starts storing rows
    # while the rest of the first megabytes is still being parsed.
    size = max(1, BLOCK_BYTES // 16)
    while True:
        data = handle.read(size)
        size = min(2 * size, BLOCK_BYTES)
        buffer = rest + data if rest else data
        if not data:
            if buffer:
                yield line, buffer
            return
        cut = _record_boundary(buffer)
        if cut <= 0 and len(buffer) > 16 * BLOCK_BYTES:
            # Quotes that never close (a stray `"` in an unquoted field): give up on keeping
            # records whole rather than holding the file; the lines will be reported as bad.
            cut = buffer.rfind(b"\n") + 1
        if cut <= 0:
            rest = buffer
            continue
        block, rest = buffer[:cut], buffer[cut:]
        yield line, block
        line += block.count(b"\n")


def _record_boundary(buffer: bytes) -> int:
    """Just after the last newline that is not inside a quoted field; 0 when there is none."""
    if b'"' not in buffer:
        return buffer.rfind(b"\n") + 1
    raw = np.frombuffer(buffer, np.uint8)
    newlines = np.flatnonzero(raw == 10)
    quotes_before = np.cumsum(raw == 34)[newlines]
    outside = newlines[quotes_before % 2 == 0]
    return int(outside[-1]) + 1 if len(outside) else 0


@dataclass
class _Frame:
    """Parsed lines of a block: the columns as strings or _Coded (value maybe already float)."""

    columns: dict[str, object]
    lines: np.ndarray
    problems: list[tuple[int, str]]
    bad_lines: int


def _parse_block(block: bytes, first_line: int, names: list[str]) -> _Frame:
    problems: list[tuple[int, str]] = []
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        block, undecodable = _blank_undecodable(block, first_line)
        problems += [
            (n, f"line {n}: not UTF-8 text (save the file as CSV UTF-8)") for n in undecodable
        ]
    if b'"' in block:
        frame = _parse_quoted(block, first_line, names)
    else:
        frame = _parse_plain(block, first_line, names)
    frame.problems = sorted(problems + frame.problems)
    frame.bad_lines += len(problems)
    return frame


def _blank_undecodable(block: bytes, first_line: int) -> tuple[bytes, list[int]]:
    lines = block.split(b"\n")
    bad = []
    for i, line in enumerate(lines):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(first_line + i)
            lines[i] = b""
    return b"\n".join(lines), bad


def _width_problem(line: int, found: int, width: int) -> tuple[int, str]:
    return (line, f"line {line}: {found} columns, but the header has {width}")


def _parse_plain(block: bytes, first_line: int, names: list[str]) -> _Frame:
    """No quotes: Arrow's CSV reader. A block it does not read as a row per line (a blank line,
    a line of too few or too many fields, a lone carriage return) gets each line's field count
    from numpy first."""
    try:
        columns = _read_csv(block, names, pa.float64())
    except pa.ArrowInvalid:  # a line of another width, a blank one, or a value not a number
        columns = None
    lines = block.count(b"\n") + (not block.endswith(b"\n"))
    if columns is not None and len(columns["value"]) == lines:
        if np.isfinite(columns["value"]).all():
            return _Frame(columns, first_line + np.arange(lines), [], 0)
    return _parse_lines(block, first_line, names)


def _parse_lines(block: bytes, first_line: int, names: list[str]) -> _Frame:
    """Each line's field count with numpy; the lines of the right width through Arrow."""
    width = len(names)
    raw = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(raw == 10)
    if not block.endswith(b"\n"):
        ends = np.append(ends, len(block))
    starts = np.concatenate(([0], ends[:-1] + 1))
    commas = np.flatnonzero(raw == 44)
    fields = np.searchsorted(commas, ends) - np.searchsorted(commas, starts) + 1
    lengths = ends - starts
    carriage = (lengths > 0) & (raw[np.maximum(ends - 1, 0)] == 13)
    blank = lengths - carriage == 0
    good = (fields == width) & ~blank
    bad = np.flatnonzero(~good & ~blank)
    problems = [
        _width_problem(first_line + int(i), int(fields[i]), width) for i in bad[:SHOWN_PROBLEMS]
    ]
    if not good.all():
        block = b"\n".join(block[s:e] for s, e in zip(starts[good], ends[good], strict=True))
    lines = first_line + np.flatnonzero(good)
    if not len(lines):
        return _Frame({name: np.array([], object) for name in names}, lines, problems, len(bad))
    try:
        columns = _read_csv(block, names, pa.float64())
        if not np.isfinite(columns["value"]).all():
            raise ValueError("NaN or infinity: quoted as written")
    except (pa.ArrowInvalid, ValueError):  # some value is not a number: as text, to say which
        columns = _read_csv(block, names, pa.string())
    return _Frame(columns, lines, problems, len(bad))


@dataclass(frozen=True)
class _Coded:
    """A text column as codes into its distinct values (Arrow's dictionary encoding)."""

    codes: np.ndarray
    uniques: list[str]


_TEXT = pa.dictionary(pa.int32(), pa.string())


def _read_csv(block: bytes, names: list[str], value_type: pa.DataType) -> dict[str, object]:
    """Lines of exactly one field per name, no quotes, no blank lines: Arrow's CSV reader,
    which parses in threads of its own without the GIL and encodes text columns as codes
    into their distinct values (four times what pandas' C parser does here)."""
    table = pacsv.read_csv(
        pa.py_buffer(block),
        read_options=pacsv.ReadOptions(column_names=names),
        # A blank line is an error, not a line skipped: rows and lines stay one to one.
        parse_options=pacsv.ParseOptions(quote_char=False, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(
            column_types={**dict.fromkeys(names, _TEXT), "value": value_type},
            null_values=[],  # an empty value is not a number, as a missing one
            strings_can_be_null=False,
        ),
    )
    table = table.unify_dictionaries().combine_chunks()  # one chunk, one dictionary a column
    columns: dict[str, object] = {}
    for name in names:
        column = table.column(name).chunk(0)
        if name == "value":
            kind = np.float64 if value_type == pa.float64() else object
            columns[name] = np.asarray(column.to_numpy(zero_copy_only=False), kind)
        else:
            codes = column.indices.to_numpy().astype(np.intp)
            columns[name] = _Coded(codes, column.dictionary.to_pylist())
    return columns


def _parse_quoted(block: bytes, first_line: int, names: list[str]) -> _Frame:
    """Quoted fields (maybe spanning lines): the csv module, which tracks line numbers."""
    width = len(names)
    reader = csv.reader(io.StringIO(block.decode("utf-8"), newline=""))
    rows, lines, problems = [], [], []
    bad = 0
    consumed = 0
    for row in reader:
        line = first_line + consumed
        consumed = reader.line_num
        if not row:
            continue
        if len(row) != width:
            bad += 1
            if len(problems) < SHOWN_PROBLEMS:
                problems.append(_width_problem(line, len(row), width))
            continue
        rows.append(row)
        lines.append(line)
    columns = {
        name: np.array([row[i] for row in rows], dtype=object) for i, name in enumerate(names)
    }
    return _Frame(columns, np.array(lines, np.int64), problems, bad)


@contextmanager
def _progress_bar(wanted: bool, total: int, what: str) -> Iterator[Callable[[int], None]]:
    """A bar on stderr when it is a terminal; `what` names the pass (a re-import has two)."""
    if not (wanted and sys.stderr.isatty()):
        yield lambda _: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


# --- validating rows -----------------------------------------------------------------------


@dataclass
class _Batch:
    """Valid, distinct rows of one block, sorted by (series, moment), and its problems."""

    series: np.ndarray  # index into the loader's series keys
    ts: np.ndarray  # µs since 1970-01-01 UTC
    day: np.ndarray  # local day, days since 1970-01-01
    value: np.ndarray
    lines: np.ndarray
    rows: int  # valid rows, counting repeats of a row with the same value
    problems: list[tuple[int, str]] = field(default_factory=list)
    bad_lines: int = 0


class _Moments:
    """Parses each distinct date text once: date-only files have few distinct texts."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.zone = str(tz)

    def parse(self, raw: str) -> tuple[int, int] | str:
        """(µs since the epoch in UTC, local day number) or what is wrong with it."""
        text = raw.strip()
        if not text:
            return "no date"
        try:
            if _DATE.fullmatch(text):
                day = date.fromisoformat(text)
                moment = datetime.combine(day, time(), self.tz)
            elif _TIMESTAMP.fullmatch(text):
                parsed = datetime.fromisoformat(text)
                if parsed.tzinfo is None:
                    moment = parsed.replace(tzinfo=self.tz)
                    if moment.astimezone(UTC).astimezone(self.tz).replace(tzinfo=None) != parsed:
                        return f"{text} does not exist in {self.zone} (the clocks skip it)"
                else:
                    moment = parsed
                day = moment.astimezone(self.tz).date()
            else:
                raise ValueError(text)
            if not 1000 <= day.year <= 9998:
                raise ValueError(text)
            return (moment - EPOCH) // timedelta(microseconds=1), day.toordinal() - EPOCH_ORDINAL
        except (ValueError, OverflowError):
            return f"bad date '{text}' (write 2026-10-05 or an ISO 8601 time like 2026-10-05T14:30)"

    def of(self, value: date | datetime) -> tuple[int, int] | str:
        if isinstance(value, datetime):
            moment = value if value.tzinfo is not None else value.replace(tzinfo=self.tz)
            day = moment.astimezone(self.tz).date()
        elif isinstance(value, date):
            day = value
            moment = datetime.combine(value, time(), self.tz)
        else:
            return f"bad date {value!r} (give a date or datetime)"
        return (moment - EPOCH) // timedelta(microseconds=1), day.toordinal() - EPOCH_ORDINAL


class _Problems:
    """The first lines' problems in line order, and how many bad lines there are in all."""

    def __init__(self) -> None:
        self.shown: list[tuple[int, str]] = []
        self.total = 0

    def add(self, problems: list[tuple[int, str]], bad_lines: int) -> None:
        self.total += bad_lines
        if problems:
            self.shown = sorted(self.shown + problems)[:SHOWN_PROBLEMS]


def _prepare_frame(frame: _Frame, dims: list[str], loader: "_Loader") -> _Batch:
    columns = frame.columns
    n = len(frame.lines)

    def factorized(name: str) -> tuple[np.ndarray, list[str]]:
        column = columns[name]
        if isinstance(column, _Coded):
            codes, uniques = column.codes, column.uniques
        else:
            codes, uniques = pd.factorize(column)
        return codes, [str(u).strip() for u in uniques]

    measure_codes, measures = factorized("measure")
    date_codes, dates = factorized("date")
    dim_columns = [factorized(name) for name in dims]

    # A line of empty fields (",,,") is a blank line.
    empty = np.ones(n, bool)
    for codes, uniques in ((measure_codes, measures), (date_codes, dates), *dim_columns):
        empty &= np.array([u == "" for u in uniques] or [True], bool)[codes]
    raw_values = columns["value"]
    if raw_values.dtype == object:
        stripped = np.array([str(v).strip() for v in raw_values], object)
        values = pd.to_numeric(pd.Series(stripped, dtype=object), errors="coerce")
        values = values.to_numpy(np.float64, na_value=np.nan)
        empty &= stripped == ""
    else:  # the C parser read every value as a number
        values = raw_values.astype(np.float64, copy=False)
        empty[:] = False

    known = np.array([m in loader.measures for m in measures] or [True], bool)
    unknown = ~known[measure_codes]
    parsed = [loader.moments.parse(d) for d in dates]
    date_bad = np.array([isinstance(p, str) for p in parsed] or [False], bool)[date_codes]
    ts_of = np.array([0 if isinstance(p, str) else p[0] for p in parsed] or [0], np.int64)
    day_of = np.array([0 if isinstance(p, str) else p[1] for p in parsed] or [0], np.int64)
    value_bad = ~np.isfinite(values)
    reasons = [
        (unknown, lambda i: loader.unknown_measure(measures[measure_codes[i]])),
        (date_bad, lambda i: parsed[date_codes[i]]),
        (value_bad, lambda i: _value_problem(raw_values[i])),
    ]
    bad = (unknown | date_bad | value_bad) & ~empty
    good = np.flatnonzero(~bad & ~empty)
    problems = _describe(bad, reasons, frame.lines, loader.label)

    # One code per distinct (measure, dimension values) in the block, then a series key each.
    combo = measure_codes.astype(np.int64)
    for codes, uniques in dim_columns:
        combo = pd.factorize(combo * len(uniques) + codes)[0].astype(np.int64)
    combo = combo[good]
    codes_used, first = np.unique(combo, return_index=True)
    series_of_combo = np.zeros(int(combo.max()) + 1 if len(combo) else 0, np.int64)
    rows = good[first]
    named = [np.array(measures, object)[measure_codes[rows]]]
    named += [np.array(uniques, object)[codes[rows]] for codes, uniques in dim_columns]
    series_of_combo[codes_used] = loader.file_series_keys(dims, list(zip(*named, strict=True)))
    return _distinct(
        loader,
        series=series_of_combo[combo],
        ts=ts_of[date_codes[good]],
        day=day_of[date_codes[good]],
        value=values[good],
        lines=frame.lines[good],
        problems=frame.problems + problems,
        bad_lines=frame.bad_lines + int(bad.sum()),
    )


def _value_problem(raw: object) -> str:
    text = str(raw).strip()
    if not text:
        return "no value"
    try:
        number = float(text)
    except ValueError:
        number = 0.0  # not even Python's idea of a number
    if math.isfinite(number):
        return f"value '{text}' is not a number"
    return f"value '{text}' is not a finite number"


def _describe(
    bad: np.ndarray,
    reasons: list[tuple[np.ndarray, Callable[[int], str]]],
    lines: np.ndarray,
    label: str,
) -> list[tuple[int, str]]:
    """Messages for the first bad rows only: a file of a million bad lines shows fifty."""
    problems = []
    for i in np.flatnonzero(bad)[:SHOWN_PROBLEMS]:
        said = "; ".join(describe(i) for mask, describe in reasons if mask[i])
        problems.append((int(lines[i]), f"{label} {lines[i]}: {said}"))
    return problems


def _prepare_records(
    records: list[tuple[str, date | datetime, float, Mapping[str, str]]],
    first: int,
    loader: "_Loader",
) -> _Batch:
    series, ts, day, values, lines, problems = [], [], [], [], [], []
    bad = 0
    for number, record in enumerate(records, start=first):
        try:
            measure, when, value, dims = record
        except (TypeError, ValueError):
            said = ["give (measure, date, value, dimensions)"]
        else:
            said = []
            if measure not in loader.measures:
                said.append(loader.unknown_measure(str(measure)))
            moment = loader.moments.of(when)
            if isinstance(moment, str):
                said.append(moment)
            try:
                value = float(value)
            except (TypeError, ValueError):
                said.append(f"value {value!r} is not a number")
            else:
                if not np.isfinite(value):
                    said.append(f"value {value!r} is not a finite number")
        if said:
            bad += 1
            if len(problems) < SHOWN_PROBLEMS:
                problems.append((number, f"record {number}: {'; '.join(said)}"))
            continue
        pairs = [(str(k).strip(), str(v).strip()) for k, v in (dims or {}).items()]
        series.append(loader.series_key(measure, [(k, v) for k, v in pairs if v != ""]))
        ts.append(moment[0])
        day.append(moment[1])
        values.append(value)
        lines.append(number)
    return _distinct(
        loader,
        series=np.array(series, np.int64),
        ts=np.array(ts, np.int64),
        day=np.array(day, np.int64),
        value=np.array(values, np.float64),
        lines=np.array(lines, np.int64),
        problems=problems,
        bad_lines=bad,
    )


def _distinct(loader: "_Loader", **arrays) -> _Batch:
    """Sort by (series, moment); a repeat with the same value is dropped, with another value it
    is a bad line naming the first."""
    problems, bad_lines = arrays.pop("problems"), arrays.pop("bad_lines")
    rows = len(arrays["lines"])
    order = np.lexsort((arrays["lines"], arrays["ts"], arrays["series"]))
    s, ts, day, value, lines = (arrays[k][order] for k in ("series", "ts", "day", "value", "lines"))
    repeat = np.zeros(len(s), bool)
    repeat[1:] = (s[1:] == s[:-1]) & (ts[1:] == ts[:-1])
    if repeat.any():
        first = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(s))))
        conflict = repeat & (value != value[first])
        label = loader.label
        for i in np.flatnonzero(conflict):
            if len(problems) < SHOWN_PROBLEMS * 2:
                problems.append(
                    _conflict(label, lines[i], value[i], lines[first[i]], value[first[i]])
                )
        bad_lines += int(conflict.sum())
        keep = ~repeat
        s, ts, day, value, lines = s[keep], ts[keep], day[keep], value[keep], lines[keep]
    problems.sort()
    return _Batch(s, ts, day, value, lines, rows, problems, bad_lines)


def _conflict(label: str, line: int, value: float, first: int, first_value: float) -> tuple:
    return (
        int(line),
        f"{label} {line}: same measure, dimensions and date as {label} {first} "
        f"but another value ({value:g} vs {first_value:g})",
    )


# --- the write path ------------------------------------------------------------------------


class _Loader:
    """State of one import: series keys, counts, problems, out-of-order rows."""

    def __init__(
        self, connection: Connection, store: "_Store", *, tz: ZoneInfo, dry_run: bool
    ) -> None:
        self.connection = connection
        self.store = store
        self.dry_run = dry_run
        self.label = "line"
        self.keep_history = False
        self.history: list[_Batch] = []
        self.measures = set(connection.execute(select(Measure.name)).scalars())
        self.stored_series = {
            (m, d): i
            for i, m, d in connection.execute(select(Series.id, Series.measure, Series.dims))
        }
        self.keys: list[tuple[str, str, list[tuple[str, str]]]] = []
        self.key_index: dict[tuple[str, str], int] = {}
        self._given: dict[tuple, int] = {}  # as written (dimension order), to the key
        self._file_keys: dict[tuple, int] = {}  # (measure, each dimension's value) of the file
        self.ids = np.zeros(0, np.int64)  # stored series id per key, 0 while there is none
        self.earliest = np.zeros(0, np.int64)  # earliest and latest moment seen so far per key
        self.latest = np.zeros(0, np.int64)
        self.seen = np.zeros(0, bool)
        self.fresh = np.zeros(0, bool)  # created by this import
        self.problems = _Problems()
        self.candidates: list[tuple[_Batch, np.ndarray]] = []
        self.counts = {_INSERTED: 0, _UPDATED: 0, _UNCHANGED: 0}
        self.rows = 0
        self.touched = rollups.DayRanges.of([])  # days of changed values, for the rollups
        self.wrote = False
        # New rows of recent blocks, written together by _flush: (keys, µs, days, values).
        self.buffer: list[tuple[np.ndarray, ...]] = []
        self.buffered = 0
        # Week and month rollups of new rows, per block until combined (see _merge_add).
        self.pending: dict[str, list[rollups.Partials]] = {"week": [], "month": []}
        self.pending_rows = {"week": 0, "month": 0}
        self.moments = _Moments(tz)
        self._suggestions: dict[str, str] = {}
        self._dimensions: dict[str, str] | None = None  # stored names by case-folded name

    def dimension_named(self, name: str) -> str:
        """The stored spelling of a dimension named in another case, else the name itself."""
        if name in REQUIRED:
            return name
        if self._dimensions is None:
            stored = self.connection.execute(select(SeriesDim.dim).distinct()).scalars()
            self._dimensions = {dim.casefold(): dim for dim in sorted(stored)}
        return self._dimensions.get(name.casefold(), name)

    def unknown_measure(self, name: str) -> str:
        if name not in self._suggestions:
            if not name:
                self._suggestions[name] = "no measure"
            else:
                best = process.extractOne(
                    name, sorted(self.measures), scorer=fuzz.ratio, score_cutoff=60
                )
                hint = f" (did you mean '{best[0]}'?)" if best else ""
                self._suggestions[name] = f"unknown measure '{name}'{hint}"
        return self._suggestions[name]

    def file_series_keys(self, dims: list[str], rows: list[tuple[str, ...]]) -> np.ndarray:
        """The series key of each (measure, value of each of dims, "" for none) of the file
        (a loader reads one, so dims are always its header's): a block has one per series it
        holds, and a file thousands of blocks, so a key once found is one dictionary lookup."""
        known = self._file_keys
        keys = np.fromiter((known.get(row, -1) for row in rows), np.int64, len(rows))
        for k in np.flatnonzero(keys < 0):
            measure, *values = rows[k]
            pairs = [(d, v) for d, v in zip(dims, values, strict=True) if v != ""]
            keys[k] = known[rows[k]] = self.series_key(measure, pairs)
        return keys

    def series_key(self, measure: str, pairs: list[tuple[str, str]]) -> int:
        given = (measure, *pairs)
        index = self._given.get(given)
        if index is None:
            index = self._series_key(measure, pairs)
            self._given[given] = index
        return index

    def _series_key(self, measure: str, pairs: list[tuple[str, str]]) -> int:
        dims = json.dumps(dict(sorted(pairs)), separators=(",", ":"), ensure_ascii=False)
        index = self.key_index.get((measure, dims))
        if index is None:
            index = len(self.keys)
            self.key_index[(measure, dims)] = index
            self.keys.append((measure, dims, sorted(pairs)))
            if index >= len(self.ids):
                grow = max(64, len(self.ids))
                self.ids = np.concatenate((self.ids, np.zeros(grow, np.int64)))
                self.earliest = np.concatenate((self.earliest, np.full(grow, _NEVER)))
                self.latest = np.concatenate((self.latest, np.full(grow, -_NEVER)))
                self.seen = np.concatenate((self.seen, np.zeros(grow, bool)))
                self.fresh = np.concatenate((self.fresh, np.zeros(grow, bool)))
            self.ids[index] = self.stored_series.get((measure, dims), 0)
        return index

    def count_unchanged(self, rows: int, keys: np.ndarray) -> None:
        """A file whose every row is already stored as it is."""
        self.rows += rows
        self.counts[_UNCHANGED] += rows
        self.seen[keys] = True

    def add(self, batch: _Batch, unchanged: "_UnchangedMonths | None" = None) -> None:
        """Count, check and write a block's rows; rows of `unchanged` months are only counted."""
        self.problems.add(batch.problems, batch.bad_lines)
        self.rows += batch.rows
        self.counts[_UNCHANGED] += batch.rows - len(batch.series)
        if not len(batch.series):
            return
        self.seen[batch.series] = True
        if unchanged is not None:
            settled = unchanged.holds(batch)
            if settled.any():
                self.counts[_UNCHANGED] += int(settled.sum())
                batch = _take_rows(batch, ~settled)
                if not len(batch.series):
                    return
        # A row can repeat one of an earlier block only if it lies within its series' moments so
        # far; remember those (none, in a file in time order) to check at the end.
        s = batch.series
        out_of_order = (batch.ts >= self.earliest[s]) & (batch.ts <= self.latest[s])
        first = np.append(True, s[1:] != s[:-1])  # rows are sorted by (series, moment)
        last = np.append(s[1:] != s[:-1], True)
        self.earliest[s[first]] = np.minimum(self.earliest[s[first]], batch.ts[first])
        self.latest[s[last]] = np.maximum(self.latest[s[last]], batch.ts[last])
        if self.keep_history:
            self.history.append(batch)
        if self.problems.total:
            if out_of_order.any():
                self.candidates.append(
                    (_take_rows(batch, out_of_order), np.full(out_of_order.sum(), _UNKNOWN))
                )
            return
        if not self.dry_run:
            self._create_series(batch.series)
        status, before = self._compare(batch, out_of_order)
        for kind in self.counts:
            self.counts[kind] += int((status == kind).sum())
        if out_of_order.any():
            self.candidates.append((_take_rows(batch, out_of_order), status[out_of_order]))
        if not self.dry_run:
            self._write(batch, status, before)

    def _create_series(self, keys: np.ndarray) -> None:
        if self.ids[keys].all():
            return
        self.store.settle()
        missing = [int(k) for k in np.unique(keys[self.ids[keys] == 0])]
        rows = [self.keys[k][:2] for k in missing]  # (measure, dims)
        # Through the driver, then the new ids read back by (measure, dims): SQLAlchemy's
        # INSERT … RETURNING of rows in order, and its executemany of their dimensions, cost
        # ~0.2 s (SQLite) to ~0.4 s (PostgreSQL) per 2,000 series.
        newest = self.connection.execute(select(func.max(Series.id))).scalar_one() or 0
        self.store.insert_rows("series", ("measure", "dims"), rows)
        created = self.connection.execute(
            select(Series.measure, Series.dims, Series.id).where(Series.id > newest)
        )
        id_of = {(measure, dims): series_id for measure, dims, series_id in created}
        dims = []
        for key, row in zip(missing, rows, strict=True):
            series_id = id_of[row]
            self.ids[key] = series_id
            self.fresh[key] = True
            dims += [(series_id, d, v) for d, v in self.keys[key][2]]
        self.store.insert_rows("seriesdim", ("series_id", "dim", "value"), dims)

    def _compare(self, batch: _Batch, out_of_order: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per row: inserted, updated or unchanged, against the stored values; and the stored
        value (NaN where there is none)."""
        sid = self.ids[batch.series]
        status = np.full(len(sid), _INSERTED, np.int8)
        before = np.full(len(sid), np.nan)
        # A series this import created holds only rows of earlier blocks: none of its in-order
        # rows can be there.
        stored = (sid > 0) & ~(self.fresh[batch.series] & ~out_of_order)
        if not stored.any():
            return status, before
        rows = np.flatnonzero(stored)
        self._flush()  # what is compared must be stored
        found_sid, found_ts, found_value = self.store.lookup(*_ranges(sid[rows], batch.ts[rows]))
        if not len(found_sid):
            return status, before
        moments, row_moment = np.unique(batch.ts[rows], return_inverse=True)
        found_moment = pd.Index(moments).get_indexer(found_ts)
        hit = found_moment >= 0
        width = len(moments)
        stored_keys = pd.Index(found_sid[hit] * width + found_moment[hit])
        at = stored_keys.get_indexer(sid[rows] * width + row_moment)
        exists = at >= 0
        same = exists.copy()
        before[rows[exists]] = found_value[hit][at[exists]]
        same[exists] = before[rows[exists]] == batch.value[rows][exists]
        status[rows[exists]] = _UPDATED
        status[rows[same]] = _UNCHANGED
        return status, before

    def _write(self, batch: _Batch, status: np.ndarray, before: np.ndarray) -> None:
        sid = self.ids[batch.series]
        new = status == _INSERTED
        changed = status == _UPDATED
        self.wrote |= bool(new.any() or changed.any())
        if new.any():
            self.buffer.append((batch.series[new], batch.ts[new], batch.day[new], batch.value[new]))
            self.buffered += int(new.sum())
            # Without keys there is no B-tree to spare: each block goes at once, and the server
            # stores it while the next one is parsed.
            if self.buffered >= WRITE_ROWS or self.store.unkeyed:
                self._flush()
        if changed.any():
            self._flush()
            self.store.update(sid[changed], batch.ts[changed], batch.value[changed])
            rollups.adjust_checksums(
                self.connection,
                sid[changed],
                batch.ts[changed],
                batch.day[changed],
                before[changed],
                batch.value[changed],
            )
            # A changed value cannot be merged: its weeks and months are recomputed from the
            # observations once at the end, as one may span blocks. The ranges stay few: about
            # one per series.
            ranges = _day_ranges(sid[changed], batch.day[changed]).merged()
            self.touched = (self.touched + ranges).merged()

    def _flush(self) -> None:
        """Write the buffered new rows and merge-add their rollups, sorted by primary key: rows
        of several blocks go into each place of the B-trees at once, which costs less than
        block by block (SQLite: ~1 s less for 1M rows at 4 MB blocks)."""
        if not self.buffer:
            return
        self._compact_pending()  # first, so that its peak of memory and the flush's do not add
        keys, ts, day, value = (np.concatenate(column) for column in zip(*self.buffer, strict=True))
        several = len(self.buffer) > 1
        self.buffer, self.buffered = [], 0
        sid = self.ids[keys]
        if several:  # a block's own rows are in order (by series key, then moment)
            order = np.lexsort((ts, sid))
            keys, sid, ts, day, value = keys[order], sid[order], ts[order], day[order], value[order]
        self.store.insert(sid, ts, day, value)
        self._merge_add(keys, ts, day, value)

    def _merge_add(self, keys: np.ndarray, ts: np.ndarray, day: np.ndarray, value) -> None:
        """Sum new rows (each series' rows together, in time order) into the pending week and
        month rollups, computed from the rows in memory. Weeks and months often span flushes:
        they are kept in memory (about a row per bucket) and written once, in key order, at the
        end."""
        sid = self.ids[keys]
        for grain in rollups.GRAINS:
            self.pending[grain].append(rollups.partials(grain, sid, ts, day, value)[0])
            self.pending_rows[grain] += len(self.pending[grain][-1])

    def _compact_pending(self) -> None:
        """Combine a grain's pending partials once they hold twice the rows of the combined
        ones (or of PENDING_ROWS): memory stays about a row per bucket, and the work linear."""
        for grain, parts in self.pending.items():
            if self.pending_rows[grain] > 2 * max(len(parts[0]) if parts else 0, PENDING_ROWS):
                self.pending[grain] = [rollups.combine(parts)]
                self.pending_rows[grain] = len(self.pending[grain][0])

    def _write_pending(self) -> None:
        """Weeks and months of series this import created cannot be stored yet: plain insert;
        the others are merged."""
        fresh_ids = self.ids[: len(self.keys)][self.fresh[: len(self.keys)]]
        combined = [rollups.combine(parts) for parts in self.pending.values() if parts]
        new = [np.isin(parts.series_id, fresh_ids) for parts in combined]
        fresh = [parts.take(np.flatnonzero(n)) for parts, n in zip(combined, new, strict=True)]
        self.store.insert_rollups(fresh)
        if not all(n.all() for n in new):
            self.store.keyed()  # a merge needs the key to find what it merges into
            for parts, n in zip(combined, new, strict=True):
                rollups.merge_partials(self.connection, parts.take(np.flatnonzero(~n)))

    def finish(self, again: Callable[[], Iterable[_Batch]] | None) -> None:
        """Check the out-of-order rows against the rows before them; raise if anything is bad."""
        if self.candidates:
            earlier = self.history if again is None else again()
            self._resolve(earlier)
        if self.problems.total:
            raise ImportRejected([m for _, m in self.problems.shown], self.problems.total)
        self._flush()
        # Merge first: the refresh recomputes its weeks and months whole.
        self._write_pending()
        self.store.keyed()
        if len(self.touched):
            rollups.refresh(self.connection, self.touched)
        if self.wrote:
            # Cached answers (per store generation) must not outlive the data they were made of.
            bump_generation_on(self.connection)

    def _resolve(self, earlier: Iterable[_Batch]) -> None:
        parts = [batch for batch, _ in self.candidates]
        status = np.concatenate([s for _, s in self.candidates])
        candidates = pd.DataFrame(
            {
                "series": np.concatenate([b.series for b in parts]),
                "ts": np.concatenate([b.ts for b in parts]),
                "line": np.concatenate([b.lines for b in parts]),
                "value": np.concatenate([b.value for b in parts]),
            }
        )
        candidates["at"] = np.arange(len(candidates))
        repeated = np.zeros(len(candidates), bool)
        conflict_line = np.full(len(candidates), np.iinfo(np.int64).max)
        conflict_value = np.zeros(len(candidates))
        last_line = candidates["line"].max()
        for batch in earlier:  # in line order
            if not len(batch.lines):
                continue
            if batch.lines.min() >= last_line:
                break
            rows = pd.DataFrame(
                {"series": batch.series, "ts": batch.ts, "first": batch.lines, "was": batch.value}
            )
            pairs = candidates.merge(rows, on=["series", "ts"])
            pairs = pairs[pairs["first"] < pairs["line"]]
            repeated[pairs["at"].to_numpy()] = True
            pairs = pairs[pairs["was"] != pairs["value"]].sort_values("first")
            pairs = pairs.drop_duplicates("at")
            at = pairs["at"].to_numpy()
            sooner = pairs["first"].to_numpy() < conflict_line[at]
            conflict_line[at[sooner]] = pairs["first"].to_numpy()[sooner]
            conflict_value[at[sooner]] = pairs["was"].to_numpy()[sooner]
        conflicts = np.flatnonzero(conflict_line < np.iinfo(np.int64).max)
        line, value = candidates["line"].to_numpy(), candidates["value"].to_numpy()
        shown = [
            _conflict(self.label, line[i], value[i], conflict_line[i], conflict_value[i])
            for i in conflicts[np.argsort(line[conflicts])][:SHOWN_PROBLEMS]
        ]
        self.problems.add(shown, len(conflicts))
        # A dry run compared a repeated row with the store, not with its first occurrence.
        benign = repeated & (conflict_line == np.iinfo(np.int64).max)
        for kind in (_INSERTED, _UPDATED):
            moved = int((benign & (status == kind)).sum())
            self.counts[kind] -= moved
            self.counts[_UNCHANGED] += moved

    def summary(self, seconds: float) -> ImportSummary:
        seen = np.flatnonzero(self.seen[: len(self.keys)])
        return ImportSummary(
            rows=self.rows,
            measures=len({self.keys[k][0] for k in seen}),
            series=len(seen),
            inserted=self.counts[_INSERTED],
            updated=self.counts[_UPDATED],
            unchanged=self.counts[_UNCHANGED],
            seconds=seconds,
            dry_run=self.dry_run,
        )


# --- months a re-import leaves as they are ---------------------------------------------------


@dataclass
class _UnchangedMonths:
    """(series key, month) pairs whose rows in the file are exactly the stored ones."""

    codes: np.ndarray  # _month_code values
    everything: bool  # every row of the file lies in one of them
    rows: int  # the file's valid rows
    keys: np.ndarray  # the file's series keys

    def holds(self, batch: _Batch) -> np.ndarray:
        """Which of a block's rows lie in an unchanged month."""
        return np.isin(
            _month_code(batch.series, rollups.bucket_starts("month", batch.day)), self.codes
        )


def _month_code(keys: np.ndarray, months: np.ndarray) -> np.ndarray:
    return keys.astype(np.int64) << 20 | months  # months count days from 1970: < 2**20


def _unchanged_months(loader: _Loader, batches: Iterable[_Batch]) -> _UnchangedMonths | None:
    """A first pass over a file that mostly feeds stored series, before anything is written:
    each month of rows that matches its stored month rollup in row count and checksum holds
    exactly the stored rows (a re-import), so the second pass need not look up its rows, and
    if every month matches there is no second pass. None when the file has bad lines (the
    second pass names them) or its first block is mostly new series (a first import, which
    would pay this pass for nothing)."""
    parts: list[rollups.MonthChecks] = []
    rows = distinct = 0
    for number, batch in enumerate(batches):
        if batch.problems or batch.bad_lines:
            return None
        sid = loader.ids[batch.series]
        stored = sid > 0
        if number == 0 and stored.sum() * 2 < len(sid):
            return None
        rows += batch.rows
        distinct += len(sid)
        keep = np.flatnonzero(stored)
        parts.append(
            rollups.MonthChecks.of(
                batch.series[keep], batch.ts[keep], batch.day[keep], batch.value[keep]
            )
        )
        if len(parts) > 1 and sum(len(p.key) for p in parts[1:]) > max(len(parts[0].key), 1):
            parts = [rollups.MonthChecks.combine(parts)]  # memory: about a row per month
    mine = rollups.MonthChecks.combine(parts) if parts else None
    if mine is None or not len(mine.key):
        return None
    keys = np.unique(mine.key)
    stored = rollups.stored_month_checks(
        loader.connection, loader.ids[keys].tolist(), mine.month.min(), mine.month.max()
    )
    # Stored months by the same code as the file's: series id → the loader's key.
    stored_keys = keys[pd.Index(loader.ids[keys]).get_indexer(stored.key)]
    codes = _month_code(mine.key, mine.month)
    at = pd.Index(_month_code(stored_keys, stored.month)).get_indexer(codes)
    found = at >= 0
    same = found.copy()
    same[found] = (stored.count[at[found]] == mine.count[found]) & (
        stored.checksum[at[found]] == mine.checksum[found]
    )
    everything = int(mine.count[same].sum()) == distinct
    return _UnchangedMonths(codes[same], everything, rows, keys)


def _take_rows(batch: _Batch, mask: np.ndarray) -> _Batch:
    return _Batch(
        batch.series[mask],
        batch.ts[mask],
        batch.day[mask],
        batch.value[mask],
        batch.lines[mask],
        int(mask.sum()),
    )


def _ranges(sid: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(series, first µs, last µs) covering rows sorted by (series, moment), split at gaps."""
    start = np.ones(len(sid), bool)
    start[1:] = (sid[1:] != sid[:-1]) | (ts[1:] - ts[:-1] > RANGE_GAP_US)
    first = np.flatnonzero(start)
    last = np.append(first[1:] - 1, len(sid) - 1)
    return sid[first], ts[first], ts[last]


def _day_ranges(sid: np.ndarray, day: np.ndarray) -> rollups.DayRanges:
    """Each written row's local day, as ranges for the rollups (merged there)."""
    return rollups.DayRanges(sid, day, day)


# --- the two stores ------------------------------------------------------------------------


class _Store:
    """Bulk reads and writes of observations through the driver, inside the transaction."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.driver = connection.connection.driver_connection
        self.changes_table = False
        self.dropped_keys: list[tuple[str, str, str]] = []
        self.asides: list[str] = []  # tables committed outside the transaction (Postgres)
        self.copying: ExitStack | None = None  # an open stream of observations (Postgres)
        self.copy: Copy | None = None

    def begin(self, dry_run: bool) -> None:
        raise NotImplementedError

    @property
    def unkeyed(self) -> bool:
        """Loading without primary keys (see _PostgresStore._drop_keys)."""
        return bool(self.dropped_keys)

    def keyed(self) -> None:
        """Make sure the primary keys are there: what looks rows up or merges into them needs
        them, and so does the commit."""

    def settle(self) -> None:
        """Finish any write still under way, before the connection does anything else."""

    def close(self, error: BaseException | None) -> None:
        """End of the transaction's work, successful or not (`error`)."""

    def lookup(self, sid, first, last) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stored (series_id, µs, value) within the given (series, first µs, last µs) ranges."""
        raise NotImplementedError

    def insert(self, sid, ts, day, value) -> None:
        raise NotImplementedError

    def insert_rows(self, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
        """Plain rows into a small table (series and their dimensions)."""
        raise NotImplementedError

    def insert_rollups(self, parts: Sequence[rollups.Partials]) -> None:
        """Weeks and months none of which is stored yet (rollups.insert_new)."""
        self.settle()
        rollups.insert_new(self.connection, parts)

    def discard(self) -> None:
        """After the transaction rolled back: drop what it left outside itself."""

    def update(self, sid, ts, value) -> None:
        raise NotImplementedError


class _SqliteStore(_Store):
    def begin(self, dry_run: bool) -> None:
        # Take the write lock now, so what is compared is what gets overwritten; a dry run
        # reads one snapshot.
        self.driver.execute("BEGIN" if dry_run else "BEGIN IMMEDIATE")

    def lookup(self, sid, first, last):
        cursor = self.driver.cursor()
        query = "SELECT ts, value FROM observation WHERE series_id = ? AND ts >= ? AND ts <= ?"
        found_sid, found_ts, found_value = [], [], []
        for series_id, lo, hi in zip(
            sid.tolist(), bulk.sqlite_times(first), bulk.sqlite_times(last), strict=True
        ):
            rows = cursor.execute(query, (series_id, lo, hi)).fetchall()
            if rows:
                found_sid.append(np.full(len(rows), series_id, np.int64))
                times, values = zip(*rows, strict=True)
                found_ts.extend(times)
                found_value.extend(values)
        if not found_sid:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        ts = np.array(found_ts, "datetime64[us]").astype(np.int64)
        return np.concatenate(found_sid), ts, np.array(found_value, np.float64)

    def insert(self, sid, ts, day, value) -> None:
        bulk.sqlite_insert_many(
            self.driver,
            "INSERT INTO observation (series_id, ts, day, value)",
            "({0}, {1}, {2}, {3})",
            (sid, bulk.sqlite_times(ts), bulk.sqlite_days(day), value),
        )

    def insert_rows(self, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
        marks = ", ".join("?" * len(columns))
        self.driver.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
        )

    def update(self, sid, ts, value) -> None:
        self.driver.executemany(
            "UPDATE observation SET value = ? WHERE series_id = ? AND ts = ?",
            zip(value.tolist(), sid.tolist(), bulk.sqlite_times(ts), strict=True),
        )


_PG_FOUND = (">i4", ">i8", ">f8")  # series_id, ts, value
_COPY_OBSERVATIONS = "COPY observation (series_id, ts, day, value) FROM STDIN (FORMAT binary)"
_ADVISORY_LOCK = 0x6B70_6962_6F74  # "kpibot": one writer of observations at a time
# A first import with at least this many rollup rows loads them aside (see insert_rollups).
ROLLUPS_ASIDE_ROWS = 20_000
_ASIDE_PREFIX = "kpibot_rollup_load_"
# What a first import lets the server use to sort a key, for its transaction only: the manual
# (Populating a Database) advises raising it for a bulk load. The default, 64MB, sorts the
# observations' key of 1M rows on disk, ~0.3 s slower.
_KEY_MEMORY = "256MB"
# rollup's schema and columns as they are in the database, read from the catalog: that takes
# no lock on rollup, which this import's own transaction holds.
_ROLLUP_COLUMNS = """
SELECT (SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = 'rollup'::regclass),
       string_agg(format('%I %s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                         CASE WHEN a.attcollation <> t.typcollation
                              THEN ' COLLATE ' || a.attcollation::regcollation::text END,
                         CASE WHEN a.attnotnull THEN ' NOT NULL' END), ', ' ORDER BY a.attnum)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = 'rollup'::regclass AND a.attnum > 0 AND NOT a.attisdropped
"""
# Whether rollup is as the migrations made it: its columns, key, owner and privileges, which a
# table loaded aside can take over. Anything an administrator added (an index, a view or other
# dependent object, a trigger, a policy, storage or statistics settings, a comment, column
# privileges) would be lost or would block the swap, so such a store loads its rollups in place.
_ROLLUP_PLAIN = """
SELECT c.relpersistence = 'p' AND c.reltablespace = 0 AND c.reloptions IS NULL
   AND NOT c.relrowsecurity AND NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = c.oid)
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.deptype <> 'i' AND (
           (d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid)
           OR (d.refclassid = 'pg_type'::regclass AND d.refobjid = c.reltype)))
   AND NOT EXISTS (SELECT FROM pg_description WHERE objoid = c.oid)
   AND NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                   AND NOT a.attisdropped AND (a.attacl IS NOT NULL OR a.attstattarget <> -1
                        OR array_to_string(a.attoptions, ',') LIKE '%n_distinct%'))
FROM pg_class c WHERE c.oid = 'rollup'::regclass
"""
# What makes the new rollup table owned and shared as the one it replaces.
_ROLLUP_ACCESS = """
SELECT format('ALTER TABLE rollup OWNER TO %s', c.relowner::regrole)
FROM pg_class c WHERE c.oid = 'rollup'::regclass AND c.relowner <> current_user::regrole
UNION ALL
SELECT format('GRANT %s ON rollup TO %s%s', a.privilege_type,
              CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
              CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.oid = 'rollup'::regclass AND a.grantee <> c.relowner
"""


def _key_name(table: str) -> str:
    """The name of the primary key of a (schema-qualified) table loaded aside."""
    return f"{table.rpartition('.')[2]}_pkey"


class _PostgresStore(_Store):
    def begin(self, dry_run: bool) -> None:
        if not dry_run:
            # Serialise writers, so what is compared is what gets overwritten.
            self.driver.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK,))
        # Every join here should probe primary keys from a small set of ranges or rows; see
        # rollups.primary_key_probes for why the planner must be told.
        for name, value in rollups.PROBE_SETTINGS.items():
            self.driver.execute("SELECT set_config(%s, %s, true)", (name, value))
        if not dry_run and self._empty():
            self._drop_stale_asides()
            self._drop_keys()

    def _empty(self) -> bool:
        """No series yet, so no observations or rollups: a first import. (An import that
        finds series does not read observations it has no reason to.)"""
        if self.driver.execute("SELECT EXISTS (SELECT FROM series)").fetchone()[0]:
            return False
        query = "SELECT NOT EXISTS (SELECT FROM observation) AND NOT EXISTS (SELECT FROM rollup)"
        return self.driver.execute(query).fetchone()[0]

    def _drop_keys(self) -> None:
        """The first import into an empty store loads its tables without their primary keys
        and builds them at the end, as PostgreSQL's manual advises for populating a database:
        one sort instead of a B-tree insert per row, ~2x faster for a million rows. The tables
        stay locked (ACCESS EXCLUSIVE) until the import commits; they held nothing to read, and
        an answer waits at most kpi.db.READ_LOCK_TIMEOUT_MS for them (StoreBusy)."""
        self.dropped_keys = []
        for table in ("observation", "rollup"):
            name, definition = self.driver.execute(
                "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
                " WHERE c.conrelid = %s::regclass AND c.contype = 'p'",
                (table,),
            ).fetchone()
            self.driver.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            self.dropped_keys.append((table, name, definition))

    def insert_rollups(self, parts: Sequence[rollups.Partials]) -> None:
        self.settle()
        many = sum(len(part) for part in parts) >= ROLLUPS_ASIDE_ROWS
        if self.unkeyed and many and self.driver.execute(_ROLLUP_PLAIN).fetchone()[0]:
            self._insert_rollups_aside(parts)
        else:
            rollups.insert_new(self.connection, parts)

    def _insert_rollups_aside(self, parts: Sequence[rollups.Partials]) -> None:
        # A first import's rollups go into a table of their own, on a second connection, while
        # this one builds the observations' key: loading them here first, then both keys, left
        # a core idle through the load. That table, committed with its key, then takes rollup's
        # place in this transaction, so readers see it at commit, like the rest. (A transaction
        # whose snapshot predates the import sees the rollups but not the observations: dropping
        # a table is not MVCC-safe, and the rows are loaded frozen. kpibot's only snapshot
        # transaction is a dry run, which reads no rollups of an empty store.)
        rollup_key = next(key for key in self.dropped_keys if key[0] == "rollup")
        self.dropped_keys.remove(rollup_key)
        schema, columns = self.driver.execute(_ROLLUP_COLUMNS).fetchone()
        aside = f"{schema}.{_ASIDE_PREFIX}{uuid.uuid4().hex[:12]}"  # beside rollup
        # The load takes about as long as building the key without parallel workers, which
        # would only compete with it for the server's cores (2 here: 0.15 s slower with them).
        # Alone, the key's sort gets all the memory the keys may use: 1M rows sort in memory.
        self.driver.execute("SELECT set_config('max_parallel_maintenance_workers', '0', true)")
        self.driver.execute("SELECT set_config('maintenance_work_mem', %s, true)", (_KEY_MEMORY,))
        with ThreadPoolExecutor(1, thread_name_prefix="kpibot-rollups") as pool:
            loading = pool.submit(self._load_aside, aside, columns, parts, rollup_key[2])
            try:
                self.keyed()
            finally:
                loading.result()
        self._swap_rollup(aside, rollup_key[1])

    def _load_aside(self, aside: str, columns: str, parts, key: str) -> None:
        raw = self.connection.engine.raw_connection()
        try:
            driver = raw.driver_connection
            driver.execute(f"CREATE TABLE {aside} ({columns})")
            rollups.copy_new(driver, aside, parts, aside=True)
            driver.execute(f"ALTER TABLE {aside} ADD CONSTRAINT {_key_name(aside)} {key}")
            driver.commit()
            self.asides.append(aside)
        finally:
            raw.close()

    def _swap_rollup(self, aside: str, key_name: str) -> None:
        """The table loaded aside becomes rollup, with its owner, privileges and key name."""
        access = self.driver.execute(_ROLLUP_ACCESS).fetchall()
        self.driver.execute("DROP TABLE rollup")
        self.driver.execute(f"ALTER TABLE {aside} RENAME TO rollup")
        self.driver.execute(
            f'ALTER TABLE rollup RENAME CONSTRAINT {_key_name(aside)} TO "{key_name}"'
        )
        for (statement,) in access:
            self.driver.execute(statement)

    def _drop_stale_asides(self) -> None:
        """Tables loaded aside by a first import that failed or was killed before it could drop
        them. (Only an import holding the advisory lock, as this one does, has one in use.)"""
        stale = self.driver.execute(
            "SELECT relnamespace::regnamespace::text || '.' || quote_ident(relname) FROM pg_class"
            " WHERE relkind = 'r' AND starts_with(relname, %s) AND relnamespace ="
            " (SELECT relnamespace FROM pg_class WHERE oid = 'rollup'::regclass)",
            (_ASIDE_PREFIX,),
        ).fetchall()
        self._drop_aside([name for (name,) in stale])

    def discard(self) -> None:
        """A table loaded aside that never took rollup's place."""
        self._drop_aside(self.asides)
        self.asides = []

    def _drop_aside(self, tables: list[str]) -> None:
        """Each in a short transaction of its own, outside the import's: a failed import drops
        its table after its rollback has let the next import in, which may be dropping the same
        one. Whichever comes second finds nothing or waits a moment; one that cannot drop a
        table leaves it to the next first import, as the import's own error (or work) is what
        matters here."""
        for table in tables:
            with suppress(Exception), self.connection.engine.connect() as connection:
                connection.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
                connection.commit()

    def keyed(self) -> None:
        self.settle()
        if not self.dropped_keys:
            return
        for table, name, definition in self.dropped_keys:
            self.driver.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        self.dropped_keys = []

    def lookup(self, sid, first, last):
        self.keyed()
        # Bounds go as µs (seconds and the rest, each exact in the interval arithmetic): a
        # timestamptz[] parameter costs psycopg a Python datetime per bound.
        bound = "timestamptz 'epoch' + ({0} / 1000000) * interval '1 second'" + (
            " + ({0} %% 1000000) * interval '1 microsecond'"
        )
        query = (
            "COPY (SELECT coalesce(array_agg(o.series_id), '{}'),"
            " coalesce(array_agg(o.ts), '{}'), coalesce(array_agg(o.value), '{}')"
            " FROM unnest(%s::int4[], %s::int8[], %s::int8[]) AS r(sid, lo, hi)"
            " JOIN observation o ON o.series_id = r.sid"
            f" AND o.ts >= {bound.format('r.lo')} AND o.ts <= {bound.format('r.hi')})"
            " TO STDOUT (FORMAT binary)"
        )
        ranges = (sid.tolist(), first.tolist(), last.tolist())
        found_sid, found_ts, found_value = bulk.pg_read_arrays(
            self.driver, query, ranges, _PG_FOUND
        )
        return (
            found_sid.astype(np.int64),
            found_ts.astype(np.int64) + bulk.PG_EPOCH_US,
            found_value.astype(np.float64),
        )

    def insert(self, sid, ts, day, value) -> None:
        for at in range(0, len(sid), bulk.WRITE_CHUNK):  # one chunk's payload at a time
            part = slice(at, at + bulk.WRITE_CHUNK)
            rows = bulk.pg_copy_rows(
                series_id=(">i4", sid[part]),
                ts=(">i8", ts[part] - bulk.PG_EPOCH_US),
                day=(">i4", day[part] - bulk.PG_EPOCH_DAYS),
                value=(">f8", value[part]),
            )
            if self.unkeyed:
                self._stream().write(rows)
            else:
                with self.driver.cursor() as cursor, cursor.copy(_COPY_OBSERVATIONS) as copy:
                    copy.write(bulk.PG_HEADER + rows + bulk.PG_TRAILER)

    def _stream(self) -> Copy:
        """One COPY of observations left open over blocks while the tables have no keys: a
        thread of psycopg's sends the rows, so the server stores one block while the next is
        parsed (its queue holds at most 128 MB). Anything else on the connection closes it
        first (`settle`)."""
        if self.copying is None:
            self.copying = ExitStack()
            cursor = self.copying.enter_context(self.driver.cursor())
            copy = cursor.copy(_COPY_OBSERVATIONS, writer=QueuedLibpqWriter(cursor))
            self.copy = self.copying.enter_context(copy)
            self.copy.write(bulk.PG_HEADER)
        return self.copy

    def settle(self) -> None:
        if self.copying is not None:
            self.copy.write(bulk.PG_TRAILER)
            copying, self.copying = self.copying, None
            copying.close()  # waits until the server has stored every row

    def close(self, error: BaseException | None) -> None:
        if self.copying is not None and error is not None:
            # Ends the COPY with an error, so the connection can roll back.
            self.copying.__exit__(type(error), error, error.__traceback__)
            self.copying = None
        self.settle()

    def insert_rows(self, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
        self.settle()
        with self.driver.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    def update(self, sid, ts, value) -> None:
        self.keyed()
        with self.driver.cursor() as cursor:
            if not self.changes_table:
                cursor.execute(
                    "CREATE TEMPORARY TABLE kpi_changes (series_id int4, ts timestamptz,"
                    " value float8) ON COMMIT DROP"
                )
                self.changes_table = True
            data = bulk.pg_copy_data(
                series_id=(">i4", sid), ts=(">i8", ts - bulk.PG_EPOCH_US), value=(">f8", value)
            )
            with cursor.copy("COPY kpi_changes FROM STDIN (FORMAT binary)") as copy:
                copy.write(data)
            cursor.execute(
                "UPDATE observation o SET value = c.value FROM kpi_changes c"
                " WHERE o.series_id = c.series_id AND o.ts = c.ts"
            )
            cursor.execute("TRUNCATE kpi_changes")
