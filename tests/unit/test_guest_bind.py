"""DP-1 binding in software: `bind` is pure (runs without a TM), its construction is the documented
ECIES (ECDH P-256, KDFe-SHA256, AES-256-GCM over the header), and opening fails closed."""

from __future__ import annotations

import hashlib
import itertools
import os
import struct
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vroot.errors import InvalidInput, VerificationError
from vroot.guest import MAX_DATA, BlobFormatError, bind, parse_bound_blob
from vroot.guest._bind import ephemeral_key, open_bound


def counter_rng(seed: int = 0):
    counter = itertools.count(seed)

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(b"%d" % next(counter)).digest()
        return out[:n]

    return rng


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_of(public) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def software_open(priv: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """What the TM does in `unbind` (ZGen), with a software key instead."""
    blob = parse_bound_blob(data)
    z = priv.exchange(ec.ECDH(), ephemeral_key(blob))
    return open_bound(blob, z=z, binding_key=priv.public_key())


def test_bind_round_trip_in_software(key):
    for data in (b"x", b"disk key " * 4, os.urandom(10_000)):
        assert software_open(key, bind(pem_of(key.public_key()), data, rng=os.urandom)) == data


def test_construction_is_the_documented_ecies(key):
    """Independent of vroot's code: Z, KDFe (counter 1 ‖ Z ‖ "VROOT BIND\\0" ‖ x_eph ‖ x_key), AES-GCM."""
    data = b"relying party secret"
    raw = bind(pem_of(key.public_key()), data, rng=os.urandom)
    assert raw[:7] == b"VRDP\x01\x02\x01"
    key_id, point, nonce = raw[7:39], raw[39:104], raw[104:116]
    (size,) = struct.unpack(">I", raw[116:120])
    ciphertext = raw[120:]
    assert size == len(ciphertext) == len(data) + 16
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_id == hashlib.sha256(der).digest()
    z = key.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point))
    x_key = key.public_key().public_numbers().x.to_bytes(32, "big")
    aes = hashlib.sha256(b"\0\0\0\1" + z + b"VROOT BIND\0" + point[1:33] + x_key).digest()
    assert AESGCM(aes).decrypt(nonce, ciphertext, raw[:116]) == data


def test_bind_is_deterministic_given_the_rng(key):
    pem = pem_of(key.public_key())
    assert bind(pem, b"data", rng=counter_rng(1)) == bind(pem, b"data", rng=counter_rng(1))
    assert bind(pem, b"data", rng=counter_rng(1)) != bind(pem, b"data", rng=counter_rng(2))


def test_each_bind_uses_a_fresh_ephemeral_key(key):
    pem = pem_of(key.public_key())
    points = {parse_bound_blob(bind(pem, b"same", rng=os.urandom)).ephemeral for _ in range(5)}
    assert len(points) == 5


def test_another_key_cannot_open(key):
    raw = bind(pem_of(key.public_key()), b"for key one", rng=os.urandom)
    other = ec.generate_private_key(ec.SECP256R1())
    blob = parse_bound_blob(raw)
    eph = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), blob.ephemeral)
    with pytest.raises(VerificationError, match="does not authenticate"):
        open_bound(blob, z=other.exchange(ec.ECDH(), eph), binding_key=key.public_key())


def test_every_flipped_byte_fails_closed(key):
    raw = bind(pem_of(key.public_key()), b"sixteen byte msg", rng=os.urandom)
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        with pytest.raises((BlobFormatError, VerificationError)):
            software_open(key, bytes(bad))
    with pytest.raises(VerificationError, match="not a P-256 point"):
        software_open(key, raw[:40] + bytes([raw[40] ^ 1]) + raw[41:])


@pytest.mark.parametrize(
    ("pem", "match"),
    [
        (b"not a pem", "not a readable PEM"),
        (b"", "not a readable PEM"),
        ("text", "must be PEM bytes"),
    ],
)
def test_bad_binding_keys(pem, match):
    with pytest.raises(InvalidInput, match=match):
        bind(pem, b"data", rng=os.urandom)


def test_other_key_types_are_refused():
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(InvalidInput, match="want an ECC P-256"):
        bind(pem_of(p384), b"data", rng=os.urandom)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(InvalidInput, match="RSAPublicKey, want an ECC P-256"):
        bind(pem_of(rsa_key), b"data", rng=os.urandom)


def test_data_size_and_rng_checks(key):
    pem = pem_of(key.public_key())
    with pytest.raises(InvalidInput, match="1..1048576 bytes, got 0"):
        bind(pem, b"", rng=os.urandom)
    with pytest.raises(InvalidInput, match="got 1048577"):
        bind(pem, bytes(MAX_DATA + 1), rng=os.urandom)
    with pytest.raises(InvalidInput, match="must be bytes"):
        bind(pem, "text", rng=os.urandom)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="rng returned"):
        bind(pem, b"data", rng=lambda n: bytes(n - 1))


def test_bind_needs_no_tpm_stack():
    """A relying party can bind with vroot.guest alone: importing it loads no tpm2-pytss."""
    code = "import sys, vroot.guest; assert 'tpm2_pytss' not in sys.modules, 'tpm2_pytss imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
