"""Events (for server-sent events and webhooks) and webhook subscriptions.

Event ids are monotonic and commit in id order on both databases (see `lock_events`), so a reader
that remembers the last id it saw and asks for `since(last_id)` misses nothing and sees nothing
twice. Every append also notifies `EVENTS_CHANNEL` with the new id, at commit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.store._db import Database, lock_events, notify_after_commit
from vroot.store._models import EventRow, WebhookRow
from vroot.store._notify import EVENTS_CHANNEL
from vroot.store._records import EventRecord, WebhookRecord
from vroot.store._types import aware, check_limit

__all__ = ["EventRepository", "WebhookRepository", "append_event"]


def append_event(
    db: Database, session: Session, *, kind: str, agent_id: str | None, body: Any, now: datetime
) -> int:
    """Append an event inside the caller's write transaction; returns its id."""
    if not kind or len(kind) > 64:
        raise InvalidInput(f"event kind must be 1..64 characters, got {kind!r}")
    lock_events(db, session)
    row = EventRow(kind=kind, agent_id=agent_id, body=body, created_at=aware(now, "now"))
    session.add(row)
    session.flush()
    notify_after_commit(session, EVENTS_CHANNEL, str(row.id))
    return row.id


def _event(row: EventRow) -> EventRecord:
    return EventRecord(
        id=row.id, kind=row.kind, agent_id=row.agent_id, body=row.body, created_at=row.created_at
    )


class EventRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def append(self, kind: str, *, agent_id: str | None = None, body: Any = None, now: datetime) -> int:
        """Store one event (e.g. "verdict.changed") and return its id; listeners are woken at commit."""
        with self._db.write(f"append event {kind}") as s:
            return append_event(self._db, s, kind=kind, agent_id=agent_id, body=body, now=now)

    def since(
        self,
        last_id: int,
        *,
        limit: int = 100,
        kinds: Collection[str] | None = None,
        agent_id: str | None = None,
    ) -> list[EventRecord]:
        """Events with id > `last_id`, oldest first, at most `limit`, optionally filtered."""
        query = select(EventRow).where(EventRow.id > last_id)
        if kinds:
            query = query.where(EventRow.kind.in_(list(kinds)))
        if agent_id is not None:
            query = query.where(EventRow.agent_id == agent_id)
        with self._db.read("read events") as s:
            return [_event(r) for r in s.scalars(query.order_by(EventRow.id).limit(check_limit(limit)))]

    def last_id(self) -> int:
        """The id of the newest event, 0 if none: where a new subscriber starts."""
        with self._db.read("read events") as s:
            return s.scalar(select(func.max(EventRow.id))) or 0

    def prune(self, *, before: datetime) -> int:
        """Delete events older than `before`; returns how many. Ids are never reused."""
        with self._db.write("prune events") as s:
            return s.execute(
                delete(EventRow).where(EventRow.created_at < aware(before, "before")),
                execution_options={"synchronize_session": False},
            ).rowcount


def _webhook(row: WebhookRow) -> WebhookRecord:
    return WebhookRecord(
        id=row.id,
        url=row.url,
        secret_ref=row.secret_ref,
        kinds=tuple(row.kinds or ()),
        last_event_id=row.last_event_id,
        created_at=row.created_at,
    )


class WebhookRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self,
        *,
        url: str,
        secret_ref: str | None,
        kinds: Sequence[str] = (),
        now: datetime,
        start_after: int = 0,
    ) -> WebhookRecord:
        """Subscribe `url` to events of `kinds` (all if empty), delivering those after `start_after`."""
        if not url:
            raise InvalidInput("webhook url must not be empty")
        with self._db.write("add webhook") as s:
            row = WebhookRow(
                url=url,
                secret_ref=secret_ref,
                kinds=list(kinds),
                last_event_id=start_after,
                created_at=aware(now, "now"),
            )
            s.add(row)
            s.flush()
            return _webhook(row)

    def get(self, webhook_id: int) -> WebhookRecord:
        with self._db.read("read webhook") as s:
            row = s.get(WebhookRow, webhook_id)
            if row is None:
                raise NotFound(f"webhook {webhook_id} does not exist")
            return _webhook(row)

    def list(self, *, kind: str | None = None) -> list[WebhookRecord]:
        """All webhooks, or those that want events of `kind`."""
        with self._db.read("read webhooks") as s:
            hooks = [_webhook(r) for r in s.scalars(select(WebhookRow).order_by(WebhookRow.id))]
        return [h for h in hooks if kind is None or not h.kinds or kind in h.kinds]

    def remove(self, webhook_id: int) -> None:
        with self._db.write("remove webhook") as s:
            if s.execute(delete(WebhookRow).where(WebhookRow.id == webhook_id)).rowcount != 1:
                raise NotFound(f"webhook {webhook_id} does not exist")

    def advance(self, webhook_id: int, *, expected: int, to: int) -> WebhookRecord:
        """Move the delivery cursor from `expected` to `to` (compare-and-set).

        Raises Conflict if another deliverer moved it first: that one owns the delivery, so each event
        is delivered by one replica (at least once: a deliverer that dies before advancing is redone).
        """
        if to < expected:
            raise InvalidInput(f"webhook cursor cannot go back from {expected} to {to}")
        with self._db.write("advance webhook") as s:
            done = s.execute(
                update(WebhookRow)
                .where(WebhookRow.id == webhook_id, WebhookRow.last_event_id == expected)
                .values(last_event_id=to),
                execution_options={"synchronize_session": False},
            ).rowcount
            row = s.get(WebhookRow, webhook_id, populate_existing=True)
            if row is None:
                raise NotFound(f"webhook {webhook_id} does not exist")
            if done != 1:
                raise Conflict(f"webhook {webhook_id} cursor is at {row.last_event_id}, not {expected}")
            return _webhook(row)
