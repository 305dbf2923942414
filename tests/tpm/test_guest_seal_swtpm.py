"""DP-2 against a real TPM (swtpm): sealing to PCRs under the persistent SRK, unseal refused after
the state changes (the error names the PCR), tampered and corrupted blobs fail closed, and no
transient object or session is left behind."""

from __future__ import annotations

import os

import pytest

from vroot.errors import Conflict, InvalidInput, TmError, TmPolicyFailed, VerificationError
from vroot.guest import (
    SRK_HANDLE,
    BlobFormatError,
    SealedBlob,
    bind,
    binding_public_key,
    parse_sealed_blob,
    seal,
    unseal,
)
from vroot.tpm2 import EccCurve, HashAlg, ObjectAttributes, ObjectType, parse_public

pytestmark = pytest.mark.tpm

SEL16 = {HashAlg.SHA256: [16]}
SECRET = b"guest disk key: 0123456789abcdef0123456789abcdef"


def extend(tm, pcr: int, data: bytes, banks=None) -> None:
    tm.pcr_extend(pcr, {alg: alg.digest(data) for alg in banks or tm.pcr_banks()})


def assert_clean(tm) -> None:
    assert tm.transient_handles() == []
    assert tm.session_handles() == []


def test_round_trip_short_and_10k(tm):
    """DP-2: up to 128 bytes in the sealed object itself, larger data in an AES-256-GCM envelope."""
    extend(tm, 16, b"guest kernel")
    big = os.urandom(10 * 1024)
    short_blob = seal(tm, SECRET, pcrs=SEL16)
    big_blob = seal(tm, big, pcrs={HashAlg.SHA256: [7, 16]})
    assert not short_blob.envelope and big_blob.envelope
    assert SECRET not in short_blob.encode() and big[:64] not in big_blob.encode()
    assert unseal(tm, short_blob.encode()) == SECRET
    assert unseal(tm, big_blob) == big
    assert unseal(tm, big_blob.encode()) == big  # any number of times
    assert len(big_blob.encode()) < len(big) + 600
    for size, envelope in ((128, False), (129, True), (1, False)):
        data = os.urandom(size)
        blob = seal(tm, data, pcrs=SEL16)
        assert blob.envelope is envelope
        assert unseal(tm, blob) == data
    assert_clean(tm)


def test_srk_is_the_persistent_ecc_srk_and_is_reused(tm):
    assert SRK_HANDLE not in tm.persistent_handles()
    first = seal(tm, b"a", pcrs=SEL16)
    assert tm.persistent_handles() == [SRK_HANDLE]
    second = seal(tm, b"b", pcrs=SEL16)
    assert first.srk_name == second.srk_name
    public, name, _ = tm.read_public(SRK_HANDLE)
    assert name == first.srk_name
    area = parse_public(public)
    assert area.type is ObjectType.ECC and area.curve == EccCurve.NIST_P256
    A = ObjectAttributes
    assert area.object_attributes == (
        A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.USERWITHAUTH | A.RESTRICTED | A.DECRYPT
    )  # tpm2-tools' default attributes for tpm2_createprimary
    with tm.create_srk("ecc") as transient:  # the same template gives the same key
        assert transient.name == first.srk_name
    assert_clean(tm)


def test_extend_into_a_sealed_pcr_refuses_and_names_it(tm):
    """DP-2: the guest's state changes (PCR 23 extended) → unseal fails, naming PCR 23 only."""
    extend(tm, 16, b"boot")
    blob = seal(tm, SECRET, pcrs={HashAlg.SHA256: [16, 23]})
    extend(tm, 15, b"unrelated measurement")  # a PCR the data is not sealed to: no matter
    assert unseal(tm, blob) == SECRET
    extend(tm, 23, b"application update")
    with pytest.raises(
        TmPolicyFailed, match=r"sha256 PCR 23 \(sealed to 0{16}…, now [0-9a-f]{16}…\) \(rc 0x[0-9a-f]+\)$"
    ) as err:
        unseal(tm, blob)
    assert "PCR 16" not in str(err.value)
    assert err.value.rc is not None and (err.value.rc & 0xBF) == 0x9D  # TPM_RC_POLICY_FAIL
    for _ in range(5):  # failures leave nothing behind, and do not count towards DA lockout
        with pytest.raises(TmPolicyFailed):
            unseal(tm, blob)
    assert_clean(tm)


def test_only_the_bank_that_changed_is_named(tm):
    blob = seal(tm, SECRET, pcrs={HashAlg.SHA1: [16], HashAlg.SHA256: [16], HashAlg.SHA384: [23]})
    assert unseal(tm, blob) == SECRET
    extend(tm, 16, b"sha256 only", banks=[HashAlg.SHA256])
    with pytest.raises(TmPolicyFailed, match="sha256 PCR 16") as err:
        unseal(tm, blob)
    assert "sha1" not in str(err.value) and "sha384" not in str(err.value)


