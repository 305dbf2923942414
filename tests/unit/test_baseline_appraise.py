"""Appraisal (RA-5): every finding ID triggered once and absent when all is well; learnt baselines
on a simulated host (TT-1, IM-1); verdicts, JSON forms, speed."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from test_baseline_fakes import BANKS, NOW, boot_host, evidence_of, ima_entry

from vroot.baseline import (
    FINDING_IDS,
    Appraisal,
    AppraisalInput,
    Finding,
    ImaPolicy,
    ImaReference,
    Policy,
    ReferenceValue,
    appraisal_input_from_host_evidence,
    appraise,
    learn_baseline,
)
from vroot.errors import InvalidInput, ReplayMismatch
from vroot.eventlog import (
    EventType,
    TcgLogBuilder,
    UnverifiedImaLog,
    ima_ng_entry,
    parse_ima_log,
    parse_tcg_log,
    replay_ima_log,
    replay_tcg_log,
    verify_replay,
)
from vroot.tpm2 import HashAlg

CHECKED = frozenset(range(10))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A known-good host boot, the baseline learnt from it, a strict policy and its evidence."""
    tpm, record = boot_host(tmp_path_factory.mktemp("good"))
    baseline = learn_baseline(tcg_log=parse_tcg_log(record.tcg_log), ima_log=parse_ima_log(record.ima_log),
                              name="hosts", version="1")  # fmt: skip
    policy = Policy(group="hosts", event_pcrs=CHECKED, ima=ImaPolicy(), max_evidence_age=timedelta(minutes=5))
    return baseline, policy, evidence_of(tpm, record), (tpm, record)


@pytest.fixture(scope="module")
def tampered_boot_loader(tmp_path_factory):
    tpm, record = boot_host(tmp_path_factory.mktemp("bad"), flavour_files={"bootloader.efi": b"evil boot loader"})
    return evidence_of(tpm, record), record


def _ids(appraisal: Appraisal) -> list[str]:
    return [f.id for f in appraisal.findings]


def _one(appraisal: Appraisal, finding_id: str) -> Finding:
    found = [f for f in appraisal.findings if f.id == finding_id]
    assert len(found) == 1, appraisal.findings
    return found[0]


def test_learnt_baseline_appraises_its_own_boot_as_trusted(good):
    """RA-5: the same boot as the one learnt from is trusted, with no finding at all."""
    baseline, policy, evidence, _ = good
    appraisal = appraise(evidence=evidence, baseline=baseline, policy=policy, now=NOW)
    assert appraisal.verdict == "trusted" and appraisal.trusted
    assert appraisal.findings == ()
    assert (appraisal.baseline_name, appraisal.baseline_version, appraisal.policy_group) == ("hosts", "1", "hosts")
    assert appraisal.ima_state is not None and appraisal.ima_state.entries_seen == len(evidence.ima_entries)


def test_changed_boot_loader_is_an_unknown_pcr4_event_naming_it(good, tampered_boot_loader):
    """TT-1: a changed boot loader gives baseline.event.unknown on PCR 4 with the event's index,
    type and digest; the old boot loader's required reference is reported missing."""
    baseline, policy, _, _ = good
    evidence, record = tampered_boot_loader
    appraisal = appraise(evidence=evidence, baseline=baseline, policy=policy, now=NOW)
    assert appraisal.verdict == "untrusted"
    unknown = _one(appraisal, "baseline.event.unknown")
    event = next(e for e in parse_tcg_log(record.tcg_log).measurements
                 if e.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION)  # fmt: skip
    assert unknown.pcr == 4 and unknown.event_index == event.index
    assert unknown.seen == f"sha256:{event.digests[HashAlg.SHA256].hex()}"
    assert "EV_EFI_BOOT_SERVICES_APPLICATION" in unknown.message and f"event {event.index}" in unknown.message
    assert _one(appraisal, "baseline.event.missing").pcr == 4
    assert {f.pcr for f in appraisal.findings if f.id.startswith("baseline.")} == {4}


