"""The controller's task-signing key on disk (MC-S1): `DIR/controller-key.pem` (0600) and
`DIR/controller-cert.pem`, issued by the operations CA. Made on first use, so server directories
from before the controller existed get one; a certificate that no longer verifies (expired, or
from another CA) is replaced with a new key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vroot._fs import atomic_write, make_private_dir
from vroot.controller._tasks import issue_controller_certificate, verify_controller_certificate
from vroot.errors import CertificateInvalid, InvalidInput
from vroot.pki import CertificateAuthority

__all__ = ["ControllerKeys", "load_or_create_controller_keys"]

KEY_FILE, CERT_FILE = "controller-key.pem", "controller-cert.pem"


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerKeys:
    """The controller's task-signing key and its certificate. Holds a private key: never log it."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


def load_or_create_controller_keys(
    directory: Path, *, ops: CertificateAuthority, now: datetime, serial: Callable[[], int]
) -> ControllerKeys:
    """The keys in `directory`, or new ones when missing or no longer valid under `ops`."""
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    if key_path.exists() and cert_path.exists():
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            verify_controller_certificate(cert, ops_ca=ops.certificate, now=now)
            if isinstance(key, ec.EllipticCurvePrivateKey) and key.public_key() == cert.public_key():
                return ControllerKeys(key=key, certificate=cert)
        except (ValueError, TypeError, CertificateInvalid, InvalidInput):
            pass  # replaced below
    make_private_dir(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_controller_certificate(ops, key.public_key(), now=now, serial=serial())
    atomic_write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), mode=0o600)  # fmt: skip
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return ControllerKeys(key=key, certificate=cert)
