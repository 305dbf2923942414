"""Policy digests computed in software (part 3, 23 "Enhanced Authorization"; TPM-NOTES sections 5-6).

Every function returns the new policyDigest from the previous one (`None` = the all-zero start of a
fresh session), exactly as a trial session on a TPM would:

    PolicyPCR:         H(prev ‖ TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION ‖ H(selected PCR values))
    PolicyCommandCode: H(prev ‖ TPM_CC_PolicyCommandCode ‖ code)
    PolicySecret:      H(H(prev ‖ TPM_CC_PolicySecret ‖ authObject name) ‖ policyRef)

Digests are over the policy session's hash (`alg`), which must be the object's nameAlg.
"""

from __future__ import annotations

from collections.abc import Mapping

from vroot.errors import InvalidInput
from vroot.tpm2._alg import HashAlg
from vroot.tpm2._constants import CommandCode
from vroot.tpm2._pcr_selection import PcrSelection
from vroot.tpm2._wire import u32


def _start(previous: bytes | None, alg: HashAlg) -> bytes:
    if previous is None:
        return bytes(alg.digest_size)
    if len(previous) != alg.digest_size:
        raise InvalidInput(f"policy digest of {len(previous)} bytes for {alg.bank}, want {alg.digest_size}")
    return bytes(previous)


def pcr_values_digest(
    values: Mapping[HashAlg, Mapping[int, bytes]], selection: PcrSelection, alg: HashAlg
) -> bytes:
    """H_alg of the selected PCR values concatenated, banks in order, indices ascending."""
    h = alg.new()
    for bank, index in selection:
        try:
            v = values[bank][index]
        except KeyError:
            raise InvalidInput(f"no value for {bank.bank} PCR {index}") from None
        if len(v) != bank.digest_size:
            raise InvalidInput(f"{bank.bank} PCR {index} is {len(v)} bytes, want {bank.digest_size}")
        h.update(v)
    return h.digest()


def policy_pcr(
    previous: bytes | None, selection: PcrSelection, pcr_values_digest: bytes, *, alg: HashAlg
) -> bytes:
    """TPM2_PolicyPCR (part 3, 23.7). `pcr_values_digest` comes from `pcr_values_digest()`."""
    if len(pcr_values_digest) != alg.digest_size:
        raise InvalidInput(f"PCR values digest must be {alg.digest_size} bytes for {alg.bank}")
    return alg.digest(
        _start(previous, alg) + u32(CommandCode.PolicyPCR) + selection.encode() + pcr_values_digest
    )


def policy_command_code(previous: bytes | None, cc: int, *, alg: HashAlg) -> bytes:
    """TPM2_PolicyCommandCode (part 3, 23.11), e.g. `cc=CommandCode.Duplicate`."""
    return alg.digest(_start(previous, alg) + u32(CommandCode.PolicyCommandCode) + u32(int(cc)))


def policy_secret(
    previous: bytes | None, entity_name: bytes, *, policy_ref: bytes = b"", alg: HashAlg
) -> bytes:
    """TPM2_PolicySecret (part 3, 23.4). `entity_name` is the authorizing object's name; for a
    hierarchy it is the 4-byte handle (the EK templates use the endorsement hierarchy, 0x4000000B)."""
    first = alg.digest(_start(previous, alg) + u32(CommandCode.PolicySecret) + bytes(entity_name))
    return alg.digest(first + bytes(policy_ref))
