"""Migration records (issue 5; MC-F3, MIG-8, MIG-9) on SQLite and PostgreSQL: one open migration
per VM; optimistic updates (two writers never both move one step: the second gets Conflict); the
commit moves the guest to its new host with its new vEK certificate in the same transaction and
publishes "agent.moved"; listing by state, VM and host."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from store_helpers import NOW, add_guest, add_host, race

from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.store._migrations import MigrationRecord, Rehome

VM = uuid.UUID("6f1c3a52-0c4e-4a57-9d55-0d1fd0f3b001")


def record(mid: int = 1, vm: uuid.UUID = VM, **kw: object) -> MigrationRecord:
    base: dict[str, object] = {"id": uuid.UUID(int=mid), "vm_uuid": vm, "source": "host:a", "destination": "host:b",
                               "trigger": "operator", "state": "preparing", "nonce": bytes(32), "created_at": NOW,
                               "updated_at": NOW, "deadline": NOW + timedelta(seconds=60),
                               "body": {"steps": [], "ticket": {"vm_uuid": str(vm)}}}  # fmt: skip
    base.update(kw)
    return MigrationRecord(**base)  # type: ignore[arg-type]


@pytest.fixture
def fleet(store):  # noqa: ANN001, ANN201
    add_host(store, "host:a")
    add_host(store, "host:b")
    add_guest(store, f"vm:{VM}", host_id="host:a", vm_uuid=str(VM), ek_certificate=b"old")
    return store


def test_mc_f3_a_record_round_trips_and_one_vm_has_one_open_migration(fleet):
    stored = fleet.migrations.add(record())
    assert fleet.migrations.get(stored.id) == stored and stored.version == 1
    assert stored.body["ticket"] == {"vm_uuid": str(VM)}
    with pytest.raises(Conflict, match="already has an open migration"):
        fleet.migrations.add(record(2))
    other = fleet.migrations.add(record(3, vm=uuid.UUID(int=99)))  # another VM: fine
    assert {m.id for m in fleet.migrations.list(open_only=True)} == {stored.id, other.id}
    done = fleet.migrations.update(stored.id, expected_version=1, state="aborted", body=stored.body, error="x", now=NOW)
    assert done.version == 2 and done.state == "aborted" and done.error == "x"
    assert fleet.migrations.add(record(4)).state == "preparing"  # closed: the VM may migrate again
    assert {m.id for m in fleet.migrations.list(vm_uuid=VM)} == {uuid.UUID(int=1), uuid.UUID(int=4)}
    assert {m.id for m in fleet.migrations.list(host="host:b")} == {uuid.UUID(int=i) for i in (1, 3, 4)}
    with pytest.raises(NotFound):
        fleet.migrations.get(uuid.UUID(int=42))


def test_mig8_two_writers_never_both_move_one_step(fleet):
    stored = fleet.migrations.add(record())
    outcomes = race(4, lambda i: fleet.migrations.update(stored.id, expected_version=1, state="exporting",
                                                          body={**stored.body, "target": {"w": i}}, error=None,
                                                          now=NOW))  # fmt: skip
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(winners) == 1 and all(isinstance(o, Conflict) for o in outcomes if o not in winners)
    assert fleet.migrations.get(stored.id).body["target"] == winners[0].body["target"]


def test_mig9_the_commit_moves_the_guest_with_its_new_vek_certificate(fleet):
    stored = fleet.migrations.add(record())
    last = fleet.events.last_id()
    fleet.migrations.update(stored.id, expected_version=1, state="committed", body=stored.body, error=None, now=NOW,
                            rehome=Rehome(agent_id=f"vm:{VM}", host_id="host:b", ek_certificate=b"new"))  # fmt: skip
    guest = fleet.agents.get(f"vm:{VM}")
    assert guest.host_id == "host:b" and guest.ek_certificate == b"new"
    moved = [e for e in fleet.events.since(last) if e.kind == "agent.moved"]
    assert len(moved) == 1 and moved[0].body == {"from": "host:a", "to": "host:b", "migration": str(stored.id)}


def test_mig9_a_commit_that_cannot_move_the_guest_commits_nothing(fleet):
    stored = fleet.migrations.add(record())
    with pytest.raises(NotFound):
        fleet.migrations.update(stored.id, expected_version=1, state="committed", body=stored.body, error=None,
                                now=NOW, rehome=Rehome(agent_id=f"vm:{VM}", host_id="host:zz"))  # fmt: skip
    assert fleet.migrations.get(stored.id).state == "preparing"
    assert fleet.agents.get(f"vm:{VM}").host_id == "host:a"


def test_bad_records_are_refused(fleet):
    with pytest.raises(InvalidInput, match="migration state"):
        fleet.migrations.add(record(state="flying"))
    with pytest.raises(InvalidInput, match="unknown fields"):
        fleet.migrations.add(record(body={"secret": 1}))
