"""The data-protection blob format (DP-1, DP-2): round trips, and a bounded parser that only ever
raises `InvalidInput` (a `BlobFormatError` with the offset of the failing field)."""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vroot.errors import InvalidInput
from vroot.guest import (
    MAX_DATA,
    BlobFormatError,
    BoundBlob,
    SealedBlob,
    parse_blob,
    parse_bound_blob,
    parse_sealed_blob,
)
from vroot.guest._blob import MAX_BLOB
from vroot.tpm2 import HashAlg, PcrSelection

BANKS = [HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512, HashAlg.SM3_256]


@st.composite
def selections(draw) -> PcrSelection:
    algs = sorted(draw(st.lists(st.sampled_from(BANKS), unique=True, min_size=1, max_size=5)))
    banks = tuple((alg, tuple(sorted(draw(st.sets(st.integers(0, 23), min_size=1))))) for alg in algs)
    return PcrSelection(banks)


@st.composite
def sealed_blobs(draw) -> SealedBlob:
    sel = draw(selections())
    envelope = draw(st.booleans())
    return SealedBlob(
        srk_name=draw(st.binary(min_size=1, max_size=66)),
        selection=sel,
        pcr_values=tuple(draw(st.binary(min_size=a.digest_size, max_size=a.digest_size)) for a, _ in sel),
        public=draw(st.binary(min_size=1, max_size=200)),
        private=draw(st.binary(min_size=1, max_size=200)),
        nonce=draw(st.binary(min_size=12, max_size=12)) if envelope else None,
        ciphertext=draw(st.binary(min_size=16, max_size=300)) if envelope else None,
    )


@st.composite
def bound_blobs(draw) -> BoundBlob:
    return BoundBlob(
        key_id=draw(st.binary(min_size=32, max_size=32)),
        ephemeral=b"\x04" + draw(st.binary(min_size=64, max_size=64)),
        nonce=draw(st.binary(min_size=12, max_size=12)),
        ciphertext=draw(st.binary(min_size=16, max_size=300)),
    )


def sample_sealed(*, envelope: bool = False) -> SealedBlob:
    sel = PcrSelection(((HashAlg.SHA1, (16,)), (HashAlg.SHA256, (0, 7, 16))))
    return SealedBlob(
        srk_name=b"\x00\x0b" + bytes(range(32)),
        selection=sel,
        pcr_values=(b"\x01" * 20, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32),
        public=b"P" * 80,
        private=b"S" * 120,
        nonce=b"N" * 12 if envelope else None,
        ciphertext=b"C" * 40 if envelope else None,
    )


def sample_bound() -> BoundBlob:
    return BoundBlob(key_id=b"K" * 32, ephemeral=b"\x04" + b"E" * 64, nonce=b"N" * 12, ciphertext=b"C" * 30)


# -- round trips ------------------------------------------------------------------------------


@given(sealed_blobs())
def test_sealed_round_trip(blob):
    data = blob.encode()
    assert parse_blob(data) == blob
    assert parse_sealed_blob(data) == blob
    assert parse_sealed_blob(data).encode() == data
    assert bytes(blob) == data
    assert data.startswith(blob.associated_data())


@given(bound_blobs())
def test_bound_round_trip(blob):
    data = blob.encode()
    assert parse_bound_blob(data) == blob
    assert parse_blob(data).encode() == data
    assert data[: len(blob.associated_data())] == blob.associated_data()


def test_header_layout():
    data = sample_sealed().encode()
    assert data[:6] == b"VRDP\x01\x01" and data[6] == 0  # magic, version 1, sealed, direct
    assert sample_sealed(envelope=True).encode()[6] == 1
    assert sample_bound().encode()[:7] == b"VRDP\x01\x02\x01"  # bound, ECDH P-256
    assert sample_sealed().pcr_mapping() == {
        HashAlg.SHA1: {16: b"\x01" * 20},
        HashAlg.SHA256: {0: b"\x02" * 32, 7: b"\x03" * 32, 16: b"\x04" * 32},
    }


