"""Guest (vTM) enrollment (RA-1, RA-7, VMM-F4, VMM-S3; DESIGN.md sections 3 and 5).

A vTM has no manufacturer. Its vEK certificate is signed inside its host's TM by the vTM-manager
key, and that key is vouched for by the host's AK with TPM2_Certify over
`manager_qualifying_data(host_id)`. So a vEK is accepted only along this chain:

    enrolled host AK  --TPM2_Certify-->  vTM-manager key  --X.509 (virtual)-->  vEK  --activation-->  vAK

and every link is checked here, against what the server recorded when the host enrolled
(`EnrolledHost`), never against what the VM or host sends along with the vEK certificate.

    host = enrolled_host(verified_host_enrollment, manager_public=keys.manager_public,
                         manager_certify_attest=..., manager_certify_signature=...)
    challenge, pending = begin_vtm_enrollment(vek_certificate=der, vek_public=vek, vak_public=vak,
                                              host=host, now=now, rng=os.urandom)
    verified = complete_enrollment(pending, activated_secret=answer, now=later)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from vroot.attestation import verify_certify
from vroot.errors import CertificateInvalid, InvalidInput, QuoteError
from vroot.host._provision import manager_qualifying_data
from vroot.pca._attributes import check_ak_public, public_area
from vroot.pca._enroll import (
    DEFAULT_ENROLLMENT_TTL,
    EnrollmentChallenge,
    EnrollmentKind,
    PendingEnrollment,
    Rng,
    VerifiedEnrollment,
    make_challenge,
)
from vroot.pki import verify_vek_certificate
from vroot.pki._vek_ext import check_host_id
from vroot.pki._x509 import check_now
from vroot.tpm2 import PublicArea

__all__ = ["EnrolledHost", "begin_vtm_enrollment", "enrolled_host", "verify_manager_key"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolledHost:
    """A host as the server recorded it at enrollment: the keys vTM enrollment is checked against.

    `ak_public` is the host AK whose credential activation succeeded (TPM2B_PUBLIC bytes);
    `manager_public` the vTM-manager key; `manager_certify_*` the AK's TPM2_Certify of it over
    `manager_qualifying_data(host_id)` (TPMS_ATTEST and TPMT_SIGNATURE bytes). All public.
    Caller must: build it only from the server's own record of a completed host enrollment
    (`enrolled_host` does the checks once; `begin_vtm_enrollment` repeats them), never from what
    a host or VM sends with a vTM's request.
    """

    host_id: str
    ak_public: bytes
    manager_public: bytes
    manager_certify_attest: bytes
    manager_certify_signature: bytes

    def __post_init__(self) -> None:
        check_host_id(self.host_id)
        for name in ("ak_public", "manager_public", "manager_certify_attest", "manager_certify_signature"):
            if not isinstance(getattr(self, name), bytes):
                raise InvalidInput(f"enrolled host: {name} must be bytes")


def verify_manager_key(host: EnrolledHost) -> PublicArea:
    """The host's vTM-manager key, after checking the host AK certified it (VMM-F4, RA-7).

    Proves: the enrolled AK of `host` signed a TPM2_Certify, over the qualifying data that binds it
    to `host.host_id`, of an object whose name is that of `manager_public` (so its attributes and
    policy are the ones shown), loaded in the AK's TM. Does not prove: that the host is trusted now.
    Raises `CertificateInvalid` naming the failed check (signature, qualifying data, certified name,
    AK attributes...); `InvalidInput` for bytes that do not decode.
    """
    if not isinstance(host, EnrolledHost):
        raise InvalidInput(f"host: expected an EnrolledHost, got {type(host).__name__}")
    ak = public_area(host.ak_public, "host AK public area")
    manager = public_area(host.manager_public, "vTM-manager public area")
    try:
        verify_certify(
            host.manager_certify_attest,
            host.manager_certify_signature,
            ak,
            qualifying_data=manager_qualifying_data(host.host_id),
            certified_name=manager.name(),
        )
    except QuoteError as exc:
        raise CertificateInvalid(
            f"vTM-manager key {manager.name().hex()} was not certified by the enrolled AK of host "
            f"{host.host_id!r}: {exc}"
        ) from exc
    return manager


def enrolled_host(
    enrollment: VerifiedEnrollment,
    *,
    manager_public: bytes,
    manager_certify_attest: bytes,
    manager_certify_signature: bytes,
    host_id: str | None = None,
) -> EnrolledHost:
    """The record to keep for a host whose enrollment completed: its AK, and the vTM-manager key that
    AK certified (checked here, `CertificateInvalid` otherwise). `host_id` defaults to the one given
    at `begin_enrollment` and must equal it when both are given."""
    if not isinstance(enrollment, VerifiedEnrollment) or enrollment.kind is not EnrollmentKind.HOST:
        raise InvalidInput("enrolled_host needs the VerifiedEnrollment of a host")
    if host_id is None:
        host_id = enrollment.host_id
    elif enrollment.host_id is not None and enrollment.host_id != host_id:
        raise InvalidInput(f"host id {host_id!r} is not the enrolled host's {enrollment.host_id!r}")
    if host_id is None:
        raise InvalidInput("enrolled_host needs a host id")
    host = EnrolledHost(
        host_id=host_id,
        ak_public=enrollment.ak.encode(sized=True),
        manager_public=bytes(manager_public),
        manager_certify_attest=bytes(manager_certify_attest),
        manager_certify_signature=bytes(manager_certify_signature),
    )
    verify_manager_key(host)
    return host


def begin_vtm_enrollment(
    *,
    vek_certificate: bytes | x509.Certificate,
    vek_public: bytes | PublicArea,
    vak_public: bytes | PublicArea,
    host: EnrolledHost,
    now: datetime,
    rng: Rng,
    vm_uuid: uuid.UUID | None = None,
    ttl: timedelta = DEFAULT_ENROLLMENT_TTL,
) -> tuple[EnrollmentChallenge, PendingEnrollment]:
    """Start a vTM's enrollment (RA-1, RA-7, VMM-F4, VMM-S3) against its host's enrollment record.

    Checks, in order, each failure a `CertificateInvalid` saying why: the host's AK certified its
    vTM-manager key (`verify_manager_key`: a manager key the host AK did not certify, or certified
    for another host id, fails here); the vEK certificate verifies under that manager key, is marked
    virtual, names that key, this host and (when given) `vm_uuid`, is valid at `now`, and certifies
    `vek_public` (`verify_vek_certificate`: a certificate made on another host, or forged with a
    software key, fails here). Then `vak_public` must be a proper AK (`KeyAttributesInvalid`), and
    MakeCredential of a fresh secret goes to the vEK for the vAK's name.
    Caller must: check the host is enrolled and not revoked before calling, then proceed as for
    `begin_enrollment`; the host's trustworthiness is judged by attestation, not here.
    """
    check_now(now)
    manager = verify_manager_key(host)
    vek = public_area(vek_public, "vEK public area")
    vak = public_area(vak_public, "vAK public area")
    verified = verify_vek_certificate(
        vek_certificate, manager_public=manager, now=now, vek_public=vek, host_id=host.host_id, vm_uuid=vm_uuid
    )
    check_ak_public(vak, what="vAK")
    return make_challenge(
        kind=EnrollmentKind.VTM,
        ek=vek,
        ak=vak,
        ek_certificate=verified.certificate.public_bytes(Encoding.DER),
        now=now,
        rng=rng,
        ttl=ttl,
        host_id=verified.host_id,
        vm_uuid=verified.vm_uuid,
    )
