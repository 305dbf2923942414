"""VM attestation through the server (RA-1, RA-3, RA-4, VMM-F4, VMM-F5, VMM-S3), on SQLite and on
PostgreSQL: guest attesters simulated by their hosts enroll each VM's vTM as `vm:<uuid>` against
the record of the host it runs on; a VM's vTM quote is bound to ONE deep quote of its host per batch
of waiting VMs, and the joint verdict, naming the host, is recorded with a signed EAR and events."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from deep_helpers import VmWorld, attest_many, deep_quote_tasks, vm_world

from vroot.attestation import deep_quote_leaf, merkle_root
from vroot.attestation.ear import verify_ear
from vroot.cli.main import run
from vroot.pki import is_virtual_tm_certificate
from vroot.store import AgentKind

pytestmark = pytest.mark.tpm


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmWorld]:
    database = request.getfixturevalue("pg_database")() if request.param == "postgresql" else None
    with vm_world(tmp_path_factory.mktemp("vm") / "srv", database=database, backend=request.param) as w:
        assert w.store.dialect == request.param
        yield w


def test_ra6_scheduler_attests_vms_through_their_hosts_deep_quotes(world):
    """Continuous attestation covers VMs: the scheduler asks every due host and VM in one tick, and the
    VMs of a host answer into one deep quote of that host."""
    scheduler = world.server.running.server.config.app.state.vroot.scheduler
    vms = [f"vm:{vm}" for vm in world.vms_a] + [f"vm:{world.vm_b}"]
    assert sorted(scheduler.due()) == sorted(["host:host-a", "host:host-b", *vms])
    assert sorted(scheduler.tick()) == sorted(["host:host-a", "host:host-b", *vms])
    tasks = {t.agent_id: t for t in world.store.tasks.list(limit=100) if t.kind == "attest"}
    assert tasks[vms[0]].payload["pcrs"] == list(range(11)) and "pcrs" not in tasks["host:host-a"].payload
    for agent_id in ["host:host-a", "host:host-b", *vms]:
        result = _wait_result(world, agent_id, tasks[agent_id].id)
        assert result["verdict"] == "trusted", (agent_id, result["findings"])
    [deep_a] = deep_quote_tasks(world.store, "host:host-a")
    assert sorted(m["agent_id"] for m in deep_a.payload["members"]) == sorted(vms[:2])
    assert scheduler.due() == []


def _wait_result(world: VmWorld, agent_id: str, task_id: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while (result := world.op.get(f"/v1/agents/{agent_id}/attestations/{task_id}")["result"]) is None:
        assert time.monotonic() < deadline, f"no result for {agent_id}"
        time.sleep(0.1)
    return result


def test_ra1_vmm_f4_guests_enroll_against_their_hosts_record(world):
    """Each simulated guest enrolled as vm:<uuid>, on the host that made its vEK certificate, with a
    vAK certificate marked virtual (VMM-S3) and in the VM group, not the hosts'."""
    guests = {a.id: a for a in world.store.agents.list(kind=AgentKind.GUEST)}
    expected = {f"vm:{vm}": "host:host-a" for vm in world.vms_a} | {f"vm:{world.vm_b}": "host:host-b"}
    assert {g: a.host_id for g, a in guests.items()} == expected
    for agent in guests.values():
        assert (agent.state.value, agent.group, agent.vm_uuid) == ("active", "vms", agent.id.removeprefix("vm:"))
        assert is_virtual_tm_certificate(agent.ak_certificate)
        assert is_virtual_tm_certificate(agent.ek_certificate)  # the vEK certificate, as the PCA checked it
    ak = x509.load_der_x509_certificate(guests[f"vm:{world.vm_b}"].ak_certificate)
    assert ak.subject.rfc4514_string().startswith(f"CN=vm:{world.vm_b}")


