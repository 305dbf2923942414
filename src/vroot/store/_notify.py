"""Waking long-polls: LISTEN/NOTIFY on PostgreSQL, the in-process hub on SQLite.

A notification only says "look again"; it carries an id or an agent id, never data to trust. Use
a listener so that nothing is missed between a read and a wait:

    with store.listener(TASKS_CHANNEL) as listener:
        while not (tasks := store.tasks.lease(...)):
            listener.wait(timeout=25)       # then read again, woken or not

PostgreSQL delivers to every replica (each listener holds its own connection, outside the pool);
SQLite delivers only within this process (see `_hub`), so waits time out and the reader polls.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from vroot.errors import Unavailable
from vroot.store._db import Database, check_channel
from vroot.store._records import Notification

if TYPE_CHECKING:  # pragma: no cover
    import psycopg

__all__ = ["EVENTS_CHANNEL", "TASKS_CHANNEL", "Listener"]

EVENTS_CHANNEL = "vroot_events"  # payload: the new event id
TASKS_CHANNEL = "vroot_tasks"  # payload: the agent id a task was queued for


class Listener:
    """Notifications on some channels, from `open()` until `close()`. Not shared between threads."""

    def __init__(self, db: Database, channels: tuple[str, ...]) -> None:
        if not channels:
            raise ValueError("listen to at least one channel")
        self._db = db
        self._channels = frozenset(check_channel(c) for c in channels)
        self._token: int | None = None
        self._conn: psycopg.Connection[Any] | None = None

    def open(self) -> Listener:
        if self._db.is_postgresql:
            self._conn = _pg_listen(self._db, self._channels)
        else:
            self._token = self._db.hub.subscribe(self._channels)
        return self

    def wait(self, timeout: float) -> list[Notification]:
        """The notifications that arrived since the last call, waiting up to `timeout` s for one.

        Returns [] on timeout. Raises Unavailable if the database connection is lost (the caller
        should open a new listener and re-read: notifications sent meanwhile are gone).
        """
        if self._conn is not None:
            import psycopg

            try:
                out = [self._note(n) for n in self._conn.notifies(timeout=timeout, stop_after=1)]
                if out:  # drain whatever else already arrived
                    out += [self._note(n) for n in self._conn.notifies(timeout=0.0)]
            except psycopg.Error as exc:
                raise Unavailable(f"listening on {sorted(self._channels)}: {exc}") from exc
            return out
        if self._token is None:
            raise Unavailable("listener is not open")
        return self._db.hub.wait(self._token, timeout)

    @staticmethod
    def _note(n: Any) -> Notification:
        return Notification(channel=n.channel, payload=n.payload)

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
        if self._token is not None:
            self._db.hub.unsubscribe(self._token)
            self._token = None

    def __enter__(self) -> Listener:
        return self if (self._conn or self._token) else self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _pg_listen(db: Database, channels: frozenset[str]) -> psycopg.Connection[Any]:
    """A dedicated autocommit psycopg connection LISTENing on `channels`."""
    import psycopg
    from psycopg import sql

    args, kwargs = db.engine.dialect.create_connect_args(db.engine.url)
    try:
        conn = psycopg.connect(*args, **kwargs, autocommit=True)
    except psycopg.Error as exc:
        raise Unavailable(f"cannot connect to listen: {exc}") from exc
    try:
        for channel in sorted(channels):
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    except psycopg.Error as exc:
        conn.close()
        raise Unavailable(f"LISTEN failed: {exc}") from exc
    return conn
