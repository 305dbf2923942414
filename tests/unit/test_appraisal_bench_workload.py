"""The appraisal benchmark's workload is what benchmarks/appraisal_bench.py says it is (issue 4,
Performance): a 60-event Secure Boot log on PCRs 0-9 in two banks, 1,000 ima-ng entries, a swtpm
quote that verifies, a baseline and policy under which vroot appraises it as trusted, and checks
that really bite (a changed file, a missing path or a wrong nonce are caught; excluded paths are
not judged). With keylime's venv built, keylime accepts the same evidence and rejects the bad."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import appraisal_bench as bench  # noqa: E402

from vroot.baseline import ImaReference  # noqa: E402
from vroot.errors import NonceMismatch  # noqa: E402
from vroot.eventlog import EventType, parse_ima_log, parse_tcg_log, replay_ima_log  # noqa: E402
from vroot.tpm2 import HashAlg  # noqa: E402

T = EventType


@pytest.fixture(scope="module")
def logs() -> bench.Logs:
    return bench.build_logs()


@pytest.fixture(scope="module")
def learnt(logs):  # noqa: ANN001, ANN201
    return bench.learn(logs)


@pytest.fixture(scope="module")
def evidence(logs, tmp_path_factory) -> bench.Evidence:  # noqa: ANN001
    return bench.quote_with_swtpm(logs, tmp_path_factory.mktemp("appraisal-bench"))


def test_boot_log_is_sixty_secure_boot_events_on_pcrs_0_to_9(logs):
    log = parse_tcg_log(logs.boot)
    events = log.measurements
    assert len(events) == bench.BOOT_EVENTS == 60
    assert log.algorithms == (HashAlg.SHA1, HashAlg.SHA256)
    assert all(set(e.digests) == {HashAlg.SHA1, HashAlg.SHA256} for e in events)
    assert {e.pcr for e in events} == set(range(10))
    kinds = Counter(T(int(e.event_type)) for e in events)
    assert kinds[T.EV_S_CRTM_VERSION] == 1 and kinds[T.EV_EFI_PLATFORM_FIRMWARE_BLOB] == 2
    assert kinds[T.EV_EFI_VARIABLE_DRIVER_CONFIG] == 5 and kinds[T.EV_EFI_VARIABLE_BOOT] == 4
    assert kinds[T.EV_EFI_BOOT_SERVICES_APPLICATION] == 3  # shim, grub, kernel
    assert kinds[T.EV_EFI_VARIABLE_AUTHORITY] == 3 and kinds[T.EV_EFI_GPT_EVENT] == 1
    assert kinds[T.EV_IPL] == 27 and kinds[T.EV_EFI_ACTION] == 3
    assert sorted(e.pcr for e in events if e.event_type == T.EV_SEPARATOR) == list(range(8))
    ipl_texts = [e.data for e in events if e.event_type == T.EV_IPL]
    assert sum(t.startswith(b"grub_cmd: ") for t in ipl_texts) == 21
    assert sum(t.startswith(b"kernel_cmdline: ") for t in ipl_texts) == 1
    # grub hashes the command without its "grub_cmd: " prefix and NUL, as a real RHEL 9 grub does
    cmd = next(e for e in events if e.data.startswith(b"grub_cmd: set timeout=5"))
    assert cmd.digests[HashAlg.SHA256] == hashlib.sha256(b"set timeout=5").digest()


def test_ima_list_is_a_thousand_sha256_ima_ng_entries(logs):
    entries = parse_ima_log(logs.ima_ascii).entries  # parse checks every template hash
    assert len(entries) == bench.IMA_ENTRIES == 1000
    assert logs.ima_ascii.count(b"\n") == 1000
    assert {(e.pcr, e.template_name, e.digest_alg) for e in entries} == {(10, "ima-ng", "sha256")}
    assert len({e.path for e in entries}) == 1000
    first = entries[0]
    assert first.path == "boot_aggregate"
    assert (
        first.file_digest
        == hashlib.sha256(b"".join(logs.pcrs[HashAlg.SHA256][i] for i in range(10))).digest()
    )
    excluded = [e.path for e in entries if re.fullmatch("|".join(f"(?:{x})" for x in bench.EXCLUDES), e.path)]
    assert len(excluded) == 10
    assert (
        replay_ima_log(parse_ima_log(logs.ima_ascii), banks=(HashAlg.SHA256,))[HashAlg.SHA256][10]
        == logs.pcrs[HashAlg.SHA256][10]
    )


def test_baseline_and_policy(learnt):
    baseline, policy = learnt
    assert len(baseline.reference_values) == 60 and all(r.required for r in baseline.reference_values)
    assert len(baseline.ima.digests) == 1000
    assert policy.event_pcrs == frozenset(range(10))
    assert policy.ima.require_allowlist and policy.ima.excludes == bench.EXCLUDES


@pytest.mark.tpm
def test_swtpm_quote_covers_what_the_logs_replay_to(logs, evidence):
    assert evidence.nonce == bench.NONCE and len(evidence.nonce) == 20
    assert set(evidence.quoted[HashAlg.SHA256]) == set(bench.QUOTED_PCRS)
    for i in bench.QUOTED_PCRS:
        assert evidence.quoted[HashAlg.SHA256][i] == logs.pcrs[HashAlg.SHA256][i], f"PCR {i}"
    assert evidence.quoted[HashAlg.SHA256][14] == bytes(32)


@pytest.mark.tpm
def test_vroot_appraises_the_evidence_as_trusted(evidence, learnt):
    baseline, policy = learnt
    appraisal = bench.vroot_appraisal(evidence, baseline, policy)
    assert appraisal.verdict == "trusted" and appraisal.findings == ()
    assert appraisal.ima_state.entries_seen == 1000
    bench.floor_check(evidence)()  # the floor's signature verifies too


@pytest.mark.tpm
def test_vroot_side_really_checks(evidence, learnt):
    """Each check the benchmark claims vroot does is one that fails when it should."""
    baseline, policy = learnt
    digests = dict(baseline.ima.digests)

    def appraised(**ima_changes):  # noqa: ANN003, ANN202
        ima = ImaReference(digests={**digests, **ima_changes})
        changed = dataclasses.replace(baseline, ima=ima)
        return bench.vroot_appraisal(evidence, changed, policy)

    changed = appraised(**{"/usr/bin/bash": frozenset({bytes(32)})})
    assert [f.id for f in changed.findings] == ["ima.file.digest_mismatch"]
    dropped = dataclasses.replace(
        baseline, ima=ImaReference(digests={k: v for k, v in digests.items() if k != "/usr/bin/ls"})
    )
    assert [f.id for f in bench.vroot_appraisal(evidence, dropped, policy).findings] == ["ima.file.unknown"]
    # the excluded paths are not judged at all
    excluded = {k: v for k, v in digests.items() if not k.startswith(("/tmp/", "/var/log/"))}
    assert len(excluded) == 990
    lean = dataclasses.replace(baseline, ima=ImaReference(digests=excluded))
    assert bench.vroot_appraisal(evidence, lean, policy).trusted
    # every boot event of PCRs 0-9 must be in the baseline
    fewer = dataclasses.replace(baseline, reference_values=baseline.reference_values[1:])
    assert {f.id for f in bench.vroot_appraisal(evidence, fewer, policy).findings} == {
        "baseline.event.unknown"
    }
    with pytest.raises(NonceMismatch):
        bench.vroot_appraisal(dataclasses.replace(evidence, nonce=b"X" * 20), baseline, policy)


def _keylime_ready() -> str | None:
    python = bench.KEYLIME_VENV / "bin" / "python"
    if not python.exists():
        return f"keylime's venv is not built ({python})"
    probe = subprocess.run(
        [str(python), "-c", "import pyasn1, pyasn1_modules, jsonschema, lark, packaging, ctypes; ctypes.CDLL('libefivar.so.1')"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if probe.returncode != 0:
        return (
            f"keylime's venv cannot run its verifier code: {(probe.stderr.strip().splitlines() or ['?'])[-1]}"
        )
    return None
