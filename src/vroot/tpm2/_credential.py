"""Credential protection in software: KDFa, KDFe and TPM2_MakeCredential (part 1, 11.4.10 and 24).

Pure: `cryptography` and `hashlib` only, randomness from the caller's `rng(n) -> bytes`. RSA OAEP is
done here (RFC 8017, 7.1.1) rather than by OpenSSL, so that its seed too comes from `rng` and the
output is reproducible in tests.

Proves nothing by itself: a blob made for an EK can be opened only by the TPM holding that EK, and
only for an object whose name is `object_name`. Caller must: check that the EK belongs to a genuine
TPM (its certificate) before trusting that whoever returns the secret holds the object.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from vroot.errors import InvalidInput
from vroot.tpm2._alg import HashAlg
from vroot.tpm2._constants import ObjectType, TpmAlg
from vroot.tpm2._public import PublicArea, curve_size
from vroot.tpm2._wire import b2, u32

MAX_SECRET = 64  # TPM2B_DIGEST
MAX_NAME = 66


def _label(label: bytes | str) -> bytes:
    """A KDF label as hashed: up to its first NUL, then one NUL (part 1, 11.4.10.2)."""
    if isinstance(label, str):
        label = label.encode()
    return label.split(b"\0", 1)[0] + b"\0"


def _hmac(alg: HashAlg, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, alg.new).digest()


def _truncate(out: bytes, bits: int) -> bytes:
    out = out[: (bits + 7) // 8]
    if bits % 8:
        out = bytes([out[0] & ((1 << (bits % 8)) - 1)]) + out[1:]
    return out


def kdfa(
    alg: HashAlg, key: bytes, label: bytes | str, context_u: bytes, context_v: bytes, bits: int
) -> bytes:
    """KDFa: SP800-108 counter-mode KDF with HMAC-alg (part 1, 11.4.10.2).

    K(i) = HMAC(key, [i]32 ‖ label ‖ 0x00 ‖ contextU ‖ contextV ‖ [bits]32), concatenated and
    truncated to `bits` (the excess high-order bits of the first byte cleared).
    """
    if bits <= 0:
        raise InvalidInput("KDFa: bits must be positive")
    fixed = _label(label) + bytes(context_u) + bytes(context_v) + u32(bits)
    out = bytearray()
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        out += _hmac(alg, bytes(key), u32(counter) + fixed)
    return _truncate(bytes(out), bits)


def kdfe(alg: HashAlg, z: bytes, label: bytes | str, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """KDFe: SP800-56A concatenation KDF (part 1, 11.4.10.3).

    K(i) = H([i]32 ‖ Z ‖ label ‖ 0x00 ‖ partyUInfo ‖ partyVInfo), concatenated and truncated.
    """
    if bits <= 0:
        raise InvalidInput("KDFe: bits must be positive")
    fixed = bytes(z) + _label(label) + bytes(party_u) + bytes(party_v)
    out = bytearray()
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        out += alg.digest(u32(counter) + fixed)
    return _truncate(bytes(out), bits)


def _mgf1(alg: HashAlg, seed: bytes, length: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += alg.digest(seed + u32(counter))
        counter += 1
    return bytes(out[:length])


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def rsa_oaep_encrypt(
    n: int, e: int, message: bytes, *, alg: HashAlg, label: bytes, rng: Callable[[int], bytes]
) -> bytes:
    """RSAES-OAEP-ENCRYPT (RFC 8017, 7.1.1) with MGF1 over `alg`, the OAEP seed drawn from `rng`."""
    k = (n.bit_length() + 7) // 8
    h = alg.digest_size
    if len(message) > k - 2 * h - 2:
        raise InvalidInput(f"OAEP: message of {len(message)} bytes too long for a {k}-byte modulus")
    db = alg.digest(label) + bytes(k - len(message) - 2 * h - 2) + b"\x01" + message
    seed = _draw(rng, h)
    masked_db = _xor(db, _mgf1(alg, seed, k - h - 1))
    masked_seed = _xor(seed, _mgf1(alg, masked_db, h))
    m = int.from_bytes(b"\x00" + masked_seed + masked_db, "big")
    return pow(m, e, n).to_bytes(k, "big")


def _draw(rng: Callable[[int], bytes], n: int) -> bytes:
    out = rng(n)
    if not isinstance(out, bytes | bytearray) or len(out) != n:
        raise InvalidInput(f"rng({n}) must return {n} bytes")
    return bytes(out)


def aes_cfb_encrypt(key: bytes, data: bytes, iv: bytes = bytes(16)) -> bytes:
    """AES in full-block CFB mode (CFB128, part 1, 11.4.6.3), built on the AES block function.

    `cryptography` has moved CFB to its "decrepit" module and plans to drop it; one ECB call per
    block keeps this independent of that.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    block = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    out = bytearray()
    feedback = iv
    for i in range(0, len(data), 16):
        chunk = data[i : i + 16]
        stream = block.update(feedback)
        feedback = bytes(a ^ b for a, b in zip(chunk, stream, strict=False))
        out += feedback
    return bytes(out)


