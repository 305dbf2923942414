"""Host attestation as the server runs it (RA-2, RA-5, RA-6, HW-F2; DESIGN.md section 5).

    task = attestations.request("host:h1")        # a single-use nonce, carried by an `attest` task
    ...   the agent asks its host agent for a deep quote over the nonce and posts the bundle ...
    task, result = attestations.accept("host:h1", task.id, ok=True, result={"evidence": bundle})

`accept` checks, failing closed at the first check that fails:

 1. the task is this agent's and leased to it (else NotFound / Conflict: nothing is recorded);
 2. the nonce the evidence answers is consumed: issued to this agent for "attest", unused, not
    expired (NonceUnknown / NonceReused / NonceExpired), and it is this task's (NonceMismatch). The
    task's own nonce is used up too, whatever happens, so it can never be answered later;
 3. the agent is active and its AK certificate chains to the PCA, certifies the ENROLLED AK
    (never the bundle's) and is not revoked (Revoked / CertificateInvalid);
 4. `verify_host_evidence` with the enrolled AK and the nonce: quote signature, magic, type,
    nonce, PCR digest, the logs' replay, the vTM-manager key's fresh certification;
 5. the clock and reset counters against the agent's previous result: a new reset count is a
    reboot (the incremental IMA state starts over); a clock that went back without one is
    ClockRegressed;
 6. appraisal under the policy of the agent's group and its baseline (`Library.resolve`), with the
    incremental IMA state (`ImaStates`).

Every outcome of 2-6 is RECORDED (`store.results.record`, which publishes "verdict.changed"): a
failed check as an "untrusted" result whose one finding names it (`_verdict`), never only logged.
Each result carries a signed EAR (ES256 with the server's result-signing key). The task then
finishes with a summary {"result_id", "verdict"}; the evidence itself is not kept.

Proves, for a "trusted" result: the enrolled AK signed, over this server's fresh nonce, PCR values
that the boot, IMA and vTM-launch logs replay to, and those logs satisfy the group's policy.
Does not prove: anything about the host after the quote (attest again), or about its VMs (deep
attestation). The bundle's `host_id` and `ak_public` are not used: the enrolled AK identifies it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from vroot import __version__
from vroot import errors as E
from vroot.attestation import UnverifiedHostEvidence, VerifiedHostEvidence, verify_host_evidence
from vroot.attestation.ear import ear_claims, sign_ear
from vroot.baseline import Appraisal, AppraisalInput, appraisal_input_from_host_evidence, appraise
from vroot.pca import verify_ak_certificate
from vroot.server._imastate import ImaStates
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
from vroot.store import (
    AgentKind,
    AgentRecord,
    AgentState,
    NewResult,
    ResultRecord,
    TaskRecord,
    TaskState,
    Verdict,
)
from vroot.tpm2 import parse_public

__all__ = ["ATTEST", "Attestations"]

log = logging.getLogger("vroot.server")
ATTEST = "attest"  # task kind, task key (one open attest task per agent) and nonce purpose
NO_POLICY = "none"
COUNTER_SCAN = 20


@dataclass(slots=True)
class _Progress:
    identity_verified: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class _Verified:
    agent: AgentRecord
    evidence: VerifiedHostEvidence
    issued_at: datetime
    rebooted: bool
    digest: bytes


def _challenge(task: TaskRecord) -> bytes:
    payload = task.payload if isinstance(task.payload, Mapping) else {}
    try:
        return bytes.fromhex(str(payload.get("nonce", "")))
    except ValueError:
        return b""


def _expired(task: TaskRecord, now: datetime) -> bool:
    payload = task.payload if isinstance(task.payload, Mapping) else {}
    try:
        return datetime.fromisoformat(str(payload.get("expires_at"))) <= now
    except ValueError:
        return True


def _evidence(result: Any) -> UnverifiedHostEvidence:
    if not isinstance(result, Mapping) or set(result) != {"evidence"}:
        raise E.InvalidInput('an attest result is {"evidence": <host evidence bundle>}')
    return UnverifiedHostEvidence.from_json(result["evidence"])


class Attestations:
    """Challenges, verifies, appraises and records host attestations. Raises only `vroot.errors`."""

    def __init__(self, services: Services, library: Library, *, nonce_ttl: timedelta) -> None:
        self._s = services
        self._store = services.store
        self._library = library
        self._ttl = nonce_ttl
        self._ima = ImaStates(services.store, result_key=services.keys.result_signing_key.public_key(),
                              clock=services.clock)  # fmt: skip
        self._build = f"vroot {__version__}"

    # -- challenge ----------------------------------------------------------------------------------

    def request(self, agent_id: str) -> TaskRecord:
        """Queue an `attest` task with a fresh nonce for active host `agent_id` (RA-2). An open one
        is returned instead (the task key allows one per agent), unless it is still queued with an
        expired nonce: that one is cancelled and replaced. NotFound, InvalidInput (a guest),
        Conflict (not active)."""
        agent = self._store.agents.get(agent_id)
        if agent.kind is not AgentKind.HOST:
            raise E.InvalidInput(f"{agent_id} is a guest: VMs are attested through their host's deep quote")
        if agent.state is not AgentState.ACTIVE:
            raise E.Conflict(f"agent {agent_id} is {agent.state.value}; only active agents are attested")
        for _ in range(2):
            now = self._s.clock()
            nonce = self._store.nonces.issue(agent_id=agent_id, purpose=ATTEST, now=now, ttl=self._ttl, rng=self._s.rng)
            payload = {"nonce": nonce.hex(), "expires_at": (now + self._ttl).isoformat()}
            task = self._store.tasks.enqueue(agent_id=agent_id, kind=ATTEST, payload=payload, key=ATTEST, now=now)
            if task.state is not TaskState.QUEUED or not _expired(task, now):
                return task
            try:
                self._store.tasks.cancel(task.id, reason="its nonce expired before the agent took it", now=now)
            except E.Conflict:  # leased or finished meanwhile
                return self._store.tasks.get(task.id)
        return task

    def status(self, agent_id: str, task_id: int) -> tuple[TaskRecord, ResultRecord | None]:
        """An attestation task of `agent_id` and the result it produced (None while it runs)."""
        task = self._store.tasks.get(task_id)
        if task.agent_id != agent_id or task.kind != ATTEST:
            raise E.NotFound(f"agent {agent_id} has no attestation {task_id}")
        result_id = task.result.get("result_id") if isinstance(task.result, Mapping) else None
        return task, (self._store.results.get(result_id) if isinstance(result_id, int) else None)

    # -- evidence -----------------------------------------------------------------------------------

    def accept(self, agent_id: str, task_id: int, *, ok: bool, result: Any) -> tuple[TaskRecord, ResultRecord]:
        """Judge what the agent posted for its attest task and record the result (module docstring).
        Raises only for a task that is not the agent's to finish, or a store that does not answer."""
        task = self._store.tasks.get(task_id)
        if task.agent_id != agent_id or task.kind != ATTEST:
            raise E.NotFound(f"agent {agent_id} has no attest task {task_id}")
        if task.state is not TaskState.LEASED or task.lease_owner != agent_id:
            raise E.Conflict(f"task {task_id} is {task.state.value}, not leased to {agent_id}")
        challenge, now = _challenge(task), self._s.clock()
        if ok:
            recorded = self._judge(agent_id, challenge, result, now)
        else:
            self._burn(challenge, agent_id, now)
            recorded = self._record(agent_id, verdict=Verdict.ERROR, findings=(agent_failed_finding(result),),
                                    vector={}, nonce=challenge, now=now)  # fmt: skip
        summary = {"result_id": recorded.id, "verdict": recorded.verdict.value}
        finish = self._store.tasks.complete if ok else self._store.tasks.fail
        return finish(task_id, owner=agent_id, result=summary, now=self._s.clock()), recorded

    def revoke(self, agent_id: str, *, reason: str) -> AgentRecord:
        """Revoke the agent with its AK certificate, and record an "untrusted" result saying so, so
        the revocation changes its verdict (and publishes the change) at once."""
        agent = self._store.agents.get(agent_id)
        serials: tuple[int, ...] = ()
        if agent.ak_certificate:
            try:
                serials = (x509.load_der_x509_certificate(agent.ak_certificate).serial_number,)
            except ValueError:
                pass
        now = self._s.clock()
        revoked = self._store.agents.revoke(agent_id, reason=reason, now=now, serials=serials)
        exc = E.Revoked(f"agent {agent_id} was revoked ({reason})")
        self._record(agent_id, verdict=Verdict.UNTRUSTED, findings=(failure_finding(exc),),
                     vector=failure_vector(exc, identity_verified=False), nonce=b"", now=now)  # fmt: skip
        return revoked

    def _burn(self, nonce: bytes, agent_id: str, now: datetime) -> None:
        try:
            self._store.nonces.consume(nonce, agent_id=agent_id, purpose=ATTEST, now=now)
        except E.NonceInvalid:
            pass

    def _judge(self, agent_id: str, challenge: bytes, result: Any, now: datetime) -> ResultRecord:
        progress = _Progress()
        try:
            verified = self._verify(agent_id, challenge, result, now, progress)
            return self._appraise(verified, challenge, now)
        except (E.VerificationError, E.InvalidInput) as exc:
            return self._record(agent_id, verdict=Verdict.UNTRUSTED, findings=(failure_finding(exc),),
                                vector=failure_vector(exc, identity_verified=progress.identity_verified),
                                nonce=challenge, now=now)  # fmt: skip

    def _verify(self, agent_id: str, challenge: bytes, result: Any, now: datetime, progress: _Progress) -> _Verified:
        claimed = None
        try:
            evidence = _evidence(result)
            claimed = evidence.qualifying_data
            nonce = self._store.nonces.consume(claimed, agent_id=agent_id, purpose=ATTEST, now=now)
        finally:
            if claimed != challenge:
                self._burn(challenge, agent_id, now)
        if claimed != challenge:
            raise E.NonceMismatch(f"the evidence answers nonce {claimed.hex()[:16]}…, not this task's")
        agent = self._store.agents.get(agent_id)
        if agent.state is not AgentState.ACTIVE:
            raise E.Revoked(f"agent {agent_id} is {agent.state.value}")
        if not agent.ak_public or not agent.ak_certificate:
            raise E.CertificateInvalid(f"agent {agent_id} has no AK certificate")
        ak = parse_public(agent.ak_public)
        cert = verify_ak_certificate(agent.ak_certificate, pca_certificate=self._s.keys.pca.certificate, ak_public=ak,
                                     now=now)  # fmt: skip
        if cert.agent_id != agent_id:
            raise E.CertificateInvalid(f"the AK certificate of {agent_id} names {cert.agent_id}")
        revocation = self._store.revocations.find(cert.serial)
        if revocation is not None:
            raise E.Revoked(f"the AK certificate of {agent_id} (serial 0x{cert.serial:x}) was revoked at "
                            f"{revocation.revoked_at.isoformat()} ({revocation.reason or 'no reason'})")  # fmt: skip
        progress.identity_verified = True
        verified = verify_host_evidence(evidence, qualifying_data=challenge, ak=ak)
        rebooted = self._check_counters(agent_id, verified)
        digest = hashlib.sha256(evidence.quote_attest + evidence.quote_signature).digest()
        return _Verified(agent=agent, evidence=verified, issued_at=nonce.issued_at, rebooted=rebooted, digest=digest)

    def _check_counters(self, agent_id: str, verified: VerifiedHostEvidence) -> bool:
        """True if the TM was reset since the previous result; ClockRegressed if its clock went back
        while neither counter moved."""
        quote = verified.quote
        for previous in self._store.results.history(agent_id, limit=COUNTER_SCAN):
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

    # -- appraisal ----------------------------------------------------------------------------------

    def _appraise(self, v: _Verified, challenge: bytes, now: datetime) -> ResultRecord:
        agent_id, quote = v.agent.id, v.evidence.quote
        facts = {"pcrs": {alg.bank: dict(values) for alg, values in v.evidence.pcrs.items()},
                 "evidence_digest": v.digest, "clock": quote.clock, "reset_count": quote.reset_count,
                 "restart_count": quote.restart_count}  # fmt: skip
        counters = {"reset_count": quote.reset_count, "restart_count": quote.restart_count, "rebooted": v.rebooted}
        try:
            resolved = self._library.resolve(v.agent.group)
        except E.NotFound as exc:
            return self._record(agent_id, verdict=Verdict.ERROR, findings=(policy_missing_finding(v.agent.group, str(exc)),),
                                vector={}, nonce=challenge, now=now, extra=counters, **facts)  # fmt: skip
        stored = self._ima.load(agent_id, reset_count=quote.reset_count, policy_id=resolved.policy_id)
        full = appraisal_input_from_host_evidence(v.evidence, time=v.issued_at)
        appraisal, start = self._run_appraisal(full, resolved, stored.state, now)
        state = appraisal.ima_state
        extra: dict[str, Any] = dict(counters)
        if state is not None:
            extra["ima"] = {"entries_seen": state.entries_seen, "new_entries": state.entries_seen - start}
        recorded = self._record(
            agent_id, verdict=Verdict(appraisal.verdict), findings=tuple(f.to_json() for f in appraisal.findings),
            vector=appraisal_vector(appraisal.findings, policy=resolved.policy), nonce=challenge, now=now,
            policy_id=resolved.policy_id, extra=extra, **facts,
        )  # fmt: skip
        self._ima.save(agent_id, state, reset_count=quote.reset_count, version=stored.version)
        return recorded

    def _run_appraisal(self, full: AppraisalInput, resolved: ResolvedPolicy, state: Any,
                       now: datetime) -> tuple[Appraisal, int]:  # fmt: skip
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

    # -- the result ---------------------------------------------------------------------------------

    def _record(self, agent_id: str, *, verdict: Verdict, findings: tuple[dict[str, Any], ...],
                vector: Mapping[str, int], nonce: bytes, now: datetime, policy_id: str = NO_POLICY,
                extra: Mapping[str, Any] | None = None, pcrs: Mapping[str, Mapping[int, bytes]] | None = None,
                evidence_digest: bytes | None = None, clock: int | None = None, reset_count: int | None = None,
                restart_count: int | None = None) -> ResultRecord:  # fmt: skip
        """Sign the EAR and store the result (which publishes "verdict.changed" when it changed)."""
        ids = sorted({str(f.get("id")) for f in findings})
        claims = ear_claims(subject=agent_id, vector=vector, nonce=nonce, policy_id=policy_id, now=now,
                            verifier_build=self._build,
                            extra={"verdict": verdict.value, "finding_ids": ids, **(extra or {})})  # fmt: skip
        token = sign_ear(claims, key=self._s.keys.result_signing_key)
        result = NewResult(agent_id=agent_id, verdict=verdict, findings=findings, pcrs=pcrs or {},
                           evidence_digest=evidence_digest, clock=clock, reset_count=reset_count,
                           restart_count=restart_count, signed=token)  # fmt: skip
        return self._store.results.record(result, now=now).result