def test_pcr_mismatch(good):
    """baseline.pcr.mismatch: a golden value differs; absent when golden values equal the quote."""
    baseline, policy, evidence, _ = good
    golden = {HashAlg.SHA256: {i: evidence.pcrs[HashAlg.SHA256][i] for i in (0, 7)}}
    ok = appraise(evidence=evidence, baseline=baseline, policy=dataclasses.replace(policy, pcrs=golden), now=NOW)
    assert ok.findings == ()
    wrong = {HashAlg.SHA256: {0: golden[HashAlg.SHA256][0], 7: bytes(32)}}
    bad = appraise(evidence=evidence, baseline=baseline, policy=dataclasses.replace(policy, pcrs=wrong), now=NOW)
    finding = _one(bad, "baseline.pcr.mismatch")
    assert finding.pcr == 7 and finding.expected == "00" * 32
    assert finding.seen == evidence.pcrs[HashAlg.SHA256][7].hex() and bad.verdict == "untrusted"


def test_event_unknown_absent_for_pcrs_the_policy_does_not_check(good, tampered_boot_loader):
    baseline, policy, _, _ = good
    evidence, _ = tampered_boot_loader
    lenient = dataclasses.replace(policy, event_pcrs=CHECKED - {4})
    assert appraise(evidence=evidence, baseline=baseline, policy=lenient, now=NOW).findings == ()


def test_event_missing_only_for_required_references(good):
    """baseline.event.missing: a required reference no event matched; absent when not required."""
    baseline, policy, evidence, _ = good
    extra = ReferenceValue(component="shim", version="15.8", pcr=5, event_type=EventType.EV_IPL,
                           digests={HashAlg.SHA256: bytes(range(32))})  # fmt: skip
    optional = dataclasses.replace(baseline, reference_values=(*baseline.reference_values, extra))
    assert appraise(evidence=evidence, baseline=optional, policy=policy, now=NOW).findings == ()
    required = dataclasses.replace(optional, reference_values=(*baseline.reference_values,
                                                               dataclasses.replace(extra, required=True)))  # fmt: skip
    finding = _one(appraise(evidence=evidence, baseline=required, policy=policy, now=NOW), "baseline.event.missing")
    assert finding.pcr == 5 and finding.expected == "sha256:" + bytes(range(32)).hex() and "shim" in finding.message


def test_event_matches_only_if_every_common_verified_bank_agrees(good):
    """A reference whose SHA-256 digest matches but whose SHA-1 digest differs is not a match."""
    baseline, policy, evidence, _ = good
    forged = []
    for ref in baseline.reference_values:
        digests = dict(ref.digests)
        if ref.pcr == 8:
            digests[HashAlg.SHA1] = bytes(20)
        forged.append(dataclasses.replace(ref, digests=digests))
    appraisal = appraise(evidence=evidence, baseline=dataclasses.replace(baseline, reference_values=tuple(forged)),
                         policy=policy, now=NOW)  # fmt: skip
    assert {f.pcr for f in appraisal.findings if f.id == "baseline.event.unknown"} == {8}


def test_evidence_pcr_missing(good):
    """evidence.pcr.missing: a checked PCR, a golden PCR or the IMA PCR not covered by the quote."""
    baseline, policy, evidence, (tpm, record) = good
    partial = evidence_of(tpm, record, pcrs=(0, 1, 2, 3, 4, 5, 6, 7, 8, 10))
    appraisal = appraise(evidence=partial, baseline=baseline, policy=policy, now=NOW)
    assert [f.pcr for f in appraisal.findings] == [9] and _ids(appraisal) == ["evidence.pcr.missing"]
    golden = dataclasses.replace(policy, event_pcrs=frozenset(), pcrs={HashAlg.SHA384: {0: bytes(48)}})
    finding = _one(appraise(evidence=evidence, baseline=baseline, policy=golden, now=NOW), "evidence.pcr.missing")
    assert finding.pcr == 0 and "sha384" in finding.message
    no_ima_pcr = evidence_of(tpm, record, pcrs=tuple(range(10)))
    finding = _one(appraise(evidence=no_ima_pcr, baseline=baseline, policy=policy, now=NOW), "evidence.pcr.missing")
    assert finding.pcr == 10


