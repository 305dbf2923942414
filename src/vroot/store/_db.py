"""Engine, transactions, and the one edge where database errors become vroot errors.

SQLite (a file): WAL journal with synchronous=NORMAL (a commit is not fsynced; the WAL is at each
checkpoint: a crash of the server process loses nothing committed, a power loss or OS crash may
undo the last transactions before it but never corrupts the file), foreign keys on, a busy timeout. Python's sqlite3 module is told to keep
out of transaction control and the store issues BEGIN itself: `BEGIN IMMEDIATE` for every write
transaction, so writers queue on SQLite's lock (up to the busy timeout) instead of failing when a
read lock cannot be upgraded, and a read-modify-write (a task lease) sees no other writer.
Writers of one process also queue on one lock of the `Database` before BEGIN IMMEDIATE: SQLite's
busy handler sleeps 1, 2, 5 ... 100 ms between tries while the lock may long be free, so
without it a burst of writers waits in that handler far longer than the writes take. (Another
process writing the same file still meets the busy timeout, as before.)
PostgreSQL: `postgresql+psycopg://` (plain `postgresql://` is taken to mean it), READ COMMITTED,
pool pre-ping so a restarted server costs one reconnect, not an error.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from vroot.errors import Conflict, InvalidInput, Unavailable, VrootError
from vroot.store._hub import LocalHub

SQLITE_BUSY_TIMEOUT_S = 30.0
_WRITE = "vroot_write"
_PENDING = "vroot.notify"
_CHANNEL = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def normalize_url(url: str) -> URL:
    """The SQLAlchemy URL for `url`: `sqlite:///path`, `sqlite://` (memory), or PostgreSQL via psycopg."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise InvalidInput(f"not a database URL: {_redact(url)}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return parsed.set(drivername="sqlite")
    raise InvalidInput(
        f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:///PATH or postgresql://..."
    )


def check_channel(channel: str) -> str:
    if not isinstance(channel, str) or not _CHANNEL.match(channel):
        raise InvalidInput(f"notification channel must match {_CHANNEL.pattern}, got {channel!r}")
    return channel


def make_engine(url: URL, *, pool_size: int) -> Engine:
    """An engine for a normalized URL; connects lazily (call `Database.ping`)."""
    try:
        if url.get_backend_name() == "sqlite":
            return _sqlite_engine(url, pool_size=pool_size)
        return create_engine(
            url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size, json_serializer=_json_dumps
        )
    except (ArgumentError, NoSuchModuleError) as exc:
        raise InvalidInput(
            f"cannot use database URL {url.render_as_string(hide_password=True)}: {exc}"
        ) from exc


def _json_dumps(value: Any) -> str:
    """JSON for JSON columns: strict (no NaN, which PostgreSQL refuses) and InvalidInput on failure."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"value cannot be stored as JSON: {exc}") from exc


def _sqlite_engine(url: URL, *, pool_size: int) -> Engine:
    memory = url.database in (None, "", ":memory:")
    if memory:
        # One shared connection: for single-threaded use (tests of other components) only.
        engine = create_engine(
            url,
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
            json_serializer=_json_dumps,
        )
    else:
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
            json_serializer=_json_dumps,
            pool_size=pool_size,
            max_overflow=pool_size,
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the store emits BEGIN itself (see _on_begin)
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class Database:
    """One engine, its read and write sessions, and (SQLite) the in-process notification hub."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.hub = LocalHub()
        # SQLite file: one writer at a time anyway; queue this process's writers here, in order.
        # Reentrant, so a write opened inside another in the same thread meets SQLite's busy
        # timeout as before instead of waiting here for ever.
        self._write_lock: threading.RLock | None = (
            threading.RLock()
            if self.dialect == "sqlite" and engine.url.database not in (None, "", ":memory:")
            else None
        )
        self._read = sessionmaker(engine, expire_on_commit=False, autoflush=False)
        self._write = sessionmaker(
            engine.execution_options(**{_WRITE: True}), expire_on_commit=False, autoflush=False
        )

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    def write_engine(self) -> Engine:
        return self.engine.execution_options(**{_WRITE: True})

    @contextmanager
    def write(self, what: str) -> Iterator[Session]:
        """One read-write transaction: committed when the block ends, rolled back if it raises.

        Notifications queued with `notify_after_commit` reach listeners only if it commits.
        """
        pending: list[tuple[str, str]] = []
        with self._serialized(), translate(what), self._write() as session, session.begin():
            session.info[_PENDING] = pending
            yield session
            if pending and self.is_postgresql:
                for channel, payload in pending:  # NOTIFY is delivered at COMMIT, never on rollback
                    session.execute(select(func.pg_notify(channel, payload)))
        if pending and not self.is_postgresql:
            for channel, payload in pending:
                self.hub.publish(channel, payload)

    @contextmanager
    def _serialized(self) -> Iterator[None]:
        if self._write_lock is None:
            yield
            return
        with self._write_lock:
            yield

    @contextmanager
    def read(self, what: str) -> Iterator[Session]:
        """One read-only transaction (a consistent snapshot on SQLite, READ COMMITTED on PostgreSQL)."""
        with translate(what), self._read() as session, session.begin():
            yield session

    def ping(self) -> None:
        with translate("connect"), self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            conn.rollback()


def notify_after_commit(session: Session, channel: str, payload: str) -> None:
    """Queue a notification on the current write transaction (sent only if it commits)."""
    session.info[_PENDING].append((check_channel(channel), payload))


def lock_events(db: Database, session: Session) -> None:
    """Serialize event appends (PostgreSQL) so event ids commit in id order.

    Without it, a reader of `events.since(n)` could see id n+2 committed before n+1 and skip n+1 for
    ever. The lock is transaction-scoped; SQLite needs none (BEGIN IMMEDIATE serializes writers).
    """
    if db.is_postgresql:
        session.execute(select(func.pg_advisory_xact_lock(0x76726F6F74)))  # "vroot"


@contextmanager
def translate(what: str) -> Iterator[None]:
    """Re-raise SQLAlchemy/DBAPI errors as vroot errors (`what` says which operation failed)."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(f"{what}: {_first_line(exc.orig)}") from exc
    except DataError as exc:
        raise InvalidInput(f"{what}: {_first_line(exc.orig)}") from exc
    except StatementError as exc:
        if isinstance(exc, DBAPIError):  # the database or its driver refused: it may come back
            raise Unavailable(f"{what}: database unavailable: {_first_line(exc.orig)}") from exc
        if isinstance(exc.orig, VrootError):  # raised by our own column types (a naive datetime)
            raise exc.orig from exc
        # a value the column cannot hold (e.g. bytes in a JSON payload), refused before any I/O
        raise InvalidInput(f"{what}: {_first_line(exc.orig)}") from exc
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        raise Unavailable(f"{what}: database unavailable: {_first_line(orig)}") from exc


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)
