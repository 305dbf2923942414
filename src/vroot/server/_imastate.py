"""Incremental IMA appraisal across attestations and server restarts (issue 4, point 6).

`store.ima_state` keeps, per agent: how many IMA entries of the current boot were appraised
(`entries`), PCR 10 replayed over them per bank (`pcr10`), whether they held an error
(`last_verdict`), the TPM reset count of that boot (`reset_count`) and an optimistic `version`.
What it cannot hold, the IMA findings so far (a file that was bad once keeps the host untrusted
until it reboots), is taken from the newest appraised result of the same boot: its signed EAR
names the policy it was appraised under and how many entries it had seen (`vroot.ima`), and its
findings hold the IMA ones. The two are used together only when they agree:

    same reset count (no reboot)  and  same policy id (policy and baseline versions)  and
    the result saw exactly `entries` entries  and  it held an IMA error iff `last_verdict` says so

Otherwise the state is dropped and the whole IMA list of this boot is appraised again: slower, never
wrong. So a reboot, a new policy or baseline version, a crash between recording the result and the
state, or two replicas racing on one agent, all end in one full appraisal, not in a lost finding.

Proves nothing about evidence: the entries after the state are still proven against the verified
quote by `appraise` (a stale state fails that replay, and the caller starts over).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import ec

from vroot.attestation.ear import verify_ear
from vroot.baseline import Finding, ImaAppraisalState
from vroot.errors import Conflict, InvalidInput, NotFound, VerificationError
from vroot.store import ImaStateRecord, ResultRecord, Store, Verdict
from vroot.tpm2 import HashAlg

__all__ = ["IMA_CLAIM", "ImaStates", "StoredImaState", "newest_results"]

log = logging.getLogger("vroot.server")
IMA_PCR = 10
IMA_CLAIM = "vroot.ima"  # in the EAR submodule: {"entries_seen": n, "new_entries": k}
TRUNCATED = "ima.findings.truncated"
HISTORY_SCAN = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredImaState:
    """The state to continue from (None: start at the first entry) and the stored version to
    replace (0: none stored)."""

    state: ImaAppraisalState | None
    version: int


def _ima_claim(result: ResultRecord, public_key: ec.EllipticCurvePublicKey, now: datetime) -> dict | None:
    if not result.signed:
        return None
    try:
        ear = verify_ear(result.signed, public_key=public_key, now=now)
    except (VerificationError, InvalidInput):
        return None
    submodule = ear.claims["submods"][ear.subject]
    claim = submodule.get(IMA_CLAIM)
    if not isinstance(claim, dict):
        return None
    return {**claim, "policy_id": submodule.get("ear.appraisal-policy-id")}


def newest_results(store: Store, agent_id: str, *, limit: int) -> Iterator[ResultRecord]:
    """The agent's last `limit` results, newest first, read as they are needed: the newest alone
    first (usually all a caller looks at), then the others in one read."""
    first = store.results.history(agent_id, limit=1)
    yield from first
    if first and limit > 1:
        yield from store.results.history(agent_id, limit=limit - 1, before_id=first[0].id)


class ImaStates:
    """Loads and stores agents' incremental IMA state. Raises only `vroot.errors`."""

    def __init__(self, store: Store, *, result_key: ec.EllipticCurvePublicKey, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._key = result_key
        self._clock = clock

    def load(self, agent_id: str, *, reset_count: int, policy_id: str) -> StoredImaState:
        """The state of `agent_id`'s current boot (`reset_count`) under `policy_id`, if it can be
        trusted to continue from (module docstring), else None with the stored version."""
        record = self._store.ima_state.get(agent_id)
        if record is None:
            return StoredImaState(state=None, version=0)
        fresh = StoredImaState(state=None, version=record.version)
        if record.reset_count != reset_count:
            return fresh
        source = None
        for result in newest_results(self._store, agent_id, limit=HISTORY_SCAN):
            if result.reset_count is None:  # a failure before the quote was read
                continue
            if result.reset_count != reset_count:
                break
            claim = _ima_claim(result, self._key, self._clock())
            if claim is not None:
                source = (result, claim)
                break
        if source is None:
            return fresh
        result, claim = source
        if claim.get("policy_id") != policy_id or claim.get("entries_seen") != record.entries:
            return fresh
        try:
            state = _state(record, result)
        except InvalidInput as exc:
            log.warning("IMA state of %s not used: %s", agent_id, exc.diagnostics())
            return fresh
        has_error = any(f.severity == "error" for f in state.findings)
        if has_error != (record.last_verdict is Verdict.UNTRUSTED):
            return fresh
        return StoredImaState(state=state, version=record.version)

    def save(self, agent_id: str, state: ImaAppraisalState | None, *, reset_count: int, version: int) -> None:
        """Store `state` over version `version`. A state that cannot be stored (PCRs other than 10)
        is forgotten instead, and a lost race is left to the winner: either way the next appraisal
        starts over rather than continue from something wrong."""
        try:
            if state is None or any(set(v) - {IMA_PCR} for v in state.pcrs.values()):
                if version:
                    self._store.ima_state.delete(agent_id)
                return
            pcr10 = {alg.bank: dict(v).get(IMA_PCR, bytes(alg.digest_size)) for alg, v in state.pcrs.items()}
            verdict = Verdict.UNTRUSTED if any(f.severity == "error" for f in state.findings) else Verdict.TRUSTED
            self._store.ima_state.put(
                ImaStateRecord(agent_id=agent_id, entries=state.entries_seen, pcr10=pcr10, last_verdict=verdict,
                               reset_count=reset_count, version=version),
                now=self._clock(),
            )  # fmt: skip
        except (Conflict, NotFound) as exc:
            log.info("IMA state of %s not stored: %s", agent_id, exc.diagnostics())


def _state(record: ImaStateRecord, result: ResultRecord) -> ImaAppraisalState:
    findings, dropped = [], 0
    for doc in result.findings:
        if not isinstance(doc, dict) or not str(doc.get("id", "")).startswith("ima."):
            continue
        if doc["id"] == TRUNCATED:
            seen = str(doc.get("seen") or "0")
            if not seen.isdigit():
                raise InvalidInput(f"result {result.id}: {TRUNCATED} without a count")
            dropped = int(seen)
        else:
            findings.append(Finding.from_json(doc))
    pcrs = {HashAlg.from_bank(bank): {IMA_PCR: value} for bank, value in record.pcr10.items()}
    return ImaAppraisalState(entries_seen=record.entries, pcrs=pcrs, findings=tuple(findings), dropped=dropped)
