"""From verification and appraisal to a stored verdict: failure findings, the AR4SI vector, the EAR.

Failures. Evidence that fails a cryptographic check, or a challenge that is not fresh, is not an
error of the server: it is a result, recorded as "untrusted" with one finding naming the check
(the first that failed: checks stop there, DESIGN.md section 5). Finding IDs (stable API, the
same JSON shape as `vroot.baseline.Finding`):

| ID | Raised by | AR4SI claim set to contraindicated |
|---|---|---|
| `attestation.nonce.unknown` | NonceUnknown: never issued to this agent for "attest" | hardware |
| `attestation.nonce.expired` | NonceExpired | hardware |
| `attestation.nonce.reused` | NonceReused: a replayed challenge | hardware |
| `attestation.nonce.mismatch` | NonceMismatch: the evidence answers another challenge | hardware |
| `attestation.revoked` | Revoked: the agent or its AK certificate | instance-identity |
| `attestation.ak_certificate.invalid` | CertificateInvalid: the AK certificate's chain to the PCA | instance-identity |
| `attestation.quote.signature_invalid` | SignatureInvalid: not signed by the enrolled AK | hardware |
| `attestation.clock.regressed` | ClockRegressed: TPM clock went back without a reset | hardware |
| `attestation.quote.invalid` | any other QuoteError (magic, type, PCR digest, hash) | hardware |
| `attestation.log.replay_mismatch` | ReplayMismatch: logs do not replay to the quote | hardware |
| `attestation.evidence.malformed` | InvalidInput: evidence that does not decode | hardware |
| `attestation.verification_failed` | any other VerificationError | hardware |
| `attestation.agent.failed` | the agent reported the task failed (verdict "error") | none |
| `attestation.policy.missing` | the agent's group has no policy (verdict "error") | none |

AR4SI vector of an appraised result (tiers: 2 affirming, 32 warning, 96 contraindicated, 0 no
claim; a claim takes the worst severity among its findings: error 96, warning 32; info counts for
nothing; a claim with no finding that the policy appraised is affirming):

| Claim | Affirming when | Findings that count |
|---|---|---|
| instance-identity | the AK certificate chains to the PCA, is not revoked, the agent is active | — |
| hardware | the quote verified under the enrolled AK (its EK chain was checked at enrollment), the nonce was fresh, the logs replay | `evidence.too_old`, `evidence.from_future` |
| executables | the policy checks events or golden PCRs | `baseline.*` and `evidence.pcr.missing` on code PCRs (any but 1, 3, 5, 6, 7, 8, 10); `ima.boot_aggregate.mismatch` |
| configuration | the policy checks events or golden PCRs | `baseline.*` and `evidence.pcr.missing` on configuration PCRs 1, 3, 5, 6, 7, 8 |
| file-system | the policy appraises IMA | every other `ima.*`; `evidence.ima.missing`; `evidence.pcr.missing` on PCR 10 |

A result with verdict "error" (nothing was appraised) carries an empty vector: EAR status "none".
Relying parties should accept only status "affirming" (or "warning", by their own policy).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vroot import errors as E
from vroot.attestation.ear import Tier
from vroot.baseline import Finding, Policy

__all__ = [
    "CONFIG_PCRS",
    "ClockRegressed",
    "agent_failed_finding",
    "appraisal_vector",
    "failure_finding",
    "failure_vector",
    "finding_json",
    "policy_missing_finding",
]

IMA_PCR = 10
CONFIG_PCRS = frozenset({1, 3, 5, 6, 7, 8})


class ClockRegressed(E.VerificationError):
    """The quote's TPM clock is behind the previous one while neither reset nor restart counter
    moved: the TM's state was rolled back, or the quote is not the TM's current one. (A narrow
    subclass kept here: the error tree has no clock class.)"""


# (error class, finding id, AR4SI claim); the first class the error is an instance of wins.
FAILURES: tuple[tuple[type[BaseException], str, str], ...] = (
    (E.NonceUnknown, "attestation.nonce.unknown", "hardware"),
    (E.NonceExpired, "attestation.nonce.expired", "hardware"),
    (E.NonceReused, "attestation.nonce.reused", "hardware"),
    (E.NonceMismatch, "attestation.nonce.mismatch", "hardware"),
    (E.Revoked, "attestation.revoked", "instance-identity"),
    (E.CertificateInvalid, "attestation.ak_certificate.invalid", "instance-identity"),
    (E.SignatureInvalid, "attestation.quote.signature_invalid", "hardware"),
    (ClockRegressed, "attestation.clock.regressed", "hardware"),
    (E.QuoteError, "attestation.quote.invalid", "hardware"),
    (E.ReplayMismatch, "attestation.log.replay_mismatch", "hardware"),
    (E.InvalidInput, "attestation.evidence.malformed", "hardware"),
    (E.VerificationError, "attestation.verification_failed", "hardware"),
)


def finding_json(
    finding_id: str, *, message: str, severity: str = "error", pcr: int | None = None, event_index: int | None = None,
    expected: str | None = None, seen: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A finding as stored: the shape of `vroot.baseline.Finding.to_json()`."""
    return {"id": finding_id, "severity": severity, "pcr": pcr, "event_index": event_index,
            "expected": expected, "seen": seen, "message": message[:1024]}  # fmt: skip


