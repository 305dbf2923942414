"""Certificates the PCA and the operations CA issue (RA-1, VMM-S3): AK and vAK certificates, TLS
client and server certificates, and one negative test per verification step."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pca_fakes import NOW, SoftTm, ak_area, ecc_key

from vroot.errors import CertificateInvalid, InvalidInput, KeyAttributesInvalid, Revoked
from vroot.pca import (
    TCG_KP_AIK_CERTIFICATE,
    VROOT_AK_IDENTITY,
    AkIdentity,
    build_crl,
    decode_ak_identity,
    encode_ak_identity,
    issue_ak_certificate,
    issue_client_certificate,
    issue_server_certificate,
    verify_ak_certificate,
    verify_client_certificate,
)
from vroot.pki import VROOT_VIRTUAL_TPM_POLICY, create_ca, is_virtual_tm_certificate
from vroot.tpm2 import HashAlg, ObjectAttributes

A = ObjectAttributes
PCA = create_ca(common_name="vroot PCA", now=NOW - timedelta(days=1), key=ecc_key("pca"))
OPS = create_ca(common_name="vroot operations CA", now=NOW - timedelta(days=1), key=ecc_key("ops"))
TM = SoftTm("host-a")
VTM = SoftTm("host-a/vm")


def ak_cert(*, tm: SoftTm = TM, virtual: bool = False, agent_id: str = "host-a", **kw):  # noqa: ANN003, ANN201
    args = {"pca": PCA, "ak_public": tm.ak, "agent_id": agent_id, "ek_name": tm.ek.name(), "virtual": virtual,
            "now": NOW, "serial": 1001} | kw  # fmt: skip
    return issue_ak_certificate(**args)


def verify(cert, **kw):  # noqa: ANN001, ANN003, ANN201
    args = {"pca_certificate": PCA.certificate, "ak_public": TM.ak, "now": NOW + timedelta(hours=1)} | kw
    return verify_ak_certificate(cert, **args)


def craft(*, identity: bytes | None = b"default", virtual_policy: bool = False, eku=TCG_KP_AIK_CERTIFICATE,
          key_usage: bool = True, key=None):  # noqa: ANN001, ANN201
    """An AK-like certificate from the PCA, properly signed, with one thing changed."""
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "host-a")]))
        .issuer_name(PCA.name)
        .public_key(key or TM.ak.public_key())
        .serial_number(42)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if key_usage:
        b = b.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    if identity == b"default":
        identity = encode_ak_identity(AkIdentity(ak_name=TM.ak.name(), ek_name=TM.ek.name(), virtual=False))
    if identity is not None:
        b = b.add_extension(x509.UnrecognizedExtension(VROOT_AK_IDENTITY, identity), critical=False)
    if virtual_policy:
        b = b.add_extension(x509.CertificatePolicies([x509.PolicyInformation(VROOT_VIRTUAL_TPM_POLICY, None)]), False)
    return b.sign(PCA.private_key, hashes.SHA256())


# -- AK certificates ------------------------------------------------------------------------------------


def test_ra1_ak_certificate_issued_and_verified():
    cert = ak_cert()
    v = verify(cert)
    assert (v.agent_id, v.ak_name, v.ek_name, v.virtual) == ("host-a", TM.ak.name(), TM.ek.name(), False)
    assert v.serial == 1001 and not v.revocation_checked
    assert cert.issuer == PCA.name and cert.not_valid_after_utc == NOW + timedelta(days=365)
    eku = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    assert list(eku) == [TCG_KP_AIK_CERTIFICATE]
    ku = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert not is_virtual_tm_certificate(cert)


def test_vmm_s3_vak_certificate_is_marked_virtual():
    cert = ak_cert(tm=VTM, virtual=True, agent_id="vm-6f1c")
    v = verify(cert, ak_public=VTM.ak)
    assert v.virtual and v.agent_id == "vm-6f1c"
    assert is_virtual_tm_certificate(cert)
    policies = cert.extensions.get_extension_for_oid(ExtensionOID.CERTIFICATE_POLICIES).value
    assert [p.policy_identifier for p in policies] == [VROOT_VIRTUAL_TPM_POLICY]


def test_ak_certificate_never_outlives_the_pca():
    cert = ak_cert(validity_days=100_000)
    assert cert.not_valid_after_utc == PCA.certificate.not_valid_after_utc


def test_ak_certificate_for_another_ak():
    with pytest.raises(CertificateInvalid, match="another public key"):
        verify(ak_cert(), ak_public=VTM.ak)


def test_ak_certificate_from_another_pca():
    other = create_ca(common_name="vroot PCA", now=NOW - timedelta(days=1), key=ecc_key("other pca"))
    with pytest.raises(CertificateInvalid, match="signature does not verify|no issuer"):
        verify(ak_cert(pca=other))


def test_ak_certificate_flipped_signature():
    der = bytearray(ak_cert().public_bytes(Encoding.DER))
    der[-3] ^= 0x01
    with pytest.raises(CertificateInvalid, match="signature does not verify|no issuer"):
        verify(bytes(der))


def test_ak_certificate_expired_and_not_yet_valid():
    with pytest.raises(CertificateInvalid, match="expired"):
        verify(ak_cert(validity_days=1), now=NOW + timedelta(days=2))
    with pytest.raises(CertificateInvalid, match="not yet valid"):
        verify(ak_cert(), now=NOW - timedelta(minutes=1))


def test_ak_certificate_names_another_ak_with_the_same_key():
    """Same key, other attributes (so another TPM name): the certificate does not cover this area."""
    loose = ak_area(TM.ak_key, object_attributes=A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.SIGN_ENCRYPT)
    with pytest.raises(CertificateInvalid, match="certifies AK name"):
        verify(ak_cert(), ak_public=loose)


def test_ak_certificate_without_identity_extension():
    with pytest.raises(CertificateInvalid, match="no vroot AK identity"):
        verify(craft(identity=None))


def test_ak_certificate_with_malformed_identity_extension():
    with pytest.raises(CertificateInvalid, match="malformed AK identity"):
        verify(craft(identity=b"\x30\x03\x04\x01\x00"))


def test_ak_certificate_whose_virtual_mark_disagrees():
    with pytest.raises(CertificateInvalid, match="disagree"):
        verify(craft(virtual_policy=True))


def test_ak_certificate_without_aik_eku():
    with pytest.raises(CertificateInvalid, match="lacks extendedKeyUsage 2.23.133.8.3"):
        verify(craft(eku=None))


def test_ak_certificate_without_digital_signature():
    with pytest.raises(CertificateInvalid, match="digitalSignature"):
        verify(craft(key_usage=False))


def test_crafted_certificate_with_all_parts_verifies():
    """The crafted baseline is a valid AK certificate, so each negative above fails for its own reason."""
    assert verify(craft()).ak_name == TM.ak.name()


def test_client_certificate_is_not_an_ak_certificate():
    client = issue_client_certificate(ops_ca=PCA, agent_id="host-a", public_key=TM.ak.public_key(), now=NOW, serial=7)
    with pytest.raises(CertificateInvalid, match="lacks extendedKeyUsage"):
        verify(client)


def test_ak_certificate_not_issued_for_a_key_that_is_not_an_ak():
    loose = ak_area(TM.ak_key, object_attributes=A.FIXEDTPM | A.SIGN_ENCRYPT)
    with pytest.raises(KeyAttributesInvalid, match="restricted"):
        ak_cert(ak_public=loose)


@pytest.mark.parametrize("agent_id", ["", "has space", "-leading", "x" * 65, "é"])
def test_bad_agent_ids_are_refused(agent_id):
    with pytest.raises(InvalidInput, match="agent id"):
        ak_cert(agent_id=agent_id)


@pytest.mark.parametrize(("kw", "match"), [({"serial": 0}, "serial"), ({"validity_days": 0}, "validity_days"),
                                           ({"now": NOW - timedelta(days=2)}, "not valid at")])  # fmt: skip
def test_bad_issuing_arguments(kw, match):
    with pytest.raises(InvalidInput, match=match):
        ak_cert(**kw)


def test_ak_identity_round_trip_and_strictness():
    ident = AkIdentity(ak_name=TM.ak.name(), ek_name=TM.ek.name(), virtual=True)
    der = encode_ak_identity(ident)
    assert decode_ak_identity(der) == ident
    with pytest.raises(InvalidInput, match="BOOLEAN"):
        decode_ak_identity(der[:-1] + b"\x01")
    with pytest.raises(InvalidInput, match="trailing"):
        decode_ak_identity(der + b"\x00")
    with pytest.raises(InvalidInput, match="TPM name"):
        AkIdentity(ak_name=b"\x00\x0b" + bytes(5), ek_name=TM.ek.name(), virtual=False)


def test_revoked_ak_certificate_takes_effect_on_the_next_check():
    cert = ak_cert()
    before = build_crl(ca=PCA, revoked=[], now=NOW, next_update=NOW + timedelta(days=1))
    assert verify(cert, crl=before).revocation_checked
    after = build_crl(ca=PCA, revoked=[(1001, NOW, "key_compromise")], now=NOW + timedelta(minutes=5),
                      next_update=NOW + timedelta(days=1))  # fmt: skip
    with pytest.raises(Revoked, match="0x3e9 was revoked.*keyCompromise"):
        verify(cert, crl=after)


def test_ak_certificate_with_a_crl_of_another_ca():
    crl = build_crl(ca=OPS, revoked=[], now=NOW, next_update=NOW + timedelta(days=1))
    with pytest.raises(CertificateInvalid, match="CRL issued by"):
        verify(ak_cert(), crl=crl)


# -- TLS ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_client_certificate_issued_and_verified(tls_key):
    cert = issue_client_certificate(ops_ca=OPS, agent_id="host-a", public_key=tls_key.public_key(), now=NOW, serial=9)
    v = verify_client_certificate(cert, ops_certificate=OPS.certificate, now=NOW)
    assert v.agent_id == "host-a" and v.serial == 9 and not v.revocation_checked
    eku = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "host-a"


def test_client_certificate_from_the_pca_is_refused(tls_key):
    cert = issue_client_certificate(ops_ca=PCA, agent_id="host-a", public_key=tls_key.public_key(), now=NOW, serial=9)
    with pytest.raises(CertificateInvalid, match="no issuer"):
        verify_client_certificate(cert, ops_certificate=OPS.certificate, now=NOW)


def test_ak_certificate_is_not_a_client_certificate():
    with pytest.raises(CertificateInvalid, match="no issuer|lacks extendedKeyUsage"):
        verify_client_certificate(ak_cert(), ops_certificate=OPS.certificate, now=NOW)
    fake = issue_ak_certificate(pca=OPS, ak_public=TM.ak, agent_id="host-a", ek_name=TM.ek.name(), virtual=False,
                                now=NOW, serial=5)  # fmt: skip
    with pytest.raises(CertificateInvalid, match="lacks extendedKeyUsage 1.3.6.1.5.5.7.3.2"):
        verify_client_certificate(fake, ops_certificate=OPS.certificate, now=NOW)


def test_revoked_client_certificate(tls_key):
    cert = issue_client_certificate(ops_ca=OPS, agent_id="host-a", public_key=tls_key.public_key(), now=NOW, serial=9)
    crl = build_crl(ca=OPS, revoked=[(9, NOW, None)], now=NOW, next_update=NOW + timedelta(hours=1))
    with pytest.raises(Revoked, match="0x9"):
        verify_client_certificate(cert, ops_certificate=OPS.certificate, now=NOW, crl=crl)


def test_client_certificate_with_a_bad_subject():
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bad id!")]))
        .issuer_name(OPS.name).public_key(TM.ak.public_key()).serial_number(3)
        .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
    )  # fmt: skip
    bad = b.sign(OPS.private_key, hashes.SHA256())
    with pytest.raises(CertificateInvalid, match="agent id"):
        verify_client_certificate(bad, ops_certificate=OPS.certificate, now=NOW)


@pytest.mark.parametrize(
    "key",
    [rsa.generate_private_key(65537, 1024).public_key(), ec.generate_private_key(ec.SECP256K1()).public_key(), "pem"],
)
def test_client_key_must_be_a_sound_public_key(key):
    with pytest.raises(InvalidInput, match="client key"):
        issue_client_certificate(ops_ca=OPS, agent_id="host-a", public_key=key, now=NOW, serial=9)


def test_server_certificate(tls_key):
    cert = issue_server_certificate(ops_ca=OPS, names=["ra.example", "127.0.0.1"], public_key=tls_key.public_key(),
                                    now=NOW, serial=11)  # fmt: skip
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ra.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    with pytest.raises(CertificateInvalid, match="lacks extendedKeyUsage"):
        verify_client_certificate(cert, ops_certificate=OPS.certificate, now=NOW)


@pytest.mark.parametrize("names", [[], "ra.example", ["a..b"], ["x" * 64 + ".example"], [""]])
def test_server_certificate_bad_names(tls_key, names):
    with pytest.raises(InvalidInput, match="server name"):
        issue_server_certificate(ops_ca=OPS, names=names, public_key=tls_key.public_key(), now=NOW, serial=11)


# -- the AK identity parser under hypothesis ---------------------------------------------------------------

_names = st.sampled_from([HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512]).flatmap(
    lambda alg: st.binary(min_size=alg.digest_size, max_size=alg.digest_size).map(
        lambda d, alg=alg: alg.to_bytes(2, "big") + d
    )
)


@settings(max_examples=200, deadline=None)
@given(ak_name=_names, ek_name=_names, virtual=st.booleans())
def test_ak_identity_round_trips(ak_name, ek_name, virtual):
    ident = AkIdentity(ak_name=ak_name, ek_name=ek_name, virtual=virtual)
    assert decode_ak_identity(encode_ak_identity(ident)) == ident


@settings(max_examples=500, deadline=None)
@given(data=st.one_of(st.binary(max_size=300), st.binary(max_size=120).map(lambda b: b"\x30" + bytes([len(b)]) + b)))
def test_ak_identity_decoder_raises_only_invalid_input(data):
    try:
        ident = decode_ak_identity(data)
    except InvalidInput:
        return
    assert encode_ak_identity(ident) == data  # only exact DER decodes
