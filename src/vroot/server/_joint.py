"""The joint verdict of a VM and the host it runs on (RA-4, RA-7; DESIGN.md section 5).

A VM is trusted only if all hold: its own evidence appraises as trusted; its host's evidence in
the same deep quote appraises as trusted; its leaf is in the tree the host TM quoted; its vEK was
certified by the vTM-manager key that this host's AK certified; and (vroot's addition) the host's
verified vTM-launch log (PCR 14) shows this vTM, by VM UUID and vEK name, launched since the host
TM started, so a vTM copied to another host and answering from there is not vouched for.

Findings added here (stable API, `Finding.to_json()` shape; all severity error):

| ID | Raised by | AR4SI claim contraindicated |
|---|---|---|
| `deep.binding.not_in_host_quote` | MerkleProofInvalid: the VM's leaf is not in the tree the host quoted | hardware |
| `deep.binding.other_host` | CertificateInvalid: the vEK was certified by another host's vTM-manager key | instance-identity |
| `deep.binding.not_launched` | VtmNotLaunched: the host's launch log has no launch of this vTM | hardware |
| `deep.binding.failed` | any other failure of the binding | hardware |
| `deep.host.unavailable` | the host did not answer the deep quote in time, or could not (verdict error) | none |
| `deep.evidence.lost` | the VM's evidence was not kept for its batch (verdict error) | none |
| `host.<id>` | each finding of the host's result in the same deep quote; `seen` names the host | the host's |

The VM's AR4SI vector is, claim by claim, the worst of its own, its host's and the binding's: the
host is part of the VM's trusted computing base, so what contraindicates the host contraindicates
the VM. The EAR says which host (`vroot.host`) and how the verdict was joined (`vroot.joint`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from vroot import errors as E
from vroot.attestation import (
    VerifiedHostEvidence,
    VerifiedVmBinding,
    inclusion_proof,
    joint_verdict,
    verify_vm_binding,
)
from vroot.attestation.ear import Tier
from vroot.pki import vek_identity
from vroot.server._judge import Judged
from vroot.server._verdict import finding_json
from vroot.store import AgentRecord, ResultRecord, Verdict
from vroot.tpm2 import parse_public

__all__ = ["VtmNotLaunched", "bind_vm", "host_finding", "joint", "unavailable"]

_BINDING: tuple[tuple[type[BaseException], str, str], ...] = (
    (E.MerkleProofInvalid, "deep.binding.not_in_host_quote", "hardware"),
    (E.CertificateInvalid, "deep.binding.other_host", "instance-identity"),
)


class VtmNotLaunched(E.VerificationError):
    """The host's verified vTM-launch log has no launch of this vTM (its VM UUID with its vEK) since
    the host TM started: the vTM is not running on that host. (A narrow subclass kept here.)"""


def bind_vm(*, agent: AgentRecord, nonce: bytes, quote_attest: bytes, leaf_index: int, leaves: Sequence[bytes],
            host: VerifiedHostEvidence) -> VerifiedVmBinding:  # fmt: skip
    """Bind a VM's verified quote to its host's verified deep quote (RA-4), refusing relays (RA-7):
    `verify_vm_binding` with the manager key named in the vEK certificate the PCA checked at the
    guest's enrollment, then the launch check. Raises MerkleProofInvalid, CertificateInvalid,
    VtmNotLaunched."""
    identity = vek_identity(agent.ek_certificate or b"")
    if identity is None:
        raise E.CertificateInvalid(f"agent {agent.id} has no vEK certificate on record")
    binding = verify_vm_binding(nonce=nonce, vtm_quote_attest=quote_attest, leaf_index=leaf_index,
                                leaf_count=len(leaves), proof=inclusion_proof(list(leaves), leaf_index), host=host,
                                vek_manager_name=identity.manager_name)  # fmt: skip
    vek_name = parse_public(agent.ek_public).name().hex()
    if not any(launch.vm_uuid == agent.vm_uuid and launch.vek_name == vek_name for launch in host.launches):
        raise VtmNotLaunched(f"host {host.host_id}'s launch log has no launch of the vTM of VM {agent.vm_uuid} "
                             f"(vEK {vek_name[:16]}…) since its TM started: the vTM does not run there")  # fmt: skip
    return binding


def host_finding(doc: Mapping[str, Any], host_id: str) -> dict[str, Any]:
    """A finding of the host's result as it appears in its VMs' results: `host.<id>`, naming the host."""
    message = f"host {host_id}: {doc.get('message', '')}"
    return finding_json("host." + str(doc.get("id", "unknown")), message=message, seen=host_id,
                        severity=str(doc.get("severity", "error")), pcr=doc.get("pcr"),
                        event_index=doc.get("event_index"), expected=doc.get("expected"))  # fmt: skip


def unavailable(host_id: str, why: str) -> Judged:
    """An "error" outcome for a VM whose host did not vouch for it at all."""
    return Judged(verdict=Verdict.ERROR, findings=(finding_json("deep.host.unavailable", seen=host_id,
                                                                message=f"host {host_id}: {why}"),))  # fmt: skip


def _worst(*vectors: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for vector in vectors:
        for claim, tier in vector.items():
            out[claim] = max(out.get(claim, Tier.NONE), tier)
    return out


def joint(vm: Judged, *, host: Judged, host_id: str, host_result: ResultRecord, binding: VerifiedVmBinding | None,
          binding_error: BaseException | None) -> Judged:  # fmt: skip
    """The VM's outcome joined with its host's (module docstring). `vm` is the VM's own outcome;
    `binding` exists only if `bind_vm` succeeded, `binding_error` says why it did not (None when it
    was not tried: the host's evidence did not verify)."""
    findings = list(vm.findings)
    vectors: list[Mapping[str, int]] = [vm.vector, host.vector]
    if binding_error is not None:
        finding_id, claim = next(((i, c) for cls, i, c in _BINDING if isinstance(binding_error, cls)),
                                 ("deep.binding.not_launched" if isinstance(binding_error, VtmNotLaunched)
                                  else "deep.binding.failed", "hardware"))  # fmt: skip
        message = binding_error.diagnostics() if isinstance(binding_error, E.VrootError) else str(binding_error)
        findings.append(finding_json(finding_id, message=message, seen=type(binding_error).__name__))
        vectors.append({claim: Tier.CONTRAINDICATED})
    findings += [host_finding(f, host_id) for f in host.findings if isinstance(f, Mapping)]
    host_trusted = host_result.verdict is Verdict.TRUSTED
    if binding is not None:
        verdict = joint_verdict(vm_trusted=vm.verdict is Verdict.TRUSTED, host_trusted=host_trusted, binding=binding)
        reasons, trusted = list(verdict.reasons), verdict.trusted
    else:
        reasons, trusted = [f"the VM is not bound to host {host_id}'s deep quote"], False
        if not host_trusted:
            reasons.append(f"its host {host_id} does not appraise as trusted")
    outcome = vm.verdict if vm.verdict is Verdict.ERROR else (Verdict.TRUSTED if trusted else Verdict.UNTRUSTED)
    extra = {**vm.extra,
             "host": {"agent_id": host_id, "result_id": host_result.id, "verdict": host_result.verdict.value,
                      "policy_id": host.policy_id},
             "joint": {"vm": vm.verdict.value, "host": host_result.verdict.value, "bound": binding is not None,
                       "reasons": reasons}}  # fmt: skip
    vector = {} if outcome is Verdict.ERROR else _worst(*vectors)
    return dataclasses.replace(vm, verdict=outcome, findings=tuple(findings), vector=vector, extra=extra)
