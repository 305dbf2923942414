"""Initial schema: agents, enrollments, nonces, tasks, results, IMA state, baselines, policies,
events, webhooks, revocations.

Revision ID: 0001
Revises:
Create Date: 2026-11-30

Types are spelled out here rather than imported from the models, so that this migration stays what
it was when the models change: timestamps are DateTime(timezone=True) (the store's UtcDateTime
decorates it), surrogate keys BIGINT (INTEGER on SQLite, where only that autoincrements).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("host_id", sa.String(length=255), nullable=True),
        sa.Column("vm_uuid", sa.String(length=64), nullable=True),
        sa.Column("policy_group", sa.String(length=255), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("zone", sa.String(length=255), nullable=True),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("ek_certificate", sa.LargeBinary(), nullable=True),
        sa.Column("ek_public", sa.LargeBinary(), nullable=False),
        sa.Column("ak_public", sa.LargeBinary(), nullable=True),
        sa.Column("ak_certificate", sa.LargeBinary(), nullable=True),
        sa.Column("client_serial", sa.String(length=64), nullable=True),
        sa.Column("vtm_manager_public", sa.LargeBinary(), nullable=True),
        sa.Column("vtm_manager_certify_info", sa.LargeBinary(), nullable=True),
        sa.Column("vtm_manager_certify_signature", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("enrolled_at", _TS, nullable=True),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.CheckConstraint("kind IN ('host', 'guest')", name=op.f("ck_agents_kind")),
        sa.CheckConstraint("state IN ('enrolling', 'active', 'revoked')", name=op.f("ck_agents_state")),
        sa.CheckConstraint("capacity >= 0", name=op.f("ck_agents_capacity")),
        sa.ForeignKeyConstraint(
            ["host_id"], ["agents.id"], name=op.f("fk_agents_host_id_agents"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("client_serial", name=op.f("uq_agents_client_serial")),
        sa.UniqueConstraint("vm_uuid", name=op.f("uq_agents_vm_uuid")),
    )
    op.create_index(op.f("ix_agents_host_id"), "agents", ["host_id"], unique=False)
    op.create_index(op.f("ix_agents_policy_group"), "agents", ["policy_group"], unique=False)
    op.create_table(
        "baselines",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("policy_group", sa.String(length=255), nullable=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_baselines")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_baselines_name_version")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_baselines_policy_group"), "baselines", ["policy_group"], unique=False)
    op.create_table(
        "events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=255), nullable=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_events_agent_id"), "events", ["agent_id"], unique=False)
    op.create_table(
        "policies",
        sa.Column("policy_group", sa.String(length=255), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("policy_group", name=op.f("pk_policies")),
    )
    op.create_table(
        "revocations",
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("revoked_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_revocations")),
    )
    op.create_index(op.f("ix_revocations_agent_id"), "revocations", ["agent_id"], unique=False)
    op.create_table(
        "webhooks",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret_ref", sa.String(length=255), nullable=True),
        sa.Column("kinds", sa.JSON(), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "enrollments",
        sa.Column("agent_id", sa.String(length=255), nullable=False),
        sa.Column("ak_public", sa.LargeBinary(), nullable=False),
        sa.Column("secret_digest", sa.LargeBinary(), nullable=False),
        sa.Column("credential_blob", sa.LargeBinary(), nullable=False),
        sa.Column("encrypted_secret", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_enrollments_agent_id_agents"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_enrollments")),
    )
    op.create_table(
        "ima_state",
        sa.Column("agent_id", sa.String(length=255), nullable=False),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column("byte_offset", sa.BigInteger(), nullable=False),
        sa.Column("pcr10", sa.JSON(), nullable=False),
        sa.Column("last_verdict", sa.String(length=16), nullable=True),
        sa.Column("reset_count", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_ima_state_agent_id_agents"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_ima_state")),
    )
    op.create_table(
        "nonces",
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("agent_id", sa.String(length=255), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("issued_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("used_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_nonces_agent_id_agents"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("value", name=op.f("pk_nonces")),
    )
    op.create_index(op.f("ix_nonces_agent_id"), "nonces", ["agent_id"], unique=False)
    op.create_index(op.f("ix_nonces_expires_at"), "nonces", ["expires_at"], unique=False)
    op.create_table(
        "results",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("agent_id", sa.String(length=255), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("pcrs", sa.JSON(), nullable=False),
        sa.Column("evidence_digest", sa.LargeBinary(), nullable=True),
        sa.Column("clock", sa.BigInteger(), nullable=True),
        sa.Column("reset_count", sa.BigInteger(), nullable=True),
        sa.Column("restart_count", sa.BigInteger(), nullable=True),
        sa.Column("signed", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("host_result_id", _ID, nullable=True),
        sa.CheckConstraint("verdict IN ('trusted', 'untrusted', 'error')", name=op.f("ck_results_verdict")),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_results_agent_id_agents"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["host_result_id"],
            ["results.id"],
            name=op.f("fk_results_host_result_id_results"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_results")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_results_agent_id_id", "results", ["agent_id", "id"], unique=False)
    op.create_table(
        "tasks",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("agent_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_until", _TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.CheckConstraint("state IN ('queued', 'leased', 'done', 'failed')", name=op.f("ck_tasks_state")),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_tasks_agent_id_agents"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_tasks_agent_id_state_id", "tasks", ["agent_id", "state", "id"], unique=False)
    op.create_index(
        "uq_tasks_open_key",
        "tasks",
        ["agent_id", "key"],
        unique=True,
        sqlite_where=sa.text("key IS NOT NULL AND state IN ('queued', 'leased')"),
        postgresql_where=sa.text("key IS NOT NULL AND state IN ('queued', 'leased')"),
    )


def downgrade() -> None:
    op.drop_index("uq_tasks_open_key", table_name="tasks")
    op.drop_index("ix_tasks_agent_id_state_id", table_name="tasks")
    op.drop_table("tasks")
    op.drop_index("ix_results_agent_id_id", table_name="results")
    op.drop_table("results")
    op.drop_index(op.f("ix_nonces_expires_at"), table_name="nonces")
    op.drop_index(op.f("ix_nonces_agent_id"), table_name="nonces")
    op.drop_table("nonces")
    op.drop_table("ima_state")
    op.drop_table("enrollments")
    op.drop_table("webhooks")
    op.drop_index(op.f("ix_revocations_agent_id"), table_name="revocations")
    op.drop_table("revocations")
    op.drop_table("policies")
    op.drop_index(op.f("ix_events_agent_id"), table_name="events")
    op.drop_table("events")
    op.drop_index(op.f("ix_baselines_policy_group"), table_name="baselines")
    op.drop_table("baselines")
    op.drop_index(op.f("ix_agents_policy_group"), table_name="agents")
    op.drop_index(op.f("ix_agents_host_id"), table_name="agents")
    op.drop_table("agents")
