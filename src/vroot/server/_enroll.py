"""Host enrollment as the server runs it (RA-1; DESIGN.md section 3): the PCA's checks
(`vroot.pca`) with the store between the two requests.

    begin(HostClaim)            EK certificate against the manufacturer CAs, AK attributes, then a
                                credential challenge for the AK's name under the EK. The agent row
                                is created (state enrolling) with the verified EK; the challenge's
                                digest is kept in `store.enrollments` (never the secret).
    activate(HostActivation)    the TM's answer: the challenge is taken (single use, even when the
                                answer is wrong), `complete_enrollment` compares it, the host AK's
                                certification of the vTM-manager key is checked, then the PCA issues
                                the AK certificate and the operations CA the client certificate, and
                                the agent becomes active.

The client key and the vTM-manager key travel with the activation, not the claim: they are what
the activation certifies, and `store.enrollments` keeps nothing else between the two requests (so
any replica can finish what another began).

Host ids are names the host chooses. A genuine TM can claim any unused name; an agent that is
already enrolled keeps its name against another EK (Conflict). Operator approval is not modelled.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from vroot.errors import Conflict, InvalidInput
from vroot.pca import (
    EnrollmentChallenge,
    EnrollmentKind,
    PendingEnrollment,
    VerifiedEnrollment,
    begin_enrollment,
    complete_enrollment,
    enrolled_host,
    issue_ak_certificate,
    issue_client_certificate,
)
from vroot.server._services import Services
from vroot.store import AgentKind, AgentRecord, EnrollmentRecord, Store
from vroot.tpm2 import parse_public

__all__ = [
    "HOST_PREFIX",
    "EnrolledAgent",
    "Enrollments",
    "HostActivation",
    "HostChallenge",
    "HostClaim",
    "host_agent_id",
]

HOST_PREFIX = "host:"
# Host ids as `vroot host init` makes them (host.toml), short enough that "host:<id>" is an agent id.
_HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,58}")
_ENROLLMENT_ID = re.compile(r"[0-9a-f]{32}")


def host_agent_id(host_id: str) -> str:
    if not isinstance(host_id, str) or _HOST_ID.fullmatch(host_id) is None:
        raise InvalidInput(f"host id must be 1-59 letters, digits, '.' or '-' (starting alphanumeric), got {host_id!r}")
    return HOST_PREFIX + host_id


@dataclass(frozen=True, slots=True, kw_only=True)
class HostClaim:
    """What a host sends to begin: its EK certificate (DER), EK and AK (TPM2B_PUBLIC). Unverified."""

    host_id: str
    ek_certificate: bytes
    ek_public: bytes
    ak_public: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class HostChallenge:
    agent_id: str
    enrollment_id: str
    credential_blob: bytes
    encrypted_secret: bytes
    expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class HostActivation:
    """The host's answer: the secret its TM released, with what the activation should certify.

    `client_public_key` is a `cryptography` public key (from a CSR whose signature verified, or a
    bare SubjectPublicKeyInfo); the manager fields are TPM2B_PUBLIC, TPMS_ATTEST and TPMT_SIGNATURE.
    """

    agent_id: str
    enrollment_id: str
    secret: bytes
    client_public_key: Any
    manager_public: bytes
    manager_certify_attest: bytes
    manager_certify_signature: bytes

    def __repr__(self) -> str:  # never show the secret
        return f"HostActivation(agent_id={self.agent_id!r}, enrollment_id={self.enrollment_id!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolledAgent:
    agent: AgentRecord
    ak_certificate: x509.Certificate
    client_certificate: x509.Certificate
    ops_ca_certificate: x509.Certificate
    pca_certificate: x509.Certificate


class Enrollments:
    """The server side of RA-1 for hosts. Every method raises only `vroot.errors`."""

    def __init__(self, services: Services, *, ttl: timedelta, certificate_days: int = 365) -> None:
        self._s = services
        self._ttl = ttl
        self._days = certificate_days

    def begin(self, claim: HostClaim) -> HostChallenge:
        """Check the claim and challenge it. Raises CertificateInvalid / KeyAttributesInvalid (the PCA's
        checks), InvalidInput (bytes that do not decode), Conflict (the agent id is another TM's or a
        guest's), Revoked (the agent is revoked)."""
        agent_id = host_agent_id(claim.host_id)
        now = self._s.clock()
        challenge, pending = begin_enrollment(
            ek_certificate=claim.ek_certificate,
            ek_public=claim.ek_public,
            ak_public=claim.ak_public,
            trust_anchors=self._s.trust.anchors,
            intermediates=self._s.trust.intermediates,
            now=now,
            rng=self._s.rng,
            ttl=self._ttl,
            host_id=claim.host_id,
        )
        store = self._s.store
        register(store, AgentRecord(id=agent_id, kind=AgentKind.HOST, ek_public=pending.ek_public,
                                    ek_certificate=pending.ek_certificate, created_at=now), ek_name=pending.ek_name)  # fmt: skip
        return challenge_agent(store, agent_id, challenge, pending, now=now)

    def activate(self, answer: HostActivation) -> EnrolledAgent:
        """Finish: NotFound (no challenge in progress: never begun, or already answered), NonceExpired
        (too late), ActivationFailed (not the secret: wrong TM or another AK), CertificateInvalid (the
        AK did not certify the vTM-manager key), Revoked. On any failure the challenge is gone and the
        agent is left as it was (an enrolling agent stays enrolling)."""
        if _ENROLLMENT_ID.fullmatch(answer.enrollment_id) is None:
            raise InvalidInput("enrollment_id must be 32 lowercase hex digits")
        s = self._s
        agent = s.store.agents.get(answer.agent_id)
        if agent.kind is not AgentKind.HOST or not agent.id.startswith(HOST_PREFIX):
            raise InvalidInput(f"agent {agent.id} is not a host")
        now = s.clock()
        record = s.store.enrollments.take(agent.id, now=now)
        pending = pending_of(agent, record, answer.enrollment_id, kind=EnrollmentKind.HOST,
                             host_id=agent.id.removeprefix(HOST_PREFIX))  # fmt: skip
        verified = complete_enrollment(pending, activated_secret=answer.secret, now=now)
        host = enrolled_host(
            verified,
            manager_public=answer.manager_public,
            manager_certify_attest=answer.manager_certify_attest,
            manager_certify_signature=answer.manager_certify_signature,
        )
        ak_certificate, client_certificate = issue_certificates(s, verified, agent_id=agent.id, now=now,
                                                                client_public_key=answer.client_public_key,
                                                                days=self._days)  # fmt: skip
        # Activate first: if storing the manager key then failed, the new AK would not verify the old
        # manager certification, so vTM enrollment fails closed.
        s.store.agents.activate(
            agent.id,
            ak_public=host.ak_public,
            ak_certificate=ak_certificate.public_bytes(Encoding.DER),
            client_serial=client_certificate.serial_number,
            now=now,
        )
        active = s.store.agents.set_vtm_manager(
            agent.id,
            public=host.manager_public,
            certify_info=host.manager_certify_attest,
            certify_signature=host.manager_certify_signature,
        )
        return EnrolledAgent(agent=active, ak_certificate=ak_certificate, client_certificate=client_certificate,
                             ops_ca_certificate=s.keys.ops.certificate, pca_certificate=s.keys.pca.certificate)  # fmt: skip


def register(store: Store, record: AgentRecord, *, ek_name: bytes) -> AgentRecord:
    """The agent `record` describes: added if it is new, else the stored one, which must be of the
    same kind and (v)EK (Conflict otherwise: an enrolled agent keeps its name)."""
    existing = store.agents.find(record.id)
    if existing is None:
        try:
            existing = store.agents.add(record)
        except Conflict:  # a concurrent begin of the same agent: check it like an existing one
            existing = store.agents.get(record.id)
    if existing.kind is not record.kind:
        raise Conflict(f"agent {record.id} is a {existing.kind.value}")
    if parse_public(existing.ek_public).name() != ek_name:
        raise Conflict(f"agent {record.id} is already registered with another EK")
    return existing


def challenge_agent(store: Store, agent_id: str, challenge: EnrollmentChallenge, pending: PendingEnrollment, *,
                    now: datetime) -> HostChallenge:  # fmt: skip
    """Keep what the answer is checked against (never the secret) and return the challenge."""
    store.enrollments.begin(EnrollmentRecord(
        agent_id=agent_id, ak_public=pending.ak_public, secret_digest=pending.secret_digest,
        credential_blob=challenge.credential_blob, encrypted_secret=challenge.encrypted_secret, created_at=now,
        expires_at=challenge.expires_at,
    ))  # fmt: skip
    return HostChallenge(agent_id=agent_id, enrollment_id=challenge.enrollment_id,
                         credential_blob=challenge.credential_blob, encrypted_secret=challenge.encrypted_secret,
                         expires_at=challenge.expires_at)  # fmt: skip


def pending_of(agent: AgentRecord, record: EnrollmentRecord, enrollment_id: str, *, kind: EnrollmentKind,
               host_id: str, vm_uuid: uuid.UUID | None = None) -> PendingEnrollment:  # fmt: skip
    """The PCA's pending enrollment rebuilt from the agent and its taken challenge."""
    return PendingEnrollment(
        enrollment_id=enrollment_id, kind=kind, ak_public=record.ak_public, ak_name=parse_public(record.ak_public).name(),
        ek_public=agent.ek_public, ek_name=parse_public(agent.ek_public).name(), ek_certificate=agent.ek_certificate or b"",
        secret_digest=record.secret_digest, issued_at=record.created_at, expires_at=record.expires_at, host_id=host_id,
        vm_uuid=vm_uuid,
    )  # fmt: skip


def issue_certificates(s: Services, verified: VerifiedEnrollment, *, agent_id: str, client_public_key: Any,
                       days: int, now: datetime) -> tuple[x509.Certificate, x509.Certificate]:  # fmt: skip
    """The PCA's AK certificate (marked virtual for a vAK) and the operations CA's client certificate."""
    ak_certificate = issue_ak_certificate(
        pca=s.keys.pca, ak_public=verified.ak, agent_id=agent_id, ek_name=verified.ek_name, virtual=verified.virtual,
        now=now, serial=s.serial(), validity_days=days,
    )  # fmt: skip
    client_certificate = issue_client_certificate(ops_ca=s.keys.ops, agent_id=agent_id, public_key=client_public_key,
                                                  now=now, serial=s.serial(), validity_days=days)  # fmt: skip
    return ak_certificate, client_certificate
