"""Guest (vTM) enrollment as the server runs it (RA-1, RA-7, VMM-F4, VMM-S3; DESIGN.md sections 3, 5).

A VM's guest attester enrolls as agent `vm:<uuid>` with its vTM's vEK certificate (from the vTM's
NV), the vEK and a vAK made in the vTM under the vEK:

    begin(GuestClaim)        the host it names must be an ACTIVE enrolled host; the PCA checks the
                             vEK certificate against THAT host's record as the server keeps it since
                             its enrollment (its AK, the vTM-manager key, the AK's TPM2_Certify of it:
                             `begin_vtm_enrollment`), never against what the guest sends; then a
                             credential challenge for the vAK's name under the vEK. The agent row
                             (kind guest, state enrolling, host_id = "host:<id>", group "vms") keeps
                             the verified vEK and its certificate.
    activate(GuestActivation) the vTM's answer: as for hosts, the challenge is taken (single use),
                             compared, and the PCA issues a vAK certificate (marked virtual, VMM-S3)
                             and the operations CA a client certificate.

A refused vEK certificate (forged, or made by another host's manager key) is answered with the
PCA's `CertificateInvalid` and recorded as an "enrollment.refused" event naming the host and the
reason; nothing else is stored. A guest already enrolled keeps its id against another vEK
(Conflict), and re-enrolls only through the host it is recorded on: a vTM that moved needs its
move recorded first (`store.agents.move`; the store keeps no newer vEK certificate yet).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from vroot.errors import CertificateInvalid, Conflict, InvalidInput, Revoked
from vroot.pca import (
    EnrolledHost,
    EnrollmentKind,
    begin_vtm_enrollment,
    complete_enrollment,
)
from vroot.server._enroll import (
    HOST_PREFIX,
    EnrolledAgent,
    HostChallenge,
    challenge_agent,
    host_agent_id,
    issue_certificates,
    pending_of,
    register,
)
from vroot.server._services import Services
from vroot.store import AgentKind, AgentRecord, AgentState

__all__ = ["GUEST_GROUP", "GUEST_PREFIX", "GuestActivation", "GuestClaim", "GuestEnrollments", "guest_agent_id"]

GUEST_PREFIX = "vm:"
GUEST_GROUP = "vms"  # where new guests are appraised until an operator moves them: never the hosts' group


def vm_uuid_of(text: str) -> uuid.UUID:
    """A VM UUID from `vm:<uuid>` or a bare UUID; InvalidInput otherwise."""
    try:
        return uuid.UUID(str(text).removeprefix(GUEST_PREFIX))
    except (ValueError, AttributeError, TypeError):
        raise InvalidInput(f"{text!r} is not a VM UUID (or vm:<uuid>)") from None


def guest_agent_id(vm: str | uuid.UUID) -> str:
    """`vm:<uuid>` in canonical form (lowercase, hyphenated)."""
    return GUEST_PREFIX + str(vm if isinstance(vm, uuid.UUID) else vm_uuid_of(vm))


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestClaim:
    """What a guest sends to begin: its VM, the host it runs on, the vEK certificate (DER), the vEK and
    the vAK (TPM2B_PUBLIC). Unverified."""

    vm_uuid: str
    host_id: str
    vek_certificate: bytes
    vek_public: bytes
    vak_public: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestActivation:
    """The guest's answer: the secret its vTM released, and the key for its TLS client certificate."""

    agent_id: str
    enrollment_id: str
    secret: bytes
    client_public_key: Any

    def __repr__(self) -> str:  # never show the secret
        return f"GuestActivation(agent_id={self.agent_id!r}, enrollment_id={self.enrollment_id!r})"


def enrolled_host_record(host: AgentRecord) -> EnrolledHost:
    """The PCA's view of an ACTIVE host as the server recorded it at its enrollment (Revoked when it
    is not active, CertificateInvalid when no vTM-manager key was recorded)."""
    if host.kind is not AgentKind.HOST:
        raise InvalidInput(f"{host.id} is not a host")
    if host.state is not AgentState.ACTIVE:
        raise Revoked(f"host {host.id} is {host.state.value}: its vTMs cannot enroll")
    if not (host.ak_public and host.vtm_manager_public and host.vtm_manager_certify_info
            and host.vtm_manager_certify_signature):  # fmt: skip
        raise CertificateInvalid(f"host {host.id} has no vTM-manager key on record")
    return EnrolledHost(host_id=host.id.removeprefix(HOST_PREFIX), ak_public=host.ak_public,
                        manager_public=host.vtm_manager_public, manager_certify_attest=host.vtm_manager_certify_info,
                        manager_certify_signature=host.vtm_manager_certify_signature)  # fmt: skip


