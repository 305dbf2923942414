"""Pure parts of vroot.tm: policy steps and their software digests (through vroot.tpm2), PCR
selections, TPM_RC classification. (The cross-checks against a TPM trial session are in
test_tm_seal.py.)"""

from __future__ import annotations

import hashlib
import struct

import pytest

from vroot.errors import InvalidInput
from vroot.tm._policy import (
    DUPLICATE_POLICY,
    EK_POLICY_SHA256,
    PolicyCommandCode,
    PolicyPcr,
    normalize_selection,
    policy_digest,
)
from vroot.tm.client import _is_policy_failure
from vroot.tpm2 import HashAlg, PcrSelection, parse_pcr_selection


def pcr_digest(selection, values):
    return policy_digest([PolicyPcr.of(selection)], values)


def test_policy_pcr_digest_formula():
    v = hashlib.sha256(b"pcr16").digest()
    sel = struct.pack(">IHB", 1, 0x0B, 3) + bytes([0, 0, 1])  # sha256: PCR 16
    want = hashlib.sha256(bytes(32) + struct.pack(">I", 0x17F) + sel + hashlib.sha256(v).digest()).digest()
    assert pcr_digest({HashAlg.SHA256: [16]}, {HashAlg.SHA256: {16: v}}) == want


def test_policy_pcr_digest_orders_banks_and_indices():
    values = {
        HashAlg.SHA1: {i: bytes([i]) * 20 for i in range(24)},
        HashAlg.SHA256: {i: bytes([i]) * 32 for i in range(24)},
    }
    assert PolicyPcr.of({HashAlg.SHA256: [7, 0], HashAlg.SHA1: [3]}) == PolicyPcr.of(
        {HashAlg.SHA1: [3, 3], HashAlg.SHA256: (0, 7)}
    )
    a = pcr_digest({HashAlg.SHA256: [7, 0], HashAlg.SHA1: [3]}, values)
    b = pcr_digest({HashAlg.SHA1: [3, 3], HashAlg.SHA256: (0, 7)}, values)
    assert a == b
    concat = values[HashAlg.SHA1][3] + values[HashAlg.SHA256][0] + values[HashAlg.SHA256][7]
    sel = (
        struct.pack(">I", 2)
        + struct.pack(">HB", 4, 3)
        + b"\x08\0\0"
        + struct.pack(">HB", 0x0B, 3)
        + b"\x81\0\0"
    )
    want = hashlib.sha256(
        bytes(32) + struct.pack(">I", 0x17F) + sel + hashlib.sha256(concat).digest()
    ).digest()
    assert a == want


def test_policy_pcr_digest_errors():
    with pytest.raises(InvalidInput, match="no value"):
        pcr_digest({HashAlg.SHA256: [1]}, {HashAlg.SHA256: {}})
    with pytest.raises(InvalidInput, match="32"):
        pcr_digest({HashAlg.SHA256: [1]}, {HashAlg.SHA256: {1: bytes(20)}})
    with pytest.raises(InvalidInput, match="out of range"):
        PolicyPcr.of({HashAlg.SHA256: [24]})
    with pytest.raises(InvalidInput, match="unknown hash algorithm"):
        PolicyPcr.of({0x99: [1]})
    with pytest.raises(InvalidInput, match="unknown policy step"):
        policy_digest(["PolicyPCR"])


def test_command_code_and_chain():
    dup = hashlib.sha256(bytes(32) + struct.pack(">II", 0x16C, 0x14B)).digest()
    assert policy_digest([PolicyCommandCode(0x14B)]) == dup
    assert policy_digest(DUPLICATE_POLICY) == dup
    v = {HashAlg.SHA256: {16: bytes(32)}}
    pcr16 = pcr_digest({HashAlg.SHA256: [16]}, v)
    chained = hashlib.sha256(pcr16 + struct.pack(">II", 0x16C, 0x15D)).digest()
    assert policy_digest([PolicyPcr.of({HashAlg.SHA256: [16]}), PolicyCommandCode(0x15D)], v) == chained
    assert policy_digest([]) == bytes(32)
    with pytest.raises(InvalidInput):
        policy_digest([PolicyPcr.of({HashAlg.SHA256: [16]})])


def test_ek_policy_constant():
    assert EK_POLICY_SHA256.hex() == "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa"


def test_selection_normalized_and_round_trip():
    sel = {HashAlg.SHA256: [0, 23, 8], HashAlg.SHA1: [16]}
    norm = normalize_selection(sel)
    assert norm.banks == ((HashAlg.SHA1, (16,)), (HashAlg.SHA256, (0, 8, 23)))
    assert normalize_selection(PcrSelection.from_mapping(sel)) == norm
    wire = norm.encode()
    assert wire == struct.pack(">IHB", 2, 4, 3) + b"\0\0\x01" + struct.pack(">HB", 0x0B, 3) + b"\x01\x01\x80"
    assert parse_pcr_selection(wire) == norm
    assert normalize_selection({HashAlg.SHA256: []}).encode() == b"\0\0\0\0"
    with pytest.raises(InvalidInput, match="trailing"):
        parse_pcr_selection(wire + b"\0")
    with pytest.raises(InvalidInput, match="truncated"):
        parse_pcr_selection(wire[:-1])
    with pytest.raises(InvalidInput):
        parse_pcr_selection(b"\xff\xff\xff\xff")


@pytest.mark.parametrize(
    "rc,policy",
    [
        (0x99D, True),  # TPM_RC_POLICY_FAIL, session 1
        (0x09D, True),
        (0xA9D, True),  # session 2
        (0x128, True),  # TPM_RC_PCR_CHANGED
        (0x98E, False),  # TPM_RC_AUTH_FAIL
        (0x9A2, False),  # TPM_RC_BAD_AUTH
        (0x1DF, False),  # TPM_RC_INTEGRITY (parameter 1)
        (0x902, False),  # TPM_RC_OBJECT_MEMORY (warning)
        (0x7099D, False),  # not a TPM response code (TSS layer)
    ],
)
def test_policy_failure_classification(rc, policy):
    assert _is_policy_failure(rc) is policy
