"""Task queue: leases (FOR UPDATE SKIP LOCKED on PostgreSQL, BEGIN IMMEDIATE on SQLite), expiry,
owners, de-duplication (DESIGN.md sections 5 and 7)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest
from store_helpers import NOW, add_host, race

from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.store import TASKS_CHANNEL, Store, TaskState


def test_enqueue_lease_complete(store: Store) -> None:
    add_host(store)
    task = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload={"pcrs": [0, 7]}, now=NOW)
    assert task.state is TaskState.QUEUED and task.attempts == 0 and task.payload == {"pcrs": [0, 7]}
    [leased] = store.tasks.lease(agent_id="host:h1", owner="r1", now=NOW, lease_seconds=30)
    assert leased.id == task.id and leased.state is TaskState.LEASED
    assert (leased.lease_owner, leased.lease_until, leased.attempts) == ("r1", NOW + timedelta(seconds=30), 1)
    assert store.tasks.lease(agent_id="host:h1", owner="r2", now=NOW, lease_seconds=30) == []
    done = store.tasks.complete(task.id, owner="r1", result={"quote": "ok"}, now=NOW + timedelta(seconds=1))
    assert done.state is TaskState.DONE and done.result == {"quote": "ok"}
    assert done.finished_at == NOW + timedelta(seconds=1) and done.lease_until is None
    assert store.tasks.get(task.id) == done
    with pytest.raises(Conflict, match="is done"):
        store.tasks.complete(task.id, owner="r1", result={}, now=NOW)


def test_lease_takes_oldest_first_up_to_limit_and_only_own_agent(store: Store) -> None:
    add_host(store)
    add_host(store, "host:h2")
    ids = [store.tasks.enqueue(agent_id="host:h1", kind="attest", payload=i, now=NOW).id for i in range(5)]
    store.tasks.enqueue(agent_id="host:h2", kind="attest", payload="other", now=NOW)
    got = store.tasks.lease(agent_id="host:h1", owner="r1", now=NOW, lease_seconds=30, limit=3)
    assert [t.id for t in got] == ids[:3]
    got = store.tasks.lease(agent_id="host:h1", owner="r1", now=NOW, lease_seconds=30, limit=10)
    assert [t.id for t in got] == ids[3:]
    anyone = store.tasks.lease(agent_id=None, owner="worker", now=NOW, lease_seconds=30, limit=10)
    assert [t.payload for t in anyone] == ["other"]


def test_expired_lease_is_leased_again_and_stale_owner_refused(store: Store) -> None:
    """A replica that dies loses no task: its lease expires and another replica gets the task."""
    add_host(store)
    task = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload={}, now=NOW)
    store.tasks.lease(agent_id="host:h1", owner="dead", now=NOW, lease_seconds=30)
    assert (
        store.tasks.lease(agent_id="host:h1", owner="r2", now=NOW + timedelta(seconds=29), lease_seconds=30)
        == []
    )
    [again] = store.tasks.lease(
        agent_id="host:h1", owner="r2", now=NOW + timedelta(seconds=30), lease_seconds=30
    )
    assert again.id == task.id and again.lease_owner == "r2" and again.attempts == 2
    with pytest.raises(Conflict, match="leased to r2, not dead"):
        store.tasks.complete(task.id, owner="dead", result={}, now=NOW + timedelta(seconds=31))
    assert store.tasks.complete(task.id, owner="r2", result=1, now=NOW + timedelta(seconds=31)).result == 1


def test_holder_may_finish_after_expiry_if_nobody_took_it(store: Store) -> None:
    add_host(store)
    task = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload={}, now=NOW)
    store.tasks.lease(agent_id="host:h1", owner="slow", now=NOW, lease_seconds=1)
    assert (
        store.tasks.complete(task.id, owner="slow", result=None, now=NOW + timedelta(hours=1)).state == "done"
    )
    assert (
        store.tasks.lease(agent_id="host:h1", owner="r2", now=NOW + timedelta(hours=2), lease_seconds=1) == []
    )


def test_task_failed_after_max_attempts_of_expired_leases(store: Store) -> None:
    add_host(store)
    task = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload={}, now=NOW, max_attempts=2)
    t = NOW
    for _ in range(2):
        assert len(store.tasks.lease(agent_id="host:h1", owner="crashes", now=t, lease_seconds=10)) == 1
        t += timedelta(seconds=10)
    assert store.tasks.lease(agent_id="host:h1", owner="crashes", now=t, lease_seconds=10) == []
    failed = store.tasks.get(task.id)
    assert failed.state is TaskState.FAILED and "after 2 attempts" in failed.result["error"]


def test_exhausted_task_does_not_hide_the_next_one(store: Store) -> None:
    add_host(store)
    poison = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload="poison", now=NOW, max_attempts=1)
    store.tasks.lease(agent_id="host:h1", owner="r", now=NOW, lease_seconds=10)
    good = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload="good", now=NOW)
    [got] = store.tasks.lease(
        agent_id="host:h1", owner="r", now=NOW + timedelta(seconds=10), lease_seconds=10
    )
    assert got.id == good.id and store.tasks.get(poison.id).state is TaskState.FAILED


def test_renew_fail_cancel(store: Store) -> None:
    add_host(store)
    a = store.tasks.enqueue(agent_id="host:h1", kind="migrate-out", payload={}, now=NOW)
    b = store.tasks.enqueue(agent_id="host:h1", kind="import", payload={}, now=NOW)
    store.tasks.lease(agent_id="host:h1", owner="r1", now=NOW, lease_seconds=10, limit=2)
    renewed = store.tasks.renew(a.id, owner="r1", now=NOW + timedelta(seconds=9), lease_seconds=60)
    assert renewed.lease_until == NOW + timedelta(seconds=69)
    assert store.tasks.lease(
        agent_id="host:h1", owner="r2", now=NOW + timedelta(seconds=30), lease_seconds=10
    ) == [store.tasks.get(b.id)]
    with pytest.raises(Conflict):
        store.tasks.renew(a.id, owner="r2", now=NOW, lease_seconds=10)
    failed = store.tasks.fail(a.id, owner="r1", result={"error": "TM busy"}, now=NOW)
    assert failed.state is TaskState.FAILED and failed.result == {"error": "TM busy"}
    cancelled = store.tasks.cancel(b.id, reason="operator", now=NOW)
    assert cancelled.state is TaskState.FAILED and cancelled.result == {"error": "cancelled: operator"}
    with pytest.raises(Conflict, match="is failed: already finished"):
        store.tasks.cancel(b.id, reason="again", now=NOW)
    with pytest.raises(NotFound):
        store.tasks.complete(999, owner="r1", result=None, now=NOW)


def test_key_deduplicates_open_tasks_only(store: Store) -> None:
    """The scheduler can ask every interval; an offline agent still has one attest task, not hundreds."""
    add_host(store)
    first = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload=1, now=NOW, key="attest")
    again = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload=2, now=NOW, key="attest")
    assert again == first
    store.tasks.lease(agent_id="host:h1", owner="r", now=NOW, lease_seconds=10)
    assert (
        store.tasks.enqueue(agent_id="host:h1", kind="attest", payload=3, now=NOW, key="attest").id
        == first.id
    )
    store.tasks.complete(first.id, owner="r", result=None, now=NOW)
    later = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload=4, now=NOW, key="attest")
    assert later.id != first.id and later.payload == 4
    assert len(store.tasks.list(agent_id="host:h1")) == 2


def test_enqueue_refuses_unknown_agent_and_bad_values(store: Store) -> None:
    add_host(store)
    with pytest.raises(NotFound):
        store.tasks.enqueue(agent_id="host:none", kind="attest", payload={}, now=NOW)
    with pytest.raises(InvalidInput):
        store.tasks.enqueue(agent_id="host:h1", kind="", payload={}, now=NOW)
    with pytest.raises(InvalidInput):
        store.tasks.lease(agent_id="host:h1", owner="r", now=NOW, lease_seconds=0)


def test_list_and_purge(store: Store) -> None:
    add_host(store)
    t1 = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload={}, now=NOW)
    store.tasks.enqueue(agent_id="host:h1", kind="attest", payload={}, now=NOW)
    store.tasks.lease(agent_id="host:h1", owner="r", now=NOW, lease_seconds=10)
    store.tasks.complete(t1.id, owner="r", result=None, now=NOW)
    assert [t.id for t in store.tasks.list(state="done")] == [t1.id]
    assert store.tasks.purge(finished_before=NOW + timedelta(seconds=1)) == 1
    assert [t.state for t in store.tasks.list()] == [TaskState.QUEUED]


def test_concurrent_leasers_never_share_a_task(store: Store, open_store) -> None:
    """Threads on two Store objects (two replicas' engines) drain one queue: each task exactly once."""
    add_host(store)
    other = open_store()
    n_tasks = 60
    for i in range(n_tasks):
        store.tasks.enqueue(agent_id="host:h1", kind="attest", payload=i, now=NOW)

    def drain(i: int) -> list[int]:
        mine: list[int] = []
        s = store if i % 2 else other
        while got := s.tasks.lease(agent_id="host:h1", owner=f"w{i}", now=NOW, lease_seconds=60, limit=3):
            for t in got:
                s.tasks.complete(t.id, owner=f"w{i}", result=i, now=NOW)
                mine.append(t.id)
        return mine

    outcomes = race(8, drain)
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    taken = [tid for o in outcomes for tid in o]
    assert len(taken) == n_tasks and len(set(taken)) == n_tasks
    assert {t.state for t in store.tasks.list(limit=1000)} == {TaskState.DONE}


def test_postgresql_lease_skips_locked_rows(store: Store, db_url: str) -> None:
    """FOR UPDATE SKIP LOCKED: a task row locked by another transaction is skipped, not waited for."""
    if store.dialect != "postgresql":
        assert store.dialect == "sqlite"  # SQLite serializes writers instead (BEGIN IMMEDIATE)
        return
    add_host(store)
    first = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload="locked", now=NOW)
    second = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload="free", now=NOW)
    with psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql")) as other:
        other.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", (first.id,))
        started = time.monotonic()
        got = store.tasks.lease(agent_id="host:h1", owner="r", now=NOW, lease_seconds=10, limit=2)
        assert time.monotonic() - started < 5
        assert [t.id for t in got] == [second.id]
        other.rollback()
    assert [t.id for t in store.tasks.lease(agent_id="host:h1", owner="r", now=NOW, lease_seconds=10)] == [
        first.id
    ]


