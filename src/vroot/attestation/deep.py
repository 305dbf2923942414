"""Deep attestation (RA-3, RA-4, RA-7; DESIGN.md section 5): bind a VM's vTM quote to its host's
quote, and join the two verdicts.

One host deep quote serves a batch of waiting VMs: its qualifying data is the Merkle root over
`deep_quote_leaf(n_i, vTM quote_i)` for every VM i of the batch. `verify_vm_binding` proves that
a VM's quote (made over the server's nonce for that VM) is in the tree the host's TM signed, and
that the vTM's vEK was certified by the vTM-manager key that host's AK certified in the same deep
quote; `joint_verdict` is trusted only if all of that holds and both appraisals are trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vroot.attestation.host import VerifiedHostEvidence
from vroot.attestation.merkle import deep_quote_leaf, verify_inclusion
from vroot.errors import CertificateInvalid, NonceMismatch

__all__ = ["JointVerdict", "VerifiedVmBinding", "joint_verdict", "verify_vm_binding"]


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedVmBinding:
    """Proves: the host TM signed (in `host`'s deep quote) a tree that contains this VM's vTM quote
    over `nonce`, and the vTM's vEK was certified by that host's current vTM-manager key.
    Does not prove: that the vTM quote itself verifies (check it with the vAK, `verify_quote`),
    nor that either party is in a good state (appraise both)."""

    host_id: str
    nonce: bytes
    leaf_index: int


def verify_vm_binding(
    *,
    nonce: bytes,
    vtm_quote_attest: bytes,
    leaf_index: int,
    leaf_count: int,
    proof: Sequence[bytes],
    host: VerifiedHostEvidence,
    vek_manager_name: bytes,
) -> VerifiedVmBinding:
    """Bind one VM's evidence to its host's deep quote (RA-4), refusing relays (RA-7).

    `nonce` is the nonce the server issued to this VM (checked single-use by the caller);
    `vek_manager_name` is the TPM name of the key that signed the VM's vEK certificate (from
    `vroot.pki.verify_vek_certificate`). A quote relayed from a VM on another host has its leaf
    in another tree (`MerkleProofInvalid`); a vTM whose vEK another host's manager key certified
    fails the manager check (`CertificateInvalid`).
    """
    if not nonce:
        raise NonceMismatch("a VM's deep-attestation nonce may not be empty")
    leaf = deep_quote_leaf(nonce, vtm_quote_attest)
    verify_inclusion(leaf, index=leaf_index, count=leaf_count, proof=tuple(proof), root=host.quote.nonce)
    if vek_manager_name != host.manager.name():
        raise CertificateInvalid(
            f"the vTM's vEK was certified by vTM-manager key {vek_manager_name.hex()[:16]}…, not by host "
            f"{host.host_id}'s ({host.manager.name().hex()[:16]}…): the vTM is not on this host"
        )
    return VerifiedVmBinding(host_id=host.host_id, nonce=nonce, leaf_index=leaf_index)


@dataclass(frozen=True, slots=True, kw_only=True)
class JointVerdict:
    """The one verdict relying parties and the migration controller read (RA-4)."""

    trusted: bool
    vm_trusted: bool
    host_trusted: bool
    host_id: str
    reasons: tuple[str, ...]


def joint_verdict(*, vm_trusted: bool, host_trusted: bool, binding: VerifiedVmBinding) -> JointVerdict:
    """Trusted only if the VM appraises as trusted, its host does too, and they are bound.

    `binding` can only exist if `verify_vm_binding` succeeded: a VM whose binding failed has no
    joint verdict other than untrusted, which the caller records with the error.
    """
    reasons = []
    if not vm_trusted:
        reasons.append("the VM's own evidence does not appraise as trusted")
    if not host_trusted:
        reasons.append(f"its host {binding.host_id} does not appraise as trusted")
    return JointVerdict(
        trusted=not reasons,
        vm_trusted=vm_trusted,
        host_trusted=host_trusted,
        host_id=binding.host_id,
        reasons=tuple(reasons),
    )
