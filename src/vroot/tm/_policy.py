"""Policy steps the TM client replays in a policy session, and their digests computed in software.

The formulas (part 3, 23.x) and the TPML_PCR_SELECTION codec live in the pure `vroot.tpm2`
(`policy_pcr`, `pcr_values_digest`, `policy_command_code`, `policy_secret`, `PcrSelection`). This
module only holds what is particular to the TM client:

- `normalize_selection`: the `{HashAlg: indices}` mappings the client takes, as a `PcrSelection`
  with banks sorted by algorithm id, indices sorted and unique, empty banks dropped, PCRs 0-23;
- the steps `PolicyPcr` and `PolicyCommandCode` that `TmClient` sends in a session, and
  `policy_digest(steps, values)`, the digest a trial session of the same steps gives (SHA-256 here);
- `EK_POLICY_SHA256`, the authPolicy by which the client recognises a TCG template EK.

Pure Python, no tpm2-pytss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vroot.errors import InvalidInput
from vroot.tpm2 import (
    CommandCode,
    Handle,
    HashAlg,
    PcrSelection,
    pcr_values_digest,
    policy_command_code,
    policy_pcr,
    policy_secret,
)

PCR_COUNT = 24

SelectionLike = PcrSelection | Mapping[HashAlg, Iterable[int]]
PcrValues = Mapping[HashAlg, Mapping[int, bytes]]


def normalize_selection(selection: SelectionLike) -> PcrSelection:
    """Banks sorted by algorithm id, indices sorted and unique, empty banks dropped; PCRs 0-23 only."""
    mapping = selection.to_mapping() if isinstance(selection, PcrSelection) else selection
    banks = []
    for key, indices in mapping.items():
        alg = HashAlg.from_id(int(key))
        idx = tuple(sorted({int(i) for i in indices}))
        for i in idx:
            if not 0 <= i < PCR_COUNT:
                raise InvalidInput(f"PCR index {i} out of range 0..{PCR_COUNT - 1} ({alg.bank})")
        if idx:
            banks.append((alg, idx))
    return PcrSelection(tuple(sorted(banks)))


@dataclass(frozen=True)
class PolicyPcr:
    """Policy step TPM2_PolicyPCR over `selection` (the TPM checks the current values)."""

    selection: PcrSelection

    @classmethod
    def of(cls, selection: SelectionLike) -> PolicyPcr:
        return cls(normalize_selection(selection))


@dataclass(frozen=True)
class PolicyCommandCode:
    """Policy step TPM2_PolicyCommandCode(code): the session may only authorise that command."""

    code: int


PolicyStep = PolicyPcr | PolicyCommandCode
DUPLICATE_POLICY: Sequence[PolicyStep] = (PolicyCommandCode(CommandCode.Duplicate),)


def policy_digest(
    steps: Sequence[PolicyStep], values: PcrValues | None = None, *, hash_alg: HashAlg = HashAlg.SHA256
) -> bytes:
    """The digest of a sequence of steps from a fresh session; PolicyPcr steps take their PCR values
    from `values`. Proves nothing about the TPM: it is what a session replaying `steps` would reach."""
    digest = bytes(hash_alg.digest_size)
    for step in steps:
        if isinstance(step, PolicyPcr):
            if values is None:
                raise InvalidInput("PolicyPcr needs PCR values to compute a digest")
            pcrs = pcr_values_digest(values, step.selection, hash_alg)
            digest = policy_pcr(digest, step.selection, pcrs, alg=hash_alg)
        elif isinstance(step, PolicyCommandCode):
            digest = policy_command_code(digest, step.code, alg=hash_alg)
        else:
            raise InvalidInput(f"unknown policy step {step!r}")
    return digest


# PolicySecret(TPM_RH_ENDORSEMENT), empty policyRef: the authPolicy of the TCG low-range EK templates
# (837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa).
EK_POLICY_SHA256 = policy_secret(None, Handle.ENDORSEMENT.to_bytes(4, "big"), alg=HashAlg.SHA256)
