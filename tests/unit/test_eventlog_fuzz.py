"""Hypothesis: TCG logs round-trip, and no input makes the parser raise anything but EventLogError."""

from __future__ import annotations

import struct
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vroot.errors import EventLogError
from vroot.eventlog import (
    EventType,
    TcgLogBuilder,
    describe_event,
    encode_tcg_log,
    parse_tcg_log,
    replay_tcg_log,
)
from vroot.tpm2 import HashAlg

BANK_SETS = st.sampled_from(
    [
        (HashAlg.SHA1,),
        (HashAlg.SHA256,),
        (HashAlg.SHA1, HashAlg.SHA256),
        (HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512),
        (HashAlg.SHA1, HashAlg.SM3_256),
    ]
)
EVENT_TYPES = st.one_of(st.sampled_from(list(EventType)), st.integers(0, 0xFFFFFFFF))
EVENTS = st.lists(
    st.tuples(
        st.integers(0, 23), EVENT_TYPES, st.binary(max_size=64), st.one_of(st.none(), st.binary(max_size=16))
    ),
    max_size=12,
)


@st.composite
def built_logs(draw):
    banks = draw(BANK_SETS)
    events = draw(EVENTS)
    legacy = banks == (HashAlg.SHA1,) and bool(events) and draw(st.booleans())
    builder = TcgLogBuilder(banks=banks, legacy=legacy, vendor_info=draw(st.binary(max_size=8)))
    for pcr, event_type, data, measured in events:
        builder.add(pcr, event_type, data, measured=measured)
    return builder.build()


@settings(deadline=None)
@given(built_logs())
def test_built_logs_round_trip(log):
    wire = encode_tcg_log(log)
    parsed = parse_tcg_log(wire)
    assert parsed == log
    assert encode_tcg_log(parsed) == wire
    assert replay_tcg_log(parsed) == replay_tcg_log(log)
    for event in parsed.events:
        describe_event(event)


def _must_only_raise_event_log_error(data: bytes) -> None:
    start = time.perf_counter()
    try:
        log = parse_tcg_log(data)
    except EventLogError as exc:
        assert exc.offset is not None
    else:
        replay_tcg_log(log)
        for event in log.events:
            describe_event(event)
    assert time.perf_counter() - start < 1.0


@settings(deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_event_log_error(data):
    _must_only_raise_event_log_error(data)


@settings(deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_behind_a_spec_id_event(tail):
    head = struct.pack("<II20sI", 0, 3, bytes(20), 37)
    head += struct.pack("<16sIBBBBI", b"Spec ID Event03\x00", 0, 0, 2, 0, 2, 2) + struct.pack(
        "<HHHH", 4, 20, 11, 32
    )
    _must_only_raise_event_log_error(head + b"\x00" + tail)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(built_logs(), st.data())
def test_mutated_built_logs_raise_only_event_log_error(log, data):
    wire = bytearray(encode_tcg_log(log))
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "truncate", "huge"]))
        if not wire:
            break
        at = data.draw(st.integers(0, len(wire) - 1))
        if kind == "flip":
            wire[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "truncate":
            del wire[at:]
        else:
            wire[at : at + 4] = struct.pack(
                "<I", data.draw(st.sampled_from([0xFFFFFFFF, 0x7FFFFFFF, 1 << 24]))
            )
    _must_only_raise_event_log_error(bytes(wire))
