"""vTM migration across real simulated hosts (DESIGN.md section 6): the happy path on two and three
hosts, the source copy gone after finalize, and abort before commit (MIG-4..10, DP-4, VMM-S4)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography import x509
from migration_helpers import (
    NV_MARKER,
    PERSISTENT_HANDLE,
    export,
    guest_setup,
    guest_view,
    import_,
    migrate,
    prepare,
    step,
    ticket,
)

from vroot import guest
from vroot.errors import Conflict, NotFound
from vroot.pki import verify_vek_certificate
from vroot.tpm2 import HashAlg, parse_public

pytestmark = pytest.mark.tpm

# TPM2_PCR_Extend(PCR 16, password session, one SHA-256 digest), as a guest driver would send it.
_EXTEND_BODY = (
    bytes.fromhex("00000182000000100000000940000009000001000000000001000b") + hashlib.sha256(b"late").digest()
)
PCR16_EXTEND = bytes.fromhex("8002") + (6 + len(_EXTEND_BODY)).to_bytes(4, "big") + _EXTEND_BODY


def _seal_secret(host, vm: str) -> bytes:  # noqa: ANN001
    with host.manager.open_vtm(vm) as vtm:
        return guest.seal(vtm, b"sealed before the move", pcrs={HashAlg.SHA256: [16]}).encode()


def _unseal(host, vm: str, blob: bytes) -> bytes:  # noqa: ANN001
    with host.manager.open_vtm(vm) as vtm:
        return guest.unseal(vtm, blob)


def test_vtm_moves_with_pcrs_keys_nv_and_sealed_data(hosts, tmp_path):
    """MIG-5..MIG-10, DP-4, VMM-S4: a vTM moved from A to B keeps its vPCRs, persistent key, NV index
    and sealed data (seen with tpm2-tools and unsealed on B); B certified its vEK anew; A's copy is gone."""
    a, b = hosts("host-a"), hosts("host-b")
    vm = a.create_vtm()
    guest_setup(a, vm, tmp_path)
    sealed = _seal_secret(a, vm)
    before = guest_view(a, vm)
    assert NV_MARKER in a.manager.processes[vm].save_state().permanent  # the search below means something

    out = migrate(a, b, vm)

    assert guest_view(b, vm) == before
    assert hex(PERSISTENT_HANDLE) in before["persistent"]
    assert _unseal(b, vm, sealed) == b"sealed before the move"
    # no plaintext state in the blob (VMM-S4)
    blob = base64.b64decode(out["export"]["blob"])
    assert NV_MARKER not in blob and NV_MARKER.hex().encode() not in blob
    # MIG-10: a vEK certificate from B's vTM-manager key, for the same vEK
    cert = x509.load_der_x509_certificate(base64.b64decode(out["import"]["vek_certificate"]))
    record = b.manager.record(vm)
    with b.manager.open_vtm(vm) as vtm, vtm.create_primary_ek("ecc") as ek:
        vek = parse_public(ek.public)
    assert vek.name().hex() == record.vek_name == out["ticket"].vek_name.hex()
    verify_vek_certificate(cert, manager_public=parse_public(b.manager.keys.manager_public),
                           now=cert.not_valid_before_utc, vek_public=vek, host_id="host-b",
                           vm_uuid=__import__("uuid").UUID(vm))  # fmt: skip
    assert b.manager.vtm_paths(vm).vek_certificate.read_bytes() == cert.public_bytes(
        __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER
    )
    # MIG-9: the source copy is destroyed: no record, no state, no sealed key, no process
    with pytest.raises(NotFound):
        a.manager.record(vm)
    assert not a.manager.vtm_paths(vm).root.exists()
    assert vm not in a.manager.processes
    assert [s.record.vm_uuid for s in b.manager.list()] == [vm]
    assert step(a, "status", {"migration_id": out["ticket"].migration_id})["state"] == "done"
    assert step(b, "status", {"migration_id": out["ticket"].migration_id})["state"] == "done"


def test_chain_a_to_b_to_c(hosts, tmp_path):
    """MIG-5..MIG-10, DP-4: A → B → C; the vTM's state and sealed data survive both moves; one copy at the end."""
    a, b, c = hosts("host-a"), hosts("host-b"), hosts("host-c")
    vm = a.create_vtm()
    guest_setup(a, vm, tmp_path)
    sealed = _seal_secret(a, vm)
    before = guest_view(a, vm)
    migrate(a, b, vm)
    out = migrate(b, c, vm)
    assert guest_view(c, vm) == before
    assert _unseal(c, vm, sealed) == b"sealed before the move"
    assert [len(h.manager.list()) for h in (a, b, c)] == [0, 0, 1]
    assert out["import"]["host_id"] == "host-c"


def test_migration_over_unix_transport(hosts):
    """MIG-5..MIG-7: a QEMU-mode vTM (control socket only) moves too; its vPCRs are kept."""
    a, b = hosts("host-a"), hosts("host-b")
    vm = a.create_vtm(tcp=False)
    with a.manager.open_vtm(vm) as vtm:
        vtm.pcr_extend(23, {HashAlg.SHA256: hashlib.sha256(b"unix").digest()})
        want = vtm.pcr_read({HashAlg.SHA256: [23]})
    migrate(a, b, vm, tcp=False)
    with b.manager.open_vtm(vm) as vtm:
        assert vtm.pcr_read({HashAlg.SHA256: [23]}) == want


