"""The guest attester's own TM (RA-1, RA-3): what a VM does with its vTM to enroll and to attest.

    with TmClient.open("device:/dev/tpmrm0") as tm:              # inside a VM: its vTM
        ident = guest_identity(tm)                                # vEK certificate, vEK, vAK (made once)
        secret = guest_activate(tm, blob, encrypted_secret)       # TPM2_ActivateCredential(vAK, vEK)
        doc = guest_evidence(tm, nonce, {HashAlg.SHA256: range(11)}, boot_log=..., ima_log=...)

Where the vAK lives: in the vTM itself, persistent at `VAK_HANDLE` (0x81018000, the handle vroot
gives a host's AK, in the endorsement range). The guest owns it: it survives vTM restarts and
moves with the vTM's state when the vTM migrates, and nothing outside the vTM holds it or a blob
of it. The vEK is made again from the TCG EK template when it is needed (the same key every time:
it comes from the vTM's endorsement seed); its certificate is read from the TCG NV index where
the vTM manager wrote it. Nothing here checks anything: the server does, with what it enrolled.

`DeviceGuestTm` serves a VM's TPM device (`vroot guest run --tcti ...`); the host agent's local API
serves the same three operations for the vTMs it simulates guests of (`SimulatedGuestTm`).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vroot.errors import InvalidInput, NotFound
from vroot.host import AgentClient
from vroot.tpm2 import HashAlg

__all__ = [
    "DEFAULT_BOOT_LOG",
    "DEFAULT_IMA_LOG",
    "VAK_HANDLE",
    "DeviceGuestTm",
    "GuestIdentity",
    "GuestTm",
    "SimulatedGuestTm",
    "guest_activate",
    "guest_evidence",
    "guest_identity",
]

VAK_HANDLE = 0x81018000
DEFAULT_BOOT_LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
DEFAULT_IMA_LOG = Path("/sys/kernel/security/ima/binary_runtime_measurements")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(doc: Mapping[str, Any], key: str) -> bytes:
    value = doc.get(key)
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        raise InvalidInput(f"{key!r} must be base64") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestIdentity:
    """The vTM's keys as the guest reads them: vEK certificate (DER), vEK and vAK (TPM2B_PUBLIC)."""

    kind: str
    vek_certificate: bytes
    vek_public: bytes
    vak_public: bytes

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "vek_certificate": _b64(self.vek_certificate), "vek_public": _b64(self.vek_public),
                "vak_public": _b64(self.vak_public)}  # fmt: skip

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> GuestIdentity:
        return cls(kind=str(doc.get("kind")), vek_certificate=_unb64(doc, "vek_certificate"),
                   vek_public=_unb64(doc, "vek_public"), vak_public=_unb64(doc, "vak_public"))  # fmt: skip


def _vek_kind(tm: Any) -> str:
    for kind in ("ecc", "rsa"):
        if tm.ek_certificate(kind) is not None:
            return kind
    raise NotFound("this TM has no EK certificate in NV (not a vroot vTM?)")


def guest_identity(tm: Any, *, kind: str | None = None, new_vak: bool = False) -> GuestIdentity:
    """The vEK certificate and vEK of the vTM, and its vAK: the one at `VAK_HANDLE`, made (under the
    vEK, restricted signing) and persisted there if there is none, or if `new_vak` (a new key,
    which must then be enrolled again)."""
    kind = kind or _vek_kind(tm)
    certificate = tm.ek_certificate(kind)
    if certificate is None:
        raise NotFound(f"this TM has no {kind} EK certificate in NV")
    with tm.create_primary_ek(kind) as ek:
        vek_public = ek.public
        if VAK_HANDLE in tm.persistent_handles():
            if not new_vak:
                return GuestIdentity(kind=kind, vek_certificate=certificate, vek_public=vek_public,
                                     vak_public=tm.read_public(VAK_HANDLE)[0])  # fmt: skip
            tm.evict(VAK_HANDLE)
        with tm.load(ek, tm.create_ak(ek, kind)) as vak:
            tm.persist(vak, VAK_HANDLE).close()
            vak_public = vak.public
    return GuestIdentity(kind=kind, vek_certificate=certificate, vek_public=vek_public, vak_public=vak_public)


