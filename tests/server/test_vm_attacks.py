"""Attacks on VM attestation through the server (RA-4, RA-7, VMM-F4, VMM-S3), each refused with a
recorded result (or, at enrollment, a refusal event) that says why: a replayed VM nonce; a vTM
quote relayed from a VM on another host; a host quote over a tree without the VM's leaf; a forged
vEK certificate; a vAK swapped after enrollment; an untrusted host whose VMs look fine; a host
that never takes its deep quote; a revoked host."""

from __future__ import annotations

import base64
import dataclasses
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from deep_helpers import VmWorld, attest_many, boot_vms, deep_quote_tasks, new_vm, vm_world

from vroot.agent import GuestAttester, SimulatedGuestTm, Task
from vroot.attestation import deep_quote_leaf, merkle_root
from vroot.errors import ActivationFailed, CertificateInvalid, InvalidInput, NotFound
from vroot.pki import issue_vek_certificate, software_signer
from vroot.tpm2 import ObjectAttributes, parse_public, public_area_from_key

pytestmark = pytest.mark.tpm
A = ObjectAttributes


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmWorld]:
    with vm_world(tmp_path_factory.mktemp("vma") / "srv") as w:
        yield w


def _result(op: Any, agent_id: str, task_id: int, *, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = op.get(f"/v1/agents/{agent_id}/attestations/{task_id}")["result"]
        if got is not None:
            return got
        assert time.monotonic() < deadline, f"no result for {agent_id} task {task_id}"
        time.sleep(0.1)


def _ids(result: dict[str, Any]) -> list[str]:
    return [f["id"] for f in result["findings"]]


def test_ra7_replayed_vm_nonce_is_refused_and_recorded(world):
    """The guest answers a second challenge with its quote over the first nonce: refused before any
    deep quote is asked for, and recorded; its second challenge is used up too."""
    a, op, store, vm = world.a, world.op, world.store, world.vms_a[1]
    agent_id = f"vm:{vm}"
    a.stop_guest(vm)
    attester = a.guests.attester(vm)
    me = attester.credentials().client()
    try:
        first = op.post(f"/v1/agents/{agent_id}/attestations")
        task = me.next_task(agent_id, wait=5)
        assert task["id"] == first["task_id"] and task["payload"]["pcrs"] == list(range(11))
        answer = attester.handler()(Task.from_json(task))
        me.post_result(agent_id, task["id"], ok=True, result=answer)
        assert _result(op, agent_id, task["id"])["verdict"] == "trusted"
        deep_before = len(deep_quote_tasks(store, "host:host-a"))

        second = op.post(f"/v1/agents/{agent_id}/attestations")
        task2 = me.next_task(agent_id, wait=5)
        assert task2["id"] == second["task_id"]
        me.post_result(agent_id, task2["id"], ok=True, result=answer)  # the first answer, replayed
        result = _result(op, agent_id, task2["id"])
    finally:
        me.close()
        a.sync_guests()
    assert (result["verdict"], _ids(result)) == ("untrusted", ["attestation.nonce.reused"])
    assert result["trustworthiness_vector"] == {"hardware": 96} and result["host_id"] is None
    assert store.nonces.find(bytes.fromhex(task2["payload"]["nonce"])).used_at is not None
    assert len(deep_quote_tasks(store, "host:host-a")) == deep_before  # the host was not asked
    assert attest_many(op, [agent_id])[0]["verdict"] == "trusted"  # the honest guest is fine


def test_ra7_vtm_quote_relayed_from_a_vm_on_another_host_is_refused(world):
    """vm_b's vTM runs on host-b, but the server's record says host-a (as a false migration record
    would): its quote is put in host-a's tree and host-a quotes it, yet its vEK names host-b's
    vTM-manager key, not host-a's, and host-a never launched that vTM."""
    op, store, agent_id = world.op, world.store, f"vm:{world.vm_b}"
    store.agents.move(agent_id, host_id="host:host-a", now=datetime.now(UTC))
    try:
        [result] = attest_many(op, [agent_id])
    finally:
        store.agents.move(agent_id, host_id="host:host-b", now=datetime.now(UTC))
    assert (result["verdict"], result["host_id"], result["host_verdict"]) == ("untrusted", "host:host-a", "trusted")
    assert _ids(result) == ["deep.binding.other_host"]
    assert "not on this host" in result["findings"][0]["message"]
    assert result["trustworthiness_vector"]["instance-identity"] == 96
    deep = deep_quote_tasks(store, "host:host-a")[-1]
    assert [m["agent_id"] for m in deep.payload["members"]] == [agent_id]  # host-a did quote the relayed leaf
    again = attest_many(op, [agent_id])[0]
    assert (again["verdict"], again["host_id"]) == ("trusted", "host:host-b")


def test_ra7_host_quote_over_a_tree_without_the_vms_leaf_is_refused(world):
    """host-a's agent answers the deep-quote task with a quote over another tree: the VM's leaf is
    not in what the host TM signed, so the host does not vouch for it."""
    a, op, agent_id = world.a, world.op, f"vm:{world.vms_a[0]}"
    a.stop_loop()
    me = a.client()
    try:
        request = op.post(f"/v1/agents/{agent_id}/attestations")
        task = me.next_task(a.agent_id, wait=15)  # the guest answered; its batch waits for host-a
        assert task["kind"] == "deep-quote" and [m["agent_id"] for m in task["payload"]["members"]] == [agent_id]
        other = merkle_root([deep_quote_leaf(os.urandom(32), b"the quote of a VM elsewhere")])
        forged = a.local.call("POST", "/v1/deep-quote", {"qualifying_data": other.hex()})
        me.post_result(a.agent_id, task["id"], ok=True, result={"evidence": forged})
        result = _result(op, agent_id, request["task_id"])
    finally:
        a.start_loop()
    assert (result["verdict"], result["host_verdict"]) == ("untrusted", "untrusted")
    assert _ids(result) == ["deep.binding.not_in_host_quote", "host.attestation.nonce.mismatch"]
    assert "does not lead to the root" in result["findings"][0]["message"]
    assert result["findings"][1]["seen"] == "host:host-a"
    assert attest_many(op, [a.agent_id])[0]["verdict"] == "trusted"  # host-a itself is fine again


class _Forging:
    """A guest TM that presents a forged vEK certificate with its real keys."""

    def __init__(self, real: SimulatedGuestTm, certificate: bytes) -> None:
        self.real, self.certificate = real, certificate

    def identity(self, *, new_vak: bool = False):  # noqa: ANN201
        return dataclasses.replace(self.real.identity(new_vak=new_vak), vek_certificate=self.certificate)

    def activate(self, blob: bytes, secret: bytes) -> bytes:
        return self.real.activate(blob, secret)


def test_ra7_forged_vek_certificate_is_refused_at_enrollment(world, tmp_path: Path):
    """VMM-F4: a vEK certificate for a real vTM of host-a, signed by a software key instead of
    host-a's vTM-manager key: refused, recorded as an event, nothing stored."""
    a, server, store = world.a, world.server, world.store
    vm = new_vm(a, world.images)
    real = SimulatedGuestTm(a.local, vm)
    key = ec.generate_private_key(ec.SECP256R1())
    fake_manager = public_area_from_key(key.public_key(), auth_policy=b"\x5a" * 32,
                                        object_attributes=A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.SIGN_ENCRYPT)  # fmt: skip
    forged = issue_vek_certificate(vek_public=parse_public(real.identity().vek_public), manager_public=fake_manager,
                                   host_id="host-a", vm_uuid=uuid.UUID(vm), now=datetime.now(UTC) - timedelta(minutes=1),
                                   serial=x509.random_serial_number(), sign_digest=software_signer(key))  # fmt: skip
    last = store.events.last_id()
    try:
        with pytest.raises(CertificateInvalid, match="does not verify"):
            GuestAttester(_Forging(real, forged.public_bytes(Encoding.DER)), tmp_path / "g").enroll(server.url, server.ca)
        assert store.agents.find(f"vm:{vm}") is None and not (tmp_path / "g" / "enrollment.json").exists()
        [event] = store.events.since(last, kinds=["enrollment.refused"])
        assert (event.agent_id, event.body["host"], event.body["error"]) == (f"vm:{vm}", "host:host-a", "CertificateInvalid")
        assert a.sync_guests() == [f"vm:{vm}: enrolled"]  # the real certificate of the same vTM is accepted
    finally:
        a.guests.stop_guest(vm)
        a.local.call("DELETE", f"/v1/vtms/{vm}")
    assert store.agents.get(f"vm:{vm}").host_id == "host:host-a"


def _claim(ident: Any, vm: str, host_id: str) -> dict[str, str]:
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return {"vm_uuid": vm, "host_id": host_id, "vek_certificate": b64(ident.vek_certificate),
            "vek_public": b64(ident.vek_public), "vak_public": b64(ident.vak_public)}  # fmt: skip


def test_ra1_ra7_guest_enrollment_checks_the_claim_against_the_hosts_record(world):
    """A real vEK certificate of host-b's VM presented as host-a's, another VM's UUID, an unknown host,
    and an answer that is not the secret: each refused, and the enrolled guests are untouched."""
    store, client = world.store, world.server.client()
    ident_b = SimulatedGuestTm(world.b.local, world.vm_b).identity()
    last = store.events.last_id()
    with pytest.raises(CertificateInvalid, match="signature does not verify"):
        client.post("/v1/guest-enrollments", _claim(ident_b, world.vm_b, "host-a"))
    with pytest.raises(CertificateInvalid, match=f"for VM {world.vm_b}"):
        client.post("/v1/guest-enrollments", _claim(ident_b, str(uuid.uuid4()), "host-b"))
    with pytest.raises(NotFound, match="host:host-x"):
        client.post("/v1/guest-enrollments", _claim(ident_b, world.vm_b, "host-x"))
    refused = store.events.since(last, kinds=["enrollment.refused"])
    assert [e.body["host"] for e in refused] == ["host:host-a", "host:host-b"]
    challenge = client.post("/v1/guest-enrollments", _claim(ident_b, world.vm_b, "host-b"))
    assert challenge["agent_id"] == f"vm:{world.vm_b}"
    answer = {"enrollment_id": challenge["enrollment_id"], "secret": base64.b64encode(os.urandom(32)).decode(),
              "client_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}  # fmt: skip
    with pytest.raises(InvalidInput, match="client_key"):  # checked before the challenge is taken
        client.post(f"/v1/guest-enrollments/vm:{world.vm_b}/activation", answer)
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    answer["client_key"] = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(ActivationFailed):
        client.post(f"/v1/guest-enrollments/vm:{world.vm_b}/activation", answer)
    with pytest.raises(NotFound, match="no enrollment in progress"):  # single use, even when wrong
        client.post(f"/v1/guest-enrollments/vm:{world.vm_b}/activation", answer)
    assert store.agents.get(f"vm:{world.vm_b}").state.value == "active"
    assert attest_many(world.op, [f"vm:{world.vm_b}"])[0]["verdict"] == "trusted"


def test_ra7_vak_swapped_between_enrollment_and_attestation_is_refused(world):
    """The vAK at the guest's persistent handle is replaced after enrollment: its quote does not
    verify under the enrolled vAK (the guest's claims are never used)."""
    a, op, vm = world.a, world.op, world.vms_a[1]
    agent_id = f"vm:{vm}"
    enrolled = world.store.agents.get(agent_id).ak_public
    swapped = a.guests.attester(vm).tm.identity(new_vak=True)
    assert swapped.vak_public != enrolled
    try:
        [result] = attest_many(op, [agent_id])
    finally:
        a.stop_guest(vm)
        a.guests.attester(vm).enroll(world.server.url, world.server.ca)  # the owner enrolls its new vAK
        a.sync_guests()
    assert (result["verdict"], _ids(result)) == ("untrusted", ["attestation.quote.signature_invalid"])
    assert result["trustworthiness_vector"] == {"instance-identity": 2, "hardware": 96}
    assert world.store.agents.get(agent_id).ak_public == swapped.vak_public
    assert attest_many(op, [agent_id])[0]["verdict"] == "trusted"


def test_ra4_untrusted_host_makes_every_vm_on_it_untrusted(world):
    """host-a reboots with a tampered boot loader (outside the PCRs its vTM keys are sealed to, so
    its vTMs start and its VMs boot fine): both VMs are untrusted, each with the host's finding."""
    a, op, store = world.a, world.op, world.store
    loader = a.directory / "images" / "bootloader.efi"
    good = loader.read_bytes()
    vms = [f"vm:{vm}" for vm in world.vms_a]
    try:
        loader.write_bytes(bytes([good[0] ^ 1]) + good[1:])
        a.local.call("POST", "/v1/reboot", {})
        boot_vms(a, world.vms_a, world.images)
        deep_before = len(deep_quote_tasks(store, a.agent_id))
        results = attest_many(op, vms)
        assert len(deep_quote_tasks(store, a.agent_id)) == deep_before + 1
    finally:
        loader.write_bytes(good)
        a.local.call("POST", "/v1/reboot", {})
        boot_vms(a, world.vms_a, world.images)
    host = op.get(f"/v1/agents/{a.agent_id}/results", params={"limit": 1})["results"][0]
    assert host["verdict"] == "untrusted" and {f["pcr"] for f in host["findings"]} == {4}
    assert "baseline.event.unknown" in _ids(host)
    for result in results:
        assert (result["verdict"], result["host_id"], result["host_verdict"]) == ("untrusted", a.agent_id, "untrusted")
        assert result["host_result_id"] == host["id"]
        # the VM's own evidence is fine: its only findings are its host's, named as such
        assert _ids(result) == ["host." + i for i in _ids(host)]
        assert {(f["pcr"], f["seen"]) for f in result["findings"]} == {(4, a.agent_id)}
        assert result["trustworthiness_vector"]["executables"] == 96
    assert [r["verdict"] for r in attest_many(op, vms)] == ["trusted", "trusted"]


def test_ra4_deep_quote_never_taken_is_recorded_as_an_error(world):
    """host-a's agent is away: the VM's batch expires and the VM gets an "error" result saying so."""
    a, op, server, agent_id = world.a, world.op, world.server, f"vm:{world.vms_a[0]}"
    a.stop_loop()
    try:
        request = op.post(f"/v1/agents/{agent_id}/attestations")
        deep = _wait(lambda: [t for t in deep_quote_tasks(world.store, a.agent_id) if t.state.value == "queued"])
        server.clock.offset = timedelta(seconds=server.settings.nonce_ttl.total_seconds() + 1)
        assert server.running.server.config.app.state.vroot.deep.expire() == [deep[0].id]
        result = _result(op, agent_id, request["task_id"])
    finally:
        server.clock.offset = timedelta(0)
        a.start_loop()
    assert (result["verdict"], _ids(result)) == ("error", ["deep.host.unavailable"])
    assert world.store.tasks.get(deep[0].id).state.value == "failed"


def test_revoked_host_makes_its_vms_untrusted_at_once(world):
    """Revoking host-b records an untrusted result for its VM too, and it can no longer be attested."""
    op, agent_id = world.op, f"vm:{world.vm_b}"
    op.post("/v1/agents/host:host-b/revoke", {"reason": "key_compromise"})
    latest = op.get(f"/v1/agents/{agent_id}/result")
    assert (latest["verdict"], _ids(latest)) == ("untrusted", ["host.attestation.revoked"])
    with pytest.raises(Exception, match="no active host"):
        op.post(f"/v1/agents/{agent_id}/attestations")


def _wait(predicate: Any, *, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return got
