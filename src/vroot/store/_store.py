"""`Store`: one database (SQLite file or PostgreSQL) and its repositories."""

from __future__ import annotations

from types import TracebackType

from vroot.store._agents import AgentRepository, EnrollmentRepository, RevocationRepository
from vroot.store._db import Database, make_engine, normalize_url, notify_after_commit
from vroot.store._events import EventRepository, WebhookRepository
from vroot.store._library import BaselineRepository, PolicyRepository
from vroot.store._migrate import current_database_revision, head_revision, upgrade_database
from vroot.store._migrations import MigrationRepository
from vroot.store._nonces import NonceRepository
from vroot.store._notify import Listener
from vroot.store._results import ImaStateRepository, ResultRepository
from vroot.store._tasks import TaskRepository

__all__ = ["Store"]


class Store:
    """The cloud-OS state: every repository over one engine.

    Each repository method is one transaction, takes and returns frozen records, and raises only
    vroot errors (Conflict for a duplicate or a lost race, NotFound, InvalidInput, Unavailable when
    the database cannot answer). Thread-safe: share one Store per process.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self.agents = AgentRepository(db)
        self.enrollments = EnrollmentRepository(db)
        self.revocations = RevocationRepository(db)
        self.nonces = NonceRepository(db)
        self.tasks = TaskRepository(db)
        self.results = ResultRepository(db)
        self.ima_state = ImaStateRepository(db)
        self.baselines = BaselineRepository(db)
        self.policies = PolicyRepository(db)
        self.events = EventRepository(db)
        self.webhooks = WebhookRepository(db)
        self.migrations = MigrationRepository(db)

    @classmethod
    def open(cls, url: str, *, pool_size: int = 10) -> Store:
        """Open the database at `url` and check that it answers (Unavailable if not).

        `sqlite:///PATH` (created if missing; WAL, foreign keys, busy timeout) or `sqlite://` (memory,
        single-threaded use only); `postgresql://...` or `postgresql+psycopg://...` with up to
        2 x `pool_size` connections. Does not migrate: call `migrate()` (or check `revision()`).
        """
        db = Database(make_engine(normalize_url(url), pool_size=pool_size))
        try:
            db.ping()
        except BaseException:
            db.engine.dispose()
            raise
        return cls(db)

    @property
    def dialect(self) -> str:
        """The backend: "sqlite" or "postgresql"."""
        return self._db.dialect

    @property
    def url(self) -> str:
        """The database URL with any password masked (for logs)."""
        return self._db.engine.url.render_as_string(hide_password=True)

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to `revision` (newest by default); concurrent callers are serialized."""
        upgrade_database(self._db, revision)

    def revision(self) -> str | None:
        """The schema revision of the database (None if never migrated)."""
        return current_database_revision(self._db)

    def is_current(self) -> bool:
        """Whether the schema is at the newest revision this vroot knows."""
        return self.revision() == head_revision()

    def notify(self, channel: str, payload: str) -> None:
        """Send `payload` to the listeners of `channel` (PostgreSQL: NOTIFY, every replica; SQLite:
        listeners of this Store only)."""
        with self._db.write(f"notify {channel}") as s:
            notify_after_commit(s, channel, payload)

    def listener(self, *channels: str) -> Listener:
        """A listener on `channels`, to use as a context manager; see `Listener.wait`."""
        return Listener(self._db, channels).open()

    def listen(self, channel: str, *, timeout: float) -> str | None:
        """Wait up to `timeout` s for one notification on `channel`: its payload, or None.

        Opens a connection per call on PostgreSQL; a long-poll server should keep a `listener()`.
        Anything notified before the call is missed: re-read the database after it returns.
        """
        with self.listener(channel) as listener:
            got = listener.wait(timeout)
        return got[0].payload if got else None

    def close(self) -> None:
        """Close every pooled connection. Repositories must not be used afterwards."""
        self._db.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
