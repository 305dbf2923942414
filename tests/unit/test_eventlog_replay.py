"""TCG log replay rules (DESIGN.md section 2) and proving a log against claimed PCRs."""

from __future__ import annotations

import hashlib

import pytest

from vroot.errors import InvalidInput, ReplayMismatch
from vroot.eventlog import (
    WORKAROUNDS,
    EventType,
    TcgLogBuilder,
    efi_action,
    hcrtm_event,
    parse_tcg_log,
    replay_tcg_log,
    separator,
    startup_locality,
    verify_replay,
)
from vroot.tpm2 import HashAlg

SHA1, SHA256 = HashAlg.SHA1, HashAlg.SHA256


def extend(alg, value, *digests):
    for digest in digests:
        value = alg.digest(value + digest)
    return value


def test_unlogged_pcrs_keep_their_reset_values():
    pcrs = replay_tcg_log(TcgLogBuilder().build())
    assert set(pcrs) == {SHA1, SHA256}
    assert sorted(pcrs[SHA256]) == list(range(24))
    for i in range(24):
        want = b"\xff" * 32 if 17 <= i <= 22 else bytes(32)
        assert pcrs[SHA256][i] == want


def test_events_extend_in_order_in_every_bank():
    builder = TcgLogBuilder()
    a = builder.add(4, EventType.EV_EFI_ACTION, efi_action("a"))
    b = builder.add(4, EventType.EV_SEPARATOR, separator())
    pcrs = replay_tcg_log(builder.build())
    for alg in (SHA1, SHA256):
        assert pcrs[alg][4] == extend(alg, bytes(alg.digest_size), a.digests[alg], b.digests[alg])


def test_no_action_events_are_never_extended():
    builder = TcgLogBuilder()
    builder.add(5, EventType.EV_NO_ACTION, b"anything at all")
    assert replay_tcg_log(builder.build())[SHA256][5] == bytes(32)


def test_startup_locality_sets_pcr0_start_value():
    builder = TcgLogBuilder()
    builder.add(0, EventType.EV_NO_ACTION, startup_locality(3))
    crtm = builder.add(0, EventType.EV_S_CRTM_VERSION, b"v")
    start = bytes(31) + b"\x03"
    assert replay_tcg_log(builder.build())[SHA256][0] == extend(SHA256, start, crtm.digests[SHA256])


def test_startup_locality_after_pcr0_was_extended_changes_nothing():
    builder = TcgLogBuilder()
    crtm = builder.add(0, EventType.EV_S_CRTM_VERSION, b"v")
    builder.add(0, EventType.EV_NO_ACTION, startup_locality(3))
    assert replay_tcg_log(builder.build())[SHA256][0] == extend(SHA256, bytes(32), crtm.digests[SHA256])


def test_hcrtm_event_starts_pcr0_at_locality_4_then_extends():
    builder = TcgLogBuilder()
    builder.add(0, EventType.EV_NO_ACTION, startup_locality(3))
    hcrtm = builder.add(0, EventType.EV_EFI_HCRTM_EVENT, hcrtm_event(), measured=b"H-CRTM image")
    fw = builder.add(0, EventType.EV_POST_CODE, b"POST CODE", measured=b"firmware")
    want = extend(SHA1, bytes(19) + b"\x04", hcrtm.digests[SHA1], fw.digests[SHA1])
    assert replay_tcg_log(builder.build())[SHA1][0] == want


def test_legacy_log_replays_the_sha1_bank():
    builder = TcgLogBuilder(banks=(SHA1,), legacy=True)
    event = builder.add(7, EventType.EV_SEPARATOR, separator())
    pcrs = replay_tcg_log(builder.build())
    assert list(pcrs) == [SHA1] and pcrs[SHA1][7] == extend(SHA1, bytes(20), event.digests[SHA1])


def test_bank_missing_from_an_event_is_incomplete_not_guessed():
    builder = TcgLogBuilder()
    builder.add(4, EventType.EV_EFI_ACTION, b"x")
    log = builder.build()
    event = log.events[1]
    stripped = log.replace(events=(log.events[0], event.replace(digests={SHA1: event.digests[SHA1]})))
    pcrs = replay_tcg_log(stripped)
    assert list(pcrs) == [SHA1] and pcrs.incomplete == (SHA256,)


def _claimed(log, pcrs=(0, 4, 7)):
    replayed = replay_tcg_log(log)
    return {alg: {i: replayed[alg][i] for i in pcrs} for alg in replayed}


def _boot_log():
    builder = TcgLogBuilder()
    builder.add(0, EventType.EV_S_CRTM_VERSION, b"v")
    builder.add(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, b"\x00" * 32, measured=b"boot loader")
    builder.add(7, EventType.EV_SEPARATOR, separator())
    builder.add(9, EventType.EV_IPL, b"kernel", measured=b"vmlinuz")
    return builder.build()


def test_verify_replay_returns_the_events_of_the_verified_pcrs():
    log = _boot_log()
    proven = verify_replay(log, claimed=_claimed(log))
    assert proven.workarounds == ()
    assert [e.pcr for e in proven.events] == [0, 4, 7]  # PCR 9 was not claimed: its event is not proven
    assert set(proven.pcrs[SHA256]) == {0, 4, 7}


