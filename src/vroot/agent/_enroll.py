"""Host enrollment, the agent's side (RA-1): `enroll_host(host_dir, server_url, ca_certificate)`.

    1. read the host's public keys (`vroot.host.load_host_keys`): EK certificate, EK, AK, the
       vTM-manager key and the AK's certification of it;
    2. POST /v1/enrollments: the server checks the EK certificate and challenges the AK;
    3. TPM2_ActivateCredential(AK, EK) in the host TM, which opens the credential only for the AK
       the challenge names (so a swapped AK gets a TM error, never a secret);
    4. POST /v1/enrollments/{agent}/activation with the secret, a CSR for a fresh ECC P-256 TLS
       key, and the vTM-manager key material; the server returns the certificates.

Enrollment happens before `vroot host run`: the host agent holds the only connection to the host
TM (swtpm serves one client), so `enroll_host` takes the host directory's agent lock for its
whole run (Conflict while an agent runs) and opens the TM itself. A simulated host's TM that was
not running is started for the activation and stopped again after it.

Files written under HOST_DIR/server/ (0700): client-key.pem (0600), client-cert.pem, ca.pem (the
operations CA, which verifies the server), ak-cert.pem, pca.pem, enrollment.json (agent id and
server URL). The key is replaced only when a new certificate arrives with it. The secret is
never written or logged.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vroot._fs import atomic_write, make_private_dir
from vroot.agent._client import ServerClient
from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.host import HostPaths, load_config, load_host_keys

__all__ = ["SERVER_DIR", "AgentCredentials", "csr_pem", "enroll_host", "load_credentials", "read_credentials",
           "write_credentials"]

SERVER_DIR = "server"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentCredentials:
    """Where an enrolled agent's TLS identity lives, and whom it talks to."""

    agent_id: str
    server_url: str
    directory: Path

    ca_certificate = property(lambda self: self.directory / "ca.pem")
    client_certificate = property(lambda self: self.directory / "client-cert.pem")
    client_key = property(lambda self: self.directory / "client-key.pem")
    ak_certificate = property(lambda self: self.directory / "ak-cert.pem")

    def client(self, *, timeout: float = 30.0) -> ServerClient:
        """A client presenting this agent's certificate."""
        return ServerClient(self.server_url, ca_certificate=self.ca_certificate,
                            client_cert=self.client_certificate, client_key=self.client_key, timeout=timeout)  # fmt: skip


def load_credentials(host_dir: str | Path) -> AgentCredentials:
    """The credentials `enroll_host` stored; NotFound if the host never enrolled."""
    return read_credentials(HostPaths(Path(host_dir)).root / SERVER_DIR, hint="run `vroot host enroll`")


def read_credentials(directory: Path, *, hint: str = "enroll first") -> AgentCredentials:
    """The credentials `write_credentials` stored in `directory`; NotFound if there are none."""
    try:
        doc = json.loads((directory / "enrollment.json").read_text())
        return AgentCredentials(agent_id=str(doc["agent_id"]), server_url=str(doc["server_url"]), directory=directory)
    except FileNotFoundError:
        raise NotFound(f"no enrollment in {directory} ({hint})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{directory / 'enrollment.json'}: {exc}") from None


def write_credentials(directory: Path, *, agent_id: str, server_url: str, key: ec.EllipticCurvePrivateKey,
                      enrolled: dict) -> AgentCredentials:  # fmt: skip
    """Keep what an enrollment returned (the agent's TLS key 0600, its certificates, the CAs)."""
    make_private_dir(directory)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    atomic_write(directory / "client-key.pem", key_pem, mode=0o600)
    for name, field in (("client-cert.pem", "client_certificate"), ("ca.pem", "ca_certificate"),
                        ("ak-cert.pem", "ak_certificate"), ("pca.pem", "pca_certificate")):  # fmt: skip
        atomic_write(directory / name, str(enrolled[field]).encode("ascii"), mode=0o644)
    doc = {"agent_id": agent_id, "server_url": server_url}
    atomic_write(directory / "enrollment.json", json.dumps(doc, indent=2).encode(), mode=0o644)
    return AgentCredentials(agent_id=agent_id, server_url=server_url, directory=directory)


def csr_pem(key: ec.EllipticCurvePrivateKey, agent_id: str) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent_id)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _activate(paths: HostPaths, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
    """TPM2_ActivateCredential with the host's AK and EK at vroot's persistent handles."""
    from vroot.host._config import AK_HANDLE, EK_HANDLE
    from vroot.host._hosttm import HostTm

    config = load_config(paths)
    was_running = paths.tm_pid.exists()
    host = HostTm.open(config, paths, detached=False)
    try:
        tm = host.client
        with tm.persistent(AK_HANDLE) as ak, tm.persistent(EK_HANDLE) as ek:
            return tm.activate_credential(ak, ek, credential_blob, encrypted_secret)
    finally:
        host.close(stop_tm=config.mode == "simulate" and not was_running)


def enroll_host(
    host_dir: str | Path, server_url: str, ca_certificate: str | Path, *, timeout: float = 30.0
) -> AgentCredentials:
    """Enroll the host at `host_dir` with the server at `server_url` (verified against the PEM
    `ca_certificate`, the server's operations CA). Raises the server's errors as `vroot.errors`
    (e.g. CertificateInvalid for an EK certificate of an unknown manufacturer), Conflict while a
    host agent runs, TmError if the TM will not open the credential."""
    paths = HostPaths(Path(host_dir))
    config = load_config(paths)
    keys = load_host_keys(paths)
    lock_fd = os.open(paths.agent_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(
                f"a host agent runs on {paths.root}: enroll before `vroot host run` (stop the agent first)"
            ) from None
        with ServerClient(server_url, ca_certificate=ca_certificate, timeout=timeout) as client:
            challenge = client.post("/v1/enrollments", {
                "host_id": config.host_id, "ek_certificate": _b64(keys.ek_certificate),
                "ek_public": _b64(keys.ek_public), "ak_public": _b64(keys.ak_public),
            })  # fmt: skip
            agent_id = str(challenge["agent_id"])
            secret = _activate(paths, base64.b64decode(challenge["credential_blob"]),
                               base64.b64decode(challenge["encrypted_secret"]))  # fmt: skip
            key = ec.generate_private_key(ec.SECP256R1())
            enrolled = client.post(f"/v1/enrollments/{agent_id}/activation", {
                "enrollment_id": challenge["enrollment_id"], "secret": _b64(secret),
                "client_key": csr_pem(key, agent_id), "vtm_manager_public": _b64(keys.manager_public),
                "vtm_manager_certify_info": _b64(keys.manager_certify_attest),
                "vtm_manager_certify_signature": _b64(keys.manager_certify_signature),
            })  # fmt: skip
            del secret
        return write_credentials(paths.root / SERVER_DIR, agent_id=agent_id, server_url=client.url, key=key,
                                 enrolled=enrolled)  # fmt: skip
    finally:
        os.close(lock_fd)
