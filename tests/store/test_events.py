"""Events for server-sent events and webhooks; LISTEN/NOTIFY (PostgreSQL) and the in-process hub."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from store_helpers import NOW, race

from vroot.errors import Conflict, InvalidInput, NotFound, Unavailable
from vroot.store import EVENTS_CHANNEL, Store


def test_append_and_since(store: Store) -> None:
    a = store.events.append("verdict.changed", agent_id="host:h1", body={"verdict": "trusted"}, now=NOW)
    b = store.events.append("agent.revoked", agent_id="host:h2", body={}, now=NOW)
    c = store.events.append("verdict.changed", agent_id="host:h2", body=None, now=NOW + timedelta(seconds=1))
    assert a < b < c and store.events.last_id() == c
    assert [e.id for e in store.events.since(0)] == [a, b, c]
    assert [e.id for e in store.events.since(a)] == [b, c]
    assert [e.id for e in store.events.since(0, limit=1)] == [a]
    assert [e.id for e in store.events.since(0, kinds=["verdict.changed"])] == [a, c]
    assert [e.id for e in store.events.since(0, agent_id="host:h2", kinds={"verdict.changed"})] == [c]
    first = store.events.since(0)[0]
    assert (first.kind, first.agent_id, first.body, first.created_at) == (
        "verdict.changed",
        "host:h1",
        {"verdict": "trusted"},
        NOW,
    )
    with pytest.raises(InvalidInput):
        store.events.append("", now=NOW)
    with pytest.raises(InvalidInput):
        store.events.since(0, limit=0)


def test_prune_never_reuses_ids(store: Store) -> None:
    old = [store.events.append("x", now=NOW - timedelta(days=2)) for _ in range(3)]
    assert store.events.prune(before=NOW) == 3
    assert store.events.since(0) == []
    new = store.events.append("x", now=NOW)
    assert new > max(old)  # a subscriber at max(old) still sees it


def test_concurrent_appends_commit_in_id_order(store: Store, open_store) -> None:
    """A reader that follows since(last_id) while appends race never skips an event."""
    other = open_store()
    seen: list[int] = []
    stop = threading.Event()

    def follow() -> None:
        last = 0
        while not stop.is_set() or store.events.since(last):
            for e in store.events.since(last, limit=1000):
                seen.append(e.id)
                last = e.id

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        ids = race(
            8, lambda i: [(store if i % 2 else other).events.append("x", body=i, now=NOW) for _ in range(10)]
        )
    finally:
        stop.set()
        reader.join(30)
    assert not [o for o in ids if isinstance(o, BaseException)]
    appended = sorted(i for o in ids for i in o)
    assert seen == appended == sorted(set(appended))


def test_append_notifies_listeners_at_commit(store: Store) -> None:
    with store.listener(EVENTS_CHANNEL) as listener:
        event_id = store.events.append("verdict.changed", body={}, now=NOW)
        got = listener.wait(10)
        assert [(n.channel, n.payload) for n in got] == [(EVENTS_CHANNEL, str(event_id))]
        assert listener.wait(0.05) == []


def test_notify_and_listen(store: Store, open_store) -> None:
    """store.notify reaches store.listen; on PostgreSQL also another Store (another replica)."""
    sender = open_store() if store.dialect == "postgresql" else store
    got: list[str | None] = []
    thread = threading.Thread(target=lambda: got.append(store.listen("wake_up", timeout=10)))
    thread.start()
    deadline = time.monotonic() + 10
    while thread.is_alive() and time.monotonic() < deadline:  # notify until the listener has started
        sender.notify("wake_up", "agent-7")
        thread.join(0.1)
    assert got == ["agent-7"]
    assert store.listen("wake_up", timeout=0.05) is None
    with pytest.raises(InvalidInput, match="channel"):
        store.notify("Robert'); DROP TABLE agents;--", "x")


def test_webhooks(store: Store) -> None:
    hook = store.webhooks.add(
        url="https://relying.example/hook", secret_ref="env:HOOK_SECRET", kinds=["verdict.changed"], now=NOW
    )
    every = store.webhooks.add(url="https://audit.example/", secret_ref=None, now=NOW)
    assert (
        store.webhooks.get(hook.id) == hook and hook.kinds == ("verdict.changed",) and hook.last_event_id == 0
    )
    assert [h.id for h in store.webhooks.list(kind="verdict.changed")] == [hook.id, every.id]
    assert [h.id for h in store.webhooks.list(kind="agent.revoked")] == [every.id]
    assert store.webhooks.advance(hook.id, expected=0, to=5).last_event_id == 5
    with pytest.raises(Conflict, match="cursor is at 5, not 0"):  # another replica delivered first
        store.webhooks.advance(hook.id, expected=0, to=3)
    with pytest.raises(InvalidInput):
        store.webhooks.advance(hook.id, expected=5, to=4)
    store.webhooks.remove(every.id)
    with pytest.raises(NotFound):
        store.webhooks.get(every.id)
    with pytest.raises(NotFound):
        store.webhooks.advance(every.id, expected=0, to=1)


def test_listener_reports_lost_connection(store: Store, pg_admin_for) -> None:
    """PostgreSQL: a listener whose connection dies raises Unavailable (the caller re-opens and
    re-reads); SQLite listeners live in the process and cannot lose a connection."""
    with store.listener("lost") as listener:
        if store.dialect == "sqlite":
            assert listener.wait(0.01) == []
            return
        pid = listener._conn.info.backend_pid
        pg_admin_for(store).execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(Unavailable):
            listener.wait(5)
