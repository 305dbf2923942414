"""IMA file signatures (the `sig` field of `ima-sig` entries): keys, key ids, verification.

Format (Linux `struct signature_v2_hdr`, ima-evm-utils `imaevm.h`), big-endian:

    type u8 = 3 (EVM_IMA_XATTR_DIGSIG) | version u8 = 2 | hash_algo u8 (enum hash_algo) |
    keyid [4] | sig_size u16 | signature [sig_size]

The signature is over the file digest (computed with `hash_algo`, which is also the algorithm of
the entry's `d-ng` digest): RSA PKCS#1 v1.5 over the DigestInfo, or ECDSA (DER `r, s`) over the
digest; any curve `cryptography` knows, secp256k1 included.

Key id: the last 4 bytes of the SHA-1 of the key's *subjectPublicKey bit string contents* (the
PKCS#1 RSAPublicKey DER for RSA, the uncompressed X9.62 point for EC), as the kernel's X.509
subject key identifier and ima-evm-utils compute it. It is not the hash of the whole DER
SubjectPublicKeyInfo: keylime's samples (`ima_keys/rsa2048pub.pem`, key id f3452d23;
`secp256k1.pub.pem`, 531f4025) agree only with the bit-string rule. A PEM certificate with a
subject key identifier extension uses that extension's last 4 bytes, as the kernel does.

Proves (`verify_ima_signature` returning): the holder of an accepted key signed this file digest.
Does not prove: that the file is the one at the logged path (IMA signatures do not cover the
path), or that the key should be trusted for this path; the policy says which keys count.
Signature versions other than 2 (v3 signs fs-verity digests, type 5 is an EVM signature over
metadata) cannot be checked from the log and are refused (fail closed).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from vroot.errors import InvalidInput, VerificationError

__all__ = [
    "ImaKeyUnknown",
    "ImaSignatureInvalid",
    "ImaSigningKey",
    "ima_key_id",
    "verify_ima_signature",
]

EVM_IMA_XATTR_DIGSIG = 3
MAX_PEM = 64 * 1024
_HEADER = struct.Struct(">BBB4sH")
# enum hash_algo (include/uapi/linux/hash_info.h) -> (cryptography hash, IMA digest names)
_HASH_ALGOS: dict[int, tuple[type[hashes.HashAlgorithm], tuple[str, ...]]] = {
    2: (hashes.SHA1, ("sha1",)),
    4: (hashes.SHA256, ("sha256",)),
    5: (hashes.SHA384, ("sha384",)),
    6: (hashes.SHA512, ("sha512",)),
    7: (hashes.SHA224, ("sha224",)),
    17: (hashes.SM3, ("sm3", "sm3-256", "sm3_256")),
    20: (hashes.SHA3_256, ("sha3-256",)),
    21: (hashes.SHA3_384, ("sha3-384",)),
    22: (hashes.SHA3_512, ("sha3-512",)),
}


class ImaSignatureInvalid(VerificationError):
    """An IMA signature that is malformed, of an unsupported kind, or does not verify."""


class ImaKeyUnknown(ImaSignatureInvalid):
    """An IMA signature made by a key id that no accepted key has."""

    def __init__(self, message: str, *, key_id: bytes) -> None:
        self.key_id = key_id
        super().__init__(message)


def ima_key_id(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    """The 4-byte IMA key id of a public key (see the module docstring)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        raw = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        raw = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    else:
        raise InvalidInput(f"IMA signing keys are RSA or ECDSA keys, not {type(public_key).__name__}")
    return hashlib.sha1(raw).digest()[-4:]


@dataclass(frozen=True, slots=True, kw_only=True)
class ImaSigningKey:
    """A key whose IMA signatures a policy accepts: `pem` (a public key or an X.509 certificate),
    its 4-byte `key_id` (computed from the key when not given) and an optional `name`."""

    pem: str
    key_id: bytes = b""
    name: str = ""
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.pem, str) or not self.pem or len(self.pem) > MAX_PEM:
            raise InvalidInput(f"an IMA signing key is PEM text of at most {MAX_PEM} characters")
        if not isinstance(self.name, str) or len(self.name) > 256:
            raise InvalidInput("an IMA signing key name is text of at most 256 characters")
        key, skid = _load_pem(self.pem.encode("utf-8", "surrogateescape"))
        if not isinstance(self.key_id, bytes) or len(self.key_id) not in (0, 4):
            raise InvalidInput("an IMA key id is 4 bytes")
        object.__setattr__(self, "public_key", key)
        if not self.key_id:
            object.__setattr__(self, "key_id", skid[-4:] if skid else ima_key_id(key))


