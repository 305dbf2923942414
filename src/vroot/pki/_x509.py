"""Reading X.509 certificates and checking one certificate's own properties, failing closed.

Each check raises `CertificateInvalid` with one reason naming the certificate; bytes that are not a
certificate raise `InvalidInput`. Path building lives in `_chain`, profile checks in `_ek`/`_vek`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtensionOID

from vroot.errors import CertificateInvalid, InvalidInput

MAX_CERTIFICATE_BYTES = 64 * 1024
# Extensions whose criticality vroot honours (RFC 5280 4.2: an unknown critical extension must fail).
UNDERSTOOD_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.CERTIFICATE_POLICIES,
    }
)
# Signature hashes accepted on a certificate (no SHA-1, no MD5).
ALLOWED_SIGNATURE_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


def load_certificate(cert: x509.Certificate | bytes, what: str) -> x509.Certificate:
    """`cert` as a `cryptography` certificate: already one, or DER bytes (InvalidInput otherwise)."""
    if isinstance(cert, x509.Certificate):
        return cert
    if not isinstance(cert, bytes | bytearray | memoryview):
        raise InvalidInput(f"{what}: expected a certificate or DER bytes, got {type(cert).__name__}")
    data = bytes(cert)
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise InvalidInput(f"{what}: {len(data)} bytes, more than {MAX_CERTIFICATE_BYTES}")
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise InvalidInput(f"{what}: not a DER X.509 certificate ({exc})") from None


def check_now(now: datetime) -> datetime:
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInput("now must be a timezone-aware datetime")
    return now


def describe(cert: x509.Certificate) -> str:
    """A short name for messages: the subject, or the serial for an empty subject (EK certificates)."""
    subject = cert.subject.rfc4514_string()
    return f"'{subject}'" if subject else f"serial 0x{cert.serial_number:x}"


def extensions(cert: x509.Certificate, what: str) -> x509.Extensions:
    """The extensions, where malformed or duplicate ones are a `CertificateInvalid`."""
    try:
        return cert.extensions
    except ValueError as exc:
        raise CertificateInvalid(f"{what}: unreadable extensions ({exc})") from None


def extension(cert: x509.Certificate, oid: x509.ObjectIdentifier, what: str) -> x509.Extension[Any] | None:
    try:
        return extensions(cert, what).get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def check_validity(cert: x509.Certificate, now: datetime, what: str) -> None:
    before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < before:
        raise CertificateInvalid(
            f"{what}: not yet valid at {now.isoformat()} (valid from {before.isoformat()})"
        )
    if now > after:
        raise CertificateInvalid(f"{what}: expired at {after.isoformat()} (checked at {now.isoformat()})")


def check_critical(cert: x509.Certificate, what: str) -> None:
    for ext in extensions(cert, what):
        if ext.critical and ext.oid not in UNDERSTOOD_CRITICAL:
            raise CertificateInvalid(f"{what}: unknown critical extension {ext.oid.dotted_string}")


def check_signature_hash(cert: x509.Certificate, what: str) -> hashes.HashAlgorithm:
    try:
        h = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        raise CertificateInvalid(f"{what}: unsupported signature algorithm") from None
    if not isinstance(h, ALLOWED_SIGNATURE_HASHES):
        name = "none" if h is None else h.name
        raise CertificateInvalid(f"{what}: signature hash {name} is not allowed (SHA-256/384/512)")
    return h


def check_signed_by(cert: x509.Certificate, key: Any, what: str) -> None:
    """The certificate's signature verifies under `key` (RSA PKCS#1 v1.5 or ECDSA, as its algorithm says)."""
    h = check_signature_hash(cert, what)
    params = cert.signature_algorithm_parameters
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(params, ec.ECDSA):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(h))
        elif isinstance(key, rsa.RSAPublicKey) and isinstance(params, padding.PKCS1v15):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), h)
        else:
            raise CertificateInvalid(
                f"{what}: signature algorithm {cert.signature_algorithm_oid.dotted_string} "
                f"does not fit a {type(key).__name__} signer"
            )
    except InvalidSignature:
        raise CertificateInvalid(f"{what}: signature does not verify") from None


def spki(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_same_key(cert: x509.Certificate, want: Any, what: str) -> None:
    """The certified public key equals `want` (a `cryptography` public key), compared as SubjectPublicKeyInfo."""
    try:
        got = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateInvalid(f"{what}: unreadable public key ({exc})") from None
    if spki(got) != spki(want):
        raise CertificateInvalid(f"{what}: certifies another public key than the one expected")
