"""Deep attestation of VMs as the server runs it (RA-3, RA-4, RA-7, VMM-F5; DESIGN.md section 5).

    task = deep.request("vm:6f1c…")     # a single-use nonce for the VM and the vPCRs to quote
    ...  the guest attester quotes its vTM with its vAK and posts {"evidence": ...}
    deep.accept_vm("vm:6f1c…", task.id, ok=True, result=...)    # the VM's side, then its batch
    ...  ONE `deep-quote` task to the host agent: qualifying data = merkle_root(leaves)
    deep.accept_host("host:h1", task_id, ok=True, result={"evidence": bundle})   # every joint verdict

The VM's side (`accept_vm`), failing closed at the first check that fails, each failure recorded
at once as an "untrusted" result of the VM (as for hosts, `_attest`): its nonce consumed (single
use, this task's); the guest active, its vAK certificate from the PCA, marked virtual, not
revoked; `verify_vm_evidence` with the ENROLLED vAK (signature, nonce, vPCR digest, the guest's
TCG and IMA logs replay); the vTM's counters; the host it is recorded on active. Then the VM joins
the batch of its host (`Batcher`): the VMs of one host that answer within `deep_batch_seconds`
(or until every VM of the host with an open challenge has answered) get ONE deep-quote task, over
`merkle_root([deep_quote_leaf(n_i, quote_i) ...])`. The VM's task finishes "waiting", keeping its
evidence until the host answers.

The host's answer (`accept_host`) is judged as a host attestation over the root (`judge_host`,
recorded as the host's result; a genuine host quote over other data is still verified, so its VMs
are told their leaves are not in what it signed); then for each VM of the batch: its identity and evidence again,
the binding (`_joint.bind_vm`: its leaf in the quoted tree, its vEK certified by THIS host's
vTM-manager key, its vTM launched on this host), the appraisal of its evidence under its own
group's policy (VM baselines do not depend on the host), and the joint verdict, recorded with
findings from both sides, the host's result id and an EAR whose vector reflects both.

A host that does not take its deep quote before the batch's nonces expire: `expire()` (the
scheduler's tick) records "error" results for the VMs it left waiting.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from vroot import errors as E
from vroot.attestation import VerifiedHostEvidence, deep_quote_leaf, merkle_root
from vroot.server._attest import ATTEST, Attestations, Progress, payload_expired, task_nonce
from vroot.server._batch import Batcher
from vroot.server._joint import bind_vm, host_finding, joint, unavailable
from vroot.server._judge import Judged
from vroot.server._library import Library
from vroot.server._services import Services
from vroot.server._verdict import failure_finding, finding_json
from vroot.server._vmevidence import (
    UnverifiedVmEvidence,
    claimed_nonce,
    verify_vm_evidence,
    vm_appraisal_input,
)
from vroot.store import AgentKind, AgentState, ResultRecord, TaskRecord, TaskState, Verdict

__all__ = ["DEEP_QUOTE", "DEFAULT_VM_PCRS", "DeepAttestations"]

DEEP_QUOTE = "deep-quote"  # task kind
DEFAULT_VM_PCRS = tuple(range(11))
WAITING = "waiting"
OPEN_SCAN = 10_000  # open tasks read to find the VMs a batch waits for (more: it may seal early, never wrongly)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Member:
    agent_id: str
    task_id: int
    nonce: bytes
    quote_attest: bytes


class _HostRefused(E.Revoked):
    """The host a VM is recorded on is not active (a narrow subclass: recorded as the host's problem)."""

    def __init__(self, message: str, *, host_id: str) -> None:
        super().__init__(message)
        self.host_id = host_id


def _vm_evidence(result: Any) -> UnverifiedVmEvidence:
    if not isinstance(result, Mapping) or set(result) != {"evidence"}:
        raise E.InvalidInput('a guest result is {"evidence": <VM evidence>}')
    return UnverifiedVmEvidence.from_json(result["evidence"])


class DeepAttestations:
    """Challenges VMs, batches them per host, and records joint verdicts. Raises only `vroot.errors`."""

    def __init__(self, services: Services, attestations: Attestations, library: Library, *, nonce_ttl: timedelta,
                 batch_window: float) -> None:  # fmt: skip
        self._a = attestations
        self._judge = attestations.judge
        self._store = services.store
        self._clock = services.clock
        self._library = library
        self._ttl = nonce_ttl
        self._window = batch_window
        self._batches: Batcher[_Member] = Batcher(window=batch_window)

    # -- challenge ----------------------------------------------------------------------------------

    def request(self, agent_id: str) -> TaskRecord:
        """Queue an `attest` task for active guest `agent_id` with a fresh nonce and the vPCRs its
        policy reads (RA-2, RA-3); an open one is returned instead. NotFound, InvalidInput (a host),
        Conflict (the guest or its host is not active)."""
        agent = self._store.agents.get(agent_id)
        if agent.kind is not AgentKind.GUEST:
            raise E.InvalidInput(f"{agent_id} is a host: attest it with its own quote")
        host = None if agent.host_id is None else self._store.agents.find(agent.host_id)
        if host is None or host.state is not AgentState.ACTIVE:
            raise E.Conflict(f"{agent_id} runs on no active host ({agent.host_id or 'none recorded'})")
        return self._a.challenge(agent, pcrs=self._selection(agent.group), bank="sha256")

    def _selection(self, group: str) -> list[int]:
        try:
            policy = self._library.resolve(group).policy
        except E.NotFound:
            return list(DEFAULT_VM_PCRS)
        pcrs = set(policy.event_pcrs) | {i for values in policy.pcrs.values() for i in values}
        return sorted(pcrs | ({10} if policy.ima is not None else set())) or list(DEFAULT_VM_PCRS)

    def status(self, agent_id: str, task_id: int) -> tuple[TaskRecord, ResultRecord | None]:
        """A VM's attestation task and its joint result (None while the VM or its host has not answered)."""
        task, result = self._a.status(agent_id, task_id)
        doc = task.result if isinstance(task.result, Mapping) else {}
        if result is not None or doc.get("state") != WAITING or not isinstance(doc.get("deep_quote_task"), int):
            return task, result
        deep = self._store.tasks.get(doc["deep_quote_task"])
        vms = deep.result.get("vms") if isinstance(deep.result, Mapping) else None
        mine = vms.get(agent_id) if isinstance(vms, Mapping) else None
        if isinstance(mine, Mapping) and isinstance(mine.get("result_id"), int):
            return task, self._store.results.get(mine["result_id"])
        if deep.state is TaskState.FAILED:  # cancelled by expire(): the VM's newest result says so
            latest = self._store.results.latest(agent_id)
            return task, latest if latest is not None and latest.created_at >= deep.created_at else None
        return task, None

    # -- the VM's answer ----------------------------------------------------------------------------

    def accept_vm(self, agent_id: str, task_id: int, *, ok: bool, result: Any) -> TaskRecord:
        """Check what the guest posted for its attest task; record a failure at once, or wait for the
        batch of its host and finish the task "waiting" (module docstring)."""
        task = self._a.held(agent_id, task_id, ATTEST)
        challenge, now = task_nonce(task), self._clock()
        if not ok:
            self._a.burn(challenge, agent_id, now)
            recorded = self._judge.record(agent_id, Judged.agent_failed(result), nonce=challenge, now=now)
            return self._a.finish(task, ok=False, recorded=recorded)
        progress = Progress()
        try:
            host_id, issued_at, rebooted, attest = self._check_vm(agent_id, challenge, result, now, progress)
        except (E.VerificationError, E.InvalidInput) as exc:
            judged = Judged.failure(exc, identity_verified=progress.identity_verified)
            if isinstance(exc, _HostRefused):
                judged = Judged(verdict=Verdict.UNTRUSTED, vector=judged.vector,
                                findings=(host_finding(failure_finding(exc), exc.host_id),))  # fmt: skip
            return self._a.finish(task, ok=True, recorded=self._judge.record(agent_id, judged, nonce=challenge, now=now))
        member = _Member(agent_id=agent_id, task_id=task_id, nonce=challenge, quote_attest=attest)
        try:
            deep, index = self._batches.join(host_id, member, complete=self._all_in(host_id), seal=self._seal(host_id))
        except E.VrootError as exc:
            judged = unavailable(host_id, f"no deep quote could be asked for: {exc.diagnostics()}")
            return self._a.finish(task, ok=True, recorded=self._judge.record(agent_id, judged, nonce=challenge, now=now))
        waiting = {"state": WAITING, "deep_quote_task": deep.id, "leaf_index": index, "evidence": result["evidence"],
                   "issued_at": issued_at.isoformat(), "rebooted": rebooted}  # fmt: skip
        return self._store.tasks.complete(task.id, owner=agent_id, result=waiting, now=self._clock())

    def _check_vm(self, agent_id: str, challenge: bytes, result: Any, now: datetime,
                  progress: Progress) -> tuple[str, datetime, bool, bytes]:  # fmt: skip
        claimed = None
        try:
            evidence = _vm_evidence(result)
            claimed = claimed_nonce(evidence)
            nonce = self._store.nonces.consume(claimed, agent_id=agent_id, purpose=ATTEST, now=now)
        finally:
            if claimed != challenge:
                self._a.burn(challenge, agent_id, now)
        if claimed != challenge:
            raise E.NonceMismatch(f"the vTM quote answers {claimed.hex()[:16]}…, not this task's challenge")
        agent, vak = self._judge.identity(agent_id, now=now, virtual=True)
        progress.identity_verified = True
        verified = verify_vm_evidence(evidence, vak=vak, nonce=challenge)
        rebooted = self._judge.counters(agent_id, verified.quote)
        host = None if agent.host_id is None else self._store.agents.find(agent.host_id)
        if host is None or host.state is not AgentState.ACTIVE:
            raise _HostRefused(f"{agent.host_id or 'its host'} is {host.state.value if host else 'not recorded'}",
                               host_id=agent.host_id or "none")
        return host.id, nonce.issued_at, rebooted, evidence.quote_attest

    def _all_in(self, host_id: str) -> Any:
        """Whether every VM of the host still expected has joined the batch: those whose attest task
        is leased (their guest is answering) or was queued within the batch window (asked together
        with this one; an older queued task is a guest that is away, which must not hold the batch)."""

        def complete(members: list[_Member]) -> bool:
            joined = {m.agent_id for m in members}
            guests = {g.id for g in self._store.agents.list(kind=AgentKind.GUEST, state=AgentState.ACTIVE,
                                                             host_id=host_id)} - joined  # fmt: skip
            if not guests:
                return True
            recent = self._clock() - timedelta(seconds=self._window)
            for state in (TaskState.LEASED, TaskState.QUEUED):
                for task in self._store.tasks.list(state=state, limit=OPEN_SCAN):
                    if task.kind == ATTEST and task.agent_id in guests and (
                        state is TaskState.LEASED or task.created_at >= recent
                    ):  # fmt: skip
                        return False
            return True

        return complete

    def _seal(self, host_id: str) -> Any:
        """One deep-quote task for the batch: the root of its leaves as qualifying data."""

        def seal(members: list[_Member]) -> TaskRecord:
            now = self._clock()
            leaves = [deep_quote_leaf(m.nonce, m.quote_attest) for m in members]
            payload = {"qualifying_data": merkle_root(leaves).hex(), "issued_at": now.isoformat(),
                       "expires_at": (now + self._ttl).isoformat(), "leaves": [leaf.hex() for leaf in leaves],
                       "members": [{"agent_id": m.agent_id, "task_id": m.task_id, "nonce": m.nonce.hex()}
                                   for m in members]}  # fmt: skip
            return self._store.tasks.enqueue(agent_id=host_id, kind=DEEP_QUOTE, payload=payload, now=now)

        return seal

    # -- the host's answer --------------------------------------------------------------------------

    def accept_host(self, host_id: str, task_id: int, *, ok: bool, result: Any) -> TaskRecord:
        """Judge the host's deep quote over the batch's root, then every VM of the batch (module
        docstring). Raises only for a task that is not the host's to finish, or a store that fails."""
        task = self._a.held(host_id, task_id, DEEP_QUOTE)
        root, now = task_nonce(task), self._clock()
        payload = task.payload if isinstance(task.payload, Mapping) else {}
        leaves = [bytes.fromhex(str(leaf)) for leaf in payload.get("leaves") or ()]
        issued = (datetime.fromisoformat(str(payload["issued_at"])), datetime.fromisoformat(str(payload["expires_at"])))
        verified: VerifiedHostEvidence | None = None
        if ok:
            host_result, host_judged, verified = self._a.judge_host(host_id, root, result, now, issued=issued)
            if verified is None and any(f.get("id") == "attestation.nonce.mismatch" for f in host_judged.findings):
                verified = self._a.unbound(host_id, result, now)  # signed, but not this batch's root
        else:
            host_judged = Judged.agent_failed(result)
            host_result = self._judge.record(host_id, host_judged, nonce=root, now=now)
        vms = {}
        for index, member in enumerate(payload.get("members") or ()):
            recorded = self._judge_vm(member, index, leaves, task, host_judged, host_result, verified, now)
            vms[str(member["agent_id"])] = {"result_id": recorded.id, "verdict": recorded.verdict.value}
        return self._a.finish(task, ok=ok, recorded=host_result, vms=vms)

    def _judge_vm(self, member: Mapping[str, Any], index: int, leaves: list[bytes], task: TaskRecord,
                  host: Judged, host_result: ResultRecord, verified: VerifiedHostEvidence | None,
                  now: datetime) -> ResultRecord:  # fmt: skip
        agent_id, nonce, host_id = str(member["agent_id"]), bytes.fromhex(str(member["nonce"])), task.agent_id
        record = {"nonce": nonce, "now": now, "host_result_id": host_result.id}
        kept = self._store.tasks.get(int(member["task_id"])).result
        try:
            issued_at = datetime.fromisoformat(str(kept["issued_at"]))  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            kept = None
        if not isinstance(kept, Mapping) or kept.get("state") != WAITING or kept.get("deep_quote_task") != task.id:
            lost = finding_json("deep.evidence.lost", seen=agent_id,
                                message="the VM's evidence was not kept for its host's deep quote; attest it again")  # fmt: skip
            return self._judge.record(agent_id, Judged(verdict=Verdict.ERROR, findings=(lost,)), **record)
        progress = Progress()
        try:
            agent, vak = self._judge.identity(agent_id, now=now, virtual=True)
            progress.identity_verified = True
            evidence = UnverifiedVmEvidence.from_json(kept.get("evidence"))
            vm = verify_vm_evidence(evidence, vak=vak, nonce=nonce)
        except (E.VerificationError, E.InvalidInput) as exc:
            own = Judged.failure(exc, identity_verified=progress.identity_verified)
            judged = joint(own, host=host, host_id=host_id, host_result=host_result, binding=None, binding_error=None)
            return self._judge.record(agent_id, judged, **record)
        binding = binding_error = None
        if verified is not None:
            try:
                binding = bind_vm(agent=agent, nonce=nonce, quote_attest=vm.quote_attest, leaf_index=index,
                                  leaves=leaves, host=verified)  # fmt: skip
            except (E.VerificationError, E.InvalidInput) as exc:
                binding_error = exc
        digest = hashlib.sha256(evidence.quote_attest + evidence.quote_signature).digest()
        own = self._judge.appraise(agent, vm_appraisal_input(vm, time=issued_at), quote=vm.quote, digest=digest,
                                   rebooted=kept.get("rebooted") is True, now=now)  # fmt: skip
        judged = joint(own, host=host, host_id=host_id, host_result=host_result, binding=binding,
                       binding_error=binding_error)  # fmt: skip
        return self._judge.record(agent_id, judged, **record)

    # -- hosts that do not answer -------------------------------------------------------------------

    def expire(self) -> list[int]:
        """Cancel deep-quote tasks still queued after their batch's nonces expired, recording an
        "error" result (`deep.host.unavailable`) for each VM they left waiting. Their ids."""
        now, cancelled = self._clock(), []
        for task in self._store.tasks.list(state=TaskState.QUEUED, limit=1000):
            if task.kind != DEEP_QUOTE or not payload_expired(task, now):
                continue
            try:
                self._store.tasks.cancel(task.id, reason="the host did not take its deep quote in time", now=now)
            except E.Conflict:  # taken meanwhile
                continue
            cancelled.append(task.id)
            payload = task.payload if isinstance(task.payload, Mapping) else {}
            for member in payload.get("members") or ():
                judged = unavailable(task.agent_id, "its host agent did not take the deep quote before it expired")
                self._judge.record(str(member["agent_id"]), judged, nonce=bytes.fromhex(str(member["nonce"])), now=now)
        return cancelled
