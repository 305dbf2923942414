"""Migration records of the migration controller (issue 5; MC-F3, MIG-8, MIG-9).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_OPEN = "state IN ('preparing', 'exporting', 'importing', 'committed', 'aborting')"


def upgrade() -> None:
    op.create_table(
        "migrations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("vm_uuid", sa.String(length=36), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("destination", sa.String(length=255), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("deadline", _TS, nullable=False),
        sa.CheckConstraint(
            "state IN ('preparing', 'exporting', 'importing', 'committed', 'completed', 'aborting', 'aborted')",
            name=op.f("ck_migrations_state"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migrations")),
    )
    op.create_index("ix_migrations_state", "migrations", ["state"], unique=False)
    op.create_index("ix_migrations_source", "migrations", ["source"], unique=False)
    op.create_index("ix_migrations_destination", "migrations", ["destination"], unique=False)
    op.create_index("uq_migrations_open_vm", "migrations", ["vm_uuid"], unique=True,
                    sqlite_where=sa.text(_OPEN), postgresql_where=sa.text(_OPEN))  # fmt: skip


def downgrade() -> None:
    op.drop_index("uq_migrations_open_vm", table_name="migrations")
    op.drop_index("ix_migrations_destination", table_name="migrations")
    op.drop_index("ix_migrations_source", table_name="migrations")
    op.drop_index("ix_migrations_state", table_name="migrations")
    op.drop_table("migrations")
