"""The common part of every leaf certificate the PCA and the operations CA issue.

    subject                     CN=<agent id or server name>, O=vroot
    issuer                      the CA's subject
    validity                    now .. min(now + validity_days, the CA's own notAfter)
    basicConstraints (critical) CA:FALSE
    keyUsage (critical)         digitalSignature
    subjectKeyIdentifier        from the key;  authorityKeyIdentifier: the CA's key identifier
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from vroot.errors import CertificateInvalid, InvalidInput
from vroot.pki import CertificateAuthority
from vroot.pki._ek import check_serial
from vroot.pki._x509 import check_now, describe, extension

__all__ = ["check_agent_id", "leaf_builder", "sign", "subject_agent_id"]

# An agent id is the subject CN of its certificates: 1-64 characters (X.520 ub-common-name),
# starting with a letter or digit, then letters, digits and . _ : @ -
_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
_DIGITAL_SIGNATURE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def check_agent_id(agent_id: str, what: str = "agent id") -> str:
    if not isinstance(agent_id, str) or _AGENT_ID.fullmatch(agent_id) is None:
        raise InvalidInput(f"{what} must be 1-64 of A-Z a-z 0-9 . _ : @ - (starting alphanumeric), got {agent_id!r}")
    return agent_id


def _check_public_key(key: Any, what: str) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise InvalidInput(f"{what}: RSA key of {key.key_size} bits, want at least 2048")
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
            raise InvalidInput(f"{what}: ECC curve {key.curve.name} is not NIST P-256/384/521")
        return
    raise InvalidInput(f"{what}: expected an RSA or ECC public key, got {type(key).__name__}")


def leaf_builder(
    ca: CertificateAuthority,
    *,
    common_name: str,
    public_key: Any,
    now: datetime,
    serial: int,
    validity_days: int,
    what: str,
) -> x509.CertificateBuilder:
    """An unsigned end-entity certificate of the shape above; the caller adds its EKU and extensions."""
    if not isinstance(ca, CertificateAuthority):
        raise InvalidInput(f"issuer: expected a CertificateAuthority, got {type(ca).__name__}")
    check_now(now)
    _check_public_key(public_key, what)
    if not isinstance(validity_days, int) or validity_days <= 0:
        raise InvalidInput(f"validity_days must be a positive integer, got {validity_days!r}")
    ca_not_after = ca.certificate.not_valid_after_utc
    if not ca.certificate.not_valid_before_utc <= now < ca_not_after:
        raise InvalidInput(f"CA {describe(ca.certificate)} is not valid at {now.isoformat()}")
    ski = extension(ca.certificate, ExtensionOID.SUBJECT_KEY_IDENTIFIER, "CA certificate")
    aki = (
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)
        if ski is not None
        else x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key())
    )
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vroot"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.name)
        .public_key(public_key)
        .serial_number(check_serial(serial))
        .not_valid_before(now)
        .not_valid_after(min(now + timedelta(days=validity_days), ca_not_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_DIGITAL_SIGNATURE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki, critical=False)
    )


def sign(builder: x509.CertificateBuilder, ca: CertificateAuthority) -> x509.Certificate:
    try:
        return builder.sign(ca.private_key, hashes.SHA256())
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot build the certificate: {exc}") from None


def subject_agent_id(cert: x509.Certificate, what: str) -> str:
    """The single subject CN of a verified certificate, which must be a well-formed agent id."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or not isinstance(cns[0].value, str):
        raise CertificateInvalid(f"{what}: subject must have exactly one common name")
    try:
        return check_agent_id(cns[0].value)
    except InvalidInput as exc:
        raise CertificateInvalid(f"{what}: {exc}") from None


def check_digital_signature(cert: x509.Certificate, what: str) -> None:
    ku = extension(cert, ExtensionOID.KEY_USAGE, what)
    if ku is None or not ku.value.digital_signature:
        raise CertificateInvalid(f"{what}: keyUsage lacks digitalSignature")
