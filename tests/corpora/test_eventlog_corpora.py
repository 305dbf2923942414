"""Every TCG log of ../shared/corpora: parses, round-trips, replays to its expected PCRs, or fails
for the reason its MANIFEST gives (issue 2, tests)."""

from __future__ import annotations

import json
import os
import re
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vroot.errors import EventLogError, ReplayMismatch
from vroot.eventlog import (
    describe_event,
    encode_tcg_log,
    parse_tcg_log,
    replay_tcg_log,
    verify_replay,
)
from vroot.tpm2 import HashAlg

# As tests/conftest.py (a bare `conftest` import would be ambiguous: tests/tpm has one too).
CORPORA = Path(
    os.environ.get("VROOT_CORPORA", Path(__file__).resolve().parents[2].parent / "shared" / "corpora")
)

pytestmark = pytest.mark.corpora

# Files that are not TCG logs (IMA lists, quotes, keys) or that are negative cases tested below.
NOT_TCG_LOGS = re.compile(r"(\.json|\.md|\.yaml|\.warn|\.pem|\.pb|\.der|\.crt|\.cer|\.pub|\.out|\.name)$|"
                          r"ima|tpm-emulator-quote|tpmt_public|tpms_attest|tpmt_signature")  # fmt: skip
MUST_FAIL = {
    "keylime/create-mb-policy/binary_bios_measurements-bogus": "PCR index",  # 34 bytes of garbage
    "keylime/create-mb-policy/binary_bios_measurements-empty": "empty log",
}
# PCRs an expected.json lists that the log cannot reproduce, each with the sentence saying so.
SKIP_PCRS = {
    "go-attestation/linux_tpm12.eventlog.bin": ({10}, "PCR10 (IMA) is not in the log"),
    "go-attestation/sb_cert_eventlog": ({10}, "PCR10 (IMA, not in log)"),
    "go-tpm-tools/gce-cos-85-no-nonce/eventlog.bin": ({10}, "except PCR10 (not in the firmware log)"),
    "go-tpm-tools/gce-cos-85-nonce9009/eventlog.bin": ({10}, "except PCR10 (not in the firmware log)"),
}
WORKAROUND_CASE = "go-attestation/ebs_event_missing_eventlog"


def _manifests() -> str:
    return "\n".join(p.read_text() for p in sorted(CORPORA.glob("*/MANIFEST.md")))


def _log_files() -> list[str]:
    files = []
    for path in sorted(CORPORA.rglob("*")):
        rel = path.relative_to(CORPORA).as_posix()
        if path.is_file() and "/" in rel and not NOT_TCG_LOGS.search(rel):
            files.append(rel)
    return files


