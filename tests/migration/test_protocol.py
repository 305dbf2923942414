"""The pure migration protocol (no TPM): ticket and journal codecs, the journal state machine, the
blob format and its authenticated encryption, target verification of software-made keys (MIG-4,
MIG-6, VMM-S4)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vroot.errors import Conflict, InvalidInput, MigrationBlobTampered, MigrationTargetInvalid
from vroot.migration.blob import BlobHeader, build_blob, decode_state, encode_state, open_state, parse_blob
from vroot.migration.protocol import (
    Journal,
    MigrationTicket,
    new_journal,
    next_state,
    target_qualifying_data,
    verify_target,
)
from vroot.tpm2 import EccPoint, ObjectAttributes, ObjectType, PublicArea, SymDef

A = ObjectAttributes


def _ticket(**kw) -> MigrationTicket:  # noqa: ANN003
    base = dict(migration_id=str(uuid.uuid4()), vm_uuid=str(uuid.uuid4()), vek_name=b"\x00\x0b" + bytes(32),
                nonce=os.urandom(32), expires_at=2_000_000_000, source_host="a", destination_host="b")  # fmt: skip
    return MigrationTicket(**{**base, **kw})


def test_ticket_round_trip_and_refusals():
    t = _ticket()
    assert MigrationTicket.from_json(t.to_json()) == t
    with pytest.raises(InvalidInput, match="another host"):
        _ticket(destination_host="a")
    with pytest.raises(InvalidInput, match="nonce"):
        _ticket(nonce=b"short")
    with pytest.raises(InvalidInput, match="migration id"):
        _ticket(migration_id="not-a-uuid")
    with pytest.raises(InvalidInput):
        MigrationTicket.from_json({"migration_id": t.migration_id})


def test_qualifying_data_binds_id_and_nonce():
    """MIG-4: H(migration id ‖ nonce) differs for another id or nonce."""
    mid, nonce = str(uuid.uuid4()), os.urandom(32)
    qd = target_qualifying_data(mid, nonce)
    assert len(qd) == 32
    assert qd != target_qualifying_data(str(uuid.uuid4()), nonce)
    assert qd != target_qualifying_data(mid, os.urandom(32))


def test_journal_state_machine():
    """MIG-8: after commit the source never aborts (resumes); an import happens once; illegal moves are Conflict."""
    t = _ticket()
    src = new_journal("source", t, "locking", now=1.0)
    src = next_state(next_state(src, "exported", now=2.0), "committed", now=3.0)
    with pytest.raises(Conflict, match="committed: cannot become aborted"):
        next_state(src, "aborted", now=4.0)
    assert next_state(src, "done", now=4.0).finished
    dst = next_state(
        next_state(new_journal("destination", t, "prepared", now=1.0), "importing", now=2.0),
        "imported",
        now=3.0,
    )
    with pytest.raises(Conflict):
        next_state(dst, "importing", now=4.0)
    assert Journal.from_json(dst.to_json()) == dst
    with pytest.raises(InvalidInput):
        Journal(role="source", state="prepared", ticket=t)


def _header(state: bytes, **kw) -> BlobHeader:  # noqa: ANN003
    base = dict(migration_id=str(uuid.uuid4()), vm_uuid=str(uuid.uuid4()), kind="ecc", vek_name=b"\x00\x0b" + bytes(32),
                state_digest=hashlib.sha256(state).digest(), source_host="a", destination_host="b",
                target_name=b"\x00\x0b" + bytes(32), created_at=1, expires_at=2, vpcrs={i: bytes(32) for i in range(24)})  # fmt: skip
    return BlobHeader(**{**base, **kw})


def _blob(state: bytes, key: bytes, header: BlobHeader | None = None) -> bytes:
    return build_blob(header or _header(state), state, aes_key=key, iv=os.urandom(12), key_public=b"P" * 80,
                      key_encryption_key=b"\x00\x00", key_duplicate=b"D" * 60, key_seed=b"S" * 70)  # fmt: skip


def test_blob_round_trip_and_no_plaintext():
    """MIG-6, VMM-S4: the state comes back only with the key; the blob does not show it."""
    state = encode_state(b"PERMANENT-SECRET" * 20, b"VOLATILE-SECRET" * 20)
    key = os.urandom(32)
    blob = _blob(state, key)
    assert b"SECRET" not in blob
    parsed = parse_blob(blob)
    assert decode_state(open_state(parsed, aes_key=key)) == (
        b"PERMANENT-SECRET" * 20,
        b"VOLATILE-SECRET" * 20,
    )
    with pytest.raises(MigrationBlobTampered):
        open_state(parsed, aes_key=os.urandom(32))
    other = dataclasses.replace(
        parsed, header_bytes=parsed.header_bytes.replace(b'"kind":"ecc"', b'"kind":"rsa"')
    )
    with pytest.raises(MigrationBlobTampered, match="authenticated decryption failed"):
        open_state(other, aes_key=key)
    with pytest.raises(InvalidInput, match="state_digest"):
        _blob(state, key, _header(b"other"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=399))
def test_parse_blob_raises_only_invalid_input(noise, cut):
    """Hypothesis: truncated, extended or random blobs raise InvalidInput, nothing else."""
    blob = _blob(encode_state(b"p" * 10, b"v"), bytes(32))
    for data in (
        noise,
        blob[:cut],
        blob + noise[:1] if noise else blob + b"\0",
        b"VRMIG\x00\x00\x01" + noise,
    ):
        try:
            parse_blob(data)
        except InvalidInput:
            pass


def _soft_storage_area(**kw) -> PublicArea:  # noqa: ANN003
    from cryptography.hazmat.primitives.asymmetric import ec

    n = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    attrs = A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.USERWITHAUTH | A.RESTRICTED | A.DECRYPT
    base = dict(type=ObjectType.ECC, name_alg=__import__("vroot.tpm2", fromlist=["HashAlg"]).HashAlg.SHA256,
                object_attributes=attrs, symmetric=SymDef(algorithm=0x06, key_bits=128, mode=0x43), curve=0x0003,
                unique=EccPoint(x=n.x.to_bytes(32, "big"), y=n.y.to_bytes(32, "big")))  # fmt: skip
    return PublicArea(**{**base, **kw})


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        (A.FIXEDPARENT | A.RESTRICTED | A.DECRYPT, "lacks fixedtpm"),
        (A.FIXEDTPM | A.FIXEDPARENT | A.DECRYPT, "lacks restricted"),
        (A.FIXEDTPM | A.FIXEDPARENT | A.RESTRICTED | A.DECRYPT | A.SIGN_ENCRYPT, "may sign"),
    ],
)
def test_target_attributes_are_checked_first(attrs, reason):
    """MIG-4: a key that could leave its TM, or is not a storage key, is refused on its attributes."""
    area = _soft_storage_area(object_attributes=attrs)
    with pytest.raises(MigrationTargetInvalid, match=reason):
        verify_target(target_public=area.encode(sized=True), certify_attest=b"", certify_signature=b"",
                      ak_public=b"", migration_id=str(uuid.uuid4()), nonce=bytes(32))  # fmt: skip


def test_software_key_without_a_tm_certification_is_refused():
    """MIG-4: a software key with storage-key attributes and a made-up certification fails the certify check."""
    area = _soft_storage_area()
    ak = _soft_storage_area(object_attributes=A.FIXEDTPM | A.FIXEDPARENT | A.RESTRICTED | A.SIGN_ENCRYPT,
                            symmetric=None)  # fmt: skip
    with pytest.raises(MigrationTargetInvalid, match="certification by the destination AK"):
        verify_target(target_public=area.encode(sized=True), certify_attest=b"\xff\x54\x43\x47" + bytes(40),
                      certify_signature=bytes(8), ak_public=ak.encode(sized=True),
                      migration_id=str(uuid.uuid4()), nonce=bytes(32))  # fmt: skip


def test_ticket_expiry_as_rfc3339_and_qualifying_data_formula():
    """MIG-4: expires_at may be RFC 3339 (as the controller writes it); the qualifying data is
    SHA-256(16 UUID bytes ‖ nonce), the controller's own formula."""
    t = _ticket()
    doc = {**t.to_json(), "expires_at": "2033-05-18T03:33:20+00:00"}
    assert MigrationTicket.from_json(doc).expires_at == 2_000_000_000
    with pytest.raises(InvalidInput):
        MigrationTicket.from_json({**doc, "expires_at": "2033-05-18T03:33:20"})
    assert t.qualifying_data == hashlib.sha256(uuid.UUID(t.migration_id).bytes + t.nonce).digest()
