"""Appraisal reuses the IMA replay verification made (RA-5): evidence from
`appraisal_input_from_host_evidence` is proven against the quoted IMA PCR without hashing the
entries again, with the same result, and still fails closed when they do not replay to it."""

from __future__ import annotations

import dataclasses
from unittest import mock

import pytest
from test_baseline_fakes import BANKS, NOW, boot_host

from vroot.attestation import VerifiedHostEvidence
from vroot.baseline import (
    AppraisalInput,
    ImaPolicy,
    Policy,
    appraisal_input_from_host_evidence,
    appraise,
    learn_baseline,
)
from vroot.errors import ReplayMismatch
from vroot.eventlog import _ima_replay as replay_module
from vroot.eventlog import parse_ima_log, parse_tcg_log, replay_ima_log

QUOTED = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    tpm, record = boot_host(tmp_path_factory.mktemp("host"))
    baseline = learn_baseline(tcg_log=parse_tcg_log(record.tcg_log), ima_log=parse_ima_log(record.ima_log),
                              name="hosts", version="1")  # fmt: skip
    policy = Policy(group="hosts", event_pcrs=frozenset(range(10)), ima=ImaPolicy())
    values = tpm.pcr_read()
    return baseline, policy, record, {alg: {i: values[alg][i] for i in QUOTED} for alg in BANKS}


def verified(record, pcrs) -> VerifiedHostEvidence:  # noqa: ANN001
    """Host evidence as verify_host_evidence leaves it: the IMA list replayed in the quoted banks."""
    ima_log = parse_ima_log(record.ima_log)
    replay_ima_log(ima_log, banks=tuple(pcrs))
    return VerifiedHostEvidence(host_id="host-a", quote=None, pcrs=pcrs, boot_log=parse_tcg_log(record.tcg_log),
                                ima_log=ima_log, launches=(), ak=None, manager=None)  # fmt: skip


def test_appraisal_of_verified_host_evidence_does_not_replay_again(host):
    baseline, policy, record, pcrs = host
    evidence = appraisal_input_from_host_evidence(verified(record, pcrs), time=NOW)
    with mock.patch.object(replay_module, "_extend", wraps=replay_module._extend) as extend:
        appraisal = appraise(evidence=evidence, baseline=baseline, policy=policy, now=NOW)
    assert extend.call_count == 0
    assert appraisal.findings == () and appraisal.ima_state.entries_seen == len(evidence.ima_entries)
    # the same evidence built by hand (no verified log to reuse) replays, with the same result
    by_hand = AppraisalInput(pcrs=evidence.pcrs, events=evidence.events, ima_entries=evidence.ima_entries, time=NOW)
    with mock.patch.object(replay_module, "_extend", wraps=replay_module._extend) as extend:
        again = appraise(evidence=by_hand, baseline=baseline, policy=policy, now=NOW)
    assert extend.call_count == len(BANKS) and again == appraisal


def test_reused_replay_still_fails_closed_on_another_quoted_ima_pcr(host):
    """The kept replay is compared with the quoted IMA PCR like a fresh one (ReplayMismatch)."""
    baseline, policy, record, pcrs = host
    other = {alg: {**values, 10: b"\x01" * alg.digest_size} for alg, values in pcrs.items()}
    evidence = appraisal_input_from_host_evidence(verified(record, other), time=NOW)
    with pytest.raises(ReplayMismatch, match="PCR 10"):
        appraise(evidence=evidence, baseline=baseline, policy=policy, now=NOW)


def test_changed_entries_are_not_matched_with_the_logs_replay(host):
    """Evidence whose entries are not the verified log's own tuple replays them itself."""
    baseline, policy, record, pcrs = host
    evidence = appraisal_input_from_host_evidence(verified(record, pcrs), time=NOW)
    fewer = dataclasses.replace(evidence, ima_entries=evidence.ima_entries[1:])
    with pytest.raises(ReplayMismatch, match="PCR 10"):
        appraise(evidence=fewer, baseline=baseline, policy=policy, now=NOW)
