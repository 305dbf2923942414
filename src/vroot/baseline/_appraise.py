"""Appraisal (RA-5): judge verified evidence against a baseline under a group's policy.

`appraise` never raises because evidence differs from the baseline: that is a normal result, an
`Appraisal` whose findings say how. It raises `InvalidInput` for arguments that are not what it
takes, and `ReplayMismatch` when IMA entries do not replay to the verified IMA PCR (they are then
not evidence at all).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import repeat
from types import MappingProxyType
from typing import TYPE_CHECKING

from vroot.baseline._findings import Appraisal, Finding, verdict_of
from vroot.baseline._ima import IMA_PCR, ImaAppraisalState, ima_delta
from vroot.baseline._model import Baseline
from vroot.baseline._policy import Policy
from vroot.errors import InvalidInput
from vroot.eventlog import (
    EventType,
    ImaEntry,
    ReplayedLog,
    TcgEvent,
    UnverifiedImaLog,
    describe_event,
    event_type_name,
)
from vroot.tpm2 import HashAlg

if TYPE_CHECKING:
    from vroot.attestation import VerifiedHostEvidence

__all__ = ["MAX_CLOCK_SKEW", "AppraisalInput", "appraisal_input_from_host_evidence", "appraise"]

MAX_CLOCK_SKEW = timedelta(seconds=60)
_NO_ACTION = int(EventType.EV_NO_ACTION)
_REPLAY_BANKS = frozenset({HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512})


@dataclass(frozen=True, slots=True, kw_only=True)
class AppraisalInput:
    """What verification proved, reduced to what appraisal reads.

    `pcrs`: verified PCR values, bank -> index -> value (a verified quote's). `events`: TCG events
    proven against them (a `ReplayedLog`'s events); an event's digests count only in the banks
    where `pcrs` holds its PCR. `ima_entries`: IMA entries proven against the IMA PCR of `pcrs`
    (None when the evidence has no IMA list). `time`: when the evidence was produced (for example
    when the nonce was issued), timezone-aware.
    """

    pcrs: Mapping[HashAlg, Mapping[int, bytes]]
    events: tuple[TcgEvent, ...] = ()
    ima_entries: tuple[ImaEntry, ...] | None = None
    time: datetime
    _banks: Mapping[int, tuple[HashAlg, ...]] = field(init=False, repr=False, compare=False,
                                                      default_factory=dict)  # fmt: skip
    # the verified IMA log whose entries `ima_entries` are (see appraisal_input_from_host_evidence)
    _ima_log: UnverifiedImaLog | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.pcrs, Mapping):
            raise InvalidInput("appraisal input pcrs must map banks to {PCR: value}")
        pcrs = {}
        for alg, values in self.pcrs.items():
            if not isinstance(alg, HashAlg) or not isinstance(values, Mapping):
                raise InvalidInput("appraisal input pcrs must map a HashAlg to {PCR: value}")
            pcrs[alg] = MappingProxyType({int(i): bytes(v) for i, v in values.items()})
        object.__setattr__(self, "pcrs", MappingProxyType(pcrs))
        # Strongest bank first: an event matches a reference only if every common verified bank agrees.
        order = sorted(pcrs, key=lambda a: (-a.digest_size, int(a)))
        banks = {i: tuple(a for a in order if i in pcrs[a]) for a in order for i in pcrs[a]}
        object.__setattr__(self, "_banks", MappingProxyType(banks))
        events = tuple(self.events)
        for event in events:
            if not isinstance(event, TcgEvent):
                raise InvalidInput("appraisal input events must be TcgEvents")
            if event.pcr not in banks and int(event.event_type) != _NO_ACTION:
                raise InvalidInput(f"event {event.index} extends PCR {event.pcr}, which no verified bank covers")
        object.__setattr__(self, "events", events)
        if self.ima_entries is not None:
            entries = tuple(self.ima_entries)
            if not all(map(isinstance, entries, repeat(ImaEntry))):
                raise InvalidInput("appraisal input IMA entries must be ImaEntry values")
            object.__setattr__(self, "ima_entries", entries)
        _aware(self.time, "evidence time")

    def banks_of(self, pcr: int) -> tuple[HashAlg, ...]:
        """The verified banks holding `pcr`, strongest first."""
        return self._banks.get(pcr, ())

    @classmethod
    def from_replayed_log(
        cls,
        replayed: ReplayedLog,
        *,
        time: datetime,
        pcrs: Mapping[HashAlg, Mapping[int, bytes]] | None = None,
        ima_entries: Sequence[ImaEntry] | None = None,
    ) -> AppraisalInput:
        """From `verify_replay` output; `pcrs` (default: the replayed PCRs) may add quoted PCRs."""
        return cls(pcrs=pcrs if pcrs is not None else replayed.pcrs, events=replayed.events,
                   ima_entries=None if ima_entries is None else tuple(ima_entries), time=time)  # fmt: skip


def appraisal_input_from_host_evidence(verified: VerifiedHostEvidence, *, time: datetime) -> AppraisalInput:
    """The appraisal input of host evidence that `verify_host_evidence` accepted: its quoted PCRs,
    the boot-log events of quoted PCRs, and the whole IMA list (both replay to the quote)."""
    pcrs = verified.pcrs
    quoted = {i for values in pcrs.values() for i in values}
    events = tuple(e for e in verified.boot_log.measurements if e.pcr in quoted and int(e.event_type) != _NO_ACTION)
    evidence = AppraisalInput(pcrs=pcrs, events=events, ima_entries=verified.ima_log.entries, time=time)
    if evidence.ima_entries is verified.ima_log.entries:
        # appraisal proves the entries against the quote again; with the log, that reuses the
        # replay verification made of it instead of hashing every entry a second time
        object.__setattr__(evidence, "_ima_log", verified.ima_log)
    return evidence


def appraise(
    *,
    evidence: AppraisalInput,
    baseline: Baseline,
    policy: Policy,
    now: datetime,
    ima_state: ImaAppraisalState | None = None,
) -> Appraisal:
    """Appraise `evidence` against `baseline` under `policy` at time `now` (RA-5).

    Checks, in this order of findings: evidence age; golden PCR values; the events of
    `policy.event_pcrs` (each in the baseline, each required reference present); IMA entries
    under `policy.ima`, continuing from `ima_state` when given (the entries are then the ones after
    it). The IMA entries are proven against the verified IMA PCR before they are judged (for
    evidence from `appraisal_input_from_host_evidence`, with the replay verification made of the
    same log object, which `replay_ima_log` keeps, instead of hashing every entry again).

    Proves: nothing new; it compares. Does not prove: that `evidence` was verified; build it only
    from `verify_*` output (`appraisal_input_from_host_evidence`).
    Caller must: store `Appraisal.ima_state` for the next appraisal of the same boot.
    """
    if not isinstance(evidence, AppraisalInput) or not isinstance(baseline, Baseline):
        raise InvalidInput("appraise takes an AppraisalInput and a Baseline")
    if not isinstance(policy, Policy):
        raise InvalidInput("appraise takes a Policy")
    _aware(now, "now")
    findings: list[Finding] = []
    findings += _age(evidence.time, now, policy)
    findings += _golden(evidence, policy)
    findings += _events(evidence, baseline, policy)
    state = None
    if policy.ima is not None:
        ima_findings, state = _ima(evidence, baseline, policy, ima_state)
        findings += ima_findings
    return Appraisal(verdict=verdict_of(findings), findings=tuple(findings), baseline_name=baseline.name,
                     baseline_version=baseline.version, policy_group=policy.group, ima_state=state)  # fmt: skip


def _aware(value: object, what: str) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} must be a timezone-aware datetime")


def _age(time: datetime, now: datetime, policy: Policy) -> list[Finding]:
    age = now - time
    if age < -MAX_CLOCK_SKEW:
        return [Finding(id="evidence.from_future", severity="error", seen=time.isoformat(), expected=now.isoformat(),
                        message=f"evidence is dated {-age.total_seconds():.0f} s after now")]  # fmt: skip
    limit = policy.max_evidence_age
    if limit is not None and age > limit:
        return [Finding(id="evidence.too_old", severity="error", expected=f"at most {limit.total_seconds():g} s",
                        seen=f"{age.total_seconds():g} s",
                        message=f"evidence is {age.total_seconds():.0f} s old; policy {policy.group} "
                                f"accepts at most {limit.total_seconds():g} s")]  # fmt: skip
    return []


def _golden(evidence: AppraisalInput, policy: Policy) -> list[Finding]:
    findings = []
    for alg, golden in policy.pcrs.items():
        seen_bank = evidence.pcrs.get(alg, {})
        for index, expected in golden.items():
            seen = seen_bank.get(index)
            if seen is None:
                findings.append(_missing_pcr(index, alg, expected.hex()))
            elif seen != expected:
                findings.append(Finding(id="baseline.pcr.mismatch", severity="error", pcr=index,
                                        expected=expected.hex(), seen=seen.hex(),
                                        message=f"{alg.bank} PCR {index} is {seen.hex()[:16]}…, not the golden "
                                                f"{expected.hex()[:16]}… of policy {policy.group}"))  # fmt: skip
    return findings


def _missing_pcr(index: int, alg: HashAlg | None, expected: str | None = None) -> Finding:
    bank = f"{alg.bank} " if alg is not None else ""
    return Finding(id="evidence.pcr.missing", severity="error", pcr=index, expected=expected,
                   message=f"the policy needs {bank}PCR {index}, which the verified evidence does not cover")  # fmt: skip


def _events(evidence: AppraisalInput, baseline: Baseline, policy: Policy) -> list[Finding]:
    checked = policy.event_pcrs
    if not checked:
        return []
    findings = [_missing_pcr(i, None) for i in sorted(checked) if not evidence.banks_of(i)]
    refs = baseline.reference_values
    matched: set[int] = set()
    for event in evidence.events:
        pcr = event.pcr
        event_type = int(event.event_type)
        if pcr not in checked or event_type == _NO_ACTION:
            continue
        digests = event.digests
        algs = [a for a in evidence.banks_of(pcr) if a in digests]
        found = False
        for alg in algs:
            for position in baseline.candidates(pcr, event_type, alg, digests[alg]):
                ref_digests = refs[position].digests
                if all(ref_digests.get(a, digests[a]) == digests[a] for a in algs):
                    matched.add(position)
                    found = True
        if not found:
            findings.append(_unknown_event(event, algs, baseline))
    for position, ref in enumerate(refs):
        if ref.required and ref.pcr in checked and evidence.banks_of(ref.pcr) and position not in matched:
            alg, digest = max(ref.digests.items(), key=lambda item: (len(item[1]), int(item[0])))
            label = f"{ref.component} {ref.version}".strip()
            findings.append(Finding(id="baseline.event.missing", severity="error", pcr=ref.pcr,
                                    expected=f"{alg.bank}:{digest.hex()}",
                                    message=f"PCR {ref.pcr}: required {event_type_name(ref.event_type)} event of "
                                            f"{label!r} from baseline {baseline.name} {baseline.version} did "
                                            "not appear"))  # fmt: skip
    return findings


def _unknown_event(event: TcgEvent, algs: list[HashAlg], baseline: Baseline) -> Finding:
    event_type = int(event.event_type)
    type_name = event_type_name(event_type)
    summary = describe_event(event).summary
    summary = repr(summary[:120] + ("…" if len(summary) > 120 else ""))
    same = [r for r in baseline.reference_values if r.pcr == event.pcr and r.event_type == event_type]
    expected = ", ".join(f"{r.component} {r.version}".strip() for r in same[:4]) or None
    if expected is not None and len(same) > 4:
        expected += f" (+{len(same) - 4} more)"
    seen = f"{algs[0].bank}:{event.digests[algs[0]].hex()}" if algs else None
    why = "" if algs else " (it has no digest in a verified bank)"
    return Finding(id="baseline.event.unknown", severity="error", pcr=event.pcr, event_index=event.index,
                   expected=expected, seen=seen,
                   message=f"PCR {event.pcr} event {event.index} ({type_name} {summary}) is not in baseline "
                           f"{baseline.name} {baseline.version}{why}")  # fmt: skip


def _ima(
    evidence: AppraisalInput, baseline: Baseline, policy: Policy, state: ImaAppraisalState | None
) -> tuple[list[Finding], ImaAppraisalState | None]:
    if evidence.ima_entries is None:
        return [Finding(id="evidence.ima.missing", severity="error",
                        message=f"policy {policy.group} appraises IMA, but the evidence has no IMA list")], state  # fmt: skip
    if not evidence.banks_of(IMA_PCR):
        return [_missing_pcr(IMA_PCR, None)], state
    if state is None:
        banks = evidence.banks_of(IMA_PCR)
        state = ImaAppraisalState.initial(banks=[a for a in banks if a in _REPLAY_BANKS] or banks)
    state, _ = ima_delta(state, evidence.ima_entries, baseline=baseline, policy=policy, quoted=evidence.pcrs,
                         boot_pcrs=evidence.pcrs, log=evidence._ima_log)  # fmt: skip
    return list(state.summary_findings()), state
