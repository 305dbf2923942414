"""DP-2 offline checks of a sealed blob (`verify_sealed_object`), one negative test per check: the
sealed object is a fixedTPM|fixedParent data object opened only by its policy, and that policy is
PolicyPCR over exactly the PCR values the blob's header claims."""

from __future__ import annotations

import dataclasses

import pytest

from vroot.errors import VerificationError
from vroot.guest import SealedBlob, verify_sealed_object
from vroot.tpm2 import (
    EccCurve,
    EccPoint,
    HashAlg,
    ObjectAttributes,
    ObjectType,
    PcrSelection,
    PublicArea,
    pcr_values_digest,
    policy_pcr,
)

A = ObjectAttributes
SEL = PcrSelection(((HashAlg.SHA1, (16,)), (HashAlg.SHA256, (7, 16))))
VALUES = (b"\x11" * 20, b"\x22" * 32, b"\x33" * 32)


def policy(values=VALUES, sel=SEL) -> bytes:
    mapping: dict = {}
    for (alg, i), v in zip(sel, values, strict=True):
        mapping.setdefault(alg, {})[i] = v
    return policy_pcr(None, sel, pcr_values_digest(mapping, sel, HashAlg.SHA256), alg=HashAlg.SHA256)


def sealed_object(**kw) -> bytes:
    area = dict(
        type=ObjectType.KEYEDHASH,
        name_alg=HashAlg.SHA256,
        object_attributes=A.FIXEDTPM | A.FIXEDPARENT,
        auth_policy=policy(),
        unique=bytes(32),
    )
    area.update(kw)
    return PublicArea(**area).encode(sized=True)


def blob(public: bytes | None = None, **kw) -> SealedBlob:
    fields = dict(
        srk_name=b"\x00\x0b" + bytes(32),
        selection=SEL,
        pcr_values=VALUES,
        public=sealed_object() if public is None else public,
        private=b"\x00\x10" + bytes(16),
    )
    fields.update(kw)
    return SealedBlob(**fields)


def test_a_consistent_blob_passes():
    verify_sealed_object(blob())


def test_header_values_that_do_not_match_the_policy():
    changed = (VALUES[0], b"\x23" * 32, VALUES[2])
    with pytest.raises(VerificationError, match="not PolicyPCR over the PCR values in the blob's header"):
        verify_sealed_object(blob(pcr_values=changed))


def test_header_selection_that_does_not_match_the_policy():
    sel = PcrSelection(((HashAlg.SHA256, (7, 16)),))
    with pytest.raises(VerificationError, match="not PolicyPCR"):
        verify_sealed_object(blob(selection=sel, pcr_values=VALUES[1:]))


def test_object_with_user_auth_is_refused():
    """With userWithAuth the empty password would open it, whatever the PCRs."""
    attrs = A.FIXEDTPM | A.FIXEDPARENT | A.USERWITHAUTH
    with pytest.raises(VerificationError, match="without userWithAuth"):
        verify_sealed_object(blob(sealed_object(object_attributes=attrs)))


def test_object_that_may_leave_its_tpm_is_refused():
    with pytest.raises(VerificationError, match="want fixedTPM"):
        verify_sealed_object(blob(sealed_object(object_attributes=A.FIXEDPARENT)))


def test_a_key_is_not_a_sealed_data_object():
    area = sealed_object(type=ObjectType.ECC, curve=EccCurve.NIST_P256, unique=EccPoint(bytes(32), bytes(32)))
    with pytest.raises(VerificationError, match="not a SHA-256 keyed-hash data object"):
        verify_sealed_object(blob(area))
    with pytest.raises(VerificationError, match="not a SHA-256 keyed-hash"):
        verify_sealed_object(blob(sealed_object(name_alg=HashAlg.SHA384)))


def test_public_area_that_does_not_decode():
    with pytest.raises(VerificationError, match="does not decode"):
        verify_sealed_object(blob(b"\x00\x03abc"))


def test_envelope_mode_is_checked_the_same_way():
    ok = blob(nonce=bytes(12), ciphertext=bytes(20))
    verify_sealed_object(ok)
    with pytest.raises(VerificationError, match="not PolicyPCR"):
        verify_sealed_object(dataclasses.replace(ok, pcr_values=(bytes(20), *VALUES[1:])))
