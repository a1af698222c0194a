"""Fixtures shared by every test: a fresh store on SQLite and on PostgreSQL."""

import os
import shutil
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel, create_engine

from kpi import catalog
from kpi.db import make_engine, open_store, session_scope

POSTGRES_URL = os.environ.get(
    "KPIBOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", "postgresql"]


def _postgres_unreachable() -> str | None:
    try:
        with create_engine(POSTGRES_URL).connect() as connection:
            connection.execute(text("select 1"))
    except Exception as error:  # any failure means "not reachable"; the reason is shown
        return f"PostgreSQL at {POSTGRES_URL} is not reachable: {type(error).__name__}"
    return None


@pytest.fixture(scope="session")
def postgres_url():
    """A database of this test run's own, dropped at the end. Skips locally, fails on CI."""
    reason = _postgres_unreachable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason + " — CI must run the PostgreSQL tests")
        pytest.skip(reason)
    name = f"kpibot_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    open_store(url).dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "kpibot.db"
    open_store(f"sqlite:///{path}").dispose()
    return path


def _truncate_all(engine) -> None:
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path, sqlite_template):
    """A migrated, empty store: a fresh SQLite file, or the run's PostgreSQL database emptied."""
    if request.param == "sqlite":
        path = tmp_path / "kpibot.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    _truncate_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def catalog_engine(engine):
    """A store holding the built-in catalog."""
    with session_scope(engine) as session:
        catalog.load_builtin_if_empty(session, now=datetime(2026, 1, 1, tzinfo=UTC))
    return engine
