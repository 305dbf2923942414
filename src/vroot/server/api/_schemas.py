"""The HTTP API's JSON shapes (pydantic, `extra="forbid"`): the only place base64 and PEM text meet
the domain. Each request model has `to_domain()` returning the frozen value the services take;
each response model has `of(...)` building it from one.

Binary values are standard base64 (RFC 4648 section 4, with padding); certificates are PEM text.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel, ConfigDict, Field

from vroot.errors import InvalidInput
from vroot.server._enroll import EnrolledAgent, HostActivation, HostChallenge, HostClaim
from vroot.server._guests import GuestActivation, GuestClaim
from vroot.store import AgentRecord, TaskRecord

__all__ = [
    "AGENT_ID_PATTERN",
    "ActivationIn",
    "AgentList",
    "AgentOut",
    "ChallengeOut",
    "EnrolledOut",
    "EnrollmentIn",
    "GuestActivationIn",
    "GuestEnrollmentIn",
    "Health",
    "NextTask",
    "Problem",
    "ResultIn",
    "RevokeIn",
    "Status",
    "TaskIn",
    "TaskOut",
]

AGENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"
_B64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
REVOCATION_REASONS = (
    "unspecified", "key_compromise", "ca_compromise", "affiliation_changed", "superseded",
    "cessation_of_operation", "certificate_hold", "privilege_withdrawn", "aa_compromise",
)  # fmt: skip


def B64(max_bytes: int, description: str) -> Any:  # noqa: N802 - a type factory
    return Annotated[
        str,
        Field(
            pattern=_B64_PATTERN,
            max_length=4 * ((max_bytes + 2) // 3),
            description=f"{description} (base64)",
            json_schema_extra={"contentEncoding": "base64"},
        ),
    ]


def _bytes(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{name} is not base64") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode("ascii")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Problem(BaseModel):
    """RFC 9457 problem details, as every error is returned."""

    type: str
    title: str
    status: int
    detail: str
    error: str = Field(description="the vroot error class")
    category: str = Field(description="its family in vroot.errors")
    errors: list[dict[str, Any]] | None = None


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Status(BaseModel):
    version: str
    database: str
    schema_current: bool
    agents: dict[str, dict[str, int]] = Field(description="agents by kind, then state")
    verdicts: dict[str, int] = Field(description="agents by the verdict of their latest result")


class EnrollmentIn(_In):
    """A host's claim (RA-1): who it says it is and which TM keys it holds."""

    host_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,58}$", description="the host id (host.toml)")
    ek_certificate: B64(16384, "EK certificate, DER")
    ek_public: B64(1024, "EK public area, TPM2B_PUBLIC")
    ak_public: B64(1024, "AK public area, TPM2B_PUBLIC")

    def to_domain(self) -> HostClaim:
        return HostClaim(
            host_id=self.host_id,
            ek_certificate=_bytes(self.ek_certificate, "ek_certificate"),
            ek_public=_bytes(self.ek_public, "ek_public"),
            ak_public=_bytes(self.ak_public, "ak_public"),
        )


class ChallengeOut(BaseModel):
    """The credential to open with TPM2_ActivateCredential(AK, EK, credential_blob, encrypted_secret)."""

    agent_id: str
    enrollment_id: str
    credential_blob: str = Field(description="TPM2B_ID_OBJECT (base64)")
    encrypted_secret: str = Field(description="TPM2B_ENCRYPTED_SECRET (base64)")
    expires_at: datetime

    @classmethod
    def of(cls, c: HostChallenge) -> ChallengeOut:
        return cls(agent_id=c.agent_id, enrollment_id=c.enrollment_id, credential_blob=_b64(c.credential_blob),
                   encrypted_secret=_b64(c.encrypted_secret), expires_at=c.expires_at)  # fmt: skip


def _client_key(text: str) -> Any:
    data = text.encode("ascii", "replace")
    if b"-----BEGIN CERTIFICATE REQUEST-----" in data:
        try:
            csr = x509.load_pem_x509_csr(data)
            valid = csr.is_signature_valid
            key = csr.public_key()
        except (ValueError, TypeError):
            raise InvalidInput("client_key: not a PEM certificate request") from None
        if not valid:
            raise InvalidInput("client_key: the certificate request's signature does not verify")
        return key
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise InvalidInput("client_key: neither a PEM certificate request nor a PEM public key") from None
    except Exception:  # an unsupported algorithm  # noqa: BLE001
        raise InvalidInput("client_key: unsupported key type") from None


class ActivationIn(_In):
    """The host's answer: the secret its TM released, the key for its TLS client certificate, and its
    vTM-manager key with the AK's TPM2_Certify of it."""

    enrollment_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    secret: B64(64, "the secret TPM2_ActivateCredential returned")
    client_key: str = Field(max_length=8192, description="PEM certificate request (preferred) or public key")
    vtm_manager_public: B64(1024, "vTM-manager key, TPM2B_PUBLIC")
    vtm_manager_certify_info: B64(2048, "TPMS_ATTEST of the AK's TPM2_Certify of it")
    vtm_manager_certify_signature: B64(1024, "its TPMT_SIGNATURE")

    def __repr__(self) -> str:  # never show the secret
        return f"ActivationIn(enrollment_id={self.enrollment_id!r})"

    __str__ = __repr__

    def to_domain(self, agent_id: str) -> HostActivation:
        return HostActivation(
            agent_id=agent_id,
            enrollment_id=self.enrollment_id,
            secret=_bytes(self.secret, "secret"),
            client_public_key=_client_key(self.client_key),
            manager_public=_bytes(self.vtm_manager_public, "vtm_manager_public"),
            manager_certify_attest=_bytes(self.vtm_manager_certify_info, "vtm_manager_certify_info"),
            manager_certify_signature=_bytes(self.vtm_manager_certify_signature, "vtm_manager_certify_signature"),
        )