def test_abort_before_commit_resumes_the_source(hosts, tmp_path):
    """MIG-5, MIG-8: after lock, export and even import, an abort (before commit) resumes the source with
    its vPCRs, keys and NV; the destination discards its copy; the source cannot be finalized later."""
    a, b = hosts("host-a"), hosts("host-b")
    vm = a.create_vtm()
    guest_setup(a, vm, tmp_path)
    before = guest_view(a, vm)
    t = ticket(a, b, vm)
    exported = export(a, b, t)
    assert a.manager.record(vm).locked == t.migration_id
    import_(b, t, exported)
    assert b.manager.record(vm).locked == t.migration_id
    step(b, "abort-in", {"migration_id": t.migration_id})
    step(a, "abort-out", {"migration_id": t.migration_id})
    assert guest_view(a, vm) == before
    assert a.manager.record(vm).locked is None
    assert not b.manager.vtm_paths(vm).root.exists()
    with pytest.raises(Conflict):
        step(a, "finalize-out", {"migration_id": t.migration_id})
    with pytest.raises(Conflict):
        step(b, "finalize-in", {"migration_id": t.migration_id})


def test_guest_command_after_lock_is_not_served(hosts):
    """MIG-5: once locked, the source serves no guest command: a command sent after the lock finds no
    TPM, changes nothing that was exported, and the destination's vPCRs are those at the lock."""
    import socket

    a, b = hosts("host-a"), hosts("host-b")
    vm = a.create_vtm()
    port = a.manager.record(vm).tcp_port
    with a.manager.open_vtm(vm) as vtm:
        vtm.pcr_extend(16, {HashAlg.SHA256: hashlib.sha256(b"before").digest()})
        at_lock = vtm.pcr_read({HashAlg.SHA256: [16]})
    t = ticket(a, b, vm)
    exported = export(a, b, t)
    with pytest.raises(OSError):  # TPM2_PCR_Extend(16) from the guest: nothing serves it
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(PCR16_EXTEND)
            if not conn.recv(64):
                raise ConnectionResetError("closed without an answer")
    with pytest.raises(Conflict, match="locked by migration"):
        a.manager.start(vm)
    import_(b, t, exported)
    step(b, "finalize-in", {"migration_id": t.migration_id})
    step(a, "finalize-out", {"migration_id": t.migration_id})
    with b.manager.open_vtm(vm) as vtm:
        assert vtm.pcr_read({HashAlg.SHA256: [16]}) == at_lock
    assert exported["header"]["vpcrs"]["sha256"]["16"] == at_lock[HashAlg.SHA256][16].hex()


def test_guest_holding_the_vtm_blocks_the_lock(hosts):
    """MIG-5: a guest mid-session (holding the vTM's only data channel) is not cut off: the lock is
    refused within its timeout, nothing is exported, and the vTM stays unlocked and serving."""
    import socket

    from vroot.errors import SwtpmError

    a, b = hosts("host-a"), hosts("host-b")
    vm = a.create_vtm()
    port = a.manager.record(vm).tcp_port
    t = ticket(a, b, vm)
    with socket.create_connection(("127.0.0.1", port)) as held:
        with pytest.raises(SwtpmError, match="holds its data channel"):
            export(a, b, t)
        held.sendall(PCR16_EXTEND)
        assert held.recv(64)[6:10] == bytes(4)  # the guest's command is served: rc 0
    assert a.manager.record(vm).locked is None
    assert step(a, "status", {"migration_id": t.migration_id})["state"] == "aborted"
    with a.manager.open_vtm(vm) as vtm:
        assert vtm.pcr_read({HashAlg.SHA256: [16]})[HashAlg.SHA256][16] != bytes(32)


def test_prepared_target_is_certified_for_this_migration(hosts):
    """MIG-4: the destination's target key verifies against its AK for this migration id and nonce only."""
    from vroot.errors import MigrationTargetInvalid
    from vroot.migration.protocol import verify_target

    a, b = hosts("host-a"), hosts("host-b")
    vm = a.create_vtm()
    t = ticket(a, b, vm)
    target = step(b, "prepare-migration-in", {"ticket": t.to_json()})  # the controller's task kind
    assert target == {**prepare(a, b, t), "timings": target["timings"]} | {
        "certify_attest": target["certify_attest"],
        "certify_signature": target["certify_signature"],
    }  # idempotent while prepared: the same target key, certified again
    parts = {k: base64.b64decode(target[k]) for k in ("target_public", "certify_attest", "certify_signature")}
    verified = verify_target(**parts, ak_public=b.ak_public, migration_id=t.migration_id, nonce=t.nonce)
    assert verified.area.object_attributes & 0x30012 == 0x30012  # fixedTPM, fixedParent, restricted, decrypt
    with pytest.raises(MigrationTargetInvalid, match="NonceMismatch"):
        verify_target(**parts, ak_public=b.ak_public, migration_id=t.migration_id, nonce=bytes(32))
    with pytest.raises(MigrationTargetInvalid, match="SignatureInvalid"):
        verify_target(**parts, ak_public=a.ak_public, migration_id=t.migration_id, nonce=t.nonce)