def test_verify_replay_names_every_differing_pcr():
    log = _boot_log()
    claimed = _claimed(log)
    claimed[SHA256] = {**claimed[SHA256], 4: bytes(32), 7: bytes(32)}
    with pytest.raises(
        ReplayMismatch, match=r"sha256: PCR 4 replays to [0-9a-f]+, claimed 0+; PCR 7"
    ) as info:
        verify_replay(log, claimed=claimed)
    assert info.value.bank == "sha256" and info.value.pcrs == (4, 7)


def test_verify_replay_extra_or_reordered_event_fails():
    log = _boot_log()
    claimed = _claimed(log)
    events = log.events
    reordered = log.replace(events=(events[0], events[2], events[1], *events[3:]))
    assert replay_tcg_log(reordered) == replay_tcg_log(
        log
    )  # different PCRs: order within a PCR is what counts
    extra = TcgLogBuilder()
    for event in log.events[1:]:
        extra.add(event.pcr, event.event_type, event.data, digests=event.digests)
    extra.add(4, EventType.EV_EFI_ACTION, b"one more")
    with pytest.raises(ReplayMismatch, match="PCR 4"):
        verify_replay(extra.build(), claimed=claimed)


def test_verify_replay_restricted_to_some_pcrs():
    log = _boot_log()
    claimed = _claimed(log)
    claimed[SHA1] = {**claimed[SHA1], 7: bytes(20)}
    proven = verify_replay(log, claimed=claimed, pcrs=[0, 4])
    assert set(proven.pcrs[SHA1]) == {0, 4}


def test_claimed_bank_the_log_does_not_carry_is_a_mismatch():
    builder = TcgLogBuilder(banks=(SHA1,), legacy=True)
    builder.add(0, EventType.EV_S_CRTM_VERSION, b"v")
    with pytest.raises(ReplayMismatch, match="carries no complete sha256 bank") as info:
        verify_replay(builder.build(), claimed={SHA256: {0: bytes(32)}})
    assert info.value.bank == "sha256"


def test_nothing_to_verify_is_refused():
    with pytest.raises(InvalidInput):
        verify_replay(_boot_log(), claimed={})
    with pytest.raises(InvalidInput):
        verify_replay(_boot_log(), claimed=_claimed(_boot_log()), pcrs=[23])


def _ebs_log(with_events: bool):
    builder = TcgLogBuilder(banks=(SHA1,), legacy=True)
    builder.add(5, EventType.EV_EFI_ACTION, efi_action("Calling EFI Application from Boot Option"))
    if with_events:
        builder.add(5, EventType.EV_EFI_ACTION, efi_action("Exit Boot Services Invocation"))
        builder.add(5, EventType.EV_EFI_ACTION, efi_action("Exit Boot Services Returned with Success"))
    return builder.build()


def test_exit_boot_services_workaround_is_tried_only_after_a_plain_failure():
    claimed = {SHA1: {5: replay_tcg_log(_ebs_log(True))[SHA1][5]}}
    buggy = _ebs_log(False)
    proven = verify_replay(buggy, claimed=claimed)
    assert proven.workarounds == ("exit-boot-services-events-missing",)
    assert [e.data for e in proven.events][-2:] == [b"Exit Boot Services Invocation",
                                                    b"Exit Boot Services Returned with Success"]  # fmt: skip
    assert len(buggy.events) == 1  # the caller's log is untouched: the workaround ran on a copy
    assert verify_replay(_ebs_log(True), claimed=claimed).workarounds == ()


def test_workaround_does_not_rescue_a_log_that_has_the_events():
    claimed = {SHA1: {5: bytes(20)}}
    with pytest.raises(ReplayMismatch, match="PCR 5"):
        verify_replay(_ebs_log(True), claimed=claimed)


def test_workaround_table_carries_evidence():
    for workaround in WORKAROUNDS:
        assert workaround.id and workaround.pcrs and "corpora" in workaround.evidence


def test_replay_is_fast():
    builder = TcgLogBuilder()
    for i in range(100):
        builder.add(i % 10, EventType.EV_IPL, b"event %d" % i)
    import time

    from vroot.eventlog import encode_tcg_log

    wire = encode_tcg_log(builder.build())
    start = time.perf_counter()
    for _ in range(20):
        replay_tcg_log(parse_tcg_log(wire))
    assert (time.perf_counter() - start) / 20 < 0.02  # about 0.5 ms on a dev machine; loose for CI


def test_sha1_extend_helper_matches_hashlib():
    assert extend(SHA1, bytes(20), b"\x01" * 20) == hashlib.sha1(bytes(20) + b"\x01" * 20).digest()


def test_claimed_values_may_name_banks_as_text():
    log = _boot_log()
    claimed = {alg.bank: {str(i): v for i, v in values.items()} for alg, values in _claimed(log).items()}
    assert verify_replay(log, claimed=claimed).workarounds == ()