# -- random and damaged bytes -----------------------------------------------------------------


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_invalid_input(data):
    try:
        parse_blob(data)
    except InvalidInput:
        pass


@settings(deadline=None)
@given(
    st.sampled_from([b"VRDP\x01\x01\x00", b"VRDP\x01\x01\x01", b"VRDP\x01\x02\x01"]), st.binary(max_size=400)
)
def test_random_bodies_raise_only_invalid_input(prefix, body):
    """Past the magic, so the random bytes reach every field of both kinds."""
    try:
        parse_blob(prefix + body)
    except InvalidInput:
        pass


@settings(deadline=None)
@given(st.one_of(sealed_blobs(), bound_blobs()), st.data())
def test_mutated_blobs_decode_or_raise_invalid_input(blob, data):
    raw = bytearray(blob.encode())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        parse_blob(bytes(raw))
    except InvalidInput:
        pass


@pytest.mark.parametrize("blob", [sample_sealed(), sample_sealed(envelope=True), sample_bound()], ids=repr)
def test_every_truncation_is_a_format_error_with_offset(blob):
    data = blob.encode()
    for n in range(len(data)):
        with pytest.raises(BlobFormatError, match="truncated|size") as err:
            parse_blob(data[:n])
        assert err.value.offset is not None and 0 <= err.value.offset <= n
        assert f"offset {err.value.offset}" in str(err.value)


def test_wrong_magic():
    data = sample_sealed().encode()
    with pytest.raises(BlobFormatError, match="magic") as err:
        parse_blob(b"VRDQ" + data[4:])
    assert err.value.offset == 0
    with pytest.raises(BlobFormatError, match="magic"):
        parse_blob(b"-----BEGIN PUBLIC KEY-----\n")


def test_wrong_version_and_kind():
    data = sample_sealed().encode()
    with pytest.raises(BlobFormatError, match="version 2") as err:
        parse_blob(data[:4] + b"\x02" + data[5:])
    assert err.value.offset == 4
    with pytest.raises(BlobFormatError, match="unknown kind 7") as err:
        parse_blob(data[:5] + b"\x07" + data[6:])
    assert err.value.offset == 5
    with pytest.raises(BlobFormatError, match="sealing mode 9") as err:
        parse_blob(data[:6] + b"\x09" + data[7:])
    assert err.value.offset == 6
    with pytest.raises(BlobFormatError, match="binding scheme 2") as err:
        parse_blob(sample_bound().encode()[:6] + b"\x02" + sample_bound().encode()[7:])
    assert err.value.offset == 6


def test_kind_mismatch():
    with pytest.raises(BlobFormatError, match="bound blob, not a sealed one"):
        parse_sealed_blob(sample_bound().encode())
    with pytest.raises(BlobFormatError, match="sealed blob, not a bound one"):
        parse_bound_blob(sample_sealed().encode())


def test_trailing_bytes():
    data = sample_bound().encode()
    with pytest.raises(BlobFormatError, match="1 trailing bytes") as err:
        parse_blob(data + b"\0")
    assert err.value.offset == len(data)


def test_oversized_fields_and_blob():
    bound = sample_bound()
    head = bound.associated_data()
    # a ciphertext size over the cap is refused at its size field, before any allocation
    with pytest.raises(BlobFormatError, match="exceeds the maximum") as err:
        parse_blob(head + struct.pack(">I", MAX_DATA + 17) + b"C" * 32)
    assert err.value.offset == len(head)
    with pytest.raises(BlobFormatError, match=r"size 0xffffffff|exceeds the maximum"):
        parse_blob(head + b"\xff\xff\xff\xff")
    with pytest.raises(BlobFormatError, match="below the minimum") as err:
        parse_blob(head + struct.pack(">I", 15) + b"C" * 15)
    with pytest.raises(BlobFormatError, match=f"at most {MAX_BLOB}"):
        parse_blob(b"VRDP" + bytes(MAX_BLOB))
    sealed = sample_sealed().encode()
    with pytest.raises(BlobFormatError, match="SRK name: size 67 exceeds") as err:
        parse_blob(sealed[:7] + b"\x00\x43" + sealed[9:])
    assert err.value.offset == 7


