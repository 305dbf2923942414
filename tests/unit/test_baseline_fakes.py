"""Helpers shared by the baseline tests: simulated boots, IMA entries made by hand, signing keys."""

from __future__ import annotations

import functools
import struct
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from test_measure_chain import SoftwarePcrs

from vroot.baseline import AppraisalInput
from vroot.eventlog import ImaEntry, parse_ima_log, parse_tcg_log, verify_replay
from vroot.measure import HOST_CHAIN, measured_boot, write_images
from vroot.tpm2 import HashAlg

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
BANKS = (HashAlg.SHA1, HashAlg.SHA256)
BOOT_PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)


def boot_host(root: Path, *, flavour_files: dict[str, bytes] | None = None):  # noqa: ANN201
    """(SoftwarePcrs, BootRecord) of the host chain booted from images under `root`."""
    images = write_images(root, HOST_CHAIN)
    for name, content in (flavour_files or {}).items():
        (images.path / name).write_bytes(content)
    tpm = SoftwarePcrs(BANKS)
    return tpm, measured_boot(tpm, HOST_CHAIN, images)


def evidence_of(tpm: SoftwarePcrs, record, *, time: datetime = NOW, pcrs=BOOT_PCRS + (10,)) -> AppraisalInput:  # noqa: ANN001
    """What verification proves of a simulated boot: its PCRs (as a quote would), the replayed
    boot events, the IMA list."""
    values = tpm.pcr_read()
    quoted = {alg: {i: values[alg][i] for i in pcrs} for alg in BANKS}
    boot = {alg: {i: v for i, v in quoted[alg].items() if i != 10} for alg in BANKS}
    replayed = verify_replay(parse_tcg_log(record.tcg_log), claimed=boot)
    return AppraisalInput.from_replayed_log(replayed, pcrs=quoted, time=time,
                                            ima_entries=parse_ima_log(record.ima_log).entries)  # fmt: skip


def ima_entry(path: str, content: bytes, *, signature: bytes | None = None, alg: str = "sha256",
              violation: bool = False, pcr: int = 10) -> ImaEntry:  # fmt: skip
    """One parsed `ima-ng` (or `ima-sig` when `signature` is given) entry, made as the kernel lays it out."""
    digest = hashlib_digest(alg, content)
    fields = [alg.encode() + b":\x00" + digest, path.encode() + b"\x00"]
    name = b"ima-ng"
    if signature is not None:
        fields.append(signature)
        name = b"ima-sig"
    data = b"".join(struct.pack("<I", len(f)) + f for f in fields)
    template_hash = bytes(20) if violation else HashAlg.SHA1.digest(data)
    raw = struct.pack("<I20sI", pcr, template_hash, len(name)) + name + struct.pack("<I", len(data)) + data
    (entry,) = parse_ima_log(raw).entries
    return entry


def hashlib_digest(alg: str, content: bytes) -> bytes:
    return HashAlg.from_bank(alg).digest(content)


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key(curve: ec.EllipticCurve | None = None, seed: int = 0x1A5) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(seed, curve or ec.SECP256R1())


def public_pem(key) -> str:  # noqa: ANN001
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def ima_signature(key, digest: bytes, *, key_id: bytes, hash_algo: int = 4, version: int = 2,
                  sig_type: int = 3, size_delta: int = 0) -> bytes:  # noqa: ANN001  # fmt: skip
    """An IMA v2 signature header (saying `hash_algo`, 4 = SHA-256) and a signature of `digest` by `key`."""
    prehashed = utils.Prehashed({20: hashes.SHA1(), 32: hashes.SHA256(), 64: hashes.SHA512()}[len(digest)])
    if isinstance(key, rsa.RSAPrivateKey):
        raw = key.sign(digest, padding.PKCS1v15(), prehashed)
    else:
        raw = key.sign(digest, ec.ECDSA(prehashed))
    return struct.pack(">BBB4sH", sig_type, version, hash_algo, key_id, len(raw) + size_delta) + raw