def _ecc_seed(ek: PublicArea, alg: HashAlg, rng: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """(seed, TPMS_ECC_POINT of the ephemeral key): one-pass ECDH with KDFe "IDENTITY" (part 1, C.6.4)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    ek_key = ek.public_key()
    size = curve_size(ek.curve)
    bits = ek_key.curve.key_size
    for _ in range(64):  # rejection sampling: d uniform in [1, order)
        d = int.from_bytes(_draw(rng, size), "big") >> (size * 8 - bits)
        try:
            eph = ec.derive_private_key(d, ek_key.curve)
            break
        except ValueError:
            continue
    else:
        raise InvalidInput("rng gave no valid ECC scalar in 64 draws")
    z = eph.exchange(ec.ECDH(), ek_key)  # the x coordinate of d * EK, curve-sized
    nums = eph.public_key().public_numbers()
    qx, qy = nums.x.to_bytes(size, "big"), nums.y.to_bytes(size, "big")
    seed = kdfe(alg, z, "IDENTITY", qx, ek.unique.x, alg.digest_size * 8)
    return seed, b2(qx) + b2(qy)


def make_credential(
    ek_public: PublicArea, object_name: bytes, secret: bytes, *, rng: Callable[[int], bytes]
) -> tuple[bytes, bytes]:
    """TPM2_MakeCredential in software: (TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET) for `ek_public`.

    The seed is protected to the EK (RSA: OAEP, label "IDENTITY"; ECC: ephemeral ECDH and KDFe),
    `secret` is encrypted under KDFa(seed, "STORAGE", name) with the EK's symmetric algorithm (AES
    in CFB mode, zero IV) and HMAC'd under KDFa(seed, "INTEGRITY") over the ciphertext and `name`;
    all hashes are the EK's nameAlg. TPM2_ActivateCredential returns `secret` only on the TPM that
    holds the EK and only if the object loaded there has name `object_name`.
    """
    alg = ek_public.name_alg
    if alg is None:
        raise InvalidInput("EK: nameAlg TPM_ALG_NULL")
    sym = ek_public.symmetric
    if sym is None or sym.algorithm != TpmAlg.AES or sym.mode != TpmAlg.CFB:
        raise InvalidInput("EK: symmetric definition must be AES in CFB mode (the TCG EK templates)")
    if sym.key_bits not in (128, 192, 256):
        raise InvalidInput(f"EK: AES key of {sym.key_bits} bits")
    object_name = bytes(object_name)
    secret = bytes(secret)
    if not 0 < len(object_name) <= MAX_NAME:
        raise InvalidInput(f"object name of {len(object_name)} bytes")
    if len(secret) > MAX_SECRET:
        raise InvalidInput(f"credential of {len(secret)} bytes, at most {MAX_SECRET}")

    if ek_public.type is ObjectType.RSA:
        seed = _draw(rng, alg.digest_size)
        n = int.from_bytes(ek_public.unique, "big")
        encrypted = rsa_oaep_encrypt(
            n, ek_public.exponent or 65537, seed, alg=alg, label=b"IDENTITY\0", rng=rng
        )
    elif ek_public.type is ObjectType.ECC:
        seed, encrypted = _ecc_seed(ek_public, alg, rng)
    else:
        raise InvalidInput(f"EK: a {ek_public.type.name} object cannot protect a credential")

    sym_key = kdfa(alg, seed, "STORAGE", object_name, b"", sym.key_bits)
    enc_identity = aes_cfb_encrypt(sym_key, b2(secret))
    hmac_key = kdfa(alg, seed, "INTEGRITY", b"", b"", alg.digest_size * 8)
    integrity = _hmac(alg, hmac_key, enc_identity + object_name)
    return b2(b2(integrity) + enc_identity), b2(encrypted)
