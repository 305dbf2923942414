"""The baseline library on real machines' data (../shared/corpora): a baseline learnt from one real
log appraises that log as trusted and another machine's as untrusted, naming the PCRs; keylime's
IMA signature samples verify or fail as their MANIFEST says (RA-5)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from vroot.baseline import (
    AppraisalInput,
    Baseline,
    ImaAppraisalState,
    ImaPolicy,
    ImaReference,
    ImaSignatureInvalid,
    ImaSigningKey,
    Policy,
    appraise,
    appraise_ima_delta,
    ima_key_id,
    learn_baseline,
    verify_ima_signature,
)
from vroot.errors import EventLogError
from vroot.eventlog import ReplayedLog, parse_ima_log, parse_tcg_log, verify_replay
from vroot.tpm2 import HashAlg

# As tests/conftest.py (a bare `conftest` import would be ambiguous: tests/tpm has one too).
CORPORA = Path(
    os.environ.get("VROOT_CORPORA", Path(__file__).resolve().parents[2].parent / "shared" / "corpora")
)
pytestmark = pytest.mark.corpora

NOW_TEXT = "2026-11-30T12:00:00+00:00"
IMA_TEST = "keylime/ima-verification-test"


def _now():  # noqa: ANN202
    from datetime import datetime

    return datetime.fromisoformat(NOW_TEXT)


def _expected_logs() -> list[str]:
    """Logs whose expected.json gives PCR values (PCR 10 left out: IMA is never in a firmware log)."""
    found = []
    for expected in sorted(CORPORA.glob("*/*expected.json")):
        if expected.parent.name not in ("go-attestation", "go-tpm-tools", "tpm2-tools"):
            continue
        doc = json.loads(expected.read_text())
        if not doc.get("pcrs"):
            continue
        stem = expected.name.removesuffix(".expected.json")
        log = expected.parent / (stem if (expected.parent / stem).is_file() else f"{stem}.eventlog.bin")
        found.append(log.relative_to(CORPORA).as_posix())
    return found


def _claimed(rel: str) -> dict[HashAlg, dict[int, bytes]]:
    path = CORPORA / rel
    expected = path.parent / f"{path.name.removesuffix('.eventlog.bin')}.expected.json"
    doc = json.loads(expected.read_text())
    return {HashAlg.from_bank(bank): {int(i): bytes.fromhex(v) for i, v in values.items() if int(i) != 10}
            for bank, values in doc["pcrs"].items()}  # fmt: skip


def _proven(rel: str) -> ReplayedLog:
    """The log proven against its expected PCRs, in the banks the log carries."""
    log = parse_tcg_log((CORPORA / rel).read_bytes(), source=rel)
    claimed = {alg: values for alg, values in _claimed(rel).items() if alg in log.algorithms}
    return verify_replay(log, claimed=claimed)


def _evidence(proven: ReplayedLog) -> AppraisalInput:
    return AppraisalInput.from_replayed_log(proven, time=_now())


def _policy(proven: ReplayedLog) -> Policy:
    pcrs = {i for values in proven.pcrs.values() for i in values}
    return Policy(group="corpus", event_pcrs=frozenset(pcrs))


@pytest.mark.parametrize("rel", _expected_logs())
def test_a_baseline_learnt_from_a_real_log_appraises_it_as_trusted(rel):
    """Every real log with known PCRs: learnt (from the log its replay proved), then appraised
    against its own PCRs, it is trusted with no finding; its manifest round-trips."""
    proven = _proven(rel)
    baseline = learn_baseline(tcg_log=proven.log, ima_log=None, name="corpus", version="1",
                              include_pcrs=range(24))  # fmt: skip
    assert baseline.reference_values
    appraisal = appraise(evidence=_evidence(proven), baseline=baseline, policy=_policy(proven), now=_now())
    assert appraisal.verdict == "trusted", appraisal.findings[:3]
    assert appraisal.findings == ()


def test_another_machine_is_untrusted_with_findings_naming_its_pcrs():
    """RHEL 8 baseline, Ubuntu 21.04 boot (both GCE, different OS and Secure Boot): untrusted, each
    finding names a PCR and, for unknown events, the event index in the Ubuntu log."""
    rhel = _proven("go-tpm-tools/rhel8-uefi.bin")
    baseline = learn_baseline(tcg_log=rhel.log, ima_log=None, name="gce-rhel8", version="1")
    ubuntu = _proven("go-tpm-tools/ubuntu-2104-no-secure-boot.bin")
    policy = Policy(group="gce", event_pcrs=frozenset(range(10)))
    appraisal = appraise(evidence=_evidence(ubuntu), baseline=baseline, policy=policy, now=_now())
    assert appraisal.verdict == "untrusted"
    assert all(f.pcr is not None for f in appraisal.findings)
    unknown = [f for f in appraisal.findings if f.id == "baseline.event.unknown"]
    assert {4, 7}.issubset({f.pcr for f in unknown})  # another shim/grub; Secure Boot off
    events = {e.index: e for e in ubuntu.events}
    for finding in unknown:
        event = events[finding.event_index]
        assert event.pcr == finding.pcr and finding.seen.endswith(event.digests[HashAlg.SHA256].hex())
    assert {f.pcr for f in appraisal.findings if f.id == "baseline.event.missing"}
    # The same machine's own boot against its baseline stays trusted under the same policy.
    assert appraise(evidence=_evidence(rhel), baseline=baseline, policy=policy, now=_now()).findings == ()


def test_golden_pcrs_of_one_machine_name_the_pcrs_another_differs_in():
    rhel, cos = _proven("go-tpm-tools/rhel8-uefi.bin"), _proven("go-tpm-tools/cos-85-amd-sev.bin")
    golden = {HashAlg.SHA256: {i: rhel.pcrs[HashAlg.SHA256][i] for i in range(10)}}
    policy = Policy(group="gce", pcrs=golden)
    baseline = Baseline(name="none", version="1")
    assert appraise(evidence=_evidence(rhel), baseline=baseline, policy=policy, now=_now()).findings == ()
    appraisal = appraise(evidence=_evidence(cos), baseline=baseline, policy=policy, now=_now())
    differing = sorted(i for i in range(10) if cos.pcrs[HashAlg.SHA256][i] != golden[HashAlg.SHA256][i])
    assert differing and [f.pcr for f in appraisal.findings] == differing
    assert {f.id for f in appraisal.findings} == {"baseline.pcr.mismatch"}


# --- keylime IMA signature samples ----------------------------------------------------------------

def _keys(*names: str) -> list[ImaSigningKey]:
    return [ImaSigningKey(pem=(CORPORA / "keylime/ima_keys" / n).read_text()) for n in names]


def _ima(name: str):  # noqa: ANN202
    return parse_ima_log((CORPORA / IMA_TEST / f"{name}.ascii_runtime_measurements").read_bytes(), source=name)


def test_keylime_key_ids_are_those_the_manifest_gives():
    rsa, ec = _keys("rsa2048pub.pem", "secp256k1.pub.pem")
    assert rsa.key_id.hex() == "f3452d23" and ec.key_id.hex() == "531f4025"
    assert ima_key_id(rsa.public_key) == rsa.key_id


def _appraise_signed(keys: list[ImaSigningKey], *, required: bool = True) -> list[tuple[str, str | None]]:
    entries = _ima("signatures").entries
    policy = Policy(group="ima", ima=ImaPolicy(signing_keys=tuple(keys), require_signatures=required))
    _, findings = appraise_ima_delta(ImaAppraisalState.initial(), entries, baseline=Baseline(name="b", version="1"),
                                     policy=policy)  # fmt: skip
    return [(f.id, entries[f.event_index].path) for f in findings]


def test_keylime_signatures_verify_each_with_its_own_key():
    """MANIFEST: /usr/bin/dd verifies with rsa2048pub.pem, /usr/bin/zmore with secp256k1.pub.pem."""
    both = _keys("rsa2048pub.pem", "secp256k1.pub.pem")
    assert _appraise_signed(both) == []
    assert _appraise_signed(both[:1]) == [("ima.signature.unknown_key", "/usr/bin/zmore")]
    assert _appraise_signed(both[1:]) == [("ima.signature.unknown_key", "/usr/bin/dd")]
    keys = {k.key_id: (k,) for k in both}
    for entry, key in zip(_ima("signatures").entries, both, strict=True):
        assert verify_ima_signature(entry.signature, file_digest=entry.file_digest, digest_alg=entry.digest_alg,
                                    keys=keys) is key  # fmt: skip


def test_keylime_signatures_fail_with_another_key_under_the_same_key_id():
    """Fail closed: a key that claims the signer's key id but is another key does not verify."""
    rsa, ec = _keys("rsa2048pub.pem", "secp256k1.pub.pem")
    impostor = ImaSigningKey(pem=ec.pem, key_id=rsa.key_id)
    assert _appraise_signed([impostor, ec]) == [("ima.signature.invalid", "/usr/bin/dd")]


