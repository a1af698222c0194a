"""Opening the store: the engine for either backend, migrations, sessions."""

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, create_engine

from kpi.errors import StoreBusy, StoreUnavailable

SQLITE_BUSY_MS = 10_000
# How long an answer waits for a table another transaction has locked: Slack wants the reply
# within 3 s. (On PostgreSQL the first import into an empty store locks observation and rollup.)
READ_LOCK_TIMEOUT_MS = 2_000
_LOCK_NOT_AVAILABLE = "55P03"
SQLITE_PAGE_SIZE = 16_384


def make_engine(url: str) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        # Enough pooled connections for the HTTP threads and the work executor together.
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_MS / 1000}, pool_size=16, max_overflow=8
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # Only takes effect in a new, empty store (before WAL mode is set): bulk imports insert
    # rows in many places of two wide B-trees, and 16 KiB pages split and spill less than the
    # default 4 KiB (measured: a 1M-row import 3.6 s instead of 4.2 s; answers as fast).
    cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
    # WAL lets readers (Slack requests) run while an import writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("kpi") / "migrations"))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration; cheap when it already is."""
    command.upgrade(alembic_config(engine), "head")


def open_store(url: str) -> Engine:
    engine = make_engine(url)
    try:
        upgrade(engine)
    except OperationalError as error:  # the first connection: say which setting to look at
        engine.dispose()
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise StoreUnavailable(f"DATABASE_URL: cannot open the store: {reason}") from None
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    with Session(engine, expire_on_commit=False) as session:
        with session.begin():
            yield session


@contextmanager
def reading(engine: Engine) -> Iterator[Session]:
    """A session for answering: on PostgreSQL, a table locked for longer than
    READ_LOCK_TIMEOUT_MS raises StoreBusy instead of keeping the asker waiting. (SQLite's
    readers never wait for a writer in WAL mode.)"""
    with Session(engine) as session:
        if engine.dialect.name == "postgresql":
            session.execute(
                text("SELECT set_config('lock_timeout', :ms, true)"),
                {"ms": f"{READ_LOCK_TIMEOUT_MS}ms"},
            )
        try:
            yield session
        except OperationalError as error:
            if getattr(error.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                raise StoreBusy() from error
            raise
