"""The Alembic migration creates exactly the tables the models declare, on both databases, and
round-trips through downgrade and upgrade."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from store_helpers import NOW, add_host, race

from vroot.errors import InvalidInput
from vroot.store import Store, current_revision, downgrade, head_revision, upgrade
from vroot.store._models import Base


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database never migrated: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    make: Callable[[], str] = request.getfixturevalue("pg_database")
    return make()


def schema_diff(url: str) -> tuple[list, set[str]]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return compare_metadata(context, Base.metadata), set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_migration_creates_exactly_the_models(empty_url: str) -> None:
    assert current_revision(empty_url) is None
    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision() == "0002"
    diff, tables = schema_diff(empty_url)
    assert diff == []
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert {"agents", "nonces", "tasks", "results", "ima_state", "events", "revocations"} <= tables


def test_downgrade_upgrade_round_trip(empty_url: str) -> None:
    upgrade(empty_url)
    with Store.open(empty_url) as store:
        add_host(store)
    downgrade(empty_url, "base")
    assert current_revision(empty_url) is None
    assert schema_diff(empty_url)[1] == {"alembic_version"}
    upgrade(empty_url)
    diff, tables = schema_diff(empty_url)
    assert diff == [] and tables == set(Base.metadata.tables) | {"alembic_version"}
    with Store.open(empty_url) as store:
        assert store.is_current() and store.agents.list() == []
        add_host(store)  # usable again


def test_concurrent_upgrades_by_replicas(empty_url: str) -> None:
    """Replicas starting together all call migrate(); they run one after the other, none fails."""
    stores = [Store.open(empty_url) for _ in range(3)]
    try:
        outcomes = race(3, lambda i: stores[i].migrate())
        assert outcomes == [None, None, None]
        assert all(s.revision() == head_revision() for s in stores)
        add_host(stores[0])
        assert stores[1].agents.get("host:h1").created_at == NOW
    finally:
        for s in stores:
            s.close()


def test_unknown_revision_is_invalid_input(empty_url: str) -> None:
    with pytest.raises(InvalidInput, match="nonexistent"):
        upgrade(empty_url, "nonexistent")