def test_ra3_ra4_attest_vm_cli_prints_the_joint_verdict_with_its_host(world, capsys):
    server, vm = world.server, world.vms_a[0]
    args = ["attest", vm, "--server", server.url, "--token", server.token, "--ca", str(server.ca)]  # a bare UUID
    assert run([*args, "--json", "--wait", "60"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["agent_id"], result["verdict"], result["findings"]) == (f"vm:{vm}", "trusted", [])
    assert (result["host_id"], result["host_verdict"]) == ("host:host-a", "trusted")
    assert result["policy_id"] == "vms@1/vms@1" and result["status"] == "affirming"
    assert set(result["pcrs"]["sha256"]) == {str(i) for i in range(11)}  # the vPCRs of the VM policy

    host_result = world.op.get("/v1/agents/host:host-a/result")
    assert host_result["id"] == result["host_result_id"] and host_result["verdict"] == "trusted"
    [deep] = [t for t in deep_quote_tasks(world.store, "host:host-a") if t.result["result_id"] == host_result["id"]]
    assert [m["agent_id"] for m in deep.payload["members"]] == [f"vm:{vm}"]
    member = deep.payload["members"][0]
    leaf = deep_quote_leaf(bytes.fromhex(member["nonce"]), _attest_of(world, member["task_id"]))
    assert deep.payload["qualifying_data"] == merkle_root([leaf]).hex()  # the host quoted the VM's leaf

    pem = server.client().get("/v1/result-key")
    ear = verify_ear(result["ear"], public_key=load_pem_public_key(pem), now=datetime.now(UTC))
    assert (ear.subject, ear.status) == (f"vm:{vm}", "affirming")
    assert ear.vector == {"instance-identity": 2, "hardware": 2, "executables": 2, "configuration": 2,
                          "file-system": 2}  # fmt: skip
    sub = ear.claims["submods"][f"vm:{vm}"]
    assert sub["vroot.host"] == {"agent_id": "host:host-a", "result_id": host_result["id"], "verdict": "trusted",
                                 "policy_id": "default@1/hosts@1"}  # fmt: skip
    assert sub["vroot.joint"] == {"vm": "trusted", "host": "trusted", "bound": True, "reasons": []}

    assert world.op.get(f"/v1/agents/vm:{vm}/result")["id"] == result["id"]
    events = world.store.events.since(0, kinds=["verdict.changed"], agent_id=f"vm:{vm}")
    assert events and events[0].body["verdict"] == "trusted" and events[0].body["previous"] is None
    assert run(args) == 0  # the human table names the host
    table = capsys.readouterr().out
    assert "verdict     TRUSTED" in table and "host        host:host-a (its result" in table


def _attest_of(world: VmWorld, task_id: int) -> bytes:
    return base64.b64decode(world.store.tasks.get(task_id).result["evidence"]["quote_attest"])


def test_vmm_f5_two_vms_of_one_host_share_one_deep_quote(world):
    """RA-4: both VMs of host-a answer; the server asks host-a for ONE deep quote over a Merkle root
    of both leaves, and both joint verdicts cite the same host result."""
    before = deep_quote_tasks(world.store, "host:host-a")
    results = attest_many(world.op, [f"vm:{vm}" for vm in world.vms_a])
    after = deep_quote_tasks(world.store, "host:host-a")
    assert len(after) == len(before) + 1, [t.payload["members"] for t in after[len(before):]]
    deep = after[-1]
    assert {m["agent_id"] for m in deep.payload["members"]} == {f"vm:{vm}" for vm in world.vms_a}
    assert len(deep.payload["leaves"]) == 2
    assert [r["verdict"] for r in results] == ["trusted", "trusted"]
    assert {r["host_result_id"] for r in results} == {deep.result["result_id"]}
    assert deep.result["vms"] == {r["agent_id"]: {"result_id": r["id"], "verdict": "trusted"} for r in results}


def test_ra4_vm_on_another_host_is_vouched_for_by_that_host(world):
    [result] = attest_many(world.op, [f"vm:{world.vm_b}"])
    assert (result["verdict"], result["host_id"], result["findings"]) == ("trusted", "host:host-b", [])
    deep = deep_quote_tasks(world.store, "host:host-b")[-1]
    assert [m["agent_id"] for m in deep.payload["members"]] == [f"vm:{world.vm_b}"]
    assert deep.result["vms"] == {f"vm:{world.vm_b}": {"result_id": result["id"], "verdict": "trusted"}}