class GuestEnrollments:
    """The server side of RA-1 for vTMs. Every method raises only `vroot.errors`."""

    def __init__(self, services: Services, *, ttl: timedelta, certificate_days: int = 365) -> None:
        self._s = services
        self._ttl = ttl
        self._days = certificate_days

    def begin(self, claim: GuestClaim) -> HostChallenge:
        """Check the claim against the recorded host and challenge it. Raises NotFound (no such host),
        Revoked (the host or the guest), CertificateInvalid / KeyAttributesInvalid (the PCA's checks),
        Conflict (the id is a host's, another vEK's, or the guest is recorded on another host)."""
        vm = vm_uuid_of(claim.vm_uuid)
        agent_id, host_agent = guest_agent_id(vm), host_agent_id(claim.host_id)
        store, now = self._s.store, self._s.clock()
        host = enrolled_host_record(store.agents.get(host_agent))
        try:
            challenge, pending = begin_vtm_enrollment(
                vek_certificate=claim.vek_certificate, vek_public=claim.vek_public, vak_public=claim.vak_public,
                host=host, now=now, rng=self._s.rng, vm_uuid=vm, ttl=self._ttl,
            )  # fmt: skip
        except CertificateInvalid as exc:
            store.events.append("enrollment.refused", agent_id=agent_id, now=now,
                                body={"host": host_agent, "error": type(exc).__name__, "reason": exc.diagnostics()[:500]})  # fmt: skip
            raise
        existing = register(store, AgentRecord(
            id=agent_id, kind=AgentKind.GUEST, ek_public=pending.ek_public, ek_certificate=pending.ek_certificate,
            host_id=host_agent, vm_uuid=str(vm), group=GUEST_GROUP, created_at=now,
        ), ek_name=pending.ek_name)  # fmt: skip
        if existing.host_id != host_agent:
            raise Conflict(f"agent {agent_id} is recorded on {existing.host_id}, not {host_agent}: record its move first")
        return challenge_agent(store, agent_id, challenge, pending, now=now)

    def activate(self, answer: GuestActivation) -> EnrolledAgent:
        """Finish: NotFound (no challenge in progress), NonceExpired, ActivationFailed (not the secret:
        another vTM, or another vAK), Revoked (the guest, or its host since). On any failure the
        challenge is gone and the agent is left as it was."""
        s = self._s
        agent = s.store.agents.get(answer.agent_id)
        if agent.kind is not AgentKind.GUEST or agent.host_id is None or agent.vm_uuid is None:
            raise InvalidInput(f"agent {agent.id} is not a guest")
        now = s.clock()
        record = s.store.enrollments.take(agent.id, now=now)
        enrolled_host_record(s.store.agents.get(agent.host_id))  # still active
        pending = pending_of(agent, record, answer.enrollment_id, kind=EnrollmentKind.VTM,
                             host_id=agent.host_id.removeprefix(HOST_PREFIX), vm_uuid=uuid.UUID(agent.vm_uuid))  # fmt: skip
        verified = complete_enrollment(pending, activated_secret=answer.secret, now=now)
        ak_certificate, client_certificate = issue_certificates(s, verified, agent_id=agent.id, now=now,
                                                                client_public_key=answer.client_public_key,
                                                                days=self._days)  # fmt: skip
        active = s.store.agents.activate(agent.id, ak_public=verified.ak.encode(sized=True),
                                         ak_certificate=ak_certificate.public_bytes(Encoding.DER),
                                         client_serial=client_certificate.serial_number, now=now)  # fmt: skip
        return EnrolledAgent(agent=active, ak_certificate=ak_certificate, client_certificate=client_certificate,
                             ops_ca_certificate=s.keys.ops.certificate, pca_certificate=s.keys.pca.certificate)  # fmt: skip
