"""TPM2_Certify, and TPM2_ActivateCredential against a software MakeCredential (ECC and RSA EKs)."""

from __future__ import annotations

import os
import struct

import pytest
from tpm2_pytss import TPM2B_NAME, TPM2B_PUBLIC
from tpm2_pytss.utils import make_credential

from vroot.errors import InvalidInput, TmError, TmPolicyFailed
from vroot.tm.client import public_pem

pytestmark = pytest.mark.tpm


def _tpm2b(buf: bytes, o: int) -> tuple[bytes, int]:
    n = int.from_bytes(buf[o : o + 2], "big")
    return buf[o + 2 : o + 2 + n], o + 2 + n


def parse_certify(attest: bytes) -> dict:
    magic, st = struct.unpack_from(">IH", attest)
    signer, o = _tpm2b(attest, 6)
    extra, o = _tpm2b(attest, o)
    o += 8 + 4 + 4 + 1 + 8
    name, o = _tpm2b(attest, o)
    qname, o = _tpm2b(attest, o)
    assert o == len(attest)
    return {"magic": magic, "type": st, "signer": signer, "extra": extra, "name": name, "qname": qname}


def test_certify_srk_and_ak_with_ak(tm, verify_signature):
    with tm.create_primary_ek() as ek, tm.load(ek, tm.create_ak(ek)) as ak:
        _, ak_name, ak_qname = tm.read_public(ak)
        ak_pem = public_pem(ak.public)
        # the AK certifies itself
        attest, sig = tm.certify(ak, ak, qualifying_data=b"certify-ak")
        c = parse_certify(attest)
        assert (c["magic"], c["type"]) == (0xFF544347, 0x8017)  # TPM_ST_ATTEST_CERTIFY
        assert (c["extra"], c["name"], c["qname"], c["signer"]) == (
            b"certify-ak",
            ak_name,
            ak_qname,
            ak_qname,
        )
        verify_signature(ak_pem, attest, sig)
        # The TCG EK policy (PolicySecret only) cannot satisfy the EK's admin role, which needs
        # PolicyCommandCode: certifying the EK fails, and leaks nothing.
        with pytest.raises(TmPolicyFailed):
            tm.certify(ek, ak, qualifying_data=b"certify-ek")
        assert tm.session_handles() == []
        ek.close()  # free a slot for the SRK
        with tm.create_srk() as srk:
            attest, sig = tm.certify(srk, ak, qualifying_data=os.urandom(16))
            c = parse_certify(attest)
            assert c["name"] == srk.name and c["qname"] == tm.read_public(srk)[2]
            verify_signature(ak_pem, attest, sig)
    assert tm.transient_handles() == [] and tm.session_handles() == []


def test_certify_sealed_object(tm, verify_signature):
    with tm.create_srk() as srk:
        blob = tm.seal(srk, b"s", policy_digest=bytes(32))
        signing = tm.create_signing_key(srk)
        with tm.load(srk, blob) as obj, tm.load(srk, signing) as key:
            attest, sig = tm.certify(obj, key, qualifying_data=b"q")
            assert parse_certify(attest)["name"] == obj.name
            verify_signature(public_pem(signing.public), attest, sig)


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_activate_credential(tm, kind):
    secret = os.urandom(32)
    with tm.create_primary_ek(kind) as ek:
        ak_blob = tm.create_ak(ek)  # the AK is always ECC here; the EK kind is the point
        with tm.load(ek, ak_blob) as ak:
            ek_pub = TPM2B_PUBLIC.unmarshal(ek.public)[0]
            cred, enc = make_credential(ek_pub, secret, TPM2B_NAME(ak.name))
            got = tm.activate_credential(ak, ek, cred.marshal(), enc.marshal())
            assert got == secret
    assert tm.transient_handles() == [] and tm.session_handles() == []


def test_activate_credential_for_another_name_fails(tm):
    with tm.create_primary_ek() as ek, tm.load(ek, tm.create_ak(ek)) as ak:
        ek_pub = TPM2B_PUBLIC.unmarshal(ek.public)[0]
        other = b"\x00\x0b" + os.urandom(32)
        cred, enc = make_credential(ek_pub, os.urandom(32), TPM2B_NAME(other))
        with pytest.raises(TmError) as err:
            tm.activate_credential(ak, ek, cred.marshal(), enc.marshal())
        assert not isinstance(err.value, TmPolicyFailed)
        assert err.value.rc is not None and (err.value.rc & 0xBF) == 0x9F  # TPM_RC_INTEGRITY
        with pytest.raises(InvalidInput):
            tm.activate_credential(ak, ek, b"\x00\x05ab", enc.marshal())
        assert sorted(tm.transient_handles()) == sorted([ek.handle, ak.handle])
        assert tm.session_handles() == []