def test_flipping_any_byte_fails_closed(tm):
    """Every single-byte change of a sealed blob is refused: the format, the offline checks, the TM
    (integrity of the sealed object) or AES-GCM (the envelope) catches it. Never other plaintext."""
    extend(tm, 16, b"boot")
    direct = seal(tm, SECRET, pcrs={HashAlg.SHA1: [16], HashAlg.SHA256: [16]}).encode()
    envelope = seal(tm, os.urandom(300), pcrs=SEL16).encode()
    head = len(parse_sealed_blob(envelope).associated_data())
    cases = [(direct, i) for i in range(len(direct))]
    cases += [(envelope, i) for i in [*range(head + 4), head + 10, len(envelope) - 17, len(envelope) - 1]]
    seen = set()
    for raw, i in cases:
        bad = bytearray(raw)
        bad[i] ^= 0x04
        with pytest.raises((InvalidInput, VerificationError)) as err:
            unseal(tm, bytes(bad))
        seen.add(type(err.value).__name__)
    assert seen >= {"BlobFormatError", "VerificationError"}
    assert_clean(tm)


def test_header_lies_are_caught_before_the_tm(tm):
    """A header claiming other PCR values than the policy holds: refused offline."""
    blob = seal(tm, SECRET, pcrs=SEL16)
    lie = SealedBlob(
        srk_name=blob.srk_name,
        selection=blob.selection,
        pcr_values=(b"\x42" * 32,),
        public=blob.public,
        private=blob.private,
    )
    with pytest.raises(VerificationError, match="not PolicyPCR over the PCR values in the blob's header"):
        unseal(tm, lie)


def test_corrupted_blob_is_invalid_input_and_touches_nothing(tm):
    with pytest.raises(BlobFormatError, match="offset 0: magic"):
        unseal(tm, b"garbage that is no blob")
    with pytest.raises(BlobFormatError, match=r"offset \d+: .*truncated"):
        unseal(tm, b"VRDP\x01\x01\x00\x00\x22" + bytes(10))
    pem = binding_public_key(tm)
    with pytest.raises(BlobFormatError, match="a bound blob, not a sealed one"):
        unseal(tm, bind(pem, b"x", rng=os.urandom))
    assert SRK_HANDLE not in tm.persistent_handles()  # refused before any TM command
    assert_clean(tm)


def test_unseal_restores_an_evicted_srk(tm):
    """The SRK is a primary: derived again from the owner seed, it is the same key."""
    blob = seal(tm, SECRET, pcrs=SEL16)
    tm.evict(SRK_HANDLE)
    assert SRK_HANDLE not in tm.persistent_handles()
    assert unseal(tm, blob) == SECRET
    assert tm.read_public(SRK_HANDLE)[1] == blob.srk_name
    assert_clean(tm)


def test_a_foreign_key_at_the_srk_handle_is_a_conflict(tm):
    """An EK persisted at 0x81000001 (restricted decryption, but policy-only): vroot will not use it."""
    with tm.create_primary_ek("ecc") as ek:
        tm.persist(ek, SRK_HANDLE).close()
    with pytest.raises(
        Conflict, match=r"0x81000001 holds a key that is not vroot's storage root key.*USERWITHAUTH"
    ):
        seal(tm, SECRET, pcrs=SEL16)
    assert tm.persistent_handles() == [SRK_HANDLE]
    assert_clean(tm)


def test_bad_arguments(tm):
    with pytest.raises(InvalidInput, match="1..1048576 bytes, got 0"):
        seal(tm, b"", pcrs=SEL16)
    with pytest.raises(InvalidInput, match="got 1048577"):
        seal(tm, bytes((1 << 20) + 1), pcrs=SEL16)
    with pytest.raises(InvalidInput, match="at least one PCR"):
        seal(tm, SECRET, pcrs={HashAlg.SHA256: []})
    with pytest.raises(InvalidInput, match="PCR index 24 out of range"):
        seal(tm, SECRET, pcrs={HashAlg.SHA256: [24]})
    with pytest.raises(InvalidInput, match="rng returned"):
        seal(tm, bytes(200), pcrs=SEL16, rng=lambda n: b"short")
    assert SRK_HANDLE not in tm.persistent_handles()
    with pytest.raises(TmError):  # a bank the TM does not have
        seal(tm, SECRET, pcrs={HashAlg.SHA3_256: [16]})
    assert_clean(tm)


def test_many_rounds_leave_nothing(tm):
    """libtpms has three transient slots and swtpm no resource manager: a leak would show as 0x902."""
    for n in range(12):
        data = os.urandom(40 + 20 * n)
        blob = seal(tm, data, pcrs=SEL16)
        assert unseal(tm, blob.encode()) == data
    extend(tm, 16, b"changed")
    for _ in range(6):
        with pytest.raises(TmPolicyFailed):
            unseal(tm, blob)
    assert_clean(tm)