def test_evidence_ima_missing(good):
    baseline, policy, evidence, _ = good
    no_list = dataclasses.replace(evidence, ima_entries=None)
    assert _ids(appraise(evidence=no_list, baseline=baseline, policy=policy, now=NOW)) == ["evidence.ima.missing"]
    no_ima_policy = dataclasses.replace(policy, ima=None)
    appraisal = appraise(evidence=no_list, baseline=baseline, policy=no_ima_policy, now=NOW)
    assert appraisal.findings == () and appraisal.ima_state is None


def test_evidence_too_old(good):
    baseline, policy, evidence, _ = good
    assert appraise(evidence=evidence, baseline=baseline, policy=policy, now=NOW + timedelta(minutes=4)).findings == ()
    finding = _one(appraise(evidence=evidence, baseline=baseline, policy=policy, now=NOW + timedelta(minutes=6)),
                   "evidence.too_old")  # fmt: skip
    assert finding.seen == "360 s" and finding.expected == "at most 300 s" and finding.severity == "error"
    unlimited = dataclasses.replace(policy, max_evidence_age=None)
    assert appraise(evidence=evidence, baseline=baseline, policy=unlimited, now=NOW + timedelta(days=9)).findings == ()


def test_evidence_from_future(good):
    baseline, policy, evidence, _ = good
    assert appraise(evidence=evidence, baseline=baseline, policy=policy, now=NOW - timedelta(seconds=30)).findings == ()
    appraisal = appraise(evidence=evidence, baseline=baseline, policy=policy, now=NOW - timedelta(minutes=5))
    assert _ids(appraisal) == ["evidence.from_future"] and appraisal.verdict == "untrusted"


def test_ima_file_unknown_and_allowlist_not_required(good):
    """ima.file.unknown for a path not in the allowlist; absent when the allowlist is not required."""
    baseline, policy, evidence, _ = good
    digests = {p: d for p, d in baseline.ima.digests.items() if p != "/usr/bin/swtpm"}
    smaller = dataclasses.replace(baseline, ima=ImaReference(digests=digests))
    finding = _one(appraise(evidence=evidence, baseline=smaller, policy=policy, now=NOW), "ima.file.unknown")
    index = next(i for i, e in enumerate(evidence.ima_entries) if e.path == "/usr/bin/swtpm")
    assert finding.pcr == 10 and finding.event_index == index and "/usr/bin/swtpm" in finding.message
    relaxed = dataclasses.replace(policy, ima=ImaPolicy(require_allowlist=False))
    assert appraise(evidence=evidence, baseline=smaller, policy=relaxed, now=NOW).findings == ()
    excluded = dataclasses.replace(policy, ima=ImaPolicy(excludes=("/usr/bin/sw.*",)))
    assert appraise(evidence=evidence, baseline=smaller, policy=excluded, now=NOW).findings == ()


def test_ima_file_digest_mismatch(good, tmp_path):
    """A tampered VMM binary: its path is known, its digest is not (RA-5, TT-2)."""
    baseline, policy, _, _ = good
    tpm, record = boot_host(tmp_path, flavour_files={"qemu-system-x86_64": b"tampered qemu"})
    appraisal = appraise(evidence=evidence_of(tpm, record), baseline=baseline, policy=policy, now=NOW)
    finding = _one(appraisal, "ima.file.digest_mismatch")
    assert "/usr/bin/qemu-system-x86_64" in finding.message
    assert finding.seen == "sha256:" + HashAlg.SHA256.digest(b"tampered qemu").hex()
    assert finding.expected == next(iter(baseline.ima.digests["/usr/bin/qemu-system-x86_64"])).hex()
    assert _ids(appraisal) == ["ima.file.digest_mismatch"]
    several = baseline.with_ima(ImaReference(digests={"/usr/bin/qemu-system-x86_64": {
        HashAlg.SHA256.digest(b"tampered qemu")}}), version="2")  # fmt: skip
    assert appraise(evidence=evidence_of(tpm, record), baseline=several, policy=policy, now=NOW).findings == ()


