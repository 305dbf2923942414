"""The vroot vTM identity extension codec and the tiny DER reader under it (hypothesis: round trip,
random and mutated bytes raise only InvalidInput, in bounded time)."""

from __future__ import annotations

import string
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vroot.errors import InvalidInput
from vroot.pki import VekIdentity, _der, decode_vtm_identity, encode_vtm_identity
from vroot.pki._vek_ext import MAX_EXTENSION_BYTES
from vroot.tpm2 import HashAlg

HOST_CHARS = string.ascii_letters + string.digits + "'()+,-./:=?"

host_ids = st.text(alphabet=HOST_CHARS, min_size=1, max_size=64)
names = st.sampled_from([HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512]).flatmap(
    lambda alg: st.binary(min_size=alg.digest_size, max_size=alg.digest_size).map(
        lambda d: int(alg).to_bytes(2, "big") + d
    )
)
identities = st.builds(VekIdentity, host_id=host_ids, vm_uuid=st.uuids(), manager_name=names)


@settings(max_examples=200, deadline=None)
@given(identities)
def test_round_trip(identity: VekIdentity) -> None:
    data = encode_vtm_identity(identity)
    assert len(data) <= MAX_EXTENSION_BYTES
    assert decode_vtm_identity(data) == identity


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_invalid_input(data: bytes) -> None:
    try:
        identity = decode_vtm_identity(data)
    except InvalidInput:
        return
    assert encode_vtm_identity(identity) == data  # what decodes is canonical


@settings(max_examples=500, deadline=None)
@given(identities, st.data())
def test_mutated_encodings_raise_only_invalid_input_or_stay_canonical(
    identity: VekIdentity, data: st.DataObject
) -> None:
    good = bytearray(encode_vtm_identity(identity))
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "insert"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(good) - 1))
        good[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del good[data.draw(st.integers(0, len(good) - 1)) :]
    elif kind == "extend":
        good += data.draw(st.binary(min_size=1, max_size=8))
    else:
        i = data.draw(st.integers(0, len(good)))
        good[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        decoded = decode_vtm_identity(bytes(good))
    except InvalidInput:
        return
    assert encode_vtm_identity(decoded) == bytes(good)


def enc(host: bytes, vm: bytes, name: bytes) -> bytes:
    return _der.sequence(_der.tlv(_der.UTF8_STRING, host), _der.octet_string(vm), _der.octet_string(name))


NAME = b"\x00\x0b" + bytes(32)
VM = uuid.UUID(int=1).bytes


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "truncated"),
        (b"\x31\x00", "tag 0x31"),
        (enc(b"h", VM, NAME) + b"\x00", "trailing"),
        (b"\x30\x80\x00\x00", "indefinite length"),
        (b"\x30\x81\x05" + enc(b"h", VM, NAME)[2:], "minimal form"),
        (b"\x30\x84\x00\x00\x00\x01\x00", "4-byte length"),
        (b"\x30\x05\x0c\x01h", "past its end"),
        (b"\x3f\x01\x00", "high tag"),
        (_der.sequence(_der.utf8_string("h"), _der.octet_string(VM)), "elements"),
        (
            _der.sequence(
                _der.utf8_string("h"), _der.octet_string(VM), _der.octet_string(NAME), _der.octet_string(b"")
            ),
            "more than 3",
        ),
        (_der.sequence(_der.octet_string(b"h"), _der.octet_string(VM), _der.octet_string(NAME)), "elements"),
        (enc(b"\xff", VM, NAME), "not UTF-8"),
        (enc(b"h", VM[:15], NAME), "vmUuid is 15 bytes"),
        (enc(b"h h", VM, NAME), "host id"),
        (enc(b"", VM, NAME), "host id"),
        (enc(b"h", VM, b"\x00\x0b" + bytes(31)), "31 digest bytes"),
        (enc(b"h", VM, b"\x99\x99" + bytes(32)), "unknown nameAlg"),
        (b"\x30\x82\x01\x01" + bytes(257), "more than 256"),
    ],
)
def test_named_malformed_encodings(data: bytes, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        decode_vtm_identity(data)


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(InvalidInput, match="expected bytes"):
        decode_vtm_identity("30")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dotted", "der"),
    [
        ("2.23.133.2.16", "0605 6781050210"),
        ("1.2.840.10045.4.3.2", "06082a8648ce3d040302"),
        ("2.25.299176925927593140536147376359339947429.1", None),
    ],
)
def test_object_identifiers_match_cryptography(dotted: str, der: str | None) -> None:
    from cryptography import x509

    got = _der.object_identifier(dotted)
    if der is not None:
        assert got.hex() == der.replace(" ", "")
    # cryptography writes the same OID inside a name attribute: find our bytes in its encoding
    name = x509.Name([x509.NameAttribute(x509.ObjectIdentifier(dotted), "v")])
    assert got in name.public_bytes()


@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 256, 65535, 65536])
def test_lengths_and_integers_are_minimal(n: int) -> None:
    data = _der.octet_string(bytes(n))
    tag, start, end = _der.read_tlv(data)
    assert (tag, end - start, end) == (_der.OCTET_STRING, n, len(data))
    assert _der.integer(n)[2:] == n.to_bytes(n.bit_length() // 8 + 1, "big")
    with pytest.raises(InvalidInput):
        _der.integer(-1)
