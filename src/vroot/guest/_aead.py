"""AES-256-GCM, the envelope of large sealed data and of bound data; and drawing from an `rng`.

Pure: the key, nonce and randomness come from the caller.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vroot.errors import InvalidInput, VerificationError

KEY_SIZE = 32


def draw(rng: Callable[[int], bytes], n: int, what: str) -> bytes:
    """`n` bytes from `rng` (e.g. `os.urandom`), refusing an rng that returns anything else."""
    out = rng(n)
    if not isinstance(out, bytes) or len(out) != n:
        raise InvalidInput(f"rng returned {type(out).__name__} of the wrong size for the {what} ({n} bytes)")
    return out


def encrypt(key: bytes, nonce: bytes, data: bytes, aad: bytes) -> bytes:
    """AES-256-GCM: ciphertext ‖ 16-byte tag."""
    return AESGCM(key).encrypt(nonce, data, aad)


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes, *, what: str) -> bytes:
    """AES-256-GCM open. Proves: `ciphertext` and `aad` are as made with `key`. Raises
    `VerificationError` otherwise; never returns unauthenticated plaintext."""
    if len(key) != KEY_SIZE:
        raise VerificationError(f"{what}: the envelope key is {len(key)} bytes, want {KEY_SIZE}")
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise VerificationError(
            f"{what}: the data does not authenticate (AES-GCM tag): the blob was altered"
        ) from None
