"""Software MakeCredential (vroot.tpm2.make_credential) against TPM2_ActivateCredential on a real swtpm.

tpm2-pytss drives the TPM directly here (TPM-NOTES sections 3-4), independent of the `vroot.tm` client;
only the swtpm process comes from the fixtures (one fresh swtpm per test). The same swtpm also checks
that the codec computes names, qualified names and the EK policy as a TPM does, and that
`verify_quote` / `verify_certify` accept what the TPM signs.
"""

from __future__ import annotations

import os

import pytest
from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_SE,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PUBLIC,
    TPMA_OBJECT,
    TPML_PCR_SELECTION,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TSS2_Exception,
)
from tpm2_pytss.utils import NVReadEK, create_ek_template

from vroot.attestation import CertifiedNameMismatch, verify_certify, verify_quote
from vroot.errors import NonceMismatch
from vroot.tpm2 import (
    Handle,
    HashAlg,
    make_credential,
    parse_public,
    policy_secret,
    qualified_name,
)

pytestmark = pytest.mark.tpm

A = TPMA_OBJECT
AK_ATTRS = A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.USERWITHAUTH | A.RESTRICTED | A.SIGN_ENCRYPT


@pytest.fixture
def esapi(swtpm):
    with ESAPI(swtpm.tcti) as e:
        yield e


def _policy_session(e, kind=TPM2_SE.POLICY):
    return e.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, kind, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
    )


def _ek_session(e):
    s = _policy_session(e)
    e.policy_secret(ESYS_TR.ENDORSEMENT, s, b"", b"", b"", 0)
    return s


class _Objects:
    """Transient objects of one test, flushed at the end: libtpms has three slots."""

    def __init__(self, e):
        self.e = e
        self.handles = []

    def add(self, h):
        self.handles.append(h)
        return h

    def flush(self):
        for h in reversed(self.handles):
            self.e.flush_context(h)
        self.handles.clear()


@pytest.fixture
def objects(esapi):
    objs = _Objects(esapi)
    try:
        yield objs
    finally:
        objs.flush()


def _ek(e, objs, kind):
    _, template = create_ek_template(kind, NVReadEK(e))
    ek, ek_pub = e.create_primary(None, template, ESYS_TR.ENDORSEMENT)[:2]
    objs.add(ek)
    return ek, ek_pub


def _ak(e, objs, ek, spec="ecc256:ecdsa-sha256:null"):
    template = TPM2B_PUBLIC.parse(spec, nameAlg="sha256", objectAttributes=AK_ATTRS)
    s = _ek_session(e)
    try:
        priv, pub = e.create(ek, None, template, session1=s)[:2]
    finally:
        e.flush_context(s)
    s = _ek_session(e)
    try:
        ak = e.load(ek, priv, pub, session1=s)
    finally:
        e.flush_context(s)
    objs.add(ak)
    return ak, pub


def _activate(e, ak, ek, blob: bytes, enc: bytes) -> bytes:
    s = _ek_session(e)
    try:
        got = e.activate_credential(
            ak,
            ek,
            TPM2B_ID_OBJECT.unmarshal(blob)[0],
            TPM2B_ENCRYPTED_SECRET.unmarshal(enc)[0],
            session1=ESYS_TR.PASSWORD,
            session2=s,
        )
    finally:
        e.flush_context(s)
    return bytes(got)


@pytest.mark.parametrize("ek_kind", ["EK-ECC256", "EK-RSA2048"])
def test_activate_credential_returns_the_secret(esapi, objects, ek_kind):
    ek, ek_pub = _ek(esapi, objects, ek_kind)
    ak, ak_pub = _ak(esapi, objects, ek)
    ek_area = parse_public(ek_pub.marshal())
    ak_name = parse_public(ak_pub.marshal()).name()
    assert ak_name == bytes(ak_pub.get_name())
    secret = os.urandom(32)
    blob, enc = make_credential(ek_area, ak_name, secret, rng=os.urandom)
    assert _activate(esapi, ak, ek, blob, enc) == secret


@pytest.mark.parametrize("ek_kind", ["EK-ECC256", "EK-RSA2048"])
def test_credential_for_another_name_does_not_activate(esapi, objects, ek_kind):
    ek, ek_pub = _ek(esapi, objects, ek_kind)
    ak, _ = _ak(esapi, objects, ek)
    other_name = parse_public(ek_pub.marshal()).name()  # a real name, but not the AK's
    blob, enc = make_credential(parse_public(ek_pub.marshal()), other_name, b"s" * 32, rng=os.urandom)
    with pytest.raises(TSS2_Exception) as info:
        _activate(esapi, ak, ek, blob, enc)
    assert info.value.rc & 0xFF == 0xDF  # TPM_RC_INTEGRITY (0x9F) with parameter bits: 0x1df


def test_names_qualified_names_and_ek_policy_match_the_tpm(esapi, objects):
    ek, ek_pub = _ek(esapi, objects, "EK-ECC256")
    ak, ak_pub = _ak(esapi, objects, ek)
    ek_area = parse_public(ek_pub.marshal())
    ak_area = parse_public(ak_pub.marshal())
    assert ak_area.encode(sized=True) == ak_pub.marshal()
    # The TCG EK templates' authPolicy is PolicySecret(TPM_RH_ENDORSEMENT).
    endorsement = Handle.ENDORSEMENT.to_bytes(4, "big")
    assert ek_area.auth_policy == policy_secret(None, endorsement, alg=HashAlg.SHA256)
    _, name, qn = esapi.read_public(ak)
    ek_qn = qualified_name(endorsement, ek_area.name())
    assert ak_area.name() == bytes(name)
    assert qualified_name(ek_qn, ak_area.name()) == bytes(qn)


def test_quote_and_certify_from_the_tpm_verify(esapi, objects):
    ek, ek_pub = _ek(esapi, objects, "EK-ECC256")
    ak, ak_pub = _ak(esapi, objects, ek)
    ak_area = parse_public(ak_pub.marshal())
    nonce = os.urandom(16)
    attest, sig = esapi.quote(ak, TPML_PCR_SELECTION.parse("sha256:0,1,2,16"), nonce)
    vq = verify_quote(bytes(attest), sig.marshal(), ak_area, nonce=nonce, pcrs=None)
    assert [i for _, i in vq.selection] == [0, 1, 2, 16]
    _, _, qn = esapi.read_public(ak)
    assert vq.qualified_signer == bytes(qn)

    # TPM2_Certify: the AK certifies itself (the object and the signer may be the same).
    certify_attest, certify_sig = esapi.certify(ak, ak, nonce, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
    vc = verify_certify(
        bytes(certify_attest),
        certify_sig.marshal(),
        ak_area,
        qualifying_data=nonce,
        certified_name=ak_area.name(),
    )
    assert vc.name == ak_area.name()
    with pytest.raises(CertifiedNameMismatch, match="certified name"):
        verify_certify(
            bytes(certify_attest),
            certify_sig.marshal(),
            ak_area,
            qualifying_data=nonce,
            certified_name=parse_public(ek_pub.marshal()).name(),
        )
    with pytest.raises(NonceMismatch):
        verify_certify(
            bytes(certify_attest), certify_sig.marshal(), ak_area, qualifying_data=b"", certified_name=None
        )
