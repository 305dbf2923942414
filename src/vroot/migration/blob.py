"""The migration blob, pure (MIG-6, VMM-S4): a header, the vTM state under AES-256-GCM, and the
AES key wrapped as a TPM2 import blob to the destination's target key.

    magic "VRMIG\\x00\\x00\\x01"
    u32 len ‖ header          canonical JSON (sorted keys, no spaces), authenticated as GCM AAD
    u32 len ‖ key_public      TPM2B_PUBLIC of the sealed data object holding the AES key
    u32 len ‖ key_enc_key     TPM2B_DATA   }
    u32 len ‖ key_duplicate   TPM2B_PRIVATE} TPM2_Import's inputs: only the target's TM can load it
    u32 len ‖ key_seed        TPM2B_ENCRYPTED_SECRET
    12 bytes                  GCM nonce
    u32 len ‖ ciphertext      AES-256-GCM(state) ‖ tag

The state (plaintext, never written anywhere) is u32 len ‖ permanent blob ‖ u32 len ‖ volatile blob,
as swtpm's PTM_GET_STATEBLOB gives them; `state_digest` in the header is its SHA-256.

`parse_blob` proves nothing: it returns an `UnverifiedBlob`. `open_state(blob, key=...)` proves the
header and ciphertext are what the holder of the AES key sealed (GCM); the caller must still check
the header against its own migration record and obtain the key only from its TM (TPM2_Import).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vroot.errors import InvalidInput, MigrationBlobTampered

__all__ = [
    "BlobHeader",
    "UnverifiedBlob",
    "build_blob",
    "decode_state",
    "encode_state",
    "open_state",
    "parse_blob",
]

MAGIC = b"VRMIG\x00\x00\x01"
VERSION = 1
MAX_PART = 32 * 1024 * 1024
_HEADER_MAX = 64 * 1024


def encode_state(permanent: bytes, volatile: bytes) -> bytes:
    return struct.pack(">I", len(permanent)) + permanent + struct.pack(">I", len(volatile)) + volatile


def decode_state(data: bytes) -> tuple[bytes, bytes]:
    parts, off = [], 0
    for what in ("permanent", "volatile"):
        if len(data) < off + 4:
            raise InvalidInput(f"vTM state: truncated before the {what} blob")
        (n,) = struct.unpack_from(">I", data, off)
        if len(data) < off + 4 + n:
            raise InvalidInput(f"vTM state: truncated {what} blob")
        parts.append(data[off + 4 : off + 4 + n])
        off += 4 + n
    if off != len(data) or not parts[0]:
        raise InvalidInput("vTM state: trailing bytes or an empty permanent blob")
    return parts[0], parts[1]


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobHeader:
    """What the blob says about itself (authenticated by GCM, not encrypted; nothing secret)."""

    migration_id: str
    vm_uuid: str
    kind: str  # vEK algorithm
    vek_name: bytes
    state_digest: bytes
    source_host: str
    destination_host: str
    target_name: bytes
    created_at: int  # Unix time (epoch of the export)
    expires_at: int
    vpcrs: dict[int, bytes] = field(default_factory=dict)  # sha256 bank at the lock
    version: int = VERSION

    def encode(self) -> bytes:
        doc = {
            "version": self.version,
            "migration_id": self.migration_id,
            "vm_uuid": self.vm_uuid,
            "kind": self.kind,
            "vek_name": self.vek_name.hex(),
            "state_digest": self.state_digest.hex(),
            "source_host": self.source_host,
            "destination_host": self.destination_host,
            "target_name": self.target_name.hex(),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "vpcrs": {"sha256": {str(i): v.hex() for i, v in sorted(self.vpcrs.items())}},
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, data: bytes) -> BlobHeader:
        try:
            doc = json.loads(data.decode())
            if doc["version"] != VERSION:
                raise InvalidInput(f"migration blob version {doc['version']} is not {VERSION}")
            return cls(
                version=doc["version"],
                migration_id=str(doc["migration_id"]),
                vm_uuid=str(doc["vm_uuid"]),
                kind=str(doc["kind"]),
                vek_name=bytes.fromhex(doc["vek_name"]),
                state_digest=bytes.fromhex(doc["state_digest"]),
                source_host=str(doc["source_host"]),
                destination_host=str(doc["destination_host"]),
                target_name=bytes.fromhex(doc["target_name"]),
                created_at=int(doc["created_at"]),
                expires_at=int(doc["expires_at"]),
                vpcrs={int(i): bytes.fromhex(v) for i, v in doc["vpcrs"]["sha256"].items()},
            )
        except InvalidInput:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"migration blob header does not decode: {exc}") from None

    def to_json(self) -> dict:
        return json.loads(self.encode())


@dataclass(frozen=True, slots=True, kw_only=True)
class UnverifiedBlob:
    """A parsed migration blob: nothing checked yet."""

    header_bytes: bytes
    header: BlobHeader
    key_public: bytes
    key_encryption_key: bytes
    key_duplicate: bytes
    key_seed: bytes
    iv: bytes
    ciphertext: bytes = field(repr=False)


def build_blob(
    header: BlobHeader,
    state: bytes,
    *,
    aes_key: bytes,
    iv: bytes,
    key_public: bytes,
    key_encryption_key: bytes,
    key_duplicate: bytes,
    key_seed: bytes,
) -> bytes:
    """Seal `state` under `aes_key` with the header as AAD and assemble the blob (MIG-6).

    The caller must: draw `aes_key` and `iv` fresh; wrap `aes_key` to the verified target key (the
    `key_*` parts) and forget it; check `header.state_digest` is SHA-256 of `state`.
    """
    if len(aes_key) != 32 or len(iv) != 12:
        raise InvalidInput("AES-256-GCM needs a 32-byte key and a 12-byte nonce")
    if hashlib.sha256(state).digest() != header.state_digest:
        raise InvalidInput("header state_digest is not SHA-256 of the state")
    hb = header.encode()
    ct = AESGCM(aes_key).encrypt(iv, state, hb)
    out = [MAGIC]
    for part in (hb, key_public, key_encryption_key, key_duplicate, key_seed):
        out.append(struct.pack(">I", len(part)) + bytes(part))
    out.append(iv)
    out.append(struct.pack(">I", len(ct)) + ct)
    return b"".join(out)


def parse_blob(data: bytes) -> UnverifiedBlob:
    """Split a blob into its parts (bounded; `InvalidInput` for anything that does not decode)."""
    data = bytes(data)
    if not data.startswith(MAGIC):
        raise InvalidInput("not a vroot migration blob (bad magic)")
    off = len(MAGIC)

    def part(what: str, limit: int) -> bytes:
        nonlocal off
        if len(data) < off + 4:
            raise InvalidInput(f"migration blob truncated before {what} (offset {off})")
        (n,) = struct.unpack_from(">I", data, off)
        if n > limit or len(data) < off + 4 + n:
            raise InvalidInput(f"migration blob: bad {what} length {n} at offset {off}")
        out = data[off + 4 : off + 4 + n]
        off += 4 + n
        return out

    hb = part("header", _HEADER_MAX)
    kp, kek, kdup, kseed = (
        part(w, 4096) for w in ("key public", "key encryption key", "key duplicate", "key seed")
    )
    if len(data) < off + 12:
        raise InvalidInput("migration blob truncated in the GCM nonce")
    iv = data[off : off + 12]
    off += 12
    ct = part("ciphertext", MAX_PART)
    if off != len(data):
        raise InvalidInput(f"migration blob: {len(data) - off} trailing bytes")
    return UnverifiedBlob(
        header_bytes=hb,
        header=BlobHeader.parse(hb),
        key_public=kp,
        key_encryption_key=kek,
        key_duplicate=kdup,
        key_seed=kseed,
        iv=iv,
        ciphertext=ct,
    )


def open_state(blob: UnverifiedBlob, *, aes_key: bytes) -> bytes:
    """The state, decrypted and authenticated together with the header bytes (GCM AAD).

    Proves: header and ciphertext are unchanged since a holder of `aes_key` sealed them, and the state
    hashes to `header.state_digest`. Raises `MigrationBlobTampered` otherwise.
    """
    try:
        state = AESGCM(aes_key).decrypt(blob.iv, blob.ciphertext, blob.header_bytes)
    except (InvalidTag, ValueError):
        raise MigrationBlobTampered(
            f"migration {blob.header.migration_id}: authenticated decryption failed (header or state altered)"
        ) from None
    if hashlib.sha256(state).digest() != blob.header.state_digest:
        raise MigrationBlobTampered(
            f"migration {blob.header.migration_id}: state digest differs from the header"
        )
    return state
