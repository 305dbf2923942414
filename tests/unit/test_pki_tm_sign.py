"""Certificates signed through a TPM2_Sign-shaped callback (vroot.pki.tm_signed_certificate;
TPM-NOTES.md appendix). Here the "TM" is a software key answering as TPM2_Sign would; the swtpm
version is tests/tpm/test_pki_tm_signing.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from vroot.errors import CertificateInvalid, InvalidInput, TpmStructureError
from vroot.pki import software_signer, tm_signed_certificate
from vroot.tpm2 import (
    AK_ATTRIBUTES,
    HashAlg,
    ObjectAttributes,
    SigAlg,
    Signature,
    parse_signature,
    public_area_from_key,
)

NOW = datetime(2025, 3, 1, tzinfo=UTC)
A = ObjectAttributes
SIGNING = A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.USERWITHAUTH | A.SIGN_ENCRYPT
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TM key")])


def self_signed_builder(public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(public_key)
        .serial_number(77)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )


@pytest.fixture(scope="module")
def ecc_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_tm_signed_self_signed_certificate_verifies(
    kind: str, ecc_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    key = ecc_key if kind == "ecc" else rsa_key
    area = public_area_from_key(key.public_key(), object_attributes=SIGNING)
    seen: list[bytes] = []

    def sign(digest: bytes) -> bytes:
        seen.append(digest)
        return software_signer(key)(digest)

    cert = tm_signed_certificate(self_signed_builder(key.public_key()), issuer_public=area, sign_digest=sign)
    cert.verify_directly_issued_by(cert)  # cryptography's own check agrees
    assert len(seen) == 1 and len(seen[0]) == 32
    want = "ecdsa-with-SHA256" if kind == "ecc" else "sha256WithRSAEncryption"
    assert cert.signature_algorithm_oid._name == want
    assert cert.serial_number == 77


def test_rsa_signature_is_the_raw_pkcs1_block(rsa_key: rsa.RSAPrivateKey) -> None:
    area = public_area_from_key(rsa_key.public_key(), object_attributes=SIGNING)
    cert = tm_signed_certificate(
        self_signed_builder(rsa_key.public_key()), issuer_public=area, sign_digest=software_signer(rsa_key)
    )
    assert len(cert.signature) == 256


def test_signature_by_another_key_fails_closed(ecc_key: ec.EllipticCurvePrivateKey) -> None:
    area = public_area_from_key(ecc_key.public_key(), object_attributes=SIGNING)
    other = software_signer(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CertificateInvalid, match="TM-signed certificate: signature does not verify"):
        tm_signed_certificate(
            self_signed_builder(ecc_key.public_key()), issuer_public=area, sign_digest=other
        )


def test_signature_of_another_algorithm_fails(
    ecc_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    area = public_area_from_key(ecc_key.public_key(), object_attributes=SIGNING)
    with pytest.raises(CertificateInvalid, match="RSASSA signature for an ECDSA certificate"):
        tm_signed_certificate(
            self_signed_builder(ecc_key.public_key()),
            issuer_public=area,
            sign_digest=software_signer(rsa_key),
        )
    rsa_area = public_area_from_key(rsa_key.public_key(), object_attributes=SIGNING)
    with pytest.raises(CertificateInvalid, match="ECDSA signature for an RSASSA certificate"):
        tm_signed_certificate(
            self_signed_builder(rsa_key.public_key()),
            issuer_public=rsa_area,
            sign_digest=software_signer(ecc_key),
        )


def test_signature_with_another_hash_fails(ecc_key: ec.EllipticCurvePrivateKey) -> None:
    area = public_area_from_key(ecc_key.public_key(), object_attributes=SIGNING)

    def sha384_labelled(digest: bytes) -> bytes:
        sig = parse_signature(software_signer(ecc_key)(digest))
        return Signature(SigAlg.ECDSA, HashAlg.SHA384, r=sig.r, s=sig.s).encode()

    with pytest.raises(CertificateInvalid, match="uses sha384"):
        tm_signed_certificate(
            self_signed_builder(ecc_key.public_key()), issuer_public=area, sign_digest=sha384_labelled
        )


def test_garbage_from_the_tm_is_invalid_input(ecc_key: ec.EllipticCurvePrivateKey) -> None:
    area = public_area_from_key(ecc_key.public_key(), object_attributes=SIGNING)
    with pytest.raises(TpmStructureError):
        tm_signed_certificate(
            self_signed_builder(ecc_key.public_key()),
            issuer_public=area,
            sign_digest=lambda d: b"\x00\x18\x00",
        )


def test_restricted_or_non_signing_issuer_is_refused(ecc_key: ec.EllipticCurvePrivateKey) -> None:
    for attrs in (AK_ATTRIBUTES, A.FIXEDTPM | A.DECRYPT | A.USERWITHAUTH):
        area = public_area_from_key(ecc_key.public_key(), object_attributes=attrs)
        with pytest.raises(InvalidInput, match="unrestricted signing key"):
            tm_signed_certificate(
                self_signed_builder(ecc_key.public_key()),
                issuer_public=area,
                sign_digest=software_signer(ecc_key),
            )


def test_incomplete_builder_is_invalid_input(ecc_key: ec.EllipticCurvePrivateKey) -> None:
    area = public_area_from_key(ecc_key.public_key(), object_attributes=SIGNING)
    with pytest.raises(InvalidInput, match="cannot build the certificate"):
        tm_signed_certificate(
            x509.CertificateBuilder().subject_name(NAME),
            issuer_public=area,
            sign_digest=software_signer(ecc_key),
        )
