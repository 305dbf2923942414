"""Binding to a TM-resident decryption key (DP-1): data anyone can encrypt, only one TM can open.

The binding key is an ECC P-256 decryption key persisted at 0x81000002 (fixedTPM: its private part
never leaves that TM). `bind` is pure software and runs anywhere, e.g. at a relying party that has
only the key's PEM: ECIES with a fresh ephemeral P-256 key, Z = x(d_e·Q) (SP800-56A ECC CDH),
the AES-256-GCM key = KDFe-SHA256(Z, "VROOT BIND", x(ephemeral), x(binding key)) as a TPM derives
its own ECC secrets (part 1, 11.4.10.3), the blob's header as associated data. `unbind` has the TM
compute the same Z with TPM2_ECDH_ZGen.

Why ECC P-256 with ECDH ZGen rather than RSA-2048 with OAEP: a P-256 key is made in milliseconds
where an RSA-2048 key takes 0.1-0.7 s on swtpm (it is made once per vTM, and vTMs are made by the
hundred); P-256 gives 128-bit security, RSA-2048 about 112; the wrapped key is 65 bytes instead of
256; and it matches the project's other keys (SRK, EK, AK default to P-256). ZGen returns Z, not a
plaintext key, so the KDF and the AEAD stay in software, where the format can bind the header.

Proves (when `unbind` returns): the ciphertext and header are as `bind` made them for this TM's
binding key. Does not prove: who bound it (anyone with the PEM can). Caller must: get the PEM from
a source that vouches for it (e.g. certified by the TM's EK/AK, or read over an attested channel)
before trusting that only that TM can open what it binds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vroot.errors import InvalidInput, TmError, VerificationError
from vroot.guest import _aead
from vroot.guest._blob import NONCE_SIZE, BoundBlob, parse_bound_blob, plaintext
from vroot.guest._keys import BINDING_KEY, key_id, persistent_key, spki_der, tm_refused
from vroot.tpm2 import HashAlg, kdfe, parse_public

if TYPE_CHECKING:
    from vroot.tm.client import TmClient, TmObject

LABEL = b"VROOT BIND"
# Order of the P-256 group (SEC 2, 2.4.2).
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SCALAR_BYTES = 40  # 64 extra bits: the reduction mod n-1 is unbiased to 2^-64


def binding_public_key(tm: TmClient) -> bytes:
    """The PEM (SubjectPublicKeyInfo) of this TM's binding key, made and persisted if absent."""
    with persistent_key(tm, BINDING_KEY) as key:
        public = key.public
    return serialization.load_der_public_key(spki_der(public)).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_pem(public_pem: bytes) -> ec.EllipticCurvePublicKey:
    if not isinstance(public_pem, bytes | bytearray):
        raise InvalidInput(f"binding key must be PEM bytes, got {type(public_pem).__name__}")
    try:
        key = serialization.load_pem_public_key(bytes(public_pem))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"binding key: not a readable PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidInput(f"binding key: a {type(key).__name__}, want an ECC P-256 public key")
    return key


def _x(point: bytes) -> bytes:
    return point[1:33]


def bind(public_pem: bytes, data: bytes, *, rng: Callable[[int], bytes]) -> bytes:
    """Encrypt `data` (1 byte to 1 MiB) so that only the TM holding the key of `public_pem` opens it.

    Pure: no TM, no clock; `rng(n) -> bytes` (e.g. `os.urandom`) gives the ephemeral key and nonce.
    Returns the encoded bound blob.
    """
    key = _load_pem(public_pem)
    data = plaintext(data, "bind")
    scalar = int.from_bytes(_aead.draw(rng, _SCALAR_BYTES, "ephemeral key"), "big") % (_P256_N - 1) + 1
    ephemeral = ec.derive_private_key(scalar, ec.SECP256R1())
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    static = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    aes_key = kdfe(HashAlg.SHA256, ephemeral.exchange(ec.ECDH(), key), LABEL, _x(point), _x(static), 256)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = BoundBlob(
        key_id=hashlib.sha256(der).digest(),
        ephemeral=point,
        nonce=_aead.draw(rng, NONCE_SIZE, "nonce"),
        ciphertext=bytes(16),  # the ciphertext is not in the AAD
    )
    return replace(head, ciphertext=_aead.encrypt(aes_key, head.nonce, data, head.associated_data())).encode()


def unbind(tm: TmClient, blob: BoundBlob | bytes) -> bytes:
    """The data of a blob from `bind`, if this TM holds its binding key.

    Raises `BlobFormatError` (an `InvalidInput`) for bytes that are not a bound blob, and
    `VerificationError` for a blob bound to another TM's key or altered in any byte. Never
    returns plaintext that did not authenticate.
    """
    if not isinstance(blob, BoundBlob):
        blob = parse_bound_blob(blob)
    ephemeral_key(blob)

    def same_key(key: TmObject) -> None:
        mine = key_id(key.public)
        if mine != blob.key_id:
            raise VerificationError(
                f"bound to the binding key {blob.key_id.hex()[:16]}…, but this TM's binding key "
                f"(0x{BINDING_KEY.handle:08x}) is {mine.hex()[:16]}…: the data was bound for another "
                "TM (or altered, or this TM's owner hierarchy was cleared)"
            )

    with persistent_key(tm, BINDING_KEY, want=same_key) as key:
        static = key.public
        try:
            z = tm.ecdh_zgen(key, blob.ephemeral)
        except TmError as exc:
            if tm_refused(exc):
                raise VerificationError(f"bound blob: the TM refused the ephemeral key ({exc})") from exc
            raise
    return open_bound(blob, z=z, binding_key=parse_public(static).public_key())


def ephemeral_key(blob: BoundBlob) -> ec.EllipticCurvePublicKey:
    """The blob's ephemeral public key; `VerificationError` if it is not a point of P-256."""
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), blob.ephemeral)
    except ValueError:
        raise VerificationError(
            "bound blob: the ephemeral key is not a P-256 point: the blob was altered"
        ) from None


def open_bound(blob: BoundBlob, *, z: bytes, binding_key: ec.EllipticCurvePublicKey) -> bytes:
    """Pure second half of `unbind`: the data, from Z = x(d·ephemeral) that the key's holder computed.

    Proves: the ciphertext and header are as `bind` made them with this Z. Raises `VerificationError`.
    """
    z = bytes(z).rjust(32, b"\0")  # a TPM2B_ECC_PARAMETER may come without its leading zeros
    static_x = binding_key.public_numbers().x.to_bytes(32, "big")
    aes_key = kdfe(HashAlg.SHA256, z, LABEL, _x(blob.ephemeral), static_x, 256)
    return _aead.decrypt(aes_key, blob.nonce, blob.ciphertext, blob.associated_data(), what="bound blob")
