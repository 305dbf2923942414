"""The project's test manufacturer CA (DESIGN.md section 3): create, save, load.

For simulated hosts, vroot plays the TM manufacturer: a root CA (optionally an intermediate under
it) signs EK certificates with `issue_ek_certificate`. On real hardware the manufacturer's CA files
take its place as trust anchors of `verify_ek_certificate`.

Files written by `save_ca` (in one directory):
    ca-cert.pem   the CA certificate (PEM)
    ca-key.pem    its private key (PKCS#8 PEM, unencrypted, mode 0600, written atomically)
Caller must: keep the directory private; the key file holds a signing key in the clear.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from vroot._fs import atomic_write
from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.pki._x509 import check_now, extension, spki

CERT_FILE = "ca-cert.pem"
KEY_FILE = "ca-key.pem"

CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateAuthority:
    """A CA certificate and its private key; checked at construction to belong together and be a CA."""

    certificate: x509.Certificate
    private_key: CaKey = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise InvalidInput(f"CA key must be ECC or RSA, not {type(self.private_key).__name__}")
        if spki(self.private_key.public_key()) != spki(self.certificate.public_key()):
            raise InvalidInput("CA key does not belong to the CA certificate")
        bc = extension(self.certificate, x509.BasicConstraints.oid, "CA certificate")
        if bc is None or not bc.value.ca:
            raise InvalidInput("CA certificate lacks basicConstraints CA:TRUE")

    @property
    def name(self) -> x509.Name:
        return self.certificate.subject

    def __repr__(self) -> str:
        return f"CertificateAuthority({self.certificate.subject.rfc4514_string()!r})"


def create_ca(
    *,
    common_name: str,
    now: datetime,
    key: CaKey | None = None,
    validity_days: int = 3650,
    issuer: CertificateAuthority | None = None,
    path_length: int | None = None,
    organization: str = "vroot",
    serial: int | None = None,
) -> CertificateAuthority:
    """A root CA (self-signed) or, with `issuer`, an intermediate CA signed by it.

    basicConstraints CA:TRUE (critical, with `path_length`), keyUsage keyCertSign + cRLSign
    (critical), subjectKeyIdentifier, and authorityKeyIdentifier (the issuer's key, or its own).
    `key` defaults to a new ECC P-256 key and `serial` to a random one: this wrapper draws randomness.
    """
    check_now(now)
    if not common_name:
        raise InvalidInput("CA common name must not be empty")
    if validity_days <= 0:
        raise InvalidInput(f"validity_days must be positive, got {validity_days}")
    if path_length is not None and path_length < 0:
        raise InvalidInput(f"path_length must be >= 0, got {path_length}")
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    not_after = now + timedelta(days=validity_days)
    if issuer is not None:
        not_after = min(not_after, issuer.certificate.not_valid_after_utc)
    signer = key if issuer is None else issuer.private_key
    issuer_name = name if issuer is None else issuer.name
    issuer_public = key.public_key() if issuer is None else issuer.private_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(now)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)
    )
    try:
        cert = builder.sign(signer, hashes.SHA256())
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot build CA certificate: {exc}") from None
    return CertificateAuthority(certificate=cert, private_key=key)


def save_ca(ca: CertificateAuthority, directory: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Write `ca-key.pem` (0600) and `ca-cert.pem` into `directory` (made 0700 if missing).

    Refuses (`Conflict`) to replace an existing CA unless `overwrite`: a new key would orphan every
    certificate the old one issued. The key is written first, so a crash never leaves a certificate
    without its key.
    """
    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path, cert_path = d / KEY_FILE, d / CERT_FILE
    if not overwrite and (key_path.exists() or cert_path.exists()):
        raise Conflict(f"a CA already exists in {d}")
    key_pem = ca.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(key_path, key_pem, mode=0o600)
    atomic_write(cert_path, ca.certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"CA file {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidInput(f"CA file {path} is a directory") from None


def load_ca(directory: str | os.PathLike[str]) -> CertificateAuthority:
    """Read a CA written by `save_ca`: `NotFound` if a file is missing, `InvalidInput` if one does not
    read as PEM, the key is not ECC/RSA, the key does not match the certificate, or it is not a CA."""
    d = Path(directory)
    if not d.is_dir():
        raise NotFound(f"CA directory {d} does not exist")
    cert_pem, key_pem = _read(d / CERT_FILE), _read(d / KEY_FILE)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise InvalidInput(f"{d / CERT_FILE}: not a PEM certificate ({exc})") from None
    try:
        key: Any = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"{d / KEY_FILE}: not an unencrypted PEM private key ({exc})") from None
    return CertificateAuthority(certificate=cert, private_key=key)
