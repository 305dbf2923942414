"""Agents, enrollments (RA-1 credential activation state) and revocations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from store_helpers import NOW, add_guest, add_host, race

from vroot.errors import Conflict, InvalidInput, NonceExpired, NotFound, Revoked
from vroot.store import KEEP, AgentKind, AgentRecord, AgentState, EnrollmentRecord, Store

BIG_SERIAL = 0x7F3A_0000_0000_0000_0000_0000_0000_0000_0001  # 20-byte X.509 serials exceed 64 bits


def challenge(agent_id: str = "host:h1", *, ak: bytes = b"ak1", expires: timedelta = timedelta(minutes=5)):
    return EnrollmentRecord(
        agent_id=agent_id,
        ak_public=ak,
        secret_digest=b"d" * 32,
        credential_blob=b"blob",
        encrypted_secret=b"secret",
        created_at=NOW,
        expires_at=NOW + expires,
    )


def test_add_get_round_trip(store: Store) -> None:
    host = add_host(
        store,
        labels={"rack": "r1"},
        zone="eu-1",
        capacity=8,
        group="prod",
        ek_certificate=b"\x30\x82der",
        client_serial=BIG_SERIAL,
    )
    assert store.agents.get("host:h1") == host
    assert host.state is AgentState.ENROLLING and host.created_at == NOW and host.labels == {"rack": "r1"}
    assert store.agents.by_client_serial(BIG_SERIAL) == host
    assert store.agents.find("host:nope") is None
    with pytest.raises(NotFound, match="host:nope"):
        store.agents.get("host:nope")


def test_duplicates_conflict(store: Store) -> None:
    add_host(store, client_serial=5)
    with pytest.raises(Conflict, match="already exists"):
        add_host(store)
    with pytest.raises(Conflict):
        add_host(store, "host:h2", client_serial=5)
    add_guest(store, "vm:1", host_id="host:h1", vm_uuid="u-1")
    with pytest.raises(Conflict):
        add_guest(store, "vm:2", host_id="host:h1", vm_uuid="u-1")


def test_guest_needs_an_existing_host(store: Store) -> None:
    with pytest.raises(NotFound, match="host:missing"):
        add_guest(store, "vm:1", host_id="host:missing")
    add_host(store)
    add_guest(store, "vm:1", host_id="host:h1")
    with pytest.raises(InvalidInput, match="not a host"):
        add_guest(store, "vm:2", host_id="vm:1")
    with pytest.raises(InvalidInput, match="no host_id"):
        AgentRecord(id="host:x", kind=AgentKind.HOST, host_id="host:h1", ek_public=b"", created_at=NOW)


def test_list_filters(store: Store) -> None:
    add_host(store, group="a")
    add_host(store, "host:h2", group="b")
    add_guest(store, "vm:1", host_id="host:h1")
    add_guest(store, "vm:2", host_id="host:h2")
    assert [a.id for a in store.agents.list(kind="host")] == ["host:h1", "host:h2"]
    assert [a.id for a in store.agents.list(host_id="host:h2")] == ["vm:2"]
    assert [a.id for a in store.agents.list(group="a")] == ["host:h1"]
    assert [a.id for a in store.agents.list(kind=AgentKind.GUEST, state="enrolling")] == ["vm:1", "vm:2"]


def test_enrollment_then_activation(store: Store) -> None:
    add_host(store)
    store.enrollments.begin(challenge(ak=b"ak-old"))
    store.enrollments.begin(challenge(ak=b"ak-new"))  # a retry replaces the earlier challenge
    assert store.enrollments.find("host:h1").ak_public == b"ak-new"
    taken = store.enrollments.take("host:h1", now=NOW + timedelta(seconds=10))
    assert taken.ak_public == b"ak-new" and taken.secret_digest == b"d" * 32
    with pytest.raises(NotFound, match="no enrollment"):
        store.enrollments.take("host:h1", now=NOW)  # single use
    active = store.agents.activate(
        "host:h1", ak_public=taken.ak_public, ak_certificate=b"akcert", client_serial=BIG_SERIAL, now=NOW
    )
    assert active.state is AgentState.ACTIVE and active.enrolled_at == NOW and active.ak_public == b"ak-new"
    assert [e.kind for e in store.events.since(0)] == ["agent.enrolled"]


def test_reenrollment_swaps_ak_and_revokes_superseded_certificate(store: Store) -> None:
    add_host(store)
    store.agents.activate("host:h1", ak_public=b"ak1", ak_certificate=b"c1", client_serial=10, now=NOW)
    store.enrollments.begin(challenge(ak=b"ak2"))
    assert store.agents.get("host:h1").state is AgentState.ACTIVE  # a pending challenge changes nothing
    again = store.agents.activate(
        "host:h1", ak_public=b"ak2", ak_certificate=b"c2", client_serial=11, now=NOW
    )
    assert again.ak_public == b"ak2" and again.client_serial == 11
    assert store.revocations.is_revoked(10) and not store.revocations.is_revoked(11)
    assert store.revocations.find(10).reason == "superseded"


def test_expired_challenge_refused_and_removed(store: Store) -> None:
    add_host(store)
    store.enrollments.begin(challenge(expires=timedelta(seconds=30)))
    with pytest.raises(NonceExpired, match="expired"):
        store.enrollments.take("host:h1", now=NOW + timedelta(seconds=30))
    assert store.enrollments.find("host:h1") is None
    with pytest.raises(InvalidInput, match="expire after"):
        store.enrollments.begin(challenge(expires=timedelta(0)))
    with pytest.raises(NotFound):
        store.enrollments.begin(challenge("host:unknown"))


def test_concurrent_take_exactly_one(store: Store, open_store) -> None:
    add_host(store)
    other = open_store()
    store.enrollments.begin(challenge())
    outcomes = race(10, lambda i: (store if i % 2 else other).enrollments.take("host:h1", now=NOW))
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, NotFound) for o in outcomes if isinstance(o, BaseException))


def test_revoke_is_immediate_and_total(store: Store) -> None:
    add_host(store)
    store.agents.activate("host:h1", ak_public=b"ak", ak_certificate=b"c", client_serial=BIG_SERIAL, now=NOW)
    store.enrollments.begin(challenge())
    assert store.agents.by_client_certificate(BIG_SERIAL) == (store.agents.get("host:h1"), False)
    revoked = store.agents.revoke("host:h1", reason="key compromise", now=NOW, serials=(77,))
    assert store.agents.by_client_certificate(BIG_SERIAL) == (revoked, True)
    assert store.agents.by_client_certificate(77) == (None, True)
    assert store.agents.by_client_certificate(78) == (None, False)
    assert revoked.state is AgentState.REVOKED and revoked.revoked_at == NOW
    assert store.revocations.is_revoked(BIG_SERIAL) and store.revocations.is_revoked(77)
    assert store.enrollments.find("host:h1") is None
    assert store.events.since(0)[-1].kind == "agent.revoked"
    assert store.agents.by_client_serial(BIG_SERIAL).state is AgentState.REVOKED
    with pytest.raises(Conflict, match="already revoked"):
        store.agents.revoke("host:h1", reason="again", now=NOW)
    with pytest.raises(Revoked):
        store.agents.activate("host:h1", ak_public=b"ak", ak_certificate=b"c", client_serial=1, now=NOW)
    with pytest.raises(Revoked):
        store.enrollments.begin(challenge())


def test_revocations_repository(store: Store) -> None:
    first = store.revocations.add(3, reason="lost", now=NOW)
    store.revocations.add(BIG_SERIAL, reason="stolen", now=NOW + timedelta(hours=1), agent_id="host:gone")
    assert first.serial == 3 and store.revocations.find(4) is None
    with pytest.raises(Conflict, match="already revoked"):
        store.revocations.add(3, reason="again", now=NOW)
    assert [r.serial for r in store.revocations.list()] == [3, BIG_SERIAL]
    assert [r.serial for r in store.revocations.list(since=NOW + timedelta(minutes=1))] == [BIG_SERIAL]
    with pytest.raises(InvalidInput):
        store.revocations.add(-1, reason="bad", now=NOW)


def test_update_move_and_vtm_manager(store: Store) -> None:
    add_host(store)
    add_host(store, "host:h2")
    add_guest(store, "vm:1", host_id="host:h1")
    updated = store.agents.update("host:h1", labels={"a": "b"}, capacity=4)
    assert (updated.labels, updated.capacity, updated.group, updated.zone) == ({"a": "b"}, 4, "default", None)
    assert store.agents.update("host:h1", zone="z", capacity=KEEP).capacity == 4
    with pytest.raises(InvalidInput):
        store.agents.update("host:h1", capacity=-1)
    assert store.agents.get("host:h1").capacity == 4
    moved = store.agents.move("vm:1", host_id="host:h2", now=NOW)
    assert moved.host_id == "host:h2"
    assert store.events.since(0)[-1].body == {"from": "host:h1", "to": "host:h2"}
    with pytest.raises(InvalidInput):
        store.agents.move("host:h1", host_id="host:h2", now=NOW)
    host = store.agents.set_vtm_manager(
        "host:h1", public=b"pub", certify_info=b"att", certify_signature=b"sig"
    )
    assert (host.vtm_manager_public, host.vtm_manager_certify_info, host.vtm_manager_certify_signature) == (
        b"pub",
        b"att",
        b"sig",
    )
    with pytest.raises(InvalidInput):
        store.agents.set_vtm_manager("vm:1", public=b"p", certify_info=b"a", certify_signature=b"s")


def test_delete_cascades_but_keeps_revocations(store: Store) -> None:
    add_host(store)
    add_guest(store, "vm:1", host_id="host:h1")
    store.tasks.enqueue(agent_id="host:h1", kind="attest", payload={}, now=NOW)
    store.agents.revoke("host:h1", reason="decommissioned", now=NOW, serials=(9,))
    store.agents.delete("host:h1")
    assert store.agents.find("host:h1") is None and store.tasks.list() == []
    assert store.agents.get("vm:1").host_id is None
    assert store.revocations.is_revoked(9)
    with pytest.raises(NotFound):
        store.agents.delete("host:h1")
