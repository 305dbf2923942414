"""SQLAlchemy models: the schema of the store, portable across SQLite and PostgreSQL.

The initial Alembic migration creates exactly these tables (tests/store/test_migrations.py compares
them). Rows never leave `vroot.store`: repositories convert them to the records in `_records.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vroot.store._types import NAMING_CONVENTION, Id, UtcDateTime

_NAME = 255  # ids, names, groups, owners
_AUTOINC = {"sqlite_autoincrement": True}  # ids never reused on SQLite, even after deletes


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AgentRow(Base):
    __tablename__ = "agents"
    __table_args__ = (
        CheckConstraint("kind IN ('host', 'guest')", name="kind"),
        CheckConstraint("state IN ('enrolling', 'active', 'revoked')", name="state"),
        CheckConstraint("capacity >= 0", name="capacity"),
    )

    id: Mapped[str] = mapped_column(String(_NAME), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    host_id: Mapped[str | None] = mapped_column(
        String(_NAME), ForeignKey("agents.id", ondelete="SET NULL"), index=True
    )
    vm_uuid: Mapped[str | None] = mapped_column(String(64), unique=True)
    policy_group: Mapped[str] = mapped_column(String(_NAME), index=True)
    labels: Mapped[Any] = mapped_column(JSON)
    zone: Mapped[str | None] = mapped_column(String(_NAME))
    capacity: Mapped[int] = mapped_column(Integer)
    ek_certificate: Mapped[bytes | None] = mapped_column(LargeBinary)
    ek_public: Mapped[bytes] = mapped_column(LargeBinary)
    ak_public: Mapped[bytes | None] = mapped_column(LargeBinary)
    ak_certificate: Mapped[bytes | None] = mapped_column(LargeBinary)
    client_serial: Mapped[str | None] = mapped_column(String(64), unique=True)
    vtm_manager_public: Mapped[bytes | None] = mapped_column(LargeBinary)
    vtm_manager_certify_info: Mapped[bytes | None] = mapped_column(LargeBinary)
    vtm_manager_certify_signature: Mapped[bytes | None] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    enrolled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class EnrollmentRow(Base):
    __tablename__ = "enrollments"

    agent_id: Mapped[str] = mapped_column(
        String(_NAME), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    ak_public: Mapped[bytes] = mapped_column(LargeBinary)
    secret_digest: Mapped[bytes] = mapped_column(LargeBinary)
    credential_blob: Mapped[bytes] = mapped_column(LargeBinary)
    encrypted_secret: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class NonceRow(Base):
    __tablename__ = "nonces"

    value: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    agent_id: Mapped[str] = mapped_column(
        String(_NAME), ForeignKey("agents.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class TaskRow(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint("state IN ('queued', 'leased', 'done', 'failed')", name="state"),
        Index("ix_tasks_agent_id_state_id", "agent_id", "state", "id"),
        # At most one open task per (agent, key): the scheduler cannot pile up duplicates.
        Index(
            "uq_tasks_open_key",
            "agent_id",
            "key",
            unique=True,
            sqlite_where=text("key IS NOT NULL AND state IN ('queued', 'leased')"),
            postgresql_where=text("key IS NOT NULL AND state IN ('queued', 'leased')"),
        ),
        _AUTOINC,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(_NAME), ForeignKey("agents.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    key: Mapped[str | None] = mapped_column(String(_NAME))
    payload: Mapped[Any] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    lease_owner: Mapped[str | None] = mapped_column(String(_NAME))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    result: Mapped[Any | None] = mapped_column(JSON)


class ResultRow(Base):
    __tablename__ = "results"
    __table_args__ = (
        CheckConstraint("verdict IN ('trusted', 'untrusted', 'error')", name="verdict"),
        Index("ix_results_agent_id_id", "agent_id", "id"),
        _AUTOINC,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(_NAME), ForeignKey("agents.id", ondelete="CASCADE"))
    verdict: Mapped[str] = mapped_column(String(16))
    findings: Mapped[Any] = mapped_column(JSON)
    pcrs: Mapped[Any] = mapped_column(JSON)
    evidence_digest: Mapped[bytes | None] = mapped_column(LargeBinary)
    clock: Mapped[int | None] = mapped_column(BigInteger)
    reset_count: Mapped[int | None] = mapped_column(BigInteger)
    restart_count: Mapped[int | None] = mapped_column(BigInteger)
    signed: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    host_result_id: Mapped[int | None] = mapped_column(Id, ForeignKey("results.id", ondelete="SET NULL"))


class ImaStateRow(Base):
    __tablename__ = "ima_state"

    agent_id: Mapped[str] = mapped_column(
        String(_NAME), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    entries: Mapped[int] = mapped_column(BigInteger)
    byte_offset: Mapped[int] = mapped_column(BigInteger)
    pcr10: Mapped[Any] = mapped_column(JSON)
    last_verdict: Mapped[str | None] = mapped_column(String(16))
    reset_count: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class BaselineRow(Base):
    __tablename__ = "baselines"
    __table_args__ = (UniqueConstraint("name", "version"), _AUTOINC)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(_NAME))
    version: Mapped[int] = mapped_column(Integer)
    policy_group: Mapped[str | None] = mapped_column(String(_NAME), index=True)
    document: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PolicyRow(Base):
    __tablename__ = "policies"

    policy_group: Mapped[str] = mapped_column(String(_NAME), primary_key=True)
    document: Mapped[Any] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (_AUTOINC,)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    kind: Mapped[str] = mapped_column(String(64))
    # No foreign key: events outlive the agents they mention.
    agent_id: Mapped[str | None] = mapped_column(String(_NAME), index=True)
    body: Mapped[Any] = mapped_column(JSON)


class WebhookRow(Base):
    __tablename__ = "webhooks"
    __table_args__ = (_AUTOINC,)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(Text)
    secret_ref: Mapped[str | None] = mapped_column(String(_NAME))
    kinds: Mapped[Any] = mapped_column(JSON)
    last_event_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RevocationRow(Base):
    __tablename__ = "revocations"

    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    # No foreign key: a revocation must outlive the agent record.
    agent_id: Mapped[str | None] = mapped_column(String(_NAME), index=True)
    reason: Mapped[str] = mapped_column(Text)
    revoked_at: Mapped[datetime] = mapped_column(UtcDateTime)
