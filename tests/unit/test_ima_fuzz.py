"""Hypothesis: IMA lists round-trip in both formats; no input raises anything but EventLogError."""

from __future__ import annotations

import struct
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from vroot.errors import EventLogError
from vroot.eventlog import (
    UnverifiedImaLog,
    encode_ima_ascii,
    encode_ima_binary,
    ima_ng_entry,
    parse_ima_log,
    replay_ima_log,
)
from vroot.tpm2 import HashAlg

ALGS = st.sampled_from([HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512, HashAlg.SM3_256])
PATHS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\n"),
    min_size=1,
    max_size=40,
)


@st.composite
def entries(draw):
    alg = draw(ALGS)
    digest = draw(st.binary(min_size=alg.digest_size, max_size=alg.digest_size))
    return ima_ng_entry(draw(PATHS), digest, alg=alg, pcr=draw(st.integers(0, 23)))


@st.composite
def sig_or_buf_entries(draw):
    """ima-sig / ima-buf entries, made by hand as the kernel lays them out."""
    name = draw(st.sampled_from([b"ima-sig", b"ima-buf"]))
    digest = draw(st.binary(min_size=32, max_size=32))
    path = draw(st.binary(min_size=1, max_size=20).filter(lambda p: not set(p) & {0, 0x20, 0x0A}))
    extra = draw(st.binary(max_size=40))
    fields = [b"sha256:\x00" + digest, path + b"\x00", extra]
    data = b"".join(struct.pack("<I", len(f)) + f for f in fields)
    binary = struct.pack("<I", 10) + HashAlg.SHA1.digest(data) + struct.pack("<I", len(name)) + name
    return binary + struct.pack("<I", len(data)) + data


@settings(deadline=None)
@given(st.lists(entries(), max_size=8))
def test_built_lists_round_trip_in_both_formats(items):
    log = UnverifiedImaLog(entries=tuple(items), format="binary")
    binary, text = encode_ima_binary(log), encode_ima_ascii(log)
    from_binary, from_text = parse_ima_log(binary), parse_ima_log(text)
    assert from_binary.entries == log.entries == from_text.entries
    assert encode_ima_binary(from_binary) == binary and encode_ima_ascii(from_text) == text
    assert encode_ima_binary(from_text) == binary and encode_ima_ascii(from_binary) == text
    assert replay_ima_log(from_binary) == replay_ima_log(from_text)


@settings(deadline=None)
@given(st.lists(sig_or_buf_entries(), min_size=1, max_size=5))
def test_sig_and_buf_lists_round_trip(blobs):
    binary = b"".join(blobs)
    log = parse_ima_log(binary)
    assert encode_ima_binary(log) == binary
    text = encode_ima_ascii(log)
    assert parse_ima_log(text).entries == log.entries and encode_ima_ascii(parse_ima_log(text)) == text


def _only_event_log_error(data: bytes) -> None:
    start = time.perf_counter()
    try:
        log = parse_ima_log(data)
    except EventLogError as exc:
        assert exc.offset is not None
    else:
        try:
            replay_ima_log(log)
        except EventLogError:
            pass
    assert time.perf_counter() - start < 1.0


@settings(deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(data):
    _only_event_log_error(data)


@settings(deadline=None)
@given(st.text(alphabet="0123456789abcdef :-_/.imangsh\n", max_size=300))
def test_random_ascii_lines(text):
    _only_event_log_error(text.encode())


@settings(deadline=None)
@given(st.lists(entries(), min_size=1, max_size=4), st.data())
def test_mutated_lists(items, data):
    log = UnverifiedImaLog(entries=tuple(items), format="binary")
    wire = bytearray(data.draw(st.sampled_from([encode_ima_binary, encode_ima_ascii]))(log))
    for _ in range(data.draw(st.integers(1, 3))):
        if not wire:
            break
        at = data.draw(st.integers(0, len(wire) - 1))
        kind = data.draw(st.sampled_from(["flip", "truncate", "huge"]))
        if kind == "flip":
            wire[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "truncate":
            del wire[at:]
        else:
            wire[at : at + 4] = struct.pack("<I", 0xFFFFFFFF)
    _only_event_log_error(bytes(wire))