def test_non_canonical_selection_is_refused():
    sealed = sample_sealed()
    data = sealed.encode()
    sel = sealed.selection.encode()
    at = data.index(sel)
    swapped = PcrSelection(((HashAlg.SHA256, (0, 7, 16)), (HashAlg.SHA1, (16,)))).encode()
    with pytest.raises(BlobFormatError, match="not canonical") as err:
        parse_blob(data[:at] + swapped + data[at + len(sel) :])
    assert err.value.offset == at - 2
    with pytest.raises(InvalidInput, match="not canonical"):
        SealedBlob(**{**_fields(sealed), "selection": PcrSelection(((HashAlg.SHA256, (0,)),), (4,))})


def test_bad_selection_reports_inner_offset():
    data = sample_sealed().encode()
    sel_at = data.index(sample_sealed().selection.encode())
    bad = data[: sel_at + 4] + b"\x77\x77" + data[sel_at + 6 :]  # unknown hash algorithm in bank 1
    with pytest.raises(BlobFormatError, match="PCR selection.*unknown hash") as err:
        parse_blob(bad)
    assert err.value.offset == sel_at + 4


def _fields(blob: SealedBlob) -> dict:
    return {f: getattr(blob, f) for f in SealedBlob.__dataclass_fields__}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"pcr_values": (b"\x01" * 20,)}, "one PCR value per selected PCR"),
        ({"pcr_values": (b"\x01" * 20, b"\x02" * 32, b"\x03" * 32, b"\x04" * 31)}, "sha256 PCR 16 value"),
        ({"selection": PcrSelection(())}, "at least one PCR"),
        ({"selection": PcrSelection(((HashAlg.SHA256, (24,)),))}, "out of range"),
        ({"srk_name": b""}, "SRK name"),
        ({"nonce": b"N" * 12}, "both a nonce and a ciphertext"),
        ({"nonce": b"N" * 11, "ciphertext": b"C" * 16}, "nonce must be 12"),
        ({"nonce": b"N" * 12, "ciphertext": b"C" * 15}, "at least 16"),
        ({"public": "text"}, "must be bytes"),
    ],
)
def test_sealed_blob_invariants(change, match):
    with pytest.raises(InvalidInput, match=match):
        SealedBlob(**{**_fields(sample_sealed()), **change})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"key_id": b"K" * 31}, "key id must be 32"),
        ({"ephemeral": b"\x02" + b"E" * 64}, "uncompressed"),
        ({"ciphertext": b"C" * (MAX_DATA + 17)}, "at most"),
    ],
)
def test_bound_blob_invariants(change, match):
    fields = {
        "key_id": b"K" * 32,
        "ephemeral": b"\x04" + b"E" * 64,
        "nonce": b"N" * 12,
        "ciphertext": b"C" * 16,
    }
    with pytest.raises(InvalidInput, match=match):
        BoundBlob(**{**fields, **change})


def test_parse_is_fast_on_the_largest_blob():
    blob = BoundBlob(
        key_id=b"K" * 32, ephemeral=b"\x04" + b"E" * 64, nonce=b"N" * 12, ciphertext=bytes(MAX_DATA + 16)
    )
    data = blob.encode()
    start = time.perf_counter()
    assert parse_blob(data) == blob
    assert time.perf_counter() - start < 1.0  # bounded: one pass, no quadratic copies


def test_not_bytes():
    with pytest.raises(InvalidInput, match="must be bytes"):
        parse_blob("VRDP")  # type: ignore[arg-type]
