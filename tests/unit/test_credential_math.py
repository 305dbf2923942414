"""KDFa, KDFe and make_credential, checked against independent implementations in `cryptography`.

The swtpm test (tests/tpm/test_credential_swtpm.py) shows a real TPM accepts the blobs; here a
software ActivateCredential, written from part 1 section 24 with `cryptography`'s own KDFs, OAEP
and CFB, opens them, so each step is checked on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from functools import cache

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

from vroot.errors import InvalidInput
from vroot.tpm2 import (
    EccCurve,
    EccPoint,
    HashAlg,
    ObjectAttributes,
    ObjectType,
    PublicArea,
    SymDef,
    TpmAlg,
    kdfa,
    kdfe,
    make_credential,
    policy_secret,
)
from vroot.tpm2._credential import aes_cfb_encrypt

EK_ATTRS = (
    ObjectAttributes.FIXEDTPM
    | ObjectAttributes.FIXEDPARENT
    | ObjectAttributes.SENSITIVEDATAORIGIN
    | ObjectAttributes.ADMINWITHPOLICY
    | ObjectAttributes.RESTRICTED
    | ObjectAttributes.DECRYPT
)
AES128_CFB = SymDef(TpmAlg.AES, 128, TpmAlg.CFB)
NAME = b"\x00\x0b" + hashlib.sha256(b"the AK").digest()
CRYPTO_HASH = {HashAlg.SHA256: hashes.SHA256, HashAlg.SHA384: hashes.SHA384, HashAlg.SHA1: hashes.SHA1}


def counter_rng(seed: bytes = b"test"):
    """Deterministic bytes: SHA-256 in counter mode."""
    state = {"n": 0}

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            state["n"] += 1
            out += hashlib.sha256(seed + state["n"].to_bytes(4, "big")).digest()
        return out[:n]

    return rng


@cache
def rsa_ek() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@cache
def ecc_ek(curve: type = ec.SECP256R1) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve())


def ek_area(private, *, name_alg=HashAlg.SHA256, sym=AES128_CFB) -> PublicArea:
    policy = policy_secret(None, b"\x40\x00\x00\x0b", alg=name_alg)
    if isinstance(private, rsa.RSAPrivateKey):
        n = private.public_key().public_numbers().n
        return PublicArea(
            ObjectType.RSA,
            name_alg,
            EK_ATTRS,
            policy,
            symmetric=sym,
            key_bits=2048,
            unique=n.to_bytes(256, "big"),
        )
    nums = private.public_key().public_numbers()
    size = (private.curve.key_size + 7) // 8
    curve = {256: EccCurve.NIST_P256, 384: EccCurve.NIST_P384}[private.curve.key_size]
    point = EccPoint(nums.x.to_bytes(size, "big"), nums.y.to_bytes(size, "big"))
    return PublicArea(ObjectType.ECC, name_alg, EK_ATTRS, policy, symmetric=sym, curve=curve, unique=point)


def ref_kdfa(alg: HashAlg, key: bytes, label: bytes, u: bytes, v: bytes, bits: int) -> bytes:
    return KBKDFHMAC(
        algorithm=CRYPTO_HASH[alg](),
        mode=Mode.CounterMode,
        length=bits // 8,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=label,
        context=u + v,
        fixed=None,
    ).derive(key)


def activate_in_software(private, area: PublicArea, name: bytes, blob: bytes, enc: bytes) -> bytes:
    """TPM2_ActivateCredential, written from part 1 section 24 with `cryptography` only."""
    alg = area.name_alg
    (enc_size,) = struct.unpack_from(">H", enc)
    assert enc_size == len(enc) - 2
    if isinstance(private, rsa.RSAPrivateKey):
        h = CRYPTO_HASH[alg]()
        seed = private.decrypt(enc[2:], padding.OAEP(padding.MGF1(h), h, b"IDENTITY\0"))
    else:
        (xs,) = struct.unpack_from(">H", enc, 2)
        x = enc[4 : 4 + xs]
        (ys,) = struct.unpack_from(">H", enc, 4 + xs)
        y = enc[6 + xs : 6 + xs + ys]
        assert 6 + xs + ys == len(enc)
        eph = ec.EllipticCurvePublicKey.from_encoded_point(private.curve, b"\x04" + x + y)
        z = private.exchange(ec.ECDH(), eph)
        other = ConcatKDFHash(CRYPTO_HASH[alg](), alg.digest_size, b"IDENTITY\0" + x + area.unique.x)
        seed = other.derive(z)
    (total, hmac_size) = struct.unpack_from(">HH", blob)
    assert total == len(blob) - 2
    integrity = blob[4 : 4 + hmac_size]
    enc_identity = blob[4 + hmac_size :]
    hmac_key = ref_kdfa(alg, seed, b"INTEGRITY", b"", b"", alg.digest_size * 8)
    want = hmac.new(hmac_key, enc_identity + name, CRYPTO_HASH[alg].name).digest()
    if not hmac.compare_digest(integrity, want):
        raise ValueError("integrity check failed (TPM_RC_INTEGRITY)")
    sym_key = ref_kdfa(alg, seed, b"STORAGE", name, b"", area.symmetric.key_bits)
    dec = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).decryptor()
    plain = dec.update(enc_identity) + dec.finalize()
    (size,) = struct.unpack_from(">H", plain)
    assert size == len(plain) - 2
    return plain[2:]


# -- KDFs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", [HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384])
@pytest.mark.parametrize("bits", [8, 128, 256, 520])
def test_kdfa_is_sp800_108_counter_mode(alg, bits):
    key, u, v = os.urandom(32), os.urandom(34), os.urandom(5)
    assert kdfa(alg, key, "STORAGE", u, v, bits) == ref_kdfa(alg, key, b"STORAGE", u, v, bits)
    # A label already NUL-terminated is hashed the same way (part 1, 11.4.10.2).
    assert kdfa(alg, key, b"STORAGE\0", u, v, bits) == kdfa(alg, key, "STORAGE", u, v, bits)


def test_kdfa_clears_excess_high_bits():
    out = kdfa(HashAlg.SHA256, b"k", "L", b"", b"", 12)
    full = kdfa(HashAlg.SHA256, b"k", "L", b"", b"", 16)  # same fixed input except the length field
    assert len(out) == 2 and out[0] < 16
    assert full != out  # the bit length is part of the input


@pytest.mark.parametrize("alg", [HashAlg.SHA256, HashAlg.SHA384])
def test_kdfe_is_sp800_56a_concat(alg):
    z, u, v = os.urandom(32), os.urandom(32), os.urandom(32)
    ref = ConcatKDFHash(CRYPTO_HASH[alg](), 64, b"IDENTITY\0" + u + v).derive(z)
    assert kdfe(alg, z, "IDENTITY", u, v, 512) == ref


def test_kdf_bits_must_be_positive():
    with pytest.raises(InvalidInput):
        kdfa(HashAlg.SHA256, b"k", "L", b"", b"", 0)
    with pytest.raises(InvalidInput):
        kdfe(HashAlg.SHA256, b"k", "L", b"", b"", -8)


def test_aes_cfb_matches_cryptography():
    for n in (0, 1, 15, 16, 17, 34, 66):
        key, iv, data = os.urandom(16), os.urandom(16), os.urandom(n)
        enc = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
        assert aes_cfb_encrypt(key, data, iv) == enc.update(data) + enc.finalize()


# -- make_credential --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "private_fn, name_alg, sym",
    [
        (rsa_ek, HashAlg.SHA256, AES128_CFB),
        (lambda: ecc_ek(ec.SECP256R1), HashAlg.SHA256, AES128_CFB),
        (lambda: ecc_ek(ec.SECP384R1), HashAlg.SHA384, SymDef(TpmAlg.AES, 256, TpmAlg.CFB)),
    ],
    ids=["rsa2048", "p256", "p384-high-range"],
)
def test_software_activation_opens_the_blob(private_fn, name_alg, sym):
    private = private_fn()
    area = ek_area(private, name_alg=name_alg, sym=sym)
    secret = os.urandom(32)
    blob, enc = make_credential(area, NAME, secret, rng=os.urandom)
    assert activate_in_software(private, area, NAME, blob, enc) == secret
    with pytest.raises(ValueError, match="integrity"):
        activate_in_software(private, area, NAME[:-1] + b"\x00", blob, enc)


@pytest.mark.parametrize("private_fn", [rsa_ek, ecc_ek], ids=["rsa", "ecc"])
def test_make_credential_is_deterministic_under_a_deterministic_rng(private_fn):
    area = ek_area(private_fn())
    one = make_credential(area, NAME, b"secret", rng=counter_rng())
    two = make_credential(area, NAME, b"secret", rng=counter_rng())
    three = make_credential(area, NAME, b"secret", rng=counter_rng(b"other"))
    assert one == two and one != three


def test_make_credential_rejects_what_a_tpm_would():
    area = ek_area(ecc_ek())
    with pytest.raises(InvalidInput, match="AES in CFB"):
        make_credential(ek_area(ecc_ek(), sym=None), NAME, b"s", rng=os.urandom)
    with pytest.raises(InvalidInput, match="AES in CFB"):
        make_credential(
            ek_area(ecc_ek(), sym=SymDef(TpmAlg.AES, 128, TpmAlg.CBC)), NAME, b"s", rng=os.urandom
        )
    with pytest.raises(InvalidInput, match="at most 64"):
        make_credential(area, NAME, bytes(65), rng=os.urandom)
    with pytest.raises(InvalidInput, match="object name"):
        make_credential(area, b"", b"s", rng=os.urandom)
    with pytest.raises(InvalidInput, match="rng"):
        make_credential(area, NAME, b"s", rng=lambda n: b"short")
    keyed = PublicArea(ObjectType.KEYEDHASH, HashAlg.SHA256, EK_ATTRS)
    with pytest.raises(InvalidInput):
        make_credential(keyed, NAME, b"s", rng=os.urandom)