def test_ima_boot_aggregate_mismatch(good, tampered_boot_loader):
    """An IMA list from another boot than the PCRs: its boot_aggregate does not match PCRs 0-9."""
    baseline, policy, evidence, _ = good
    other, _ = tampered_boot_loader
    pcrs = {alg: {**other.pcrs[alg], 10: evidence.pcrs[alg][10]} for alg in BANKS}
    mixed = AppraisalInput(pcrs=pcrs, events=other.events, ima_entries=evidence.ima_entries, time=NOW)
    lenient = dataclasses.replace(policy, event_pcrs=frozenset())
    finding = _one(appraise(evidence=mixed, baseline=baseline, policy=lenient, now=NOW), "ima.boot_aggregate.mismatch")
    assert finding.event_index == 0 and finding.pcr == 10
    # Not in the allowlist, yet accepted: it is the hash of the verified boot PCRs.
    no_aggregate = dataclasses.replace(baseline, ima=ImaReference(
        digests={p: d for p, d in baseline.ima.digests.items() if p != "boot_aggregate"}))  # fmt: skip
    assert appraise(evidence=evidence, baseline=no_aggregate, policy=policy, now=NOW).findings == ()


def test_ima_entry_undecodable(good):
    baseline, policy, _, _ = good
    line = b"10 " + b"ab" * 20 + b" my-template whatever fields\n"
    (entry,) = parse_ima_log(line).entries
    pcr10 = replay_ima_log(UnverifiedImaLog(entries=(entry,), format="ascii"), banks=(HashAlg.SHA1,))
    evidence = AppraisalInput(pcrs={HashAlg.SHA1: dict(pcr10[HashAlg.SHA1])}, ima_entries=(entry,), time=NOW)
    lenient = dataclasses.replace(policy, event_pcrs=frozenset())
    finding = _one(appraise(evidence=evidence, baseline=baseline, policy=lenient, now=NOW), "ima.entry.undecodable")
    assert finding.severity == "error" and finding.seen == "my-template"
    relaxed = dataclasses.replace(lenient, ima=ImaPolicy(require_allowlist=False))
    appraisal = appraise(evidence=evidence, baseline=baseline, policy=relaxed, now=NOW)
    assert _one(appraisal, "ima.entry.undecodable").severity == "warning" and appraisal.verdict == "trusted"


def _with_entries(evidence: AppraisalInput, entries) -> AppraisalInput:  # noqa: ANN001
    """Evidence whose IMA list is `entries` and whose quoted PCR 10 is their replay."""
    replayed = replay_ima_log(UnverifiedImaLog(entries=tuple(entries), format="binary"), banks=BANKS)
    pcrs = {alg: {**evidence.pcrs[alg], 10: replayed[alg][10]} for alg in BANKS}
    return AppraisalInput(pcrs=pcrs, events=evidence.events, ima_entries=tuple(entries), time=evidence.time)


def test_ima_violation_error_or_tolerated(good):
    baseline, policy, evidence, _ = good
    violated = _with_entries(evidence, (*evidence.ima_entries, ima_entry("/var/log/x", b"", violation=True)))
    finding = _one(appraise(evidence=violated, baseline=baseline, policy=policy, now=NOW), "ima.violation")
    assert finding.severity == "error" and finding.event_index == len(evidence.ima_entries)
    tolerant = dataclasses.replace(policy, ima=ImaPolicy(tolerate_violations=True))
    appraisal = appraise(evidence=violated, baseline=baseline, policy=tolerant, now=NOW)
    assert _one(appraisal, "ima.violation").severity == "warning" and appraisal.verdict == "trusted"


