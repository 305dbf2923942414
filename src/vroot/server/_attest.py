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

`judge_host` is also how a host's answer to a `deep-quote` task is judged (`_deep`): the same
checks, with the batch's Merkle root as the challenge instead of a stored nonce.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from vroot import errors as E
from vroot.attestation import UnverifiedHostEvidence, VerifiedHostEvidence, verify_host_evidence
from vroot.attestation.ear import Tier
from vroot.baseline import appraisal_input_from_host_evidence
from vroot.server._judge import Judge, Judged
from vroot.server._library import Library
from vroot.server._services import Services
from vroot.server._verdict import failure_finding, finding_json
from vroot.store import (
    NONCE_SIZE,
    AgentKind,
    AgentRecord,
    AgentState,
    ResultRecord,
    TaskRecord,
    TaskState,
    Verdict,
)

__all__ = ["ATTEST", "Attestations", "host_evidence", "payload_expired", "task_nonce"]

ATTEST = "attest"  # task kind, task key (one open attest task per agent) and nonce purpose


@dataclass(slots=True)
class Progress:
    """How far verification got before it stopped (the AR4SI vector of a failure says it)."""

    identity_verified: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedHost:
    """A host's evidence that passed every check of the module docstring (2-5)."""

    agent: AgentRecord
    evidence: VerifiedHostEvidence
    issued_at: datetime
    rebooted: bool
    digest: bytes


def task_nonce(task: TaskRecord) -> bytes:
    """The challenge a server task carries (its payload's hex `nonce` or `qualifying_data`)."""
    payload = task.payload if isinstance(task.payload, Mapping) else {}
    try:
        return bytes.fromhex(str(payload.get("nonce", payload.get("qualifying_data", ""))))
    except ValueError:
        return b""


def payload_expired(task: TaskRecord, now: datetime) -> bool:
    payload = task.payload if isinstance(task.payload, Mapping) else {}
    try:
        return datetime.fromisoformat(str(payload.get("expires_at"))) <= now
    except ValueError:
        return True


def host_evidence(result: Any) -> UnverifiedHostEvidence:
    """The host evidence bundle of an `attest` or `deep-quote` task result."""
    if not isinstance(result, Mapping) or set(result) != {"evidence"}:
        raise E.InvalidInput('a host result is {"evidence": <host evidence bundle>}')
    return UnverifiedHostEvidence.from_json(result["evidence"])


