"""What host and VM attestation share (RA-5, RA-6): the agent's identity, its TM's counters, the
appraisal of verified evidence under its group's policy (with incremental IMA state), and the
recording of an outcome with its signed EAR.

    judge = Judge(services, library)
    agent, ak = judge.identity("host:h1", now=now)      # active, AK certificate from the PCA, not revoked
    rebooted = judge.counters("host:h1", quote)         # ClockRegressed
    judged = judge.appraise(agent, full, quote=quote, digest=digest, rebooted=rebooted, now=now)
    result = judge.record("host:h1", judged, nonce=nonce, now=now)   # EAR signed, result stored

`Judged` is an outcome not yet stored: a verdict with its findings (the stored JSON shape), the
AR4SI vector, the policy id and the facts of the quote. A failed check becomes one with
`Judged.failure(exc, ...)`; the caller records either the same way.

Proves nothing by itself: `appraise` must be given evidence the caller verified with the AK that
`identity` returned, over a nonce the caller consumed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vroot import __version__
from vroot import errors as E
from vroot.attestation import VerifiedQuote
from vroot.attestation.ear import ear_claims, sign_ear
from vroot.baseline import Appraisal, AppraisalInput, ImaAppraisalState, appraise
from vroot.pca import VerifiedAkCertificate, verify_ak_certificate
from vroot.server._certcache import VerifiedCache, validity_window
from vroot.server._imastate import ImaStates, newest_results
from vroot.server._library import Library, ResolvedPolicy
from vroot.server._services import Services
from vroot.server._verdict import (
    ClockRegressed,
    agent_failed_finding,
    appraisal_vector,
    failure_finding,
    failure_vector,
    policy_missing_finding,
)
from vroot.store import AgentRecord, AgentState, NewResult, ResultRecord, Verdict
from vroot.tpm2 import PublicArea, parse_public

__all__ = ["NO_POLICY", "Judge", "Judged"]

log = logging.getLogger("vroot.server")
NO_POLICY = "none"
COUNTER_SCAN = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class _ImaSave:
    state: ImaAppraisalState | None
    reset_count: int
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Judged:
    """An outcome to record (`Judge.record`). `findings` are JSON objects of `Finding.to_json()`'s
    shape; `extra` goes into the EAR submodule as `vroot.<key>`."""

    verdict: Verdict
    findings: tuple[dict[str, Any], ...] = ()
    vector: Mapping[str, int] = field(default_factory=dict)
    policy_id: str = NO_POLICY
    extra: Mapping[str, Any] = field(default_factory=dict)
    pcrs: Mapping[str, Mapping[int, bytes]] = field(default_factory=dict)
    evidence_digest: bytes | None = None
    clock: int | None = None
    reset_count: int | None = None
    restart_count: int | None = None
    ima_save: _ImaSave | None = None

    @classmethod
    def failure(cls, exc: E.VerificationError | E.InvalidInput, *, identity_verified: bool) -> Judged:
        """An "untrusted" outcome whose one finding names the check that failed (`_verdict`)."""
        return cls(verdict=Verdict.UNTRUSTED, findings=(failure_finding(exc),),
                   vector=failure_vector(exc, identity_verified=identity_verified))  # fmt: skip

    @classmethod
    def agent_failed(cls, result: Any) -> Judged:
        """An "error" outcome: the agent said it could not produce evidence."""
        return cls(verdict=Verdict.ERROR, findings=(agent_failed_finding(result),))

    def quote_facts(self, quote: VerifiedQuote) -> Judged:
        """This outcome with the counters and PCR values of `quote` (verified)."""
        return dataclasses.replace(
            self, pcrs={alg.bank: dict(values) for alg, values in quote.pcrs.items()}, clock=quote.clock,
            reset_count=quote.reset_count, restart_count=quote.restart_count,
        )  # fmt: skip


class Judge:
    """Identity, counters, appraisal and recording for any agent. Raises only `vroot.errors`."""

    def __init__(self, services: Services, library: Library) -> None:
        self._s = services
        self._store = services.store
        self._library = library
        self._ima = ImaStates(services.store, result_key=services.keys.result_signing_key.public_key(),
                              clock=services.clock)  # fmt: skip
        self._build = f"vroot {__version__}"
        # (AK certificate, AK public) -> what verify_ak_certificate proved, while both it and the PCA
        # certificate are valid; who it names, the virtual mark and revocation are checked every time
        self._ak_certificates: VerifiedCache[tuple[VerifiedAkCertificate, PublicArea]] = VerifiedCache()

    def identity(self, agent_id: str, *, now: datetime, virtual: bool = False) -> tuple[AgentRecord, PublicArea]:
        """The active agent and its ENROLLED AK (or vAK), after checking that its AK certificate chains
        to the PCA, certifies that key, names this agent, is marked virtual exactly when `virtual`
        (a guest's vAK, VMM-S3) and is not revoked (Revoked / CertificateInvalid)."""
        agent = self._store.agents.get(agent_id)
        if agent.state is not AgentState.ACTIVE:
            raise E.Revoked(f"agent {agent_id} is {agent.state.value}")
        if not agent.ak_public or not agent.ak_certificate:
            raise E.CertificateInvalid(f"agent {agent_id} has no AK certificate")
        key = (agent.ak_certificate, agent.ak_public)
        cert, ak = self._ak_certificates.get(key, now, lambda: self._verify_ak(agent, now))
        if cert.agent_id != agent_id:
            raise E.CertificateInvalid(f"the AK certificate of {agent_id} names {cert.agent_id}")
        if cert.virtual != virtual:
            raise E.CertificateInvalid(f"the AK certificate of {agent_id} is {'' if cert.virtual else 'not '}marked "
                                       "virtual (VMM-S3): a vAK's must be, a host AK's must not")  # fmt: skip
        revocation = self._store.revocations.find(cert.serial)
        if revocation is not None:
            raise E.Revoked(f"the AK certificate of {agent_id} (serial 0x{cert.serial:x}) was revoked at "
                            f"{revocation.revoked_at.isoformat()} ({revocation.reason or 'no reason'})")  # fmt: skip
        return agent, ak

    def _verify_ak(self, agent: AgentRecord, now: datetime) -> tuple[tuple[VerifiedAkCertificate, PublicArea],
                                                                      tuple[datetime, datetime]]:  # fmt: skip
        assert agent.ak_public is not None and agent.ak_certificate is not None
        ak = parse_public(agent.ak_public)
        pca = self._s.keys.pca.certificate
        cert = verify_ak_certificate(agent.ak_certificate, pca_certificate=pca, ak_public=ak, now=now)
        return (cert, ak), validity_window(cert.certificate, pca)

    def counters(self, agent_id: str, quote: VerifiedQuote) -> bool:
        """True if the TM was reset since the agent's previous result; ClockRegressed if its clock
        went back while neither counter moved."""
        for previous in newest_results(self._store, agent_id, limit=COUNTER_SCAN):
            if previous.reset_count is None:
                continue
            if previous.reset_count != quote.reset_count:
                return True
            if previous.restart_count == quote.restart_count and previous.clock is not None and quote.clock < previous.clock:
                raise ClockRegressed(f"TPM clock {quote.clock} ms is behind the previous quote's {previous.clock} ms "
                                     f"with reset count {quote.reset_count} and restart count {quote.restart_count} "
                                     "unchanged")  # fmt: skip
            return False
        return False

    def appraise(self, agent: AgentRecord, full: AppraisalInput, *, quote: VerifiedQuote, digest: bytes,
                 rebooted: bool, now: datetime) -> Judged:  # fmt: skip
        """Appraise verified evidence under the policy of the agent's group, continuing its stored
        IMA state when that still fits (`ImaStates`). No policy: an "error" outcome saying so."""
        counters = {"reset_count": quote.reset_count, "restart_count": quote.restart_count, "rebooted": rebooted}
        try:
            resolved = self._library.resolve(agent.group)
        except E.NotFound as exc:
            return Judged(verdict=Verdict.ERROR, findings=(policy_missing_finding(agent.group, str(exc)),),
                          extra=counters, evidence_digest=digest).quote_facts(quote)  # fmt: skip
        stored = self._ima.load(agent.id, reset_count=quote.reset_count, policy_id=resolved.policy_id)
        appraisal, start = self._run(full, resolved, stored.state, now)
        state = appraisal.ima_state
        extra: dict[str, Any] = dict(counters)
        if state is not None:
            extra["ima"] = {"entries_seen": state.entries_seen, "new_entries": state.entries_seen - start}
        return Judged(
            verdict=Verdict(appraisal.verdict), findings=tuple(f.to_json() for f in appraisal.findings),
            vector=appraisal_vector(appraisal.findings, policy=resolved.policy), policy_id=resolved.policy_id,
            extra=extra, evidence_digest=digest,
            ima_save=_ImaSave(state=state, reset_count=quote.reset_count, version=stored.version),
        ).quote_facts(quote)  # fmt: skip

    def _run(self, full: AppraisalInput, resolved: ResolvedPolicy, state: Any, now: datetime) -> tuple[Appraisal, int]:
        """(appraisal, entries it started after): from the stored IMA state when it still fits the
        quote, else from the first entry of the boot."""
        entries = full.ima_entries
        kw = {"baseline": resolved.baseline, "policy": resolved.policy, "now": now}
        if state is not None and entries is not None and state.entries_seen <= len(entries):
            delta = dataclasses.replace(full, ima_entries=entries[state.entries_seen :])
            try:
                return appraise(evidence=delta, ima_state=state, **kw), state.entries_seen
            except E.ReplayMismatch as exc:
                log.info("stored IMA state does not fit the quote (%s); appraising the whole list", exc.diagnostics())
        return appraise(evidence=full, **kw), 0

    def record(self, agent_id: str, judged: Judged, *, nonce: bytes, now: datetime,
               host_result_id: int | None = None) -> ResultRecord:  # fmt: skip
        """Sign the EAR and store the result (which publishes "verdict.changed" when it changed), then
        keep the appraisal's IMA state for the next one."""
        ids = sorted({str(f.get("id")) for f in judged.findings})
        claims = ear_claims(subject=agent_id, vector=judged.vector, nonce=nonce, policy_id=judged.policy_id, now=now,
                            verifier_build=self._build,
                            extra={"verdict": judged.verdict.value, "finding_ids": ids, **judged.extra})  # fmt: skip
        token = sign_ear(claims, key=self._s.keys.result_signing_key)
        result = NewResult(agent_id=agent_id, verdict=judged.verdict, findings=judged.findings, pcrs=judged.pcrs,
                           evidence_digest=judged.evidence_digest, clock=judged.clock, reset_count=judged.reset_count,
                           restart_count=judged.restart_count, signed=token, host_result_id=host_result_id)  # fmt: skip
        recorded = self._store.results.record(result, now=now).result
        save = judged.ima_save
        if save is not None:
            self._ima.save(agent_id, save.state, reset_count=save.reset_count, version=save.version)
        return recorded