def test_ima_findings_truncated_keeps_the_verdict(good):
    """600 unknown files: 500 error findings kept, the rest counted; the verdict stays untrusted."""
    baseline, policy, evidence, _ = good
    extra = [ima_ng_entry(f"/opt/x{i}", HashAlg.SHA256.digest(b"%d" % i), alg=HashAlg.SHA256) for i in range(600)]
    appraisal = appraise(evidence=_with_entries(evidence, (*evidence.ima_entries, *extra)), baseline=baseline,
                         policy=policy, now=NOW)  # fmt: skip
    assert _ids(appraisal).count("ima.file.unknown") == 500
    note = _one(appraisal, "ima.findings.truncated")
    assert note.seen == "100" and note.severity == "info" and appraisal.verdict == "untrusted"


def test_ima_entries_that_do_not_replay_to_the_quote_raise(good):
    """Fail closed: IMA entries that are not what PCR 10 says are not evidence (ReplayMismatch)."""
    baseline, policy, evidence, _ = good
    wrong = dataclasses.replace(evidence, ima_entries=evidence.ima_entries[1:])
    with pytest.raises(ReplayMismatch, match="PCR 10"):
        appraise(evidence=wrong, baseline=baseline, policy=policy, now=NOW)


def test_every_finding_id_is_documented_in_the_package_docstring():
    import vroot.baseline as package

    for finding_id in FINDING_IDS:
        assert f"`{finding_id}`" in package.__doc__


def test_verdict_is_untrusted_iff_an_error():
    warning = Finding(id="ima.violation", severity="warning", message="w")
    error = Finding(id="ima.violation", severity="error", message="e")
    common = {"baseline_name": "b", "baseline_version": "1", "policy_group": "g"}
    assert Appraisal(verdict="trusted", findings=(warning,), **common).trusted
    assert not Appraisal(verdict="untrusted", findings=(warning, error), **common).trusted
    with pytest.raises(InvalidInput, match="contradicts"):
        Appraisal(verdict="trusted", findings=(error,), **common)
    with pytest.raises(InvalidInput, match="unknown finding id"):
        Finding(id="baseline.pcr0.weird", severity="error", message="x")
    with pytest.raises(InvalidInput, match="severity"):
        Finding(id="ima.violation", severity="fatal", message="x")


def test_appraisal_json_round_trip(good, tampered_boot_loader):
    baseline, policy, _, _ = good
    appraisal = appraise(evidence=tampered_boot_loader[0], baseline=baseline, policy=policy, now=NOW)
    assert Appraisal.from_json(appraisal.to_json()) == appraisal
    doc = appraisal.to_json()
    doc["findings"][0]["extra"] = 1
    with pytest.raises(InvalidInput):
        Appraisal.from_json(doc)


def test_appraise_refuses_naive_times_and_wrong_arguments(good):
    baseline, policy, evidence, _ = good
    with pytest.raises(InvalidInput, match="timezone-aware"):
        appraise(evidence=evidence, baseline=baseline, policy=policy, now=NOW.replace(tzinfo=None))
    with pytest.raises(InvalidInput, match="Baseline"):
        appraise(evidence=evidence, baseline=policy, policy=policy, now=NOW)
    with pytest.raises(InvalidInput, match="no verified bank"):
        AppraisalInput(pcrs={HashAlg.SHA256: {0: bytes(32)}}, events=evidence.events, time=NOW)


def test_appraisal_is_deterministic(good, tampered_boot_loader):
    baseline, policy, _, _ = good
    runs = {repr(appraise(evidence=tampered_boot_loader[0], baseline=baseline, policy=policy, now=NOW))
            for _ in range(3)}  # fmt: skip
    assert len(runs) == 1


