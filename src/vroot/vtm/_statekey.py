"""vTM state keys sealed to the host's trusted state (VMM-F3, VMM-S2, DP-3; DESIGN.md section 4).

Each vTM's swtpm encrypts its state with a random 256-bit key. That key is sealed in the host TM
under the SRK with the host's trusted-state policy (PolicyPCR over the trusted PCRs), so it is
released only by this host's TM, and only while the host's measured boot is the trusted one.
What is stored is the sealed object: TPM2B_PRIVATE (wrapped by the SRK) ‖ TPM2B_PUBLIC.
"""

from __future__ import annotations

import struct

from vroot.errors import HostStateChanged, InvalidInput, TmPolicyFailed
from vroot.host._config import SRK_HANDLE
from vroot.host._provision import TrustedState

__all__ = ["STATE_KEY_SIZE", "decode_sealed", "encode_sealed", "seal_state_key", "unseal_state_key"]

STATE_KEY_SIZE = 32
_MAX_TPM2B = 4096


def encode_sealed(private: bytes, public: bytes) -> bytes:
    return bytes(private) + bytes(public)


def decode_sealed(data: bytes):  # noqa: ANN201 - vroot.tm.KeyBlob
    """Split a stored sealed key into its TPM2B_PRIVATE and TPM2B_PUBLIC; `InvalidInput` if corrupt."""
    from vroot.tm import KeyBlob

    parts = []
    offset = 0
    for what in ("private", "public"):
        if len(data) < offset + 2:
            raise InvalidInput(f"sealed state key: truncated {what} part at offset {offset}")
        (size,) = struct.unpack_from(">H", data, offset)
        if size == 0 or size > _MAX_TPM2B or len(data) < offset + 2 + size:
            raise InvalidInput(f"sealed state key: bad {what} size {size} at offset {offset}")
        parts.append(data[offset : offset + 2 + size])
        offset += 2 + size
    if offset != len(data):
        raise InvalidInput(f"sealed state key: {len(data) - offset} trailing bytes")
    return KeyBlob(private=parts[0], public=parts[1])


def seal_state_key(host_tm, key: bytes, trusted: TrustedState) -> bytes:  # noqa: ANN001 - vroot.tm.TmClient
    """Seal `key` under the host SRK to the trusted-state policy; returns the bytes to store."""
    if len(key) != STATE_KEY_SIZE:
        raise InvalidInput(f"a vTM state key is {STATE_KEY_SIZE} bytes")
    with host_tm.persistent(SRK_HANDLE) as srk:
        blob = host_tm.seal(srk, key, policy_digest=trusted.policy_digest)
    return encode_sealed(blob.private, blob.public)


def unseal_state_key(host_tm, sealed: bytes, trusted: TrustedState, *, vm_uuid: str) -> bytes:  # noqa: ANN001
    """Unseal a vTM's state key in the host TM.

    Raises `HostStateChanged` naming the PCRs that differ when the host is not in its trusted
    state (the key stays sealed and the vTM must not start); `InvalidInput` for a corrupt blob.
    The TM checks the policy; the PCR comparison here only explains a refusal.
    """
    blob = decode_sealed(sealed)
    selection = {trusted.bank: sorted(trusted.pcrs)}
    try:
        with host_tm.persistent(SRK_HANDLE) as srk:
            key = host_tm.unseal(srk, blob, pcrs=selection)
    except TmPolicyFailed:
        current = host_tm.pcr_read(selection)[trusted.bank]
        differ = trusted.differing(current)
        if not differ:
            raise
        raise HostStateChanged(
            f"host PCRs {', '.join(map(str, differ))} ({trusted.bank.bank}) differ from the trusted state "
            f"the state key of vTM {vm_uuid} is sealed to: the vTM does not start",
            pcrs=differ,
        ) from None
    if len(key) != STATE_KEY_SIZE:
        raise InvalidInput(f"vTM {vm_uuid}: unsealed state key has {len(key)} bytes")
    return key
