"""The vroot vTM identity extension of vEK certificates (OID `VROOT_VTM_IDENTITY`, non-critical):

    VrootVtmIdentity ::= SEQUENCE {
        hostId          UTF8String (SIZE (1..64)),    -- the host whose vTM manager made the vTM
        vmUuid          OCTET STRING (SIZE (16)),     -- the VM the vTM is bound to for life (VMM-F2)
        managerKeyName  OCTET STRING (SIZE (22..66))  -- TPM name of the vTM-manager key: nameAlg ‖ digest
    }

Strict DER both ways: `decode_vtm_identity(encode_vtm_identity(x)) == x`, and any other bytes raise
`InvalidInput`. The decoder is bounded (`MAX_EXTENSION_BYTES`, three elements, no recursion).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from vroot.errors import InvalidInput
from vroot.pki import _der
from vroot.tpm2 import HashAlg

MAX_HOST_ID = 64
MAX_EXTENSION_BYTES = 256
# Host ids also go into the issuer name as a PrintableString (serialNumber), so they keep to that
# alphabet, without spaces: letters, digits and ' ( ) + , - . / : = ?
_HOST_ID = re.compile(r"[A-Za-z0-9'()+,\-./:=?]{1,64}")


def check_host_id(host_id: str) -> str:
    if not isinstance(host_id, str) or _HOST_ID.fullmatch(host_id) is None:
        raise InvalidInput(
            f"host id must be 1..{MAX_HOST_ID} of the characters A-Z a-z 0-9 ' ( ) + , - . / : = ?, got {host_id!r}"
        )
    return host_id


def check_tpm_name(name: bytes) -> bytes:
    """A TPM object name: nameAlg (u16) ‖ digest of that algorithm's size."""
    if not isinstance(name, bytes | bytearray) or len(name) < 2:
        raise InvalidInput("a TPM name is nameAlg (2 bytes) followed by a digest")
    try:
        alg = HashAlg(int.from_bytes(name[:2], "big"))
    except ValueError:
        raise InvalidInput(f"TPM name: unknown nameAlg 0x{bytes(name[:2]).hex()}") from None
    if len(name) != 2 + alg.digest_size:
        raise InvalidInput(f"TPM name: {len(name) - 2} digest bytes, {alg.bank} has {alg.digest_size}")
    return bytes(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class VekIdentity:
    """What a vEK certificate's vroot extension says: host, VM and vTM-manager key name.

    As read from a certificate by `vek_identity`, it is unverified: trust it only from
    `verify_vek_certificate`'s result.
    """

    host_id: str
    vm_uuid: uuid.UUID
    manager_name: bytes

    def __post_init__(self) -> None:
        check_host_id(self.host_id)
        if not isinstance(self.vm_uuid, uuid.UUID):
            raise InvalidInput(f"vm_uuid must be a uuid.UUID, got {type(self.vm_uuid).__name__}")
        check_tpm_name(self.manager_name)


def encode_vtm_identity(identity: VekIdentity) -> bytes:
    """The DER extension value for `identity`."""
    return _der.sequence(
        _der.utf8_string(identity.host_id),
        _der.octet_string(identity.vm_uuid.bytes),
        _der.octet_string(identity.manager_name),
    )


def decode_vtm_identity(data: bytes) -> VekIdentity:
    """Parse the DER extension value; `InvalidInput` for anything that is not exactly one."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput(f"vTM identity: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_EXTENSION_BYTES:
        raise InvalidInput(f"vTM identity: {len(data)} bytes, more than {MAX_EXTENSION_BYTES}")
    start, end = _der.read_single(data, _der.SEQUENCE, "vTM identity")
    items = _der.elements(data, start, end, limit=3)
    tags = tuple(tag for tag, _ in items)
    want = (_der.UTF8_STRING, _der.OCTET_STRING, _der.OCTET_STRING)
    if tags != want:
        got = ", ".join(f"0x{t:02x}" for t in tags)
        raise InvalidInput(f"vTM identity: elements ({got}), want UTF8String, OCTET STRING, OCTET STRING")
    host, vm, name = (content for _, content in items)
    try:
        host_id = host.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("vTM identity: hostId is not UTF-8") from None
    if len(vm) != 16:
        raise InvalidInput(f"vTM identity: vmUuid is {len(vm)} bytes, want 16")
    return VekIdentity(host_id=host_id, vm_uuid=uuid.UUID(bytes=vm), manager_name=name)