class Attestations:
    """Challenges, verifies, appraises and records host attestations. Raises only `vroot.errors`."""

    def __init__(self, services: Services, library: Library, *, nonce_ttl: timedelta, judge: Judge | None = None) -> None:
        self._s = services
        self._store = services.store
        self._ttl = nonce_ttl
        self.judge = judge or Judge(services, library)

    # -- challenge ----------------------------------------------------------------------------------

    def request(self, agent_id: str) -> TaskRecord:
        """Queue an `attest` task with a fresh nonce for active host `agent_id` (RA-2). An open one
        is returned instead (the task key allows one per agent), unless it is still queued with an
        expired nonce: that one is cancelled and replaced. NotFound, InvalidInput (a guest: see
        `DeepAttestations`), Conflict (not active)."""
        agent = self._store.agents.get(agent_id)
        if agent.kind is not AgentKind.HOST:
            raise E.InvalidInput(f"{agent_id} is a guest: VMs are attested through their host's deep quote")
        return self.challenge(agent)

    def challenge(self, agent: AgentRecord, **payload: Any) -> TaskRecord:
        """Queue (or return the open) `attest` task of an active agent, with a fresh nonce and
        `payload` (the selection a guest quotes)."""
        if agent.state is not AgentState.ACTIVE:
            raise E.Conflict(f"agent {agent.id} is {agent.state.value}; only active agents are attested")
        for _ in range(2):
            now = self._s.clock()
            nonce = self._s.rng(NONCE_SIZE)
            body = {"nonce": nonce.hex(), "expires_at": (now + self._ttl).isoformat(), **payload}
            task = self._store.tasks.enqueue_challenge(agent_id=agent.id, kind=ATTEST, key=ATTEST, nonce=nonce,
                                                       purpose=ATTEST, expires_at=now + self._ttl, payload=body,
                                                       now=now)  # fmt: skip
            if task.state is not TaskState.QUEUED or not payload_expired(task, now):
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

    def held(self, agent_id: str, task_id: int, kind: str) -> TaskRecord:
        """Task `task_id` of kind `kind`, if `agent_id` holds its lease: NotFound / Conflict otherwise."""
        task = self._store.tasks.get(task_id)
        if task.agent_id != agent_id or task.kind != kind:
            raise E.NotFound(f"agent {agent_id} has no {kind} task {task_id}")
        if task.state is not TaskState.LEASED or task.lease_owner != agent_id:
            raise E.Conflict(f"task {task_id} is {task.state.value}, not leased to {agent_id}")
        return task

    def accept(self, agent_id: str, task_id: int, *, ok: bool, result: Any) -> tuple[TaskRecord, ResultRecord]:
        """Judge what the agent posted for its attest task and record the result (module docstring).
        Raises only for a task that is not the agent's to finish, or a store that does not answer."""
        task = self.held(agent_id, task_id, ATTEST)
        challenge, now = task_nonce(task), self._s.clock()
        if ok:
            recorded = self.judge_host(agent_id, challenge, result, now)[0]
        else:
            self.burn(challenge, agent_id, now)
            recorded = self.judge.record(agent_id, Judged.agent_failed(result), nonce=challenge, now=now)
        return self.finish(task, ok=ok, recorded=recorded), recorded

    def finish(self, task: TaskRecord, *, ok: bool, recorded: ResultRecord, **more: Any) -> TaskRecord:
        """Finish a server task with the summary of the result it produced."""
        summary = {"result_id": recorded.id, "verdict": recorded.verdict.value, **more}
        finish = self._store.tasks.complete if ok else self._store.tasks.fail
        return finish(task.id, owner=task.agent_id, result=summary, now=self._s.clock())

    def revoke(self, agent_id: str, *, reason: str) -> AgentRecord:
        """Revoke the agent with its AK certificate, and record an "untrusted" result saying so, so
        the revocation changes its verdict (and publishes the change) at once; a host's guests get
        one too (`host.attestation.revoked`): nothing on a revoked host is trusted."""
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
        self.judge.record(agent_id, Judged.failure(exc, identity_verified=False), nonce=b"", now=now)
        if agent.kind is AgentKind.HOST:
            host = failure_finding(exc)
            finding = finding_json("host." + host["id"], message=f"its host {agent_id}: {host['message']}",
                                   seen=agent_id)  # fmt: skip
            for guest in self._store.agents.list(kind=AgentKind.GUEST, host_id=agent_id, state=AgentState.ACTIVE):
                self.judge.record(guest.id, Judged(verdict=Verdict.UNTRUSTED, findings=(finding,),
                                                   vector={"hardware": Tier.CONTRAINDICATED}), nonce=b"", now=now)  # fmt: skip
        return revoked

    def burn(self, nonce: bytes, agent_id: str, now: datetime) -> None:
        """Use up a challenge whatever happens, so it can never be answered later."""
        try:
            self._store.nonces.consume(nonce, agent_id=agent_id, purpose=ATTEST, now=now)
        except E.NonceInvalid:
            pass

    def judge_host(self, agent_id: str, challenge: bytes, result: Any, now: datetime, *,
                   issued: tuple[datetime, datetime] | None = None) -> tuple[ResultRecord, Judged, VerifiedHostEvidence | None]:  # fmt: skip
        """Verify, appraise and record a host's answer to `challenge`: a stored nonce, consumed here, or
        with `issued` (when it was made, when it expires) the Merkle root of a deep quote, which its
        task carries (single use: the task is finished once). Returns the result, its outcome and,
        when every check passed, the verified evidence (for the VMs it vouches for)."""
        progress = Progress()
        try:
            verified = self._verify(agent_id, challenge, result, now, progress, issued=issued)
        except (E.VerificationError, E.InvalidInput) as exc:
            judged = Judged.failure(exc, identity_verified=progress.identity_verified)
            return self.judge.record(agent_id, judged, nonce=challenge, now=now), judged, None
        full = appraisal_input_from_host_evidence(verified.evidence, time=verified.issued_at)
        judged = self.judge.appraise(verified.agent, full, quote=verified.evidence.quote, digest=verified.digest,
                                     rebooted=verified.rebooted, now=now)  # fmt: skip
        return self.judge.record(agent_id, judged, nonce=challenge, now=now), judged, verified.evidence

    def unbound(self, agent_id: str, result: Any, now: datetime) -> VerifiedHostEvidence | None:
        """The host's evidence verified with its enrolled AK over the qualifying data IT claims, or None.
        For a deep quote that did not answer its batch's root: proves the host TM signed that other
        data, so each VM can be told its leaf is not in what the host signed. Never a host verdict."""
        try:
            evidence = host_evidence(result)
            _, ak = self.judge.identity(agent_id, now=now)
            return verify_host_evidence(evidence, qualifying_data=evidence.qualifying_data, ak=ak)
        except (E.VerificationError, E.InvalidInput):
            return None

    def _verify(self, agent_id: str, challenge: bytes, result: Any, now: datetime, progress: Progress, *,
                issued: tuple[datetime, datetime] | None) -> VerifiedHost:  # fmt: skip
        claimed = None
        consume = issued is None
        issued_at = now if issued is None else issued[0]
        try:
            evidence = host_evidence(result)
            claimed = evidence.qualifying_data
            if consume:
                issued_at = self._store.nonces.consume(claimed, agent_id=agent_id, purpose=ATTEST, now=now).issued_at
        finally:
            if consume and claimed != challenge:
                self.burn(challenge, agent_id, now)
        if issued is not None and issued[1] <= now:
            raise E.NonceExpired(f"the deep quote of {agent_id} was due by {issued[1].isoformat()}")
        if claimed != challenge:
            raise E.NonceMismatch(f"the evidence answers {claimed.hex()[:16]}…, not this task's challenge")
        agent, ak = self.judge.identity(agent_id, now=now)
        progress.identity_verified = True
        verified = verify_host_evidence(evidence, qualifying_data=challenge, ak=ak)
        rebooted = self.judge.counters(agent_id, verified.quote)
        digest = hashlib.sha256(evidence.quote_attest + evidence.quote_signature).digest()
        return VerifiedHost(agent=agent, evidence=verified, issued_at=issued_at, rebooted=rebooted, digest=digest)
