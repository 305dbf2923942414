"""Pure parts of vroot.tm: software policy digests, PCR selections, TPM_RC classification.
(The cross-checks against a TPM trial session are in test_tm_seal.py.)"""

from __future__ import annotations

import hashlib
import struct

import pytest

from vroot.errors import InvalidInput
from vroot.tm._policy import (
    EK_POLICY_SHA256,
    PolicyCommandCode,
    PolicyPcr,
    marshal_pcr_selection,
    normalize_selection,
    policy_command_code_digest,
    policy_digest,
    policy_pcr_digest,
    unmarshal_pcr_selection,
)
from vroot.tm.client import _is_policy_failure
from vroot.tpm2 import HashAlg


def test_policy_pcr_digest_formula():
    v = hashlib.sha256(b"pcr16").digest()
    sel = struct.pack(">IHB", 1, 0x0B, 3) + bytes([0, 0, 1])  # sha256: PCR 16
    want = hashlib.sha256(bytes(32) + struct.pack(">I", 0x17F) + sel + hashlib.sha256(v).digest()).digest()
    assert policy_pcr_digest({HashAlg.SHA256: [16]}, {HashAlg.SHA256: {16: v}}) == want


def test_policy_pcr_digest_orders_banks_and_indices():
    values = {
        HashAlg.SHA1: {i: bytes([i]) * 20 for i in range(24)},
        HashAlg.SHA256: {i: bytes([i]) * 32 for i in range(24)},
    }
    a = policy_pcr_digest({HashAlg.SHA256: [7, 0], HashAlg.SHA1: [3]}, values)
    b = policy_pcr_digest({HashAlg.SHA1: [3, 3], HashAlg.SHA256: (0, 7)}, values)
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
        policy_pcr_digest({HashAlg.SHA256: [1]}, {HashAlg.SHA256: {}})
    with pytest.raises(InvalidInput, match="32"):
        policy_pcr_digest({HashAlg.SHA256: [1]}, {HashAlg.SHA256: {1: bytes(20)}})
    with pytest.raises(InvalidInput, match="out of range"):
        policy_pcr_digest({HashAlg.SHA256: [24]}, {})
    with pytest.raises(InvalidInput):
        policy_pcr_digest({HashAlg.SHA256: [1]}, {HashAlg.SHA256: {1: bytes(32)}}, previous=b"short")


def test_command_code_and_chain():
    dup = hashlib.sha256(bytes(32) + struct.pack(">II", 0x16C, 0x14B)).digest()
    assert policy_command_code_digest(0x14B) == dup
    v = {HashAlg.SHA256: {16: bytes(32)}}
    chained = policy_command_code_digest(0x15D, previous=policy_pcr_digest({HashAlg.SHA256: [16]}, v))
    assert policy_digest([PolicyPcr.of({HashAlg.SHA256: [16]}), PolicyCommandCode(0x15D)], v) == chained
    with pytest.raises(InvalidInput):
        policy_digest([PolicyPcr.of({HashAlg.SHA256: [16]})])


def test_ek_policy_constant():
    assert EK_POLICY_SHA256.hex() == "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa"


def test_selection_round_trip():
    sel = {HashAlg.SHA256: [0, 23, 8], HashAlg.SHA1: [16]}
    wire = marshal_pcr_selection(sel)
    assert unmarshal_pcr_selection(wire) == ((4, (16,)), (0x0B, (0, 8, 23)))
    assert normalize_selection(sel) == ((HashAlg.SHA1, (16,)), (HashAlg.SHA256, (0, 8, 23)))
    assert marshal_pcr_selection({HashAlg.SHA256: []}) == b"\0\0\0\0"
    with pytest.raises(InvalidInput, match="trailing"):
        unmarshal_pcr_selection(wire + b"\0")
    with pytest.raises(InvalidInput, match="truncated"):
        unmarshal_pcr_selection(wire[:-1])
    with pytest.raises(InvalidInput):
        unmarshal_pcr_selection(b"\xff\xff\xff\xff")


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
