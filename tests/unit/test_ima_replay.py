"""IMA replay bank by bank: the same PCRs as the rule of DESIGN.md section 2 applied entry by entry,
the same error for an entry it cannot digest, and a log's replays from zero kept with it."""

from __future__ import annotations

import hashlib
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vroot.errors import EventLogError
from vroot.eventlog import UnverifiedImaLog, ima_ng_entry, parse_ima_log, replay_ima_log
from vroot.eventlog import _ima_replay as replay_module
from vroot.tpm2 import HashAlg

SHA1, SHA256, SHA384 = HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384


def reference_replay(entries, banks) -> dict:  # noqa: ANN001
    """The rule, entry by entry: template hash in its own bank, hash of the template data in
    the others, all ones for a violation; PCRs start at zero."""
    out: dict = {alg: {} for alg in banks}
    for entry in entries:
        for alg in banks:
            new = getattr(hashlib, alg.bank)
            if entry.violation:
                measurement = b"\xff" * alg.digest_size
            elif alg is entry.template_hash_alg:
                measurement = entry.template_hash
            else:
                measurement = new(entry.template_data).digest()
            old = out[alg].get(entry.pcr, bytes(alg.digest_size))
            out[alg][entry.pcr] = new(old + measurement).digest()
    return out


def violation(pcr: int):  # noqa: ANN201
    (entry,) = parse_ima_log(b"%2d %s ima-ng sha256:%s /tmp/raced\n" % (pcr, b"00" * 20, b"00" * 32)).entries
    assert entry.violation
    return entry


@st.composite
def ima_lists(draw):  # noqa: ANN201
    """Entries on a few PCRs (runs and interleaved), some violations, SHA-1 and SHA-256 template hashes."""
    entries = []
    for i in range(draw(st.integers(0, 12))):
        pcr = draw(st.sampled_from([10, 10, 10, 11, 0]))
        if draw(st.integers(0, 5)) == 0:
            entries.append(violation(pcr))
            continue
        entry = ima_ng_entry(f"/f{i}", bytes([i]) * 32, alg=SHA256, pcr=pcr)
        if draw(st.booleans()):  # as in a per-bank list (ascii_runtime_measurements_sha256)
            text = b"%2d %s ima-ng sha256:%s /f%d\n" % (pcr, hashlib.sha256(entry.template_data).hexdigest().encode(),
                                                        (bytes([i]) * 32).hex().encode(), i)  # fmt: skip
            (entry,) = parse_ima_log(text).entries
            assert entry.template_hash_alg is SHA256
        entries.append(entry)
    return tuple(entries)


@settings(deadline=None)
@given(ima_lists(), st.sampled_from([(SHA1,), (SHA256,), (SHA1, SHA256), (SHA256, SHA384, SHA1), (SHA1, SHA256, SHA1)]))
def test_replay_is_the_rule_entry_by_entry(entries, banks):
    """(A bank named twice is extended twice with each entry, as replay always did.)"""
    replayed = replay_ima_log(UnverifiedImaLog(entries=entries, format="binary"), banks=banks)
    assert {alg: dict(replayed[alg]) for alg in replayed} == reference_replay(entries, banks)


@settings(deadline=None)
@given(ima_lists(), st.integers(0, 12))
def test_replay_from_a_saved_state_is_the_rule_too(entries, cut):
    first = UnverifiedImaLog(entries=entries[:cut], format="binary")
    rest = UnverifiedImaLog(entries=entries[cut:], format="binary")
    state = replay_ima_log(first, banks=(SHA1, SHA256))
    assert replay_ima_log(rest, banks=(SHA1, SHA256), start=state) == replay_ima_log(
        UnverifiedImaLog(entries=entries, format="binary"), banks=(SHA1, SHA256)
    )


def _unknown_template(template_hash_hex: str, line_no: int) -> bytes:
    return b"10 " + template_hash_hex.encode() + b" my-tmpl field%d\n" % line_no


def test_the_first_undigestable_entry_in_log_order_is_named():
    """Line 2 (SHA-1 template hash) has no SHA-256 digest, line 3 (SHA-256) no SHA-1 digest: the
    error names line 2, which comes first, though SHA-1 is the first bank replayed."""
    good = ima_ng_entry("/a", b"\x01" * 32, alg=SHA256)
    text = (b"10 %s ima-ng sha256:%s /a\n" % (good.template_hash.hex().encode(), (b"\x01" * 32).hex().encode())
            + _unknown_template("ab" * 20, 2) + _unknown_template("cd" * 32, 3))  # fmt: skip
    log = parse_ima_log(text, source="ima.txt")
    with pytest.raises(EventLogError, match="line 2: template 'my-tmpl' is unknown, so its sha256 template") as info:
        replay_ima_log(log, banks=(SHA1, SHA256))
    assert info.value.offset == text.index(b"\n") + 1 and info.value.source == "ima.txt"
    with pytest.raises(EventLogError, match="line 3: template 'my-tmpl' is unknown, so its sha1 template"):
        replay_ima_log(log.replace(entries=log.entries[::2]), banks=(SHA256, SHA1))


def test_a_log_keeps_its_replays_from_zero():
    """Replaying the same log object again (verification, then appraisal) hashes nothing again;
    the kept replay is per bank, and a replay from a saved state neither uses nor keeps it."""
    entries = tuple(ima_ng_entry(f"/f{i}", bytes([i]) * 32, alg=SHA256) for i in range(5))
    log = UnverifiedImaLog(entries=entries, format="binary")
    fresh = replay_ima_log(UnverifiedImaLog(entries=entries, format="binary"), banks=(SHA1, SHA256))
    with mock.patch.object(replay_module, "_extend", wraps=replay_module._extend) as extend:
        assert replay_ima_log(log, banks=(SHA256,))[SHA256] == fresh[SHA256]
        assert extend.call_count == 1
        assert replay_ima_log(log, banks=(SHA1, SHA256)) == fresh
        assert extend.call_count == 2  # SHA-1 only
        assert replay_ima_log(log, banks=(SHA256, SHA1)) == fresh
        assert extend.call_count == 2
        start = {SHA256: {10: b"\x01" * 32}}
        from_state = replay_ima_log(log, banks=(SHA256,), start=start)
        assert extend.call_count == 3 and from_state[SHA256] != fresh[SHA256]
        assert replay_ima_log(log, banks=(SHA256,))[SHA256] == fresh[SHA256]
        assert extend.call_count == 3
        empty_start = replay_ima_log(log, banks=(SHA256,), start={SHA256: {}})
        assert extend.call_count == 3 and empty_start == replay_ima_log(log, banks=(SHA256,))


def test_a_log_with_a_list_of_entries_keeps_nothing():
    """Only a tuple of entries cannot change after a replay."""
    entries = [ima_ng_entry(f"/f{i}", bytes([i]) * 32, alg=SHA256) for i in range(3)]
    log = UnverifiedImaLog(entries=entries, format="binary")
    before = replay_ima_log(log, banks=(SHA256,))
    entries.pop()
    assert replay_ima_log(log, banks=(SHA256,)) != before
    assert replay_ima_log(log, banks=(SHA256,)) == replay_ima_log(
        UnverifiedImaLog(entries=tuple(entries), format="binary"), banks=(SHA256,)
    )
