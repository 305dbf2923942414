"""Opening a store: URLs, SQLite settings, PostgreSQL reachability, the error edge."""

from __future__ import annotations

import socket
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError
from store_helpers import NOW, add_host

from vroot.errors import Conflict, InvalidInput, Unavailable
from vroot.store import AgentKind, AgentRecord, Store, upgrade
from vroot.store._db import normalize_url, translate


def test_url_normalization() -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:////var/x.db").database == "/var/x.db"
    for bad in ("mysql://u@h/db", "postgresql+psycopg2://u@h/db", "not a url"):
        with pytest.raises(InvalidInput):
            normalize_url(bad)


def test_bad_url_message_hides_password() -> None:
    with pytest.raises(InvalidInput) as info:
        Store.open("mysql://admin:hunter2@db/vroot")
    assert "hunter2" not in str(info.value)


def test_sqlite_file_settings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    upgrade(url)
    with Store.open(url) as store:
        with store._db.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
        assert store.dialect == "sqlite" and store.is_current()


def test_sqlite_memory_for_single_threaded_tests() -> None:
    with Store.open("sqlite://") as store:
        store.migrate()
        add_host(store)
        assert store.agents.get("host:h1").kind is AgentKind.HOST


def test_unreachable_postgresql_is_unavailable() -> None:
    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(Unavailable, match="database unavailable"):
        Store.open(f"postgresql://postgres:pw@127.0.0.1:{port}/vroot?connect_timeout=2")


def test_unwritable_sqlite_path_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable):
        Store.open(f"sqlite:///{tmp_path / 'missing-dir' / 'v.db'}")


def test_unmigrated_database_reports_itself(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'new.db'}") as store:
        assert store.revision() is None and not store.is_current()
        with pytest.raises(Unavailable, match="no such table"):
            store.agents.list()


def test_naive_time_refused(store: Store) -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        AgentRecord(id="host:x", kind="host", ek_public=b"", created_at=datetime(2026, 1, 1))
    add_host(store)
    with pytest.raises(InvalidInput, match="timezone-aware"):
        store.events.append("x", now=datetime(2026, 1, 1))


def test_store_url_masks_password(db_url: str) -> None:
    url = db_url.replace("postgres@", "postgres:s3cret@")  # trust auth ignores the password
    with Store.open(url) as store:
        assert "s3cret" not in store.url
        if store.dialect == "postgresql":
            assert "postgres:***@" in store.url
        else:
            assert store.url == db_url


def test_translate_maps_driver_errors() -> None:
    with pytest.raises(Conflict, match="add x: UNIQUE constraint failed") as info:
        with translate("add x"):
            raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed: agents.id\nDETAIL: more"))
    assert isinstance(info.value.__cause__, IntegrityError)
    with pytest.raises(Unavailable, match="database is locked"):
        with translate("lease"):
            raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))


def test_reopen_sees_committed_state(db_url: str) -> None:
    with Store.open(db_url) as first:
        add_host(first)
    with Store.open(db_url) as second:
        assert second.agents.get("host:h1").created_at == NOW


def test_value_a_column_cannot_hold_is_invalid_input(store: Store) -> None:
    add_host(store)
    with pytest.raises(InvalidInput, match="not JSON serializable"):
        store.tasks.enqueue(agent_id="host:h1", kind="attest", payload=b"raw bytes", now=NOW)
    assert store.tasks.list() == []  # nothing half-written
    with pytest.raises(InvalidInput, match="timezone-aware"):
        with translate("x"):
            raise StatementError("bind", "SELECT", {}, InvalidInput("timestamp must be timezone-aware"))


def test_nan_refused_on_both_databases(store: Store) -> None:
    add_host(store)
    with pytest.raises(InvalidInput, match="JSON"):
        store.events.append("x", body={"score": float("nan")}, now=NOW)
    assert store.events.since(0) == []


def test_unknown_names_are_invalid_input(store: Store) -> None:
    with pytest.raises(InvalidInput, match=r"'vm' is not a valid AgentKind \(one of host, guest\)"):
        AgentRecord(id="vm:1", kind="vm", ek_public=b"", created_at=NOW)
    with pytest.raises(InvalidInput, match="not a valid TaskState"):
        store.tasks.list(state="running")
    with pytest.raises(InvalidInput, match="not a valid AgentState"):
        store.agents.list(state="sleeping")
