"""Migration records (issue 5; MC-F3, MIG-8, MIG-9): the controller's durable view of each vTM
migration, written before the controller acts on it, so that a controller (or a replica) that
dies at any step resumes from here.

The store keeps the record's JSON fields (steps, target key, blob, proof) without reading them;
`vroot.controller` owns their meaning. Updates are optimistic: `update(id, expected_version=v,
...)` fails with Conflict if another writer moved the record first, so two replicas never both
act on one step. At most one open migration per VM (a unique index), so a vTM is never sent two
ways at once.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, Integer, LargeBinary, String, Text, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.store._agents import _check_host
from vroot.store._agents import _load as _load_agent
from vroot.store._db import Database
from vroot.store._events import append_event
from vroot.store._models import _NAME, Base
from vroot.store._records import AgentKind
from vroot.store._types import UtcDateTime, aware

__all__ = ["OPEN_STATES", "MigrationRecord", "MigrationRepository", "MigrationRow", "Rehome"]

STATES = ("preparing", "exporting", "importing", "committed", "completed", "aborting", "aborted")
OPEN_STATES = ("preparing", "exporting", "importing", "committed", "aborting")
_OPEN_SQL = "state IN ('preparing', 'exporting', 'importing', 'committed', 'aborting')"
_JSON_FIELDS = ("steps", "ticket", "destination_ak_public", "target", "blob", "proof", "done_sides")


class MigrationRow(Base):
    __tablename__ = "migrations"
    __table_args__ = (
        CheckConstraint(f"state IN ({', '.join(repr(s) for s in STATES)})", name="state"),
        Index("uq_migrations_open_vm", "vm_uuid", unique=True,
              sqlite_where=text(_OPEN_SQL), postgresql_where=text(_OPEN_SQL)),  # fmt: skip
        Index("ix_migrations_state", "state"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    vm_uuid: Mapped[str] = mapped_column(String(36))
    source: Mapped[str] = mapped_column(String(_NAME), index=True)
    destination: Mapped[str] = mapped_column(String(_NAME), index=True)
    trigger: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    body: Mapped[Any] = mapped_column(Text)  # JSON of the fields in _JSON_FIELDS (the blob can be large)
    error: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    deadline: Mapped[datetime] = mapped_column(UtcDateTime)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rehome:
    """A guest that follows its vTM to another host at a migration's commit."""

    agent_id: str
    host_id: str
    ek_certificate: bytes | None = None  # the vEK certificate the destination issued (MIG-10)


@dataclass(frozen=True, slots=True, kw_only=True)
class MigrationRecord:
    id: uuid.UUID
    vm_uuid: uuid.UUID
    source: str
    destination: str
    trigger: str
    state: str
    nonce: bytes
    created_at: datetime
    updated_at: datetime
    deadline: datetime
    version: int = 1
    error: str | None = None
    body: dict[str, Any] = field(default_factory=dict)  # the fields in _JSON_FIELDS


def _record(row: MigrationRow) -> MigrationRecord:
    return MigrationRecord(id=uuid.UUID(row.id), vm_uuid=uuid.UUID(row.vm_uuid), source=row.source,
                           destination=row.destination, trigger=row.trigger, state=row.state, nonce=row.nonce,
                           created_at=row.created_at, updated_at=row.updated_at, deadline=row.deadline,
                           version=row.version, error=row.error, body=json.loads(row.body))  # fmt: skip


def _body(body: dict[str, Any]) -> str:
    unknown = set(body) - set(_JSON_FIELDS)
    if unknown:
        raise InvalidInput(f"migration record: unknown fields {sorted(unknown)}")
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def _state(state: str) -> str:
    if state not in STATES:
        raise InvalidInput(f"migration state {state!r} is not one of {', '.join(STATES)}")
    return state


class MigrationRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, record: MigrationRecord) -> MigrationRecord:
        """Store a new migration; Conflict if the VM already has an open one (or the id exists)."""
        row = MigrationRow(id=str(record.id), vm_uuid=str(record.vm_uuid), source=record.source,
                           destination=record.destination, trigger=record.trigger, state=_state(record.state),
                           nonce=bytes(record.nonce), body=_body(record.body), error=record.error, version=1,
                           created_at=aware(record.created_at, "created_at"),
                           updated_at=aware(record.updated_at, "updated_at"),
                           deadline=aware(record.deadline, "deadline"))  # fmt: skip
        try:
            with self._db.write(f"add migration {record.id}") as s:
                s.add(row)
                s.flush()
                return _record(row)
        except (Conflict, IntegrityError):
            raise Conflict(f"VM {record.vm_uuid} already has an open migration (or id {record.id} exists)") from None

    def get(self, migration_id: uuid.UUID) -> MigrationRecord:
        with self._db.read(f"read migration {migration_id}") as s:
            row = s.get(MigrationRow, str(migration_id))
            if row is None:
                raise NotFound(f"migration {migration_id} does not exist")
            return _record(row)

    def update(self, migration_id: uuid.UUID, *, expected_version: int, state: str, body: dict[str, Any],
               error: str | None, now: datetime, rehome: Rehome | None = None) -> MigrationRecord:  # fmt: skip
        """Replace the record's state, body and error if it is still at `expected_version`
        (Conflict otherwise: someone else moved it); the version goes up by one. With `rehome` (the
        commit), the VM's guest record moves to the destination host with its new vEK certificate
        in the same transaction, and "agent.moved" is published: the commit and the move are one."""
        with self._db.write(f"update migration {migration_id}") as s:
            done = s.execute(
                update(MigrationRow)
                .where(MigrationRow.id == str(migration_id), MigrationRow.version == expected_version)
                .values(state=_state(state), body=_body(body), error=error, version=expected_version + 1,
                        updated_at=aware(now, "now"))  # fmt: skip
            )
            if done.rowcount != 1:
                if s.get(MigrationRow, str(migration_id)) is None:
                    raise NotFound(f"migration {migration_id} does not exist")
                raise Conflict(f"migration {migration_id} changed since version {expected_version}")
            if rehome is not None:
                guest = _load_agent(s, rehome.agent_id, lock=True)
                if guest.kind != AgentKind.GUEST:
                    raise InvalidInput(f"agent {rehome.agent_id} is a host; only guests move")
                _check_host(s, rehome.host_id)
                old, guest.host_id = guest.host_id, rehome.host_id
                if rehome.ek_certificate is not None:
                    guest.ek_certificate = rehome.ek_certificate
                append_event(self._db, s, kind="agent.moved", agent_id=rehome.agent_id,
                             body={"from": old, "to": rehome.host_id, "migration": str(migration_id)}, now=now)  # fmt: skip
            row = s.get(MigrationRow, str(migration_id))
            assert row is not None
            s.refresh(row)
            return _record(row)

    def list(self, *, open_only: bool = False, vm_uuid: uuid.UUID | None = None, host: str | None = None,
             limit: int = 100) -> list[MigrationRecord]:  # fmt: skip
        """Migrations, newest first: only open ones, of one VM, or touching one host."""
        query = select(MigrationRow)
        if open_only:
            query = query.where(MigrationRow.state.in_(OPEN_STATES))
        if vm_uuid is not None:
            query = query.where(MigrationRow.vm_uuid == str(vm_uuid))
        if host is not None:
            query = query.where((MigrationRow.source == host) | (MigrationRow.destination == host))
        query = query.order_by(MigrationRow.created_at.desc(), MigrationRow.id).limit(max(1, min(limit, 1000)))
        with self._db.read("list migrations") as s:
            return [_record(row) for row in s.scalars(query)]