class GuestEnrollmentIn(_In):
    """A guest's claim (RA-1, VMM-F4): its VM, the host it runs on, and its vTM's keys."""

    vm_uuid: str = Field(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
                         description="the VM's UUID (its agent is vm:<uuid>)")
    host_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,58}$",
                         description="the enrolled host whose vTM-manager key made the vEK certificate")
    vek_certificate: B64(16384, "vEK certificate from the vTM's NV, DER")
    vek_public: B64(1024, "vEK public area, TPM2B_PUBLIC")
    vak_public: B64(1024, "vAK public area, TPM2B_PUBLIC")

    def to_domain(self) -> GuestClaim:
        return GuestClaim(
            vm_uuid=self.vm_uuid,
            host_id=self.host_id,
            vek_certificate=_bytes(self.vek_certificate, "vek_certificate"),
            vek_public=_bytes(self.vek_public, "vek_public"),
            vak_public=_bytes(self.vak_public, "vak_public"),
        )


class GuestActivationIn(_In):
    """The guest's answer: the secret its vTM released for the vAK, and the key for its TLS client
    certificate."""

    enrollment_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    secret: B64(64, "the secret TPM2_ActivateCredential returned in the vTM")
    client_key: str = Field(max_length=8192, description="PEM certificate request (preferred) or public key")

    def __repr__(self) -> str:  # never show the secret
        return f"GuestActivationIn(enrollment_id={self.enrollment_id!r})"

    __str__ = __repr__

    def to_domain(self, agent_id: str) -> GuestActivation:
        return GuestActivation(agent_id=agent_id, enrollment_id=self.enrollment_id,
                               secret=_bytes(self.secret, "secret"), client_public_key=_client_key(self.client_key))  # fmt: skip


class EnrolledOut(BaseModel):
    agent_id: str
    state: str
    ak_certificate: str = Field(description="the AK certificate from the PCA (PEM)")
    client_certificate: str = Field(description="the TLS client certificate (PEM)")
    ca_certificate: str = Field(description="the operations CA: verifies the server (PEM)")
    pca_certificate: str = Field(description="the PCA (PEM)")

    @classmethod
    def of(cls, e: EnrolledAgent) -> EnrolledOut:
        return cls(agent_id=e.agent.id, state=e.agent.state.value, ak_certificate=_pem(e.ak_certificate),
                   client_certificate=_pem(e.client_certificate), ca_certificate=_pem(e.ops_ca_certificate),
                   pca_certificate=_pem(e.pca_certificate))  # fmt: skip


class AgentOut(BaseModel):
    id: str
    kind: str
    state: str
    host_id: str | None
    group: str
    labels: dict[str, str]
    zone: str | None = None
    capacity: int = Field(0, description="vTMs the host may run; 0: no limit")
    created_at: datetime
    enrolled_at: datetime | None
    revoked_at: datetime | None
    client_serial: str | None = Field(description="hex serial of the current client certificate")
    ak_certificate: str | None = Field(description="PEM")

    @classmethod
    def of(cls, a: AgentRecord) -> AgentOut:
        ak = None
        if a.ak_certificate:
            try:
                ak = _pem(x509.load_der_x509_certificate(a.ak_certificate))
            except ValueError:
                ak = None
        return cls(id=a.id, kind=a.kind.value, state=a.state.value, host_id=a.host_id, group=a.group,
                   labels=dict(a.labels), zone=a.zone, capacity=a.capacity, created_at=a.created_at, enrolled_at=a.enrolled_at,
                   revoked_at=a.revoked_at, ak_certificate=ak,
                   client_serial=None if a.client_serial is None else format(a.client_serial, "x"))  # fmt: skip


class AgentList(BaseModel):
    agents: list[AgentOut]


class RevokeIn(_In):
    reason: Literal[REVOCATION_REASONS] = "unspecified"  # type: ignore[valid-type]


class TaskIn(_In):
    kind: str = Field(pattern=r"^[a-z][a-z0-9-]{0,63}$", description="e.g. attest, deep-quote")
    payload: dict[str, Any] = {}
    key: str | None = Field(None, min_length=1, max_length=255, description="at most one open task per key")


class TaskOut(BaseModel):
    id: int
    agent_id: str
    kind: str
    state: str
    payload: Any
    attempts: int
    created_at: datetime
    lease_until: datetime | None
    finished_at: datetime | None
    result: Any

    @classmethod
    def of(cls, t: TaskRecord) -> TaskOut:
        return cls(id=t.id, agent_id=t.agent_id, kind=t.kind, state=t.state.value, payload=t.payload,
                   attempts=t.attempts, created_at=t.created_at, lease_until=t.lease_until,
                   finished_at=t.finished_at, result=t.result)  # fmt: skip


class NextTask(BaseModel):
    task: TaskOut | None = Field(description="the leased task, or null when none came within the wait")


class ResultIn(_In):
    status: Literal["done", "failed"]
    result: Any = None