def test_enqueue_wakes_listener_after_commit(store: Store) -> None:
    add_host(store)
    with store.listener(TASKS_CHANNEL) as listener:
        assert listener.wait(0.05) == []
        woke: list[float] = []

        def enqueue_later() -> None:
            time.sleep(0.2)
            woke.append(time.monotonic())
            store.tasks.enqueue(agent_id="host:h1", kind="attest", payload={}, now=NOW)

        thread = threading.Thread(target=enqueue_later)
        thread.start()
        got = listener.wait(10)
        thread.join()
    assert [(n.channel, n.payload) for n in got] == [(TASKS_CHANNEL, "host:h1")]


def test_ra2_enqueue_challenge_stores_the_nonce_with_its_task_or_not_at_all(store: Store) -> None:
    """RA-2: a challenge task and its single-use nonce are committed together; when an open task of
    the key is returned instead, the new nonce is not stored (it could never be answered)."""
    from vroot.errors import NonceUnknown

    add_host(store)
    first, second = b"\x01" * 32, b"\x02" * 32
    kw = {"agent_id": "host:h1", "kind": "attest", "key": "attest", "purpose": "attest",
          "expires_at": NOW + timedelta(minutes=2), "now": NOW}  # fmt: skip
    task = store.tasks.enqueue_challenge(nonce=first, payload={"nonce": first.hex()}, **kw)
    assert task.state is TaskState.QUEUED and task.payload == {"nonce": first.hex()}
    again = store.tasks.enqueue_challenge(nonce=second, payload={"nonce": second.hex()}, **kw)
    assert again.id == task.id and again.payload == {"nonce": first.hex()}
    assert store.nonces.find(second) is None
    used = store.nonces.consume(first, agent_id="host:h1", purpose="attest", now=NOW + timedelta(seconds=1))
    assert used.issued_at == NOW and used.expires_at == NOW + timedelta(minutes=2)
    with pytest.raises(NonceUnknown):
        store.nonces.consume(second, agent_id="host:h1", purpose="attest", now=NOW)
    with pytest.raises(NotFound):
        store.tasks.enqueue_challenge(**{**kw, "agent_id": "host:nobody"}, nonce=second, payload={})
    with pytest.raises(InvalidInput):
        store.tasks.enqueue_challenge(**{**kw, "key": "other"}, nonce=b"short", payload={})
    assert store.nonces.find(second) is None


