"""Helpers shared by the server tests (importable as `server_helpers`)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def write_identity(directory: Path, name: str, cert_pem: bytes, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    """Write a client certificate and its key (0600) as PEM files; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    safe = name.replace(":", "_")
    cert_path, key_path = directory / f"{safe}.crt", directory / f"{safe}.key"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    key_path.chmod(0o600)
    return cert_path, key_path