def guest_activate(tm: Any, credential_blob: bytes, encrypted_secret: bytes, *, kind: str | None = None) -> bytes:
    """TPM2_ActivateCredential with the vAK and the vEK: the secret, only if the challenge names this vAK."""
    with tm.create_primary_ek(kind or _vek_kind(tm)) as ek, tm.persistent(VAK_HANDLE) as vak:
        return tm.activate_credential(vak, ek, credential_blob, encrypted_secret)


def guest_evidence(tm: Any, nonce: bytes, selection: Mapping[HashAlg, Iterable[int]], *, boot_log: bytes,
                   ima_log: bytes) -> dict[str, Any]:  # fmt: skip
    """A quote of `selection` with the vAK over `nonce`, the vPCR values and the guest's logs, in the
    JSON form the server takes (`vroot.server._vmevidence`)."""
    selection = {alg: tuple(indices) for alg, indices in selection.items()}
    with tm.persistent(VAK_HANDLE) as vak:
        attest, signature = tm.quote(vak, selection, nonce)
    pcrs = tm.pcr_read(selection)
    return {"quote_attest": _b64(attest), "quote_signature": _b64(signature), "boot_log": _b64(boot_log),
            "ima_log": _b64(ima_log),
            "pcrs": {alg.bank: {str(i): v.hex() for i, v in sorted(values.items())} for alg, values in pcrs.items()}}  # fmt: skip


class GuestTm(Protocol):
    """What the guest attester needs of its vTM."""

    def identity(self, *, new_vak: bool = False) -> GuestIdentity: ...

    def activate(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes: ...

    def evidence(self, nonce: bytes, selection: Mapping[HashAlg, Iterable[int]]) -> dict[str, Any]: ...


class DeviceGuestTm:
    """A VM's own TPM device (`tcti`, e.g. device:/dev/tpmrm0) and the kernel's measurement logs.
    Each operation opens the TM and closes it again."""

    def __init__(self, tcti: str, *, boot_log: Path = DEFAULT_BOOT_LOG, ima_log: Path | None = DEFAULT_IMA_LOG) -> None:
        self.tcti = tcti
        self.boot_log = Path(boot_log)
        self.ima_log = None if ima_log is None else Path(ima_log)

    def _open(self) -> Any:
        from vroot.tm import TmClient

        return TmClient.open(self.tcti)

    def identity(self, *, new_vak: bool = False) -> GuestIdentity:
        with self._open() as tm:
            return guest_identity(tm, new_vak=new_vak)

    def activate(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        with self._open() as tm:
            return guest_activate(tm, credential_blob, encrypted_secret)

    def evidence(self, nonce: bytes, selection: Mapping[HashAlg, Iterable[int]]) -> dict[str, Any]:
        try:
            boot = self.boot_log.read_bytes()
            ima = b"" if self.ima_log is None or not self.ima_log.exists() else self.ima_log.read_bytes()
        except OSError as exc:
            raise NotFound(f"cannot read the guest's measurement logs: {exc}") from None
        with self._open() as tm:
            return guest_evidence(tm, nonce, selection, boot_log=boot, ima_log=ima)


class SimulatedGuestTm:
    """The vTM of VM `vm_uuid` on a running host agent, through its local API (`vroot host run`):
    the host agent plays the VM's guest for the vTMs it runs."""

    def __init__(self, agent: AgentClient, vm_uuid: str) -> None:
        self.agent = agent
        self.vm_uuid = vm_uuid

    def identity(self, *, new_vak: bool = False) -> GuestIdentity:
        doc = self.agent.call("POST", f"/v1/vtms/{self.vm_uuid}/attestation-key", {"new": new_vak})
        return GuestIdentity.from_json(doc)

    def activate(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        doc = self.agent.call("POST", f"/v1/vtms/{self.vm_uuid}/activate-credential",
                              {"credential_blob": _b64(credential_blob), "encrypted_secret": _b64(encrypted_secret)})  # fmt: skip
        return _unb64(doc, "secret")

    def evidence(self, nonce: bytes, selection: Mapping[HashAlg, Iterable[int]]) -> dict[str, Any]:
        ((alg, indices),) = selection.items()
        return self.agent.call("POST", f"/v1/vtms/{self.vm_uuid}/guest-quote",
                               {"nonce": nonce.hex(), "bank": alg.bank, "pcrs": list(indices)})  # fmt: skip
