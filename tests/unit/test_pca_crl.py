"""Revocation lists (RA-1; DESIGN.md section 5): built by the PCA, checked failing closed. One
negative test per step of `verify_crl` and `check_not_revoked`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ObjectIdentifier
from test_pca_fakes import NOW, SoftTm, ecc_key

from vroot.errors import CertificateInvalid, InvalidInput, Revoked, VerificationError
from vroot.pca import build_crl, check_not_revoked, issue_ak_certificate, verify_crl
from vroot.pki import _der, create_ca

PCA = create_ca(common_name="vroot PCA", now=NOW - timedelta(days=1), key=ecc_key("pca"))
TM = SoftTm("host-a")
HOUR = timedelta(hours=1)


def cert(serial: int, ca=PCA):  # noqa: ANN001, ANN201
    return issue_ak_certificate(pca=ca, ak_public=TM.ak, agent_id="host-a", ek_name=TM.ek.name(),
                                virtual=False, now=NOW, serial=serial)  # fmt: skip


def crl(revoked=((7, NOW, x509.ReasonFlags.key_compromise), (8, NOW, None)), ca=PCA, **kw):  # noqa: ANN001, ANN003, ANN201
    return build_crl(ca=ca, revoked=revoked, **({"now": NOW, "next_update": NOW + HOUR} | kw))


def test_crl_built_and_verified():
    v = verify_crl(crl(crl_number=12), issuer=PCA.certificate, now=NOW)
    assert set(v.entries) == {7, 8} and v.number == 12
    assert v.entries[7].reason is x509.ReasonFlags.key_compromise and v.entries[8].reason is None
    assert v.entries[7].revoked_at == NOW and v.next_update == NOW + HOUR


def test_revoked_certificate_is_refused_and_others_pass():
    listed = crl()
    with pytest.raises(Revoked, match="serial 0x7 was revoked.*keyCompromise") as info:
        check_not_revoked(cert(7), crl=listed, issuer=PCA.certificate, now=NOW)
    assert isinstance(info.value, VerificationError)
    with pytest.raises(Revoked, match="serial 0x8 was revoked"):
        check_not_revoked(cert(8), crl=listed.public_bytes(Encoding.DER), issuer=PCA.certificate, now=NOW)
    assert check_not_revoked(cert(9), crl=listed, issuer=PCA.certificate, now=NOW) is None


def test_verified_crl_is_reusable():
    v = verify_crl(crl(), issuer=PCA.certificate, now=NOW)
    with pytest.raises(Revoked):
        v.check_not_revoked(cert(7), now=NOW)
    with pytest.raises(Revoked):
        check_not_revoked(cert(7), crl=v, now=NOW)
    v.check_not_revoked(cert(9), now=NOW + timedelta(minutes=30))
    with pytest.raises(CertificateInvalid, match="stale"):
        v.check_not_revoked(cert(9), now=NOW + 2 * HOUR)


def test_tampered_crl_signature():
    der = bytearray(crl().public_bytes(Encoding.DER))
    der[-5] ^= 0x01
    with pytest.raises(CertificateInvalid, match="CRL signature does not verify"):
        check_not_revoked(cert(9), crl=bytes(der), issuer=PCA.certificate, now=NOW)


def test_tampered_crl_entry():
    """An attacker edits the revoked serial 7 into 6 to free certificate 7: the signature breaks."""
    der = crl(revoked=[(7, NOW, None)]).public_bytes(Encoding.DER)
    entry = bytes.fromhex("020107")  # INTEGER 7 in the revokedCertificates entry
    assert der.count(entry) == 1
    edited = der.replace(entry, bytes.fromhex("020106"))
    with pytest.raises(CertificateInvalid, match="CRL signature does not verify"):
        check_not_revoked(cert(7), crl=edited, issuer=PCA.certificate, now=NOW)


def test_crl_signed_by_another_key_with_the_same_name():
    impostor = create_ca(common_name="vroot PCA", now=NOW - timedelta(days=1), key=ecc_key("impostor"))
    with pytest.raises(CertificateInvalid, match="CRL signature does not verify"):
        check_not_revoked(cert(7), crl=crl(revoked=[], ca=impostor), issuer=PCA.certificate, now=NOW)


def test_crl_of_another_issuer():
    other = create_ca(common_name="another CA", now=NOW - timedelta(days=1), key=ecc_key("another"))
    with pytest.raises(CertificateInvalid, match="CRL issued by 'CN=another CA,O=vroot'"):
        check_not_revoked(cert(7), crl=crl(ca=other), issuer=PCA.certificate, now=NOW)


def test_certificate_of_another_issuer():
    other = create_ca(common_name="another CA", now=NOW - timedelta(days=1), key=ecc_key("another"))
    with pytest.raises(CertificateInvalid, match="not by the CRL's issuer"):
        check_not_revoked(cert(9, ca=other), crl=crl(), issuer=PCA.certificate, now=NOW)


def test_stale_and_future_crl():
    with pytest.raises(CertificateInvalid, match="stale"):
        check_not_revoked(cert(9), crl=crl(), issuer=PCA.certificate, now=NOW + 2 * HOUR)
    with pytest.raises(CertificateInvalid, match="not yet valid"):
        check_not_revoked(cert(9), crl=crl(), issuer=PCA.certificate, now=NOW - HOUR)


ECDSA_SHA1 = "1.2.840.10045.4.1"


def _resign(crl: x509.CertificateRevocationList, *, drop_next_update: bool = False, sha1: bool = False):  # noqa: ANN202
    """Edit a CRL's DER where cryptography's builder will not go (no nextUpdate, an ECDSA-SHA1
    signature) and sign it again with the PCA key, so only the edit is wrong with it."""
    der = crl.public_bytes(Encoding.DER)
    start, end = _der.read_single(der, _der.SEQUENCE, "CRL")
    _, tbs_start, tbs_end = _der.read_tlv(der, start, end)
    parts = []
    pos = tbs_start
    while pos < tbs_end:
        tag, _, c_end = _der.read_tlv(der, pos, tbs_end)
        parts.append((tag, der[pos:c_end]))
        pos = c_end
    # version, signature, issuer, thisUpdate, nextUpdate, revokedCertificates, [0] extensions
    assert [t for t, _ in parts[:5]] == [_der.INTEGER, _der.SEQUENCE, _der.SEQUENCE, 0x17, 0x17]
    algorithm = parts[1][1]
    if sha1:
        algorithm = _der.sequence(_der.object_identifier(ECDSA_SHA1))
        parts[1] = (_der.SEQUENCE, algorithm)
    if drop_next_update:
        del parts[4]
    tbs = _der.sequence(*(p for _, p in parts))
    signature = PCA.private_key.sign(tbs, ec.ECDSA(hashes.SHA1() if sha1 else hashes.SHA256()))
    return _der.sequence(tbs, algorithm, _der.bit_string(signature))


def test_resigned_crl_without_edits_verifies():
    """The re-signing helper alone breaks nothing."""
    v = verify_crl(_resign(crl()), issuer=PCA.certificate, now=NOW)
    assert set(v.entries) == {7, 8}


def test_crl_without_next_update():
    with pytest.raises(CertificateInvalid, match="no nextUpdate"):
        verify_crl(_resign(crl(), drop_next_update=True), issuer=PCA.certificate, now=NOW)


def test_crl_signed_with_sha1():
    with pytest.raises(CertificateInvalid, match="hash sha1 is not allowed"):
        verify_crl(_resign(crl(), sha1=True), issuer=PCA.certificate, now=NOW)


def _raw_crl(*, critical_ext: bool = False, critical_entry: bool = False):  # noqa: ANN202
    b = x509.CertificateRevocationListBuilder().issuer_name(PCA.name).last_update(NOW).next_update(NOW + HOUR)
    if critical_ext:
        b = b.add_extension(x509.UnrecognizedExtension(ObjectIdentifier("1.2.3.4"), b"\x05\x00"), critical=True)
    entry = x509.RevokedCertificateBuilder().serial_number(7).revocation_date(NOW)
    if critical_entry:
        entry = entry.add_extension(x509.CertificateIssuer([x509.DNSName("elsewhere.example")]), critical=True)
    return b.add_revoked_certificate(entry.build()).sign(PCA.private_key, hashes.SHA256())


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"critical_ext": True}, "unknown critical extension 1.2.3.4"),
        ({"critical_entry": True}, "CRL entry 0x7: critical extension"),
    ],
)
def test_crl_that_cannot_be_trusted(kw, match):
    with pytest.raises(CertificateInvalid, match=match):
        check_not_revoked(cert(9), crl=_raw_crl(**kw), issuer=PCA.certificate, now=NOW)


def test_baseline_raw_crl_verifies():
    """The hand-built CRL of the previous test verifies when nothing is wrong with it."""
    with pytest.raises(Revoked):
        check_not_revoked(cert(7), crl=_raw_crl(), issuer=PCA.certificate, now=NOW)


def test_crl_bytes_that_do_not_decode():
    with pytest.raises(InvalidInput, match="not a DER X.509 CRL"):
        check_not_revoked(cert(9), crl=b"\x30\x00", issuer=PCA.certificate, now=NOW)


def test_unverified_crl_needs_its_issuer():
    with pytest.raises(InvalidInput, match="issuer"):
        check_not_revoked(cert(9), crl=crl(), now=NOW)


def test_verified_crl_with_a_different_issuer_given():
    other = create_ca(common_name="another CA", now=NOW - timedelta(days=1), key=ecc_key("another"))
    v = verify_crl(crl(), issuer=PCA.certificate, now=NOW)
    with pytest.raises(CertificateInvalid, match="another issuer"):
        check_not_revoked(cert(9), crl=v, issuer=other.certificate, now=NOW)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"revoked": [(7, NOW, None), (7, NOW, None)]}, "twice"),
        ({"revoked": [(7, NOW + HOUR, None)]}, "after now"),
        ({"revoked": [(0, NOW, None)]}, "serial"),
        ({"revoked": [(7, NOW)]}, "serial, revoked_at, reason"),
        ({"revoked": [(7, NOW, "no such reason")]}, "reason"),
        ({"next_update": NOW}, "next_update"),
        ({"next_update": NOW + timedelta(days=400)}, "366 days"),
        ({"crl_number": -1}, "crl_number"),
    ],
)
def test_bad_crl_arguments(kw, match):
    with pytest.raises(InvalidInput, match=match):
        crl(**kw)


def test_reason_by_name_or_rfc_value():
    v = verify_crl(crl(revoked=[(7, NOW, "key_compromise"), (8, NOW, "superseded")]), issuer=PCA.certificate, now=NOW)
    assert v.entries[7].reason is x509.ReasonFlags.key_compromise
    assert v.entries[8].reason is x509.ReasonFlags.superseded