def _load_pem(data: bytes) -> tuple[rsa.RSAPublicKey | ec.EllipticCurvePublicKey, bytes | None]:
    """(public key, subject key identifier or None) of a PEM public key or certificate."""
    skid = None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            cert = x509.load_pem_x509_certificate(data)
            key = cert.public_key()
            try:
                skid = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            except x509.ExtensionNotFound:
                skid = None
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"IMA signing key: not a PEM public key or certificate ({exc})") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise InvalidInput(f"IMA signing keys are RSA or ECDSA keys, not {type(key).__name__}")
    return key, skid


def keys_by_id(keys: Iterable[ImaSigningKey]) -> Mapping[bytes, tuple[ImaSigningKey, ...]]:
    """Accepted keys grouped by key id (two keys may share an id; each is tried)."""
    out: dict[bytes, list[ImaSigningKey]] = {}
    for key in keys:
        out.setdefault(key.key_id, []).append(key)
    return {k: tuple(v) for k, v in out.items()}


def verify_ima_signature(
    signature: bytes,
    *,
    file_digest: bytes,
    digest_alg: str | None,
    keys: Mapping[bytes, tuple[ImaSigningKey, ...]],
) -> ImaSigningKey:
    """The accepted key whose signature `signature` (an `ima-sig` sig field) is over `file_digest`.

    Raises `ImaKeyUnknown` when no key of `keys` (from `keys_by_id`) has the signature's key id,
    and `ImaSignatureInvalid` for any other failure: a malformed header, a size that does not
    match, a version or hash algorithm vroot cannot check, a digest of another algorithm than the
    signature's, or a signature that does not verify under any key with that id.
    """
    if len(signature) < _HEADER.size:
        raise ImaSignatureInvalid(f"signature of {len(signature)} bytes is shorter than its header")
    sig_type, version, hash_algo, key_id, size = _HEADER.unpack_from(signature)
    if sig_type != EVM_IMA_XATTR_DIGSIG:
        raise ImaSignatureInvalid(f"signature type {sig_type} is not an IMA digital signature (3)")
    if version != 2:
        raise ImaSignatureInvalid(f"signature version {version}: only version 2 can be checked from the log")
    if size != len(signature) - _HEADER.size:
        raise ImaSignatureInvalid(f"signature size field {size}, but {len(signature) - _HEADER.size} bytes follow")
    known = _HASH_ALGOS.get(hash_algo)
    if known is None:
        raise ImaSignatureInvalid(f"signature hash algorithm {hash_algo} is not supported")
    hash_cls, names = known
    if digest_alg not in names:
        raise ImaSignatureInvalid(f"signature hash {names[0]} does not match the logged {digest_alg} digest")
    candidates = keys.get(key_id)
    if not candidates:
        raise ImaKeyUnknown(f"signed by key id {key_id.hex()}, which the policy does not accept", key_id=key_id)
    hash_alg = hash_cls()
    if len(file_digest) != hash_alg.digest_size:
        raise ImaSignatureInvalid(f"a {names[0]} digest is {hash_alg.digest_size} bytes")
    raw = signature[_HEADER.size :]
    for candidate in candidates:
        key = candidate.public_key
        try:
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(raw, file_digest, padding.PKCS1v15(), utils.Prehashed(hash_alg))
            else:
                assert isinstance(key, ec.EllipticCurvePublicKey)
                key.verify(raw, file_digest, ec.ECDSA(utils.Prehashed(hash_alg)))
        except (InvalidSignature, ValueError, UnsupportedAlgorithm):
            continue
        return candidate
    raise ImaSignatureInvalid(f"signature by key id {key_id.hex()} does not verify over the file digest")
