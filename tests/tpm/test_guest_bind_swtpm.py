"""DP-1 against a real TPM (swtpm): data bound in software to the TM's persistent ECDH key opens
only in that TM (TPM2_ECDH_ZGen); tampered blobs fail closed; nothing is leaked."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vroot.errors import Conflict, InvalidInput, TmError, VerificationError
from vroot.guest import (
    BINDING_KEY_HANDLE,
    SRK_HANDLE,
    BlobFormatError,
    bind,
    binding_public_key,
    parse_bound_blob,
    seal,
    unbind,
)
from vroot.guest._keys import BINDING_KEY, persistent_key
from vroot.tpm2 import HashAlg, ObjectAttributes, parse_public

pytestmark = pytest.mark.tpm


def assert_clean(tm) -> None:
    assert tm.transient_handles() == []
    assert tm.session_handles() == []


def test_binding_key_is_persistent_and_stable(tm):
    pem = binding_public_key(tm)
    assert tm.persistent_handles() == [BINDING_KEY_HANDLE]
    assert binding_public_key(tm) == pem
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    area = parse_public(tm.read_public(BINDING_KEY_HANDLE)[0])
    A = ObjectAttributes
    assert area.object_attributes & A.DECRYPT and area.object_attributes & A.FIXEDTPM
    assert not area.object_attributes & (A.RESTRICTED | A.SIGN_ENCRYPT)
    assert area.object_attributes & A.NODA  # empty authValue: nothing for DA to protect
    assert_clean(tm)


def test_bind_anywhere_unbind_in_the_tm(tm):
    """DP-1: bind is pure software (a relying party with the PEM); the TM opens it."""
    pem = binding_public_key(tm)
    big = os.urandom(10 * 1024)
    for data in (b"k", b"volume key " * 3, big):
        blob = bind(pem, data, rng=os.urandom)
        assert len(data) < 8 or data not in blob  # (one byte may occur by chance)
        assert unbind(tm, blob) == data
        assert unbind(tm, parse_bound_blob(blob)) == data
    assert_clean(tm)


def test_flipping_any_byte_fails_closed(tm):
    raw = bind(binding_public_key(tm), b"sixteen byte msg", rng=os.urandom)
    seen = set()
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x10
        with pytest.raises((InvalidInput, VerificationError)) as err:
            unbind(tm, bytes(bad))
        seen.add(type(err.value).__name__)
    assert seen == {"BlobFormatError", "VerificationError"}
    assert_clean(tm)


def test_an_off_curve_point_is_refused_by_the_tm_too(tm):
    """Offline the point is checked first; the TM refuses such a point as well (TPM_RC_ECC_POINT)."""
    raw = bind(binding_public_key(tm), b"x", rng=os.urandom)
    blob = parse_bound_blob(raw)
    off = blob.ephemeral[:-1] + bytes([blob.ephemeral[-1] ^ 1])
    with pytest.raises(VerificationError, match="not a P-256 point"):
        unbind(tm, raw.replace(blob.ephemeral, off))
    with persistent_key(tm, BINDING_KEY) as key, pytest.raises(TmError) as err:
        tm.ecdh_zgen(key, off)
    assert err.value.rc is not None and (err.value.rc & 0xBF) == 0xA7  # TPM_RC_ECC_POINT
    assert_clean(tm)


def test_corrupted_blobs_are_invalid_input(tm):
    with pytest.raises(BlobFormatError, match="offset 0: magic"):
        unbind(tm, b"\x00" * 200)
    raw = bind(binding_public_key(tm), b"data", rng=os.urandom)
    with pytest.raises(BlobFormatError, match="truncated"):
        unbind(tm, raw[:-3])
    with pytest.raises(BlobFormatError, match="a sealed blob, not a bound one"):
        unbind(tm, seal(tm, b"x", pcrs={HashAlg.SHA256: [16]}).encode())
    assert_clean(tm)


def test_data_bound_to_another_key_is_refused(tm):
    binding_public_key(tm)
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = stranger.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(VerificationError, match="bound for another TM"):
        unbind(tm, bind(pem, b"not for this TM", rng=os.urandom))
    assert_clean(tm)


def test_unbind_restores_an_evicted_binding_key(tm):
    """The binding key is a primary: derived again from the owner seed, it is the same key."""
    pem = binding_public_key(tm)
    blob = bind(pem, b"survives an evict", rng=os.urandom)
    tm.evict(BINDING_KEY_HANDLE)
    assert unbind(tm, blob) == b"survives an evict"
    assert tm.persistent_handles() == [BINDING_KEY_HANDLE]
    assert binding_public_key(tm) == pem
    assert_clean(tm)


def test_a_foreign_key_at_the_binding_handle_is_a_conflict(tm):
    with tm.create_srk("ecc") as srk:
        tm.persist(srk, BINDING_KEY_HANDLE).close()
    with pytest.raises(Conflict, match=r"0x81000002 holds a key that is not vroot's binding key.*RESTRICTED"):
        binding_public_key(tm)
    assert SRK_HANDLE not in tm.persistent_handles()
    assert_clean(tm)
