"""The guest attester (RA-1, RA-3; DESIGN.md sections 1 and 5): a VM's agent `vm:<uuid>`.

    attester = GuestAttester(DeviceGuestTm("device:/dev/tpmrm0"), Path("/var/lib/vroot-guest"))
    attester.enroll("https://ra.example:8443", "ops-ca.pem")   # once (again after a new vAK)
    client, loop = attester.task_loop()                        # answers the server's `attest` tasks
    loop.run(stop_event)

Enrollment (the guest's side of `vroot.server._guests`):

    1. read the vTM's vEK certificate (TCG NV index), its vEK, and the vAK at its persistent handle
       (made under the vEK the first time: `vroot.agent._guest_tm`);
    2. POST /v1/guest-enrollments with them, the VM UUID and the host the certificate names (read
       from it unverified: the server checks the certificate against that host's record);
    3. TPM2_ActivateCredential(vAK, vEK) in the vTM (only that vTM, only for that vAK);
    4. POST /v1/guest-enrollments/vm:<uuid>/activation with the secret and a CSR for a fresh ECC
       P-256 TLS key; the credentials are kept in the attester's directory, as a host keeps its own.

An `attest` task carries the server's nonce and the vPCRs to quote; the answer is the vTM quote
with the vAK, the vPCR values and the guest's TCG and IMA logs ({"evidence": ...}). The attester
checks nothing: the server verifies with the vAK it enrolled, and binds the quote to the host's
deep quote.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from vroot.agent._client import ServerClient
from vroot.agent._enroll import AgentCredentials, csr_pem, read_credentials, write_credentials
from vroot.agent._guest_tm import GuestTm
from vroot.agent._loop import Task, TaskHandler, TaskLoop
from vroot.errors import InvalidInput
from vroot.pki import vek_identity
from vroot.tpm2 import HashAlg

__all__ = ["GuestAttester"]

_NONCE = re.compile(r"[0-9a-f]{2,128}")
DEFAULT_PCRS = tuple(range(11))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _selection(payload: Mapping[str, Any]) -> dict[HashAlg, tuple[int, ...]]:
    pcrs = payload.get("pcrs", list(DEFAULT_PCRS))
    if not isinstance(pcrs, list) or not 1 <= len(pcrs) <= 24 or not all(type(i) is int and 0 <= i <= 23 for i in pcrs):
        raise InvalidInput("an attest task's pcrs are a list of 1-24 PCR indices 0-23")
    return {HashAlg.from_bank(str(payload.get("bank", "sha256"))): tuple(sorted(set(pcrs)))}


class GuestAttester:
    """A VM's guest attester over its vTM (`tm`), keeping its credentials in `directory`."""

    def __init__(self, tm: GuestTm, directory: str | Path) -> None:
        self.tm = tm
        self.directory = Path(directory)

    def credentials(self) -> AgentCredentials:
        """The stored credentials; NotFound before the first enrollment."""
        return read_credentials(self.directory, hint="enroll the guest first")

    def enroll(self, server_url: str, ca_certificate: str | Path, *, new_vak: bool = False,
               timeout: float = 30.0) -> AgentCredentials:  # fmt: skip
        """Enroll this vTM with the server (module docstring). Raises the server's errors as
        `vroot.errors` (CertificateInvalid for a vEK certificate the host's record does not vouch
        for, Revoked for a revoked host or guest), TmError if the vTM will not open the credential."""
        ident = self.tm.identity(new_vak=new_vak)
        claimed = vek_identity(ident.vek_certificate)
        if claimed is None:
            raise InvalidInput("the vEK certificate names no host and VM (not a vroot vTM's)")
        with ServerClient(server_url, ca_certificate=ca_certificate, timeout=timeout) as client:
            challenge = client.post("/v1/guest-enrollments", {
                "vm_uuid": str(claimed.vm_uuid), "host_id": claimed.host_id,
                "vek_certificate": _b64(ident.vek_certificate), "vek_public": _b64(ident.vek_public),
                "vak_public": _b64(ident.vak_public),
            })  # fmt: skip
            agent_id = str(challenge["agent_id"])
            secret = self.tm.activate(base64.b64decode(challenge["credential_blob"]),
                                      base64.b64decode(challenge["encrypted_secret"]))  # fmt: skip
            key = ec.generate_private_key(ec.SECP256R1())
            enrolled = client.post(f"/v1/guest-enrollments/{agent_id}/activation", {
                "enrollment_id": challenge["enrollment_id"], "secret": _b64(secret),
                "client_key": csr_pem(key, agent_id),
            })  # fmt: skip
            del secret
        return write_credentials(self.directory, agent_id=agent_id, server_url=client.url, key=key, enrolled=enrolled)

    def handler(self) -> TaskHandler:
        """The `attest` task handler: a vTM quote over the task's nonce, with the guest's logs."""

        def handle(task: Task) -> dict[str, Any]:
            payload = task.payload if isinstance(task.payload, Mapping) else {}
            nonce = payload.get("nonce")
            if not isinstance(nonce, str) or _NONCE.fullmatch(nonce) is None:
                raise InvalidInput("an attest task carries its nonce as 2-128 lower-case hex digits")
            return {"evidence": self.tm.evidence(bytes.fromhex(nonce), _selection(payload))}

        return handle

    def task_loop(self, *, server_url: str | None = None, ca_certificate: str | Path | None = None,
                  wait: float = 25.0) -> tuple[ServerClient, TaskLoop]:  # fmt: skip
        """A client with the guest's enrolled identity and a loop answering its `attest` tasks."""
        creds = self.credentials()
        client = ServerClient(server_url or creds.server_url, ca_certificate=ca_certificate or creds.ca_certificate,
                              client_cert=creds.client_certificate, client_key=creds.client_key)  # fmt: skip
        return client, TaskLoop(client, creds.agent_id, {"attest": self.handler()}, wait=wait)
