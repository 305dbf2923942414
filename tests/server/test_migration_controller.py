"""The migration controller in `vroot server` driving the engines of two real swtpm-backed hosts
(issue 5; MC-F1..F3, MC-S1, MC-S3, MC-S4, MIG-4..10, VMM-S4, VMM-S5, DP-4).

A VM with a vTM on host-a moves to host-b through `POST /v1/migrations`: the destination's target
key is checked against its enrolled AK, the source's blob against the migration, the import's vEK
certificate against host-b's vTM-manager key and its vPCRs against those exported; at commit the
VM's record follows it to host-b; each step's time is recorded and every change published. The
secret the VM sealed before the move unseals on host-b (DP-4) and its next joint verdict names
host-b. Refusals: an untrusted or stale destination, a drained host, a task not signed by the
controller, an engine that never answers (aborted at the deadline; the source resumes)."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from attest_helpers import wait_for
from deep_helpers import attest_many, vm_world

from vroot.errors import Conflict
from vroot.host import HostPaths

pytestmark = pytest.mark.tpm


def _wait_done(op: Any, migration_id: str, *, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        m = op.get(f"/v1/migrations/{migration_id}")
        if m["state"] in ("completed", "aborted"):
            return m
        assert time.monotonic() < deadline, f"migration {migration_id} still {m['state']}: {m}"
        time.sleep(0.05)


def _vtms(host) -> dict[str, dict[str, Any]]:  # noqa: ANN001
    return {v["vm_uuid"]: v for v in host.local.call("GET", "/v1/vtms")["vtms"]}


@pytest.fixture
def world(tmp_path):  # noqa: ANN001, ANN201
    with vm_world(tmp_path / "server") as w:
        results = attest_many(w.op, ["host:host-a", "host:host-b"])
        assert [r["verdict"] for r in results] == ["trusted", "trusted"]
        yield w


def test_mc_f1_f3_mig4_10_dp4_a_vm_moves_to_a_trusted_host_and_keeps_its_secret(world):
    vm = world.vms_a[0]
    a, b, op = world.a, world.b, world.op
    secret = b"disk key of the moved VM"
    sealed = a.local.call("POST", f"/v1/vtms/{vm}/seal", {"data": base64.b64encode(secret).decode(),
                                                           "pcrs": list(range(10))})["blob"]  # fmt: skip
    last_event = world.store.events.last_id()
    placement = op.get(f"/v1/placement/{vm}")
    assert placement["source"] == "host:host-a" and placement["destination"] == "host:host-b"
    assert {(r["host"], r["code"]) for r in placement["refusals"]} == {("host:host-a", "source")}

    started = op.post("/v1/migrations", {"vm_uuid": vm})
    assert started["state"] == "preparing" and started["destination"] == "host:host-b"
    done = _wait_done(op, started["id"])
    assert done["state"] == "completed", done
    assert [s["name"] for s in done["steps"]] == ["prepare", "export", "import", "finalize"]
    assert all(s["ms"] is not None and s["ms"] >= 0 for s in done["steps"])

    # one live copy, on host-b; the source's copy is gone (MIG-9)
    assert vm not in _vtms(a) and not HostPaths(a.directory).vtm(vm).exists()
    assert _vtms(b)[vm]["running"]
    # the secret sealed on host-a unseals on host-b (DP-4)
    got = b.local.call("POST", f"/v1/vtms/{vm}/unseal", {"blob": sealed})["data"]
    assert base64.b64decode(got) == secret
    # the VM's record follows it, with the vEK certificate host-b issued (MIG-10)
    guest = world.store.agents.get(f"vm:{vm}")
    assert guest.host_id == "host:host-b"
    assert guest.ek_certificate == (HostPaths(b.directory).vtm(vm) / "vek.crt").read_bytes()
    kinds = [e.kind for e in world.store.events.since(last_event) if e.agent_id == f"vm:{vm}"]
    assert kinds[0] == "migration.requested" and "agent.moved" in kinds and kinds[-1] == "migration.completed"
    tasks = [t for t in world.store.tasks.list(limit=1000) if t.kind in ("migrate-out", "import")]
    assert all(t.result.get("blob") in (None, "<stored in the migration>") for t in tasks)

    # host-a's guest of the VM stops (its vTM is gone); the VM's guest enrolls on host-b, and its
    # joint verdict names host-b (RA-4 after MIG-10)
    assert f"vm:{vm}: vTM not running, guest stopped" in a.sync_guests()
    assert f"vm:{vm}: enrolled" in b.sync_guests()
    (result,) = attest_many(op, [f"vm:{vm}"])
    assert result["verdict"] == "trusted" and result["host_id"] == "host:host-b", result


def test_mc_s3_s4_untrusted_stale_and_drained_destinations_are_refused(world):
    vm, op, clock = world.vms_a[1], world.op, world.server.clock
    clock.offset += timedelta(seconds=600)  # both verdicts are now 10 minutes old: no destination qualifies
    try:
        with pytest.raises(Conflict, match=r"host:host-b: latest trusted verdict is \d+ s old"):
            op.post("/v1/migrations", {"vm_uuid": vm})
    finally:
        clock.offset -= timedelta(seconds=600)
    assert world.store.migrations.list() == []  # nothing was started

    # draining host-b: nothing goes there, and its VM moves to host-a (MC-F1)
    drained = op.post("/v1/agents/host:host-b/drain")
    assert drained["stranded"] == [] and len(drained["migrations"]) == 1
    refused = op.get(f"/v1/placement/{vm}")
    assert refused["destination"] is None and ("host:host-b", "draining") in {
        (r["host"], r["code"]) for r in refused["refusals"]}  # fmt: skip
    assert _wait_done(op, drained["migrations"][0])["state"] == "completed"
    assert world.store.agents.get(f"vm:{world.vm_b}").host_id == "host:host-a"
    assert world.vm_b in _vtms(world.a) and world.vm_b not in _vtms(world.b)
    op.request("DELETE", "/v1/agents/host:host-b/drain")
    assert op.get(f"/v1/placement/{vm}")["destination"] == "host:host-b"


def test_vmm_s5_an_engine_refuses_a_task_the_controller_did_not_sign(world):
    vm, op = world.vms_a[0], world.op
    forged = op.post("/v1/agents/host:host-a/tasks", {"kind": "abort-out", "payload": {
        "migration_id": str(uuid.uuid4()), "signed": "e30.e30.AAAA", "controller_certificate": "x"}})  # fmt: skip
    task = wait_for(lambda: (t := world.store.tasks.get(forged["id"])).state.value in ("done", "failed") and t,
                    what="the forged task's answer")  # fmt: skip
    assert task.state.value == "failed"
    assert _vtms(world.a)[vm]["running"]


def test_mig8_a_destination_that_never_answers_aborts_and_the_source_resumes(world):
    vm, op = world.vms_a[0], world.op
    world.b.stop_loop()  # host-b's engine gets no tasks
    try:
        started = op.post("/v1/migrations", {"vm_uuid": vm})
        world.server.clock.offset += timedelta(seconds=120)  # past the deadline: the controller's tick aborts
        aborting = wait_for(lambda: (m := op.get(f"/v1/migrations/{started['id']}"))["state"] == "aborting" and m,
                            what="the abort")  # fmt: skip
        assert "timed out in step prepare" in aborting["error"]
        queued = [t for t in world.store.tasks.list(agent_id="host:host-b", limit=1000) if t.key and started["id"] in t.key]
        assert {(t.kind, t.state.value) for t in queued} == {("prepare-migration-in", "failed"), ("abort-in", "queued")}
    finally:
        world.server.clock.offset -= timedelta(seconds=120)
        world.b.start_loop()
    done = _wait_done(op, started["id"], timeout=30)  # host-b back: it confirms there is nothing to undo
    assert done["state"] == "aborted"
    assert _vtms(world.a)[vm]["running"] and world.store.agents.get(f"vm:{vm}").host_id == "host:host-a"
    assert vm not in _vtms(world.b)
