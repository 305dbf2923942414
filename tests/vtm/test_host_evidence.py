"""Deep-quote host evidence (VMM-F5, RA-4): what the host vouches for, and each check failing."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from vroot.attestation import UnverifiedHostEvidence, verify_host_evidence
from vroot.errors import CertifiedNameMismatch, NonceMismatch, ReplayMismatch, SignatureInvalid
from vroot.eventlog import encode_tcg_log, parse_tcg_log
from vroot.tpm2 import HashAlg

pytestmark = pytest.mark.tpm

ROOT = bytes(range(32))


@pytest.fixture
def evidence(agent) -> UnverifiedHostEvidence:
    for _ in range(2):
        agent.client.call("POST", "/v1/vtms", {"vm_uuid": str(uuid.uuid4())})
    doc = agent.client.call("POST", "/v1/deep-quote", {"qualifying_data": ROOT.hex()})
    return UnverifiedHostEvidence.from_json(doc)


def test_host_evidence_verifies(evidence):
    verified = verify_host_evidence(evidence, qualifying_data=ROOT)
    assert verified.quote.pcrs_verified
    assert set(verified.pcrs[HashAlg.SHA256]) == {*range(11), 14}
    assert len(verified.launches) == 2
    assert verified.manager.name() != verified.ak.name()
    assert UnverifiedHostEvidence.from_json(evidence.to_json()) == evidence


def test_wrong_qualifying_data_fails(evidence):
    with pytest.raises(NonceMismatch):
        verify_host_evidence(evidence, qualifying_data=bytes(32))


def test_tampered_boot_log_names_the_pcr(evidence):
    log = parse_tcg_log(evidence.boot_log)
    events = list(log.events)
    i = next(i for i, e in enumerate(events) if e.pcr == 4)
    events[i] = events[i].replace(digests={alg: bytes(len(d)) for alg, d in events[i].digests.items()})
    tampered = dataclasses.replace(evidence, boot_log=encode_tcg_log(log.replace(events=tuple(events))))
    with pytest.raises(ReplayMismatch, match="PCRs 4") as info:
        verify_host_evidence(tampered, qualifying_data=ROOT)
    assert info.value.pcrs == (4,)


def test_hidden_vtm_launch_is_caught(evidence):
    """A host that leaves a vTM launch out of its log: PCR 14 no longer replays."""
    log = parse_tcg_log(evidence.launch_log)
    shorter = log.replace(events=log.events[:-1])
    with pytest.raises(ReplayMismatch, match="PCRs 14"):
        verify_host_evidence(
            dataclasses.replace(evidence, launch_log=encode_tcg_log(shorter)), qualifying_data=ROOT
        )


def test_manager_key_swapped(evidence):
    with pytest.raises(CertifiedNameMismatch):
        verify_host_evidence(
            dataclasses.replace(evidence, manager_public=evidence.ak_public), qualifying_data=ROOT
        )


def test_quote_by_another_ak(evidence, agent_factory, short_tmp):
    from vtm_helpers import make_host

    other = agent_factory(make_host(short_tmp, "host-b"))
    other_evidence = UnverifiedHostEvidence.from_json(
        other.client.call("POST", "/v1/deep-quote", {"qualifying_data": ROOT.hex()})
    )
    forged = dataclasses.replace(evidence, ak_public=other_evidence.ak_public)
    with pytest.raises(SignatureInvalid):
        verify_host_evidence(forged, qualifying_data=ROOT)


def test_ima_entries_logged_after_the_quote_are_not_evidence_yet(evidence):
    """A real kernel appends to the IMA list between the quote and the read: the covered prefix is
    verified, the later entries are left for the next attestation."""
    from vroot.eventlog import encode_ima_binary, ima_ng_entry, parse_ima_log

    log = parse_ima_log(evidence.ima_log)
    later = ima_ng_entry("/usr/bin/started-after-the-quote", bytes(32), alg=HashAlg.SHA256)
    grown = dataclasses.replace(evidence, ima_log=encode_ima_binary(log.replace(entries=(*log.entries, later))))
    verified = verify_host_evidence(grown, qualifying_data=ROOT)
    assert len(verified.ima_log.entries) == len(log.entries)


def test_ima_entry_removed_is_caught(evidence):
    from vroot.eventlog import encode_ima_binary, parse_ima_log

    log = parse_ima_log(evidence.ima_log)
    cut = log.replace(entries=log.entries[:1] + log.entries[2:])
    with pytest.raises(ReplayMismatch, match="PCRs 10"):
        verify_host_evidence(dataclasses.replace(evidence, ima_log=encode_ima_binary(cut)), qualifying_data=ROOT)
