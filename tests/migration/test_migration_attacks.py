"""Attacks on vTM migration (VMM-S4, MIG-4, MIG-6, MIG-7; DESIGN.md section 6 invariants): a target key
that is not a TM storage key, blobs replayed, imported twice, tampered, expired, misdirected or
duplicated. Each is refused with its own reason, and the vTM stays whole where it was."""

from __future__ import annotations

import base64
import dataclasses
import struct
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from migration_helpers import export, import_, prepare, step, ticket

from vroot.errors import (
    MigrationBlobDuplicated,
    MigrationBlobExpired,
    MigrationBlobMisdirected,
    MigrationBlobReplayed,
    MigrationBlobTampered,
    MigrationStateMismatch,
    MigrationTargetInvalid,
)
from vroot.host._config import AK_HANDLE, MANAGER_HANDLE
from vroot.migration.blob import MAGIC, parse_blob
from vroot.tpm2 import EccPoint, HashAlg, parse_public

pytestmark = pytest.mark.tpm


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unlocked_and_serving(host, vm: str) -> bool:  # noqa: ANN001
    if host.manager.record(vm).locked is not None:
        return False
    with host.manager.open_vtm(vm) as vtm:
        return bool(vtm.pcr_read({HashAlg.SHA256: [0]}))


def _with_header(blob: bytes, header: bytes) -> bytes:
    """The blob with its header part replaced (the other parts unchanged)."""
    (n,) = struct.unpack_from(">I", blob, len(MAGIC))
    return MAGIC + struct.pack(">I", len(header)) + header + blob[len(MAGIC) + 4 + n :]


@pytest.fixture
def pair(hosts):  # noqa: ANN001, ANN201
    a, b = hosts("host-a"), hosts("host-b")
    return a, b, a.create_vtm()


def test_software_target_key_is_refused(pair):
    """MIG-4, VMM-S4: a software key that claims the attributes of a TM storage key cannot have the
    destination AK's certification: the source refuses before locking anything."""
    a, b, vm = pair
    t = ticket(a, b, vm)
    genuine = prepare(a, b, t)
    area = parse_public(base64.b64decode(genuine["target_public"]))
    soft = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    fake = dataclasses.replace(
        area, unique=EccPoint(x=soft.x.to_bytes(32, "big"), y=soft.y.to_bytes(32, "big"))
    )
    with pytest.raises(MigrationTargetInvalid, match="CertifiedNameMismatch"):
        export(a, b, t, {**genuine, "target_public": _b64(fake.encode(sized=True))})
    assert _unlocked_and_serving(a, vm)


def test_target_signed_by_another_key_is_refused(pair):
    """MIG-4: a certification not made by the destination's AK (here: host A's own AK) is refused."""
    a, b, vm = pair
    t = ticket(a, b, vm)
    genuine = prepare(a, b, t)
    tm = a.manager.host.client
    with tm.persistent(0x81000001) as srk, tm.persistent(AK_HANDLE) as ak:
        attest, sig = tm.certify(srk, ak, qualifying_data=t.qualifying_data)
    forged = {
        "target_public": _b64(srk.public),
        "certify_attest": _b64(attest),
        "certify_signature": _b64(sig),
    }
    with pytest.raises(MigrationTargetInvalid, match="SignatureInvalid"):
        export(a, b, t, {**genuine, **forged})
    assert _unlocked_and_serving(a, vm)


def test_tm_key_that_is_not_a_storage_key_is_refused(pair):
    """MIG-4: a key genuinely in the destination TM but not a restricted decryption key (the vTM-manager
    signing key) is refused on its attributes."""
    a, b, vm = pair
    t = ticket(a, b, vm)
    genuine = prepare(a, b, t)
    tm = b.manager.host.client
    with tm.persistent(MANAGER_HANDLE) as key, tm.persistent(AK_HANDLE) as ak:
        attest, sig = tm.certify(key, ak, qualifying_data=t.qualifying_data)
        public = key.public
    forged = {"target_public": _b64(public), "certify_attest": _b64(attest), "certify_signature": _b64(sig)}
    with pytest.raises(MigrationTargetInvalid, match="lacks .*restricted|decrypt"):
        export(a, b, t, {**genuine, **forged})
    assert _unlocked_and_serving(a, vm)


def test_blob_imports_once(pair):
    """MIG-7, VMM-S4: a second import of the same migration is refused, before and after finalize."""
    a, b, vm = pair
    t = ticket(a, b, vm)
    exported = export(a, b, t)
    import_(b, t, exported)
    with pytest.raises(MigrationBlobReplayed, match="already imported"):
        import_(b, t, exported)
    step(b, "finalize-in", {"migration_id": t.migration_id})
    step(a, "finalize-out", {"migration_id": t.migration_id})
    with pytest.raises(MigrationBlobReplayed):
        import_(b, t, exported)
    assert len(b.manager.list()) == 1