def _classify(exc: BaseException) -> tuple[str, str]:
    for cls, finding_id, claim in FAILURES:
        if isinstance(exc, cls):
            return finding_id, claim
    raise TypeError(f"{type(exc).__name__} is not an attestation failure")


def failure_finding(exc: E.VerificationError | E.InvalidInput) -> dict[str, Any]:
    """The one finding recording why verification stopped."""
    finding_id, _ = _classify(exc)
    pcrs = tuple(getattr(exc, "pcrs", ()) or ())
    return finding_json(finding_id, message=exc.diagnostics(), seen=type(exc).__name__,
                        pcr=pcrs[0] if len(pcrs) == 1 else None)  # fmt: skip


def failure_vector(exc: E.VerificationError | E.InvalidInput, *, identity_verified: bool) -> dict[str, int]:
    """The AR4SI vector of a failed verification: the failed claim contraindicated; instance
    identity affirming if the AK certificate and the agent were checked before the failure."""
    _, claim = _classify(exc)
    vector = {claim: Tier.CONTRAINDICATED}
    if identity_verified and claim != "instance-identity":
        vector["instance-identity"] = Tier.AFFIRMING
    return vector


def agent_failed_finding(result: Any) -> dict[str, Any]:
    doc = result if isinstance(result, Mapping) else {}
    error, detail = str(doc.get("error") or "unknown")[:100], str(doc.get("detail") or "no detail")[:900]
    return finding_json("attestation.agent.failed", seen=error,
                        message=f"the agent could not produce evidence: {error}: {detail}")  # fmt: skip


def policy_missing_finding(group: str, why: str) -> dict[str, Any]:
    return finding_json("attestation.policy.missing", seen=group,
                        message=f"evidence verified, but nothing to appraise it against: {why}")  # fmt: skip


def _claim_of(finding: Finding) -> str:
    fid, pcr = finding.id, finding.pcr
    if fid in ("evidence.too_old", "evidence.from_future"):
        return "hardware"
    if fid == "ima.boot_aggregate.mismatch":
        return "executables"
    if fid.startswith("ima.") or fid == "evidence.ima.missing" or pcr == IMA_PCR:
        return "file-system"
    return "configuration" if pcr in CONFIG_PCRS else "executables"


def appraisal_vector(findings: Iterable[Finding], *, policy: Policy) -> dict[str, int]:
    """The AR4SI vector of evidence that verified and was appraised under `policy` (table above)."""
    vector = {"instance-identity": Tier.AFFIRMING, "hardware": Tier.AFFIRMING}
    boot = bool(policy.event_pcrs) or bool(policy.pcrs)
    if boot:
        vector["executables"] = vector["configuration"] = Tier.AFFIRMING
    if policy.ima is not None:
        vector["file-system"] = Tier.AFFIRMING
    tiers = {"error": Tier.CONTRAINDICATED, "warning": Tier.WARNING}
    for finding in findings:
        tier = tiers.get(finding.severity)
        if tier is not None:
            claim = _claim_of(finding)
            vector[claim] = max(vector.get(claim, Tier.NONE), tier)
    return vector
