"""The server's key material (DESIGN.md section 3; `vroot server init DIR`), in one directory:

    DIR/pca/ca-cert.pem, ca-key.pem    the PCA: issues AK and vAK certificates (and their CRL)
    DIR/ops/ca-cert.pem, ca-key.pem    the operations CA: TLS certificates of agents and the server
    DIR/result-signing-key.pem         ECDSA P-256 key (PKCS#8 PEM, 0600) signing attestation results
    DIR/result-signing-key.pub.pem     its public key, for relying parties (0644)

Caller must: keep DIR private. The private keys are unencrypted files; `load_pca` refuses a key
file that group or others can read or write.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vroot._fs import atomic_write, make_private_dir
from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.pki import CertificateAuthority, create_ca, load_ca, save_ca
from vroot.pki._ca import KEY_FILE

__all__ = ["OPS_DIR", "PCA_DIR", "RESULT_KEY_FILE", "RESULT_PUBLIC_FILE", "PcaKeys", "init_pca", "load_pca"]

PCA_DIR = "pca"
OPS_DIR = "ops"
RESULT_KEY_FILE = "result-signing-key.pem"
RESULT_PUBLIC_FILE = "result-signing-key.pub.pem"
PCA_NAME = "vroot PCA"
OPS_NAME = "vroot operations CA"


@dataclass(frozen=True, slots=True, kw_only=True)
class PcaKeys:
    """The PCA, the operations CA and the result-signing key, loaded. Holds private keys: never log it."""

    pca: CertificateAuthority
    ops: CertificateAuthority
    result_signing_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.result_signing_key, ec.EllipticCurvePrivateKey) or not isinstance(
            self.result_signing_key.curve, ec.SECP256R1
        ):
            raise InvalidInput("the result-signing key must be an ECDSA P-256 private key")
        if self.pca.certificate == self.ops.certificate:
            raise InvalidInput("the PCA and the operations CA must be different CAs")

    @property
    def result_public_pem(self) -> bytes:
        return self.result_signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def init_pca(
    directory: str | os.PathLike[str],
    *,
    now: datetime,
    validity_days: int = 3650,
) -> PcaKeys:
    """Create the PCA, the operations CA and the result-signing key in `directory` (made 0700).

    `Conflict` if any of them exists already (new keys would orphan every certificate and signed
    result made with the old). Draws fresh keys (this wrapper is not pure). If writing fails part-way,
    the files written so far are removed.
    """
    d = Path(directory)
    targets = [d / PCA_DIR, d / OPS_DIR, d / RESULT_KEY_FILE, d / RESULT_PUBLIC_FILE]
    existing = [p.name for p in targets if p.exists()]
    if existing:
        raise Conflict(f"{d} already holds PCA key material ({', '.join(existing)})")
    keys = PcaKeys(
        pca=create_ca(common_name=PCA_NAME, now=now, validity_days=validity_days),
        ops=create_ca(common_name=OPS_NAME, now=now, validity_days=validity_days),
        result_signing_key=ec.generate_private_key(ec.SECP256R1()),
    )
    make_private_dir(d)
    written: list[Path] = []
    try:
        for sub, ca in ((PCA_DIR, keys.pca), (OPS_DIR, keys.ops)):
            written.append(d / sub)
            save_ca(ca, d / sub)
        key_pem = keys.result_signing_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        written.append(d / RESULT_KEY_FILE)
        atomic_write(d / RESULT_KEY_FILE, key_pem, mode=0o600)
        written.append(d / RESULT_PUBLIC_FILE)
        atomic_write(d / RESULT_PUBLIC_FILE, keys.result_public_pem, mode=0o644)
    except BaseException:
        for path in reversed(written):
            if path.is_dir():
                for child in path.iterdir():
                    child.unlink(missing_ok=True)
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
        raise
    return keys


def _check_private(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise NotFound(f"key file {path} does not exist") from None
    if not stat.S_ISREG(mode):
        raise InvalidInput(f"key file {path} is not a regular file")
    if mode & 0o077:
        raise InvalidInput(f"key file {path} is accessible by group or others (mode {mode & 0o777:o}); chmod 600 it")


def load_pca(directory: str | os.PathLike[str]) -> PcaKeys:
    """Read what `init_pca` wrote. `NotFound` for a missing file, `InvalidInput` for one that does not
    read, a key that does not match its certificate, or a private key file others can access."""
    d = Path(directory)
    if not d.is_dir():
        raise NotFound(f"PCA directory {d} does not exist")
    for path in (d / PCA_DIR / KEY_FILE, d / OPS_DIR / KEY_FILE, d / RESULT_KEY_FILE):
        _check_private(path)
    pca, ops = load_ca(d / PCA_DIR), load_ca(d / OPS_DIR)
    try:
        key: Any = serialization.load_pem_private_key((d / RESULT_KEY_FILE).read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"{d / RESULT_KEY_FILE}: not an unencrypted PEM private key ({exc})") from None
    return PcaKeys(pca=pca, ops=ops, result_signing_key=key)
