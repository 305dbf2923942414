"""The controller's migration state machine (MC-F2, MC-F3, MIG-8, MIG-9; DESIGN.md section 6):
prepare → export → import → commit → finalize on both sides; before commit any failure, refused
answer or stall aborts and the source resumes; after commit nothing aborts and finalize is sent
until both sides confirm; answers it is not waiting for change nothing; a controller restarted
from a stored state asks for the same tasks again."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from vroot.controller._machine import (
    Checks,
    MigrationState,
    on_deadline,
    on_result,
    start,
    target_qualifying_data,
    tasks_for,
)
from vroot.errors import InvalidInput, VerificationError

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
MIG, VM = uuid.UUID(int=1), uuid.UUID(int=2)
OK = Checks()
VEK = b"\x00\x0b" + bytes(range(32))


def fresh():  # noqa: ANN201
    return start(migration_id=MIG, vm_uuid=VM, source="host:a", destination="host:b", trigger="operator",
                 nonce=bytes(range(32)), now=T0, timeout=timedelta(seconds=30), vek_name=VEK)  # fmt: skip


def answer(m, kind, agent, result=None, ok=True, at=1, checks=OK):  # noqa: ANN001, ANN201
    return on_result(m, kind=kind, agent_id=agent, ok=ok, result=result or {}, now=T0 + timedelta(seconds=at),
                     checks=checks)  # fmt: skip


def through_import(checks=OK):  # noqa: ANN001, ANN201
    m = answer(fresh(), "prepare-migration-in", "host:b", {"target_public": "T"}, checks=checks)
    m = answer(m, "migrate-out", "host:a", {"blob": "B"}, at=2, checks=checks)
    return answer(m, "import", "host:b", {"proof": "P"}, at=3, checks=checks)


def test_mc_f2_mc_f3_happy_path_tasks_in_order_with_step_times():
    m = fresh()
    (t,) = tasks_for(m)
    assert (t.kind, t.agent_id, t.args["ticket"]["nonce"]) == ("prepare-migration-in", "host:b", bytes(range(32)).hex())
    assert (t.args["ticket"]["source_host"], t.args["ticket"]["destination_host"]) == ("a", "b")
    assert t.args["ticket"]["expires_at"] == int((T0 + timedelta(seconds=30)).timestamp())
    assert t.key == f"mig:{MIG}:prepare-migration-in"
    m = answer(m, "prepare-migration-in", "host:b", {"target_public": "T"})
    (t,) = tasks_for(m)
    assert (m.state, t.kind, t.agent_id, t.args["target"]) == (MigrationState.EXPORTING, "migrate-out", "host:a",
                                                               {"target_public": "T"})  # fmt: skip
    assert t.args["ticket"] == m.ticket and t.args["destination_ak_public"] == ""
    m = answer(m, "migrate-out", "host:a", {"blob": "B"}, at=2)
    (t,) = tasks_for(m)
    assert (t.kind, t.agent_id, t.args["blob"]) == ("import", "host:b", "B")
    m = answer(m, "import", "host:b", {"proof": "P"}, at=3)
    assert m.state is MigrationState.COMMITTED and m.proof == {"proof": "P"}
    assert {(t.kind, t.agent_id) for t in tasks_for(m)} == {("finalize-in", "host:b"), ("finalize-out", "host:a")}
    m = answer(m, "finalize-out", "host:a", at=4)
    assert [t.kind for t in tasks_for(m)] == ["finalize-in"] and m.state is MigrationState.COMMITTED
    m = answer(m, "finalize-in", "host:b", at=5)
    assert m.state is MigrationState.COMPLETED and tasks_for(m) == [] and not m.state.open
    assert [(s.name, s.ms) for s in m.steps] == [("prepare", 1000.0), ("export", 1000.0), ("import", 1000.0),
                                                 ("finalize", 2000.0)]  # fmt: skip


def test_mig4_target_qualifying_data_binds_id_and_nonce():
    a = target_qualifying_data(MIG, b"n" * 32)
    assert len(a) == 32 and a != target_qualifying_data(uuid.UUID(int=9), b"n" * 32)
    assert a != target_qualifying_data(MIG, b"m" * 32)


@pytest.mark.parametrize("stage", ["prepare-migration-in", "migrate-out", "import"])
def test_mig8_a_refused_answer_before_commit_aborts_and_the_source_resumes(stage):
    def refuse(kind):  # noqa: ANN001, ANN202
        def check(m, r):  # noqa: ANN001, ANN202
            if kind == stage:
                raise VerificationError(f"{kind} is bad")
            return r
        return check

    checks = Checks(target=refuse("prepare-migration-in"), blob=refuse("migrate-out"), proof=refuse("import"))
    m = through_import(checks)
    assert m.state is MigrationState.ABORTING and f"{stage} is bad" in m.error
    assert {(t.kind, t.agent_id) for t in tasks_for(m)} == {("abort-in", "host:b"), ("abort-out", "host:a")}
    m = answer(m, "abort-out", "host:a", at=9)
    m = answer(m, "abort-in", "host:b", at=9)
    assert m.state is MigrationState.ABORTED and m.proof is None


def test_mig8_a_failed_task_or_a_deadline_before_commit_aborts():
    m = answer(fresh(), "prepare-migration-in", "host:b", {"error": "TM busy"}, ok=False)
    assert m.state is MigrationState.ABORTING and "TM busy" in m.error
    m = answer(fresh(), "prepare-migration-in", "host:b", {"target_public": "T"})
    assert on_deadline(m, T0 + timedelta(seconds=29)) is m
    late = on_deadline(m, T0 + timedelta(seconds=30))
    assert late.state is MigrationState.ABORTING and "timed out in step export" in late.error


def test_mig9_after_commit_nothing_aborts_and_finalize_is_sent_until_done():
    m = through_import()
    assert on_deadline(m, T0 + timedelta(days=1)) is m  # past the deadline: still committed
    assert answer(m, "import", "host:b", ok=False) is m
    again = answer(m, "finalize-out", "host:a", ok=False)  # a failed finalize: asked again
    assert again is m and {t.kind for t in tasks_for(again)} == {"finalize-in", "finalize-out"}


def test_mc_f2_answers_not_waited_for_change_nothing():
    m = fresh()
    assert answer(m, "prepare-migration-in", "host:a", {"target_public": "T"}) is m  # the wrong engine
    assert answer(m, "migrate-out", "host:a", {"blob": "B"}) is m  # not yet
    assert answer(m, "finalize-in", "host:b") is m
    done = through_import()
    assert answer(done, "import", "host:b", {"proof": "other"}) is done  # a duplicate answer


def test_mc_f2_a_restarted_controller_asks_for_the_same_tasks():
    m = answer(fresh(), "prepare-migration-in", "host:b", {"target_public": "T"})
    restored = type(m)(**{f: getattr(m, f) for f in m.__dataclass_fields__})  # as read back from the store
    assert tasks_for(restored) == tasks_for(m)


def test_mig1_no_migration_to_itself_or_with_a_short_nonce():
    with pytest.raises(InvalidInput, match="cannot migrate to the host it is on"):
        start(migration_id=MIG, vm_uuid=VM, source="host:a", destination="host:a", trigger="x",
              nonce=bytes(32), now=T0, timeout=timedelta(seconds=1), vek_name=VEK)  # fmt: skip
    with pytest.raises(InvalidInput, match="at least 16 bytes"):
        start(migration_id=MIG, vm_uuid=VM, source="host:a", destination="host:b", trigger="x",
              nonce=bytes(8), now=T0, timeout=timedelta(seconds=1), vek_name=VEK)  # fmt: skip
