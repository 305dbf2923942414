"""Fixtures for the store tests: every repository runs on SQLite (a temp file) and on PostgreSQL.

PostgreSQL: the server on 127.0.0.1:5432 (trust auth, user postgres; override the admin connection
with VROOT_TEST_PG, a libpq conninfo without dbname). If it does not answer, the Debian cluster
(`main` of the newest version in /etc/postgresql, or VROOT_TEST_PG_CLUSTER) is started with
pg_ctlcluster and left running. Each test session creates its own
databases (vroot_test_<random>) and drops them at the end, so parallel runs never collide. If
PostgreSQL can neither be reached nor started, the PostgreSQL tests FAIL, never skip.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from vroot.store import Store, upgrade
from vroot.store._models import Base

PG_ADMIN = os.environ.get("VROOT_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")
PG_CLUSTER = os.environ.get("VROOT_TEST_PG_CLUSTER", "main")  # the Debian cluster started if needed
BACKENDS = ["sqlite", "postgresql"]


def _admin_connect() -> psycopg.Connection:
    errors = []
    for dbname in ("test", "postgres"):
        try:
            return psycopg.connect(f"{PG_ADMIN} dbname={dbname}", autocommit=True, connect_timeout=3)
        except psycopg.Error as exc:
            errors.append(f"{dbname}: {str(exc).strip().splitlines()[0]}")
    raise ConnectionError("; ".join(errors))


def _start_cluster() -> str:
    conf = Path("/etc/postgresql")
    versions = sorted((p.name for p in conf.iterdir() if p.name.isdigit()), key=int) if conf.is_dir() else []
    if not versions:
        pytest.fail(
            "PostgreSQL is not installed (no /etc/postgresql/<version>): run `make setup`", pytrace=False
        )
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], PG_CLUSTER, "start"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"could not start PostgreSQL with {' '.join(cmd)}: {exc}", pytrace=False)
    return f"{' '.join(cmd)} exited {done.returncode}: {(done.stderr or done.stdout).strip()[:300]}"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[psycopg.Connection]:
    """An autocommit connection to the `test` (or `postgres`) database, starting the server if needed."""
    conn = None
    try:
        conn = _admin_connect()
    except ConnectionError as exc:
        first = exc
    if conn is None:
        started = _start_cluster()
        deadline = time.monotonic() + 30
        while conn is None:
            try:
                conn = _admin_connect()
            except ConnectionError as exc:
                if time.monotonic() > deadline:
                    message = f"PostgreSQL at {PG_ADMIN} does not answer ({first}); started it ({started}); still: {exc}"
                    break
                time.sleep(0.3)
        if conn is None:
            pytest.fail(message, pytrace=False)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture(scope="session")
def pg_database(pg_admin: psycopg.Connection) -> Iterator[Callable[[], str]]:
    """Makes fresh empty databases (SQLAlchemy URLs); drops them all at the end of the session."""
    made: list[str] = []
    params = psycopg.conninfo.conninfo_to_dict(PG_ADMIN)
    host, port, user = (
        params.get("host", "127.0.0.1"),
        params.get("port", "5432"),
        params.get("user", "postgres"),
    )

    def make() -> str:
        name = f"vroot_test_{secrets.token_hex(6)}"
        pg_admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return f"postgresql+psycopg://{user}@{host}:{port}/{name}"

    try:
        yield make
    finally:
        for name in made:
            pg_admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_url(pg_database: Callable[[], str]) -> str:
    """One migrated PostgreSQL database for the session (tables emptied before each test)."""
    url = pg_database()
    upgrade(url)
    return url


def _truncate(url: str) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: a SQLite file, or the session's PostgreSQL database truncated."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'vroot.db'}"
        upgrade(url)
        return url
    url = request.getfixturevalue("pg_url")
    _truncate(url)
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def open_store(db_url: str) -> Iterator[Callable[[], Store]]:
    """Opens more Stores on the same database (as separate server replicas would), closing them after."""
    opened: list[Store] = []

    def make() -> Store:
        opened.append(Store.open(db_url))
        return opened[-1]

    try:
        yield make
    finally:
        for s in opened:
            s.close()


@pytest.fixture
def pg_admin_for(request: pytest.FixtureRequest) -> Callable[[Store], psycopg.Connection]:
    """The session's admin connection, for tests that act on a PostgreSQL store from outside."""

    def get(store: Store) -> psycopg.Connection:
        assert store.dialect == "postgresql"
        return request.getfixturevalue("pg_admin")

    return get