def test_sixty_events_and_a_thousand_ima_entries_appraise_clean():
    """The benchmark's workload (a 60-event boot log and a 1,000-entry IMA delta) appraises as
    trusted against the baseline learnt from it. Its speed is measured by the benchmark, not here."""
    builder = TcgLogBuilder(banks=BANKS)
    for i in range(60):
        builder.add((0, 1, 2, 3, 4, 5, 7, 8, 9)[i % 9], EventType.EV_IPL, b"event %d" % i)
    log = builder.build()
    entries = tuple(ima_ng_entry(f"/usr/lib/f{i}", HashAlg.SHA256.digest(b"%d" % i), alg=HashAlg.SHA256)
                    for i in range(1000))  # fmt: skip
    ima = UnverifiedImaLog(entries=entries, format="binary")
    baseline = learn_baseline(tcg_log=log, ima_log=ima, name="perf", version="1")
    replayed, pcr10 = replay_tcg_log(log), replay_ima_log(ima, banks=BANKS)
    pcrs = {alg: {**{i: replayed[alg][i] for i in range(10)}, 10: pcr10[alg][10]} for alg in BANKS}
    proven = verify_replay(log, claimed={alg: {i: v for i, v in pcrs[alg].items() if i != 10} for alg in BANKS})
    evidence = AppraisalInput.from_replayed_log(proven, pcrs=pcrs, ima_entries=entries, time=NOW)
    policy = Policy(group="perf", event_pcrs=CHECKED, ima=ImaPolicy(excludes=("/tmp/.*", "/var/log/.*")))
    assert appraise(evidence=evidence, baseline=baseline, policy=policy, now=NOW).findings == ()


def test_input_from_host_evidence_keeps_the_events_of_quoted_pcrs(good):
    """appraisal_input_from_host_evidence: only events of quoted PCRs count; the IMA list is whole."""
    from vroot.attestation import VerifiedHostEvidence

    baseline, policy, _, (tpm, record) = good
    values = tpm.pcr_read()
    quoted = {alg: {i: values[alg][i] for i in (0, 1, 2, 3, 4, 7, 8, 9, 10)} for alg in BANKS}
    verified = VerifiedHostEvidence(host_id="host-a", quote=None, pcrs=quoted, boot_log=parse_tcg_log(record.tcg_log),
                                    ima_log=parse_ima_log(record.ima_log), launches=(), ak=None,
                                    manager=None)  # fmt: skip  # only pcrs and the logs are read
    evidence = appraisal_input_from_host_evidence(verified, time=NOW)
    assert {e.pcr for e in evidence.events} == {0, 1, 2, 3, 4, 7, 8, 9}
    assert evidence.ima_entries == parse_ima_log(record.ima_log).entries and evidence.time == NOW
    lenient = dataclasses.replace(policy, event_pcrs=CHECKED - {5, 6})
    assert appraise(evidence=evidence, baseline=baseline, policy=lenient, now=NOW).findings == ()
    strict = appraise(evidence=evidence, baseline=baseline, policy=policy, now=NOW)
    assert [(f.id, f.pcr) for f in strict.findings] == [("evidence.pcr.missing", 5), ("evidence.pcr.missing", 6)]


def test_a_vm_baseline_holds_wherever_the_vm_boots(tmp_path):
    """TT-3, VM-F3: a baseline learnt from a VM's boot appraises the same VM booted into another
    vTM as trusted: nothing host-specific is in it."""
    from test_measure_chain import SoftwarePcrs

    from vroot.measure import VM_CHAIN, measured_boot, write_images

    images = write_images(tmp_path / "vm", VM_CHAIN)
    first, second = SoftwarePcrs(BANKS), SoftwarePcrs(BANKS)
    learnt_from = measured_boot(first, VM_CHAIN, images)
    baseline = learn_baseline(tcg_log=parse_tcg_log(learnt_from.tcg_log),
                              ima_log=parse_ima_log(learnt_from.ima_log), name="vm-app", version="1")  # fmt: skip
    elsewhere = measured_boot(second, VM_CHAIN, images)
    policy = Policy(group="vms", event_pcrs=CHECKED, ima=ImaPolicy())
    appraisal = appraise(evidence=evidence_of(second, elsewhere), baseline=baseline, policy=policy, now=NOW)
    assert appraisal.verdict == "trusted" and appraisal.findings == ()
