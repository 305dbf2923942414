"""TmClient PCRs: active banks, reset values of all 24 PCRs in every bank, extend = software hash chain."""

from __future__ import annotations

import hashlib

import pytest

from vroot.errors import InvalidInput, TmError
from vroot.tm import Tpm
from vroot.tpm2 import HashAlg

pytestmark = pytest.mark.tpm

ALL_BANKS = (HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512)


def reset_value(alg: HashAlg, pcr: int) -> bytes:
    return (b"\xff" if 17 <= pcr <= 22 else b"\x00") * alg.digest_size


def test_is_a_tpm(tm):
    assert isinstance(tm, Tpm)


def test_banks(tm):
    # `swtpm socket` 0.7 creates its state with sha1/256/384/512 banks; later versions may differ.
    banks = tm.pcr_banks()
    assert HashAlg.SHA256 in banks and set(banks) <= set(ALL_BANKS)


def test_reset_values_all_banks_all_pcrs(tm):
    values = tm.pcr_read()
    assert list(values) == sorted(tm.pcr_banks())
    for alg, bank in values.items():
        assert list(bank) == list(range(24))
        for pcr, value in bank.items():
            assert value == reset_value(alg, pcr), f"{alg.bank}:{pcr}"


def test_explicit_selection_over_eight_per_call(tm):
    sel = {HashAlg.SHA256: range(24), HashAlg.SHA1: [23, 0, 17, 17]}
    values = tm.pcr_read(sel)
    assert list(values) == [HashAlg.SHA1, HashAlg.SHA256]
    assert list(values[HashAlg.SHA1]) == [0, 17, 23]
    assert len(values[HashAlg.SHA256]) == 24


def test_extend_matches_software_chain_every_bank(tm):
    banks = tm.pcr_banks()
    expected = {alg: {pcr: reset_value(alg, pcr) for pcr in (0, 7, 16, 23)} for alg in banks}
    for n in range(5):
        for pcr in (0, 7, 16, 23):
            digests = {alg: alg.digest(f"event {n} pcr {pcr}".encode()) for alg in banks}
            tm.pcr_extend(pcr, digests)
            for alg in banks:
                expected[alg][pcr] = alg.digest(expected[alg][pcr] + digests[alg])
    got = tm.pcr_read({alg: (0, 7, 16, 23) for alg in banks})
    assert got == expected
    # the other PCRs did not move
    untouched = tm.pcr_read({HashAlg.SHA256: [1, 2, 15, 18, 22]})[HashAlg.SHA256]
    assert untouched == {i: reset_value(HashAlg.SHA256, i) for i in (1, 2, 15, 18, 22)}


def test_extend_one_bank_only(tm):
    d = hashlib.sha256(b"only sha256").digest()
    tm.pcr_extend(10, {HashAlg.SHA256: d})
    got = tm.pcr_read({HashAlg.SHA256: [10], HashAlg.SHA1: [10]})
    assert got[HashAlg.SHA256][10] == hashlib.sha256(bytes(32) + d).digest()
    assert got[HashAlg.SHA1][10] == bytes(20)


def test_bad_arguments(tm):
    with pytest.raises(InvalidInput, match="out of range"):
        tm.pcr_extend(24, {HashAlg.SHA256: bytes(32)})
    with pytest.raises(InvalidInput, match="20"):
        tm.pcr_extend(16, {HashAlg.SHA1: bytes(32)})
    with pytest.raises(InvalidInput):
        tm.pcr_extend(16, {})
    with pytest.raises(InvalidInput, match="out of range"):
        tm.pcr_read({HashAlg.SHA256: [24]})


def test_locality_protected_pcr_is_a_tm_error(tm):
    # PCRs 17-22 are extended only from localities 2-4 (D-RTM); a locality-0 client gets an rc.
    with pytest.raises(TmError) as err:
        tm.pcr_extend(17, {HashAlg.SHA256: bytes(32)})
    assert err.value.rc == 0x907  # TPM_RC_LOCALITY


def test_inactive_bank_is_an_error(tm):
    with pytest.raises(TmError):  # unsupported algorithm (rc 0x1c3) or bank not active
        tm.pcr_read({HashAlg.SHA3_256: [0]})