def test_lease_of_an_agent_with_nothing_leasable_changes_nothing(store: Store) -> None:
    """A long-poll that finds no task (the common case) leases nothing, and finished tasks stay as
    they are; a task queued afterwards is leased at the next call."""
    add_host(store)
    done = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload=1, now=NOW)
    store.tasks.lease(agent_id="host:h1", owner="host:h1", now=NOW, lease_seconds=30)
    store.tasks.complete(done.id, owner="host:h1", result={"ok": 1}, now=NOW)
    assert store.tasks.lease(agent_id="host:h1", owner="host:h1", now=NOW, lease_seconds=30) == []
    assert store.tasks.get(done.id).state is TaskState.DONE
    queued = store.tasks.enqueue(agent_id="host:h1", kind="attest", payload=2, now=NOW)
    assert [t.id for t in store.tasks.lease(agent_id="host:h1", owner="host:h1", now=NOW, lease_seconds=30)] == [
        queued.id]  # fmt: skip


def test_mig8_tasks_that_finish_a_started_migration_are_leased_first(store: Store) -> None:
    """A destination imports and unlocks the vTMs already locked for it before preparing for more
    (a drain queues many prepare tasks first); within each group, oldest first."""
    add_host(store)
    ids = {kind: store.tasks.enqueue(agent_id="host:h1", kind=kind, payload={}, now=NOW).id
           for kind in ("prepare-migration-in", "attest-x", "import", "finalize-in")}  # fmt: skip
    order = [store.tasks.lease(agent_id="host:h1", owner="host:h1", now=NOW, lease_seconds=60)[0].id for _ in ids]
    assert order == [ids["import"], ids["finalize-in"], ids["prepare-migration-in"], ids["attest-x"]]