def test_blob_replayed_to_another_host(hosts, pair):
    """VMM-S4: the blob for B offered to C is refused whether C never prepared that migration or was
    asked (by a confused or forged ticket) to prepare the same migration id for itself."""
    a, b, vm = pair
    c = hosts("host-c")
    t = ticket(a, b, vm)
    exported = export(a, b, t)
    with pytest.raises(MigrationBlobMisdirected, match="no migration"):
        import_(c, t, exported)
    forged_ticket = dataclasses.replace(t, destination_host="host-c")
    prepare(a, c, forged_ticket)
    with pytest.raises(MigrationBlobMisdirected, match="wrapped for host host-b"):
        import_(c, forged_ticket, exported)
    # even with the header rewritten for C, C's TM cannot open the key wrapped to B's target
    blob = base64.b64decode(exported["blob"])
    header = parse_blob(blob).header
    journal_c = c.engine.journals.load(t.migration_id)
    rewritten = dataclasses.replace(header, destination_host="host-c", target_name=journal_c.target_name)
    with pytest.raises(MigrationBlobTampered, match="does not import into this TM"):
        import_(c, forged_ticket, {"blob": _b64(_with_header(blob, rewritten.encode()))})
    assert c.manager.list() == []
    # B still imports the genuine blob
    import_(b, t, exported)


def test_tampered_ciphertext_and_header_are_refused(pair):
    """MIG-6, MIG-7: a flipped ciphertext byte fails GCM; a header changed where the migration record
    does not see it (an exported vPCR) fails GCM too (the header is AAD); a header changed where it does
    (the expiry) is refused against the record. The genuine blob still imports afterwards."""
    a, b, vm = pair
    t = ticket(a, b, vm)
    exported = export(a, b, t)
    blob = base64.b64decode(exported["blob"])
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(MigrationBlobTampered, match="authenticated decryption failed"):
        import_(b, t, {"blob": _b64(flipped)})
    header = parse_blob(blob).header
    vpcrs = {**header.vpcrs, 16: bytes(31) + b"\x01"}
    with pytest.raises(MigrationBlobTampered, match="authenticated decryption failed"):
        import_(b, t, {"blob": _b64(_with_header(blob, dataclasses.replace(header, vpcrs=vpcrs).encode()))})
    later = dataclasses.replace(header, expires_at=header.expires_at + 3600)
    with pytest.raises(MigrationBlobTampered, match="expires_at differs"):
        import_(b, t, {"blob": _b64(_with_header(blob, later.encode()))})
    with pytest.raises(MigrationBlobTampered, match="does not decode"):
        import_(b, t, {"blob": _b64(blob[:100])})
    assert b.manager.list() == []
    assert step(b, "status", {"migration_id": t.migration_id})["state"] == "prepared"
    import_(b, t, exported)


def test_expired_blob_is_refused(pair):
    """VMM-S4: past the migration's expiry the destination imports nothing, and the source exports nothing."""
    a, b, vm = pair
    t = ticket(a, b, vm, ttl=60)
    exported = export(a, b, t)
    b.engine.clock = lambda: datetime.now(UTC) + timedelta(seconds=120)
    with pytest.raises(MigrationBlobExpired, match="expired"):
        import_(b, t, exported)
    assert b.manager.list() == []
    step(a, "abort-out", {"migration_id": t.migration_id})
    late = ticket(a, b, vm, ttl=-1)
    with pytest.raises(MigrationBlobExpired):
        export(a, b, late, prepare(a, b, ticket(a, b, vm)) | {})
    assert _unlocked_and_serving(a, vm)


def test_duplicate_copy_is_refused(pair):
    """VMM-S4 (one live copy): a destination that already holds a vTM for that VM prepares and imports nothing."""
    a, b, vm = pair
    t = ticket(a, b, vm)
    exported = export(a, b, t)
    b.manager.create(vm)  # another vTM for the same VM appears at the destination
    with pytest.raises(MigrationBlobDuplicated):
        import_(b, t, exported)
    with pytest.raises(MigrationBlobDuplicated):
        prepare(a, b, ticket(a, b, vm))


def test_wrong_vek_is_refused(pair):
    """MIG-5, RA-7: a migration naming another vEK than the vTM's (a forged or stale record) exports nothing."""
    a, b, vm = pair
    t = dataclasses.replace(ticket(a, b, vm), vek_name=bytes.fromhex("000b") + bytes(32))
    with pytest.raises(MigrationStateMismatch, match="vEK"):
        export(a, b, t)
    assert _unlocked_and_serving(a, vm)