def test_keylime_bad_signature_is_rejected():
    """MANIFEST: the corrupted size field (0x4800) breaks the template hash, so the list does not
    parse; the signature itself, checked over the good entry's digest, is invalid too."""
    path = CORPORA / IMA_TEST / "bad_signatures.ascii_runtime_measurements"
    with pytest.raises(EventLogError, match="template hash"):
        parse_ima_log(path.read_bytes())
    bad_signature = bytes.fromhex(path.read_text().split()[-1])
    good = _ima("signatures").entries[1]
    keys = {k.key_id: (k,) for k in _keys("rsa2048pub.pem", "secp256k1.pub.pem")}
    with pytest.raises(ImaSignatureInvalid, match="size field"):
        verify_ima_signature(bad_signature, file_digest=good.file_digest, digest_alg=good.digest_alg, keys=keys)


def test_keylime_measurements_replay_incrementally_to_the_documented_pcr10():
    """MANIFEST: fed one by one, the SHA-1 PCR 10 after the three entries is dff39e2d...; unsigned
    entries under a policy requiring signatures are ima.signature.missing, boot_aggregate excepted
    when its value is allowed."""
    entries = _ima("measurements").entries
    final = bytes.fromhex(json.loads((CORPORA / IMA_TEST / "expected.json").read_text())["expected"]["measurements"]
                          .split("PCR10 = ")[1].split()[0])  # fmt: skip
    assert final.hex() == "dff39e2db052e00d11f45770bb127c4053e14f32"
    baseline = Baseline(name="b", version="1", ima=ImaReference(digests={e.path: {e.file_digest} for e in entries}))
    policy = Policy(group="ima", ima=ImaPolicy())
    state = ImaAppraisalState.initial(banks=(HashAlg.SHA1,))
    for entry in entries:
        state, findings = appraise_ima_delta(state, [entry], baseline=baseline, policy=policy)
        assert findings == ()
    assert state.entries_seen == 3 and state.pcrs[HashAlg.SHA1][10] == final
    proven, _ = appraise_ima_delta(ImaAppraisalState.initial(banks=(HashAlg.SHA1,)), entries, baseline=baseline,
                                   policy=policy, quoted={HashAlg.SHA1: {10: final}})  # fmt: skip
    assert proven == state
    strict = Policy(group="ima", ima=ImaPolicy(signing_keys=tuple(_keys("rsa2048pub.pem")), require_signatures=True))
    _, findings = appraise_ima_delta(ImaAppraisalState.initial(), entries, baseline=baseline, policy=strict)
    assert [(f.id, f.event_index) for f in findings] == [("ima.signature.missing", i) for i in range(3)]


def test_keylime_keyring_buffer_is_appraised_by_its_name():
    """MANIFEST: an ima-buf entry for keyring .ima whose digest a7d52aaa... is the SHA-256 of its buffer."""
    (entry,) = _ima("keyrings").entries
    assert entry.path == ".ima" and entry.file_digest == hashlib.sha256(entry.buf).digest()
    assert entry.file_digest.hex().startswith("a7d52aaa")
    policy = Policy(group="ima", ima=ImaPolicy())
    allowed = Baseline(name="b", version="1", ima=ImaReference(digests={".ima": {entry.file_digest}}))
    assert appraise_ima_delta(ImaAppraisalState.initial(), [entry], baseline=allowed, policy=policy)[1] == ()
    _, findings = appraise_ima_delta(ImaAppraisalState.initial(), [entry], baseline=Baseline(name="b", version="1"),
                                     policy=policy)  # fmt: skip
    assert [f.id for f in findings] == ["ima.file.unknown"] and "'.ima'" in findings[0].message
    assert struct.unpack(">H", entry.buf[2:4])[0] + 4 == len(entry.buf)  # the buffer is one DER certificate