def _expected(rel: str) -> dict | None:
    """The expected.json of a log: `<log>.expected.json`, `<stem>.expected.json` naming it as its
    `eventlog_file`, or the `expected.json` of the log's own folder."""
    path = CORPORA / rel
    for candidate in (path.with_name(path.name + ".expected.json"), path.parent / "expected.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    for candidate in path.parent.glob("*.expected.json"):
        doc = json.loads(candidate.read_text())
        if str(doc.get("eventlog_file", "")).split(" ")[0] == path.name:
            return doc
    return None


LOGS = _log_files()
REPLAYED = [
    rel
    for rel in LOGS
    if rel not in MUST_FAIL and rel != WORKAROUND_CASE and (_expected(rel) or {}).get("pcrs")
]
PARSE_ONLY = [rel for rel in LOGS if rel not in MUST_FAIL and rel not in REPLAYED]


def _claimed(doc: dict) -> dict[HashAlg, dict[int, bytes]]:
    return {
        HashAlg.from_bank(bank): {int(i): bytes.fromhex(v) for i, v in values.items()}
        for bank, values in doc["pcrs"].items()
    }


def test_the_corpora_hold_the_logs_the_manifests_describe():
    manifests = _manifests()
    assert len(LOGS) >= 40
    for rel in LOGS:
        name = Path(rel).name  # the MANIFEST names `binary_bios_measurements-bogus`, `-empty` together
        assert name in manifests or name.rsplit("-", 1)[0] in manifests or "/eventlog.bin" in rel, rel
    for rel, (_, sentence) in SKIP_PCRS.items():
        doc = _expected(rel)
        assert sentence.split(" (")[0] in json.dumps(doc) + manifests, f"no reason to skip PCRs of {rel}"


@pytest.mark.parametrize("rel", [rel for rel in LOGS if rel not in MUST_FAIL])
def test_every_log_round_trips_byte_exact(rel):
    data = (CORPORA / rel).read_bytes()
    log = parse_tcg_log(data, source=rel)
    assert encode_tcg_log(log) == data
    for event in log.events:
        assert describe_event(event).summary


@pytest.mark.parametrize("rel", REPLAYED)
def test_log_replays_to_every_expected_pcr(rel):
    log = parse_tcg_log((CORPORA / rel).read_bytes(), source=rel)
    skip = SKIP_PCRS.get(rel, (set(), ""))[0]
    claimed = _claimed(_expected(rel))
    replayed = replay_tcg_log(log)
    checked = 0
    for alg, values in claimed.items():
        for index, value in values.items():
            if index in skip:
                assert replayed[alg][index] != value  # the reason to skip it holds
                continue
            assert replayed[alg][index].hex() == value.hex(), f"{rel} {alg.bank} PCR {index}"
            checked += 1
    assert checked >= 1
    pcrs = sorted({i for values in claimed.values() for i in values} - skip)
    proven = verify_replay(log, claimed=claimed, pcrs=pcrs)
    assert proven.workarounds == ()


@pytest.mark.parametrize("rel", PARSE_ONLY)
def test_parse_only_logs_parse_and_replay(rel):
    log = parse_tcg_log((CORPORA / rel).read_bytes(), source=rel)
    assert log.events
    replayed = replay_tcg_log(log)
    assert all(len(values) >= 24 for values in replayed.values())


@pytest.mark.parametrize(("rel", "reason"), sorted(MUST_FAIL.items()))
def test_garbage_and_empty_logs_are_rejected(rel, reason):
    assert "must fail" in json.dumps(_expected(rel)).lower() + _manifests().lower()
    with pytest.raises(EventLogError, match=reason) as info:
        parse_tcg_log((CORPORA / rel).read_bytes(), source=rel)
    assert info.value.offset == 0 and rel in str(info.value)


def test_linux_tpm12_log_replays_pcr0_to_7():
    rel = "go-attestation/linux_tpm12.eventlog.bin"
    log = parse_tcg_log((CORPORA / rel).read_bytes())
    assert log.spec_id is None and len(log.events) == 40
    proven = verify_replay(log, claimed=_claimed(_expected(rel)), pcrs=range(8))
    assert sorted(proven.pcrs[HashAlg.SHA1]) == list(range(8))


def test_ebs_event_missing_log_needs_the_workaround(monkeypatch):
    log = parse_tcg_log((CORPORA / WORKAROUND_CASE).read_bytes())
    # The log has no SHA-256 digests; the expected.json notes go-attestation ignores that value.
    claimed = {HashAlg.SHA1: _claimed(_expected(WORKAROUND_CASE))[HashAlg.SHA1]}
    proven = verify_replay(log, claimed=claimed)
    assert proven.workarounds == ("exit-boot-services-events-missing",)
    assert proven.pcrs[HashAlg.SHA1][5].hex().startswith("31245808")
    with monkeypatch.context() as patch:  # the plain replay alone, with the workaround table emptied
        patch.setattr("vroot.eventlog._workarounds.WORKAROUNDS", ())
        with pytest.raises(ReplayMismatch, match="sha1: PCR 5 replays to e5781a2f") as info:
            verify_replay(log, claimed=claimed)
    assert info.value.pcrs == (5,) and info.value.bank == "sha1"


def test_specid_vendordata_is_read_leniently_like_tpm2_eventlog():
    """EventSize 37 < the 41-byte structure; tpm2_eventlog accepts it and so does vroot: the
    structure's own lengths say where it ends, and a strict reading would only fail, not differ."""
    data = (CORPORA / "tpm2-tools/specid-vendordata.bin").read_bytes()
    log = parse_tcg_log(data)
    assert log.spec_id.event_size == 37 and log.spec_id.vendor_info == bytes.fromhex("deadbeef")
    assert len(log.events) == 1 and encode_tcg_log(log) == data


MUTATION_SOURCES = [
    "go-tpm-tools/glinux-alex.bin",
    "go-attestation/option_rom_eventlog",
    "tpm2-tools/event.bin",
]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(MUTATION_SOURCES), st.data())
def test_mutated_corpus_logs_raise_only_event_log_error(rel, data):
    wire = bytearray((CORPORA / rel).read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(wire) - 1))
        kind = data.draw(st.sampled_from(["flip", "truncate", "huge", "insert"]))
        if kind == "flip":
            wire[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "truncate":
            del wire[max(at, 1) :]
        elif kind == "huge":
            wire[at : at + 4] = struct.pack(
                "<I", data.draw(st.sampled_from([0xFFFFFFFF, 0x80000000, 0x01000000]))
            )
        else:
            wire[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    start = time.perf_counter()
    try:
        log = parse_tcg_log(bytes(wire))
    except EventLogError as exc:
        assert exc.offset is not None
    else:
        replay_tcg_log(log)
        for event in log.events:
            describe_event(event)
    assert time.perf_counter() - start < 1.0
