"""Alembic environment of the vroot store; run through `vroot.store.upgrade()` and friends.

The caller hands over an open connection (`config.attributes["connection"]`); there is no
alembic.ini. On PostgreSQL a transaction-scoped advisory lock makes concurrent upgrades by several
replicas run one after the other (the second finds the schema current); on SQLite the write
transaction (BEGIN IMMEDIATE) does the same.
"""

from alembic import context
from sqlalchemy import func, select

from vroot.store._models import Base

_MIGRATION_LOCK = 0x76726F6F74_01  # distinct from the event-append lock


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run vroot migrations through vroot.store.upgrade(url), not the alembic CLI")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("vroot migrations run online only")
run_migrations_online()
