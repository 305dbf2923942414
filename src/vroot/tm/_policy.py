"""Policy steps and their digests, computed in software (TPM 2.0 Library part 3, 23.x).

Private to `vroot.tm` for now: `vroot.tpm2` gets the public, pure version of the same functions
and the two will be reconciled. Pure Python, no tpm2-pytss.

    PolicyPCR:          digest' = H(digest || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || H(values))
    PolicyCommandCode:  digest' = H(digest || TPM_CC_PolicyCommandCode || code)

H is the policy session's hash (SHA-256 here); H(values) hashes the selected PCR values
concatenated, banks in selection order, indices ascending. The starting digest is all zeros.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vroot.errors import InvalidInput
from vroot.tpm2 import HashAlg

TPM_CC_DUPLICATE = 0x14B
TPM_CC_POLICY_PCR = 0x17F
TPM_CC_POLICY_COMMAND_CODE = 0x16C
TPM_CC_POLICY_SECRET = 0x151
TPM_RH_ENDORSEMENT = 0x4000000B
PCR_COUNT = 24

PcrSelection = Mapping[HashAlg, Iterable[int]]
NormalSelection = tuple[tuple[HashAlg, tuple[int, ...]], ...]


def normalize_selection(selection: PcrSelection) -> NormalSelection:
    """Banks sorted by algorithm id, indices sorted and unique; empty banks dropped."""
    out = []
    for alg, indices in selection.items():
        alg = HashAlg(alg)
        idx = tuple(sorted({int(i) for i in indices}))
        for i in idx:
            if not 0 <= i < PCR_COUNT:
                raise InvalidInput(f"PCR index {i} out of range 0..{PCR_COUNT - 1} ({alg.bank})")
        if idx:
            out.append((alg, idx))
    return tuple(sorted(out))


def marshal_pcr_selection(selection: PcrSelection) -> bytes:
    """TPML_PCR_SELECTION: count u32; per bank hash u16, sizeofSelect u8 (3), bitmap (PCR i: byte i//8, bit i%8)."""
    norm = normalize_selection(selection)
    out = bytearray(struct.pack(">I", len(norm)))
    for alg, idx in norm:
        bitmap = bytearray(3)
        for i in idx:
            bitmap[i // 8] |= 1 << (i % 8)
        out += struct.pack(">HB", alg, 3) + bitmap
    return bytes(out)


def unmarshal_pcr_selection(data: bytes) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """(alg id, indices) per bank, in wire order; trailing or truncated bytes are an error."""
    try:
        (count,) = struct.unpack_from(">I", data, 0)
        if count > 16:
            raise InvalidInput(f"TPML_PCR_SELECTION count {count} > 16")
        o = 4
        out = []
        for _ in range(count):
            alg, size = struct.unpack_from(">HB", data, o)
            o += 3
            bitmap = data[o : o + size]
            if len(bitmap) != size:
                raise InvalidInput("TPML_PCR_SELECTION truncated")
            o += size
            out.append((alg, tuple(i for i in range(8 * size) if bitmap[i // 8] >> (i % 8) & 1)))
    except struct.error as exc:
        raise InvalidInput("TPML_PCR_SELECTION truncated") from exc
    if o != len(data):
        raise InvalidInput(f"TPML_PCR_SELECTION has {len(data) - o} trailing bytes")
    return tuple(out)


def _start(previous: bytes | None, hash_alg: HashAlg) -> bytes:
    if previous is None:
        return bytes(hash_alg.digest_size)
    if len(previous) != hash_alg.digest_size:
        raise InvalidInput(
            f"policy digest is {len(previous)} bytes, {hash_alg.bank} needs {hash_alg.digest_size}"
        )
    return previous


def policy_pcr_digest(
    selection: PcrSelection,
    values: Mapping[HashAlg, Mapping[int, bytes]],
    *,
    previous: bytes | None = None,
    hash_alg: HashAlg = HashAlg.SHA256,
) -> bytes:
    """The policy digest after TPM2_PolicyPCR(selection) when the PCRs hold `values`."""
    norm = normalize_selection(selection)
    h = hash_alg.new()
    for alg, idx in norm:
        bank = values.get(alg, {})
        for i in idx:
            v = bank.get(i)
            if v is None:
                raise InvalidInput(f"no value for PCR {alg.bank}:{i}")
            if len(v) != alg.digest_size:
                raise InvalidInput(f"PCR {alg.bank}:{i} value is {len(v)} bytes, want {alg.digest_size}")
            h.update(v)
    return hash_alg.digest(
        _start(previous, hash_alg)
        + struct.pack(">I", TPM_CC_POLICY_PCR)
        + marshal_pcr_selection(dict(norm))
        + h.digest()
    )


def policy_command_code_digest(
    code: int, *, previous: bytes | None = None, hash_alg: HashAlg = HashAlg.SHA256
) -> bytes:
    """The policy digest after TPM2_PolicyCommandCode(code)."""
    return hash_alg.digest(_start(previous, hash_alg) + struct.pack(">II", TPM_CC_POLICY_COMMAND_CODE, code))


@dataclass(frozen=True)
class PolicyPcr:
    """Policy step TPM2_PolicyPCR over `selection` (the TPM checks the current values)."""

    selection: NormalSelection

    @classmethod
    def of(cls, selection: PcrSelection) -> PolicyPcr:
        return cls(normalize_selection(selection))


@dataclass(frozen=True)
class PolicyCommandCode:
    """Policy step TPM2_PolicyCommandCode(code): the session may only authorise that command."""

    code: int


PolicyStep = PolicyPcr | PolicyCommandCode
DUPLICATE_POLICY: Sequence[PolicyStep] = (PolicyCommandCode(TPM_CC_DUPLICATE),)


def policy_digest(
    steps: Sequence[PolicyStep],
    values: Mapping[HashAlg, Mapping[int, bytes]] | None = None,
    *,
    hash_alg: HashAlg = HashAlg.SHA256,
) -> bytes:
    """The digest of a sequence of steps; PolicyPcr steps take their PCR values from `values`."""
    digest = bytes(hash_alg.digest_size)
    for step in steps:
        if isinstance(step, PolicyPcr):
            if values is None:
                raise InvalidInput("PolicyPcr needs PCR values to compute a digest")
            digest = policy_pcr_digest(dict(step.selection), values, previous=digest, hash_alg=hash_alg)
        else:
            digest = policy_command_code_digest(step.code, previous=digest, hash_alg=hash_alg)
    return digest


def policy_secret_digest(
    auth_handle: int,
    *,
    policy_ref: bytes = b"",
    previous: bytes | None = None,
    hash_alg: HashAlg = HashAlg.SHA256,
) -> bytes:
    """The policy digest after TPM2_PolicySecret on a permanent handle (whose name is the handle)."""
    d = hash_alg.digest(_start(previous, hash_alg) + struct.pack(">II", TPM_CC_POLICY_SECRET, auth_handle))
    return hash_alg.digest(d + policy_ref)


# PolicySecret(TPM_RH_ENDORSEMENT), empty policyRef: the authPolicy of the TCG low-range EK templates
# (837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa).
EK_POLICY_SHA256 = policy_secret_digest(TPM_RH_ENDORSEMENT)
