"""vEK certificates (VMM-F4, VMM-S3): issued inside the host TM by the vTM-manager key, in the TCG
EK-credential shape, and marked as virtual so that no verifier mistakes a vTM for a hardware TM.

A vEK certificate is an EK certificate (see `_ek`) whose
    issuer                  CN=vroot vTM manager, O=vroot, serialNumber=<host id>
    authorityKeyIdentifier  the SHA-1 key identifier of the vTM-manager key (RFC 5280 4.2.1.2 (1))
    subjectAltName          tpmManufacturer "id:56524F54" (VROT), tpmModel "vroot vTM (virtual TPM)"
    certificatePolicies     VROOT_VIRTUAL_TPM_POLICY                    -- the virtual mark
    VROOT_VTM_IDENTITY      host id, VM UUID, vTM-manager key TPM name  -- non-critical
It chains to no CA: its issuer is a TM key, trusted through the host AK's TPM2_Certify of that key
(DESIGN.md section 3), which the caller checks before passing `manager_public` here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from vroot.errors import CertificateInvalid, InvalidInput
from vroot.pki._ek import VROOT_MANUFACTURER, check_ek_public, ek_certificate_builder
from vroot.pki._oids import TCG_KP_EK_CERTIFICATE, VROOT_VIRTUAL_TPM_POLICY, VROOT_VTM_IDENTITY
from vroot.pki._tm_sign import SignDigest, tm_signed_certificate
from vroot.pki._vek_ext import VekIdentity, check_host_id, decode_vtm_identity, encode_vtm_identity
from vroot.pki._x509 import (
    check_critical,
    check_now,
    check_same_key,
    check_signed_by,
    check_validity,
    extension,
    extensions,
    load_certificate,
)
from vroot.tpm2 import ObjectAttributes, PublicArea

VTM_MODEL = "vroot vTM (virtual TPM)"
VTM_VERSION = "id:00000001"
_POLICY_TEXT = "vroot vTM: a virtual TPM served by a vTM manager, not a hardware TM"


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedVekCertificate:
    """A vEK certificate that verified under a vTM-manager key.

    Proves: the holder of `manager_public` (a fixedTPM signing key) certified `vek_public_key` as
    the EK of the vTM of VM `vm_uuid` on host `host_id`, marked virtual, valid at the time checked;
    identity fields and key equal the expected ones where they were given.
    Does not prove: that `manager_public` is the vTM-manager key of a trusted host (caller must
    check the host AK's TPM2_Certify of it and the host's attestation, DESIGN.md section 5), nor
    that the vEK is in the vTM you talk to (credential activation against it, RA-1).
    """

    host_id: str
    vm_uuid: uuid.UUID
    manager_name: bytes
    vek_public_key: Any
    not_before: datetime
    not_after: datetime
    certificate: x509.Certificate


def manager_issuer_name(host_id: str) -> x509.Name:
    """The issuer name of the vEK certificates made by the vTM-manager key of `host_id`."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vroot"),
            x509.NameAttribute(NameOID.COMMON_NAME, "vroot vTM manager"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, check_host_id(host_id)),
        ]
    )


def _check_manager_public(area: PublicArea, error: type[Exception]) -> None:
    if not isinstance(area, PublicArea):
        raise InvalidInput(f"manager_public: expected a PublicArea, got {type(area).__name__}")
    attrs = area.object_attributes
    if (
        not attrs & ObjectAttributes.FIXEDTPM
        or not attrs & ObjectAttributes.SIGN_ENCRYPT
        or attrs & (ObjectAttributes.DECRYPT | ObjectAttributes.RESTRICTED)
    ):
        raise error(f"the vTM-manager key must be a fixedTPM unrestricted signing key, got {attrs!r}")
    if area.name_alg is None:
        raise error("the vTM-manager key has no name (nameAlg NULL)")


def issue_vek_certificate(
    *,
    vek_public: PublicArea,
    manager_public: PublicArea,
    host_id: str,
    vm_uuid: uuid.UUID,
    now: datetime,
    serial: int,
    sign_digest: SignDigest,
    validity_days: int = 3650,
    model: str = VTM_MODEL,
) -> x509.Certificate:
    """The vEK certificate of VM `vm_uuid`'s vTM, signed in the host TM by the vTM-manager key (VMM-F4).

    `sign_digest(sha256)` returns the TPMT_SIGNATURE of the key whose public area is `manager_public`
    (e.g. `lambda d: tm.sign_digest(manager_key, d, policy=[PolicyPcr.of(...)])`). The certificate
    is checked under `manager_public` before it is returned (`CertificateInvalid` otherwise).
    """
    check_now(now)
    check_ek_public(vek_public, "vEK public area")
    _check_manager_public(manager_public, InvalidInput)
    if not isinstance(vm_uuid, uuid.UUID):
        raise InvalidInput(f"vm_uuid must be a uuid.UUID, got {type(vm_uuid).__name__}")
    if validity_days <= 0:
        raise InvalidInput(f"validity_days must be positive, got {validity_days}")
    identity = VekIdentity(host_id=host_id, vm_uuid=vm_uuid, manager_name=manager_public.name())
    builder = ek_certificate_builder(
        ek_public=vek_public,
        issuer_name=manager_issuer_name(host_id),
        authority_key_identifier=x509.AuthorityKeyIdentifier.from_issuer_public_key(
            manager_public.public_key()
        ),
        now=now,
        not_after=now + timedelta(days=validity_days),
        serial=serial,
        manufacturer=VROOT_MANUFACTURER,
        model=model,
        version=VTM_VERSION,
    )
    policy = x509.PolicyInformation(VROOT_VIRTUAL_TPM_POLICY, [x509.UserNotice(None, _POLICY_TEXT)])
    builder = builder.add_extension(x509.CertificatePolicies([policy]), critical=False).add_extension(
        x509.UnrecognizedExtension(VROOT_VTM_IDENTITY, encode_vtm_identity(identity)), critical=False
    )
    return tm_signed_certificate(builder, issuer_public=manager_public, sign_digest=sign_digest)


def _has_virtual_policy(cert: x509.Certificate, what: str) -> bool:
    ext = extension(cert, ExtensionOID.CERTIFICATE_POLICIES, what)
    return ext is not None and any(p.policy_identifier == VROOT_VIRTUAL_TPM_POLICY for p in ext.value)


def is_virtual_tm_certificate(cert: x509.Certificate | bytes) -> bool:
    """Whether the certificate carries a vroot virtual mark (the virtual-TPM policy or the vTM identity
    extension). A classifier, not a check: an unsigned or forged certificate can carry the marks, and a
    hardware EK certificate could be forged without them; only verification says who signed."""
    c = load_certificate(cert, "certificate")
    try:
        exts = c.extensions
    except ValueError:
        return False
    for ext in exts:
        if ext.oid == VROOT_VTM_IDENTITY:
            return True
        if ext.oid == ExtensionOID.CERTIFICATE_POLICIES and any(
            p.policy_identifier == VROOT_VIRTUAL_TPM_POLICY for p in ext.value
        ):
            return True
    return False


def vek_identity(cert: x509.Certificate | bytes) -> VekIdentity | None:
    """The vroot vTM identity extension as read (unverified), or None when the certificate has none.
    `InvalidInput` when it is there but malformed."""
    c = load_certificate(cert, "certificate")
    try:
        ext = c.extensions.get_extension_for_oid(VROOT_VTM_IDENTITY)
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise InvalidInput(f"certificate: unreadable extensions ({exc})") from None
    return decode_vtm_identity(ext.value.value)


def verify_vek_certificate(
    cert: x509.Certificate | bytes,
    *,
    manager_public: PublicArea,
    now: datetime,
    vek_public: PublicArea | None = None,
    host_id: str | None = None,
    vm_uuid: uuid.UUID | None = None,
) -> VerifiedVekCertificate:
    """Verify a vEK certificate under the vTM-manager key `manager_public` (VMM-F4, VMM-S3, RA-7).

    Checks, in order, each failure a `CertificateInvalid` with its reason: the manager key is a fixedTPM
    unrestricted signing key; the signature verifies under it; the authorityKeyIdentifier (if any)
    is its key identifier; no unknown critical extension; valid at `now`; the virtual-TPM policy
    and the vTM identity extension are present and well formed; the identity names this manager
    key; the issuer name is the manager's name for that host; EK shape (extendedKeyUsage
    tcg-kp-EKCertificate, not a CA); then, when given, `host_id`, `vm_uuid` and `vek_public` match.
    `InvalidInput` for bytes that are not a certificate or bad arguments.
    """
    c = load_certificate(cert, "vEK certificate")
    check_now(now)
    what = "vEK certificate"
    _check_manager_public(manager_public, CertificateInvalid)
    check_signed_by(c, manager_public.public_key(), f"{what} (vTM-manager key {manager_public.name().hex()})")
    aki = extension(c, ExtensionOID.AUTHORITY_KEY_IDENTIFIER, what)
    want_aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(manager_public.public_key()).key_identifier
    if aki is not None and aki.value.key_identifier != want_aki:
        raise CertificateInvalid(f"{what}: authorityKeyIdentifier is not the vTM-manager key's")
    check_critical(c, what)
    check_validity(c, now, what)
    if not _has_virtual_policy(c, what):
        raise CertificateInvalid(f"{what}: not marked virtual (no vroot virtual-TPM certificate policy)")
    try:
        raw = extensions(c, what).get_extension_for_oid(VROOT_VTM_IDENTITY).value.value
    except x509.ExtensionNotFound:
        raise CertificateInvalid(f"{what}: no vroot vTM identity extension") from None
    try:
        identity = decode_vtm_identity(raw)
    except InvalidInput as exc:
        raise CertificateInvalid(f"{what}: malformed vTM identity extension ({exc})") from None
    if identity.manager_name != manager_public.name():
        raise CertificateInvalid(
            f"{what}: names vTM-manager key {identity.manager_name.hex()}, not {manager_public.name().hex()}"
        )
    if c.issuer != manager_issuer_name(identity.host_id):
        raise CertificateInvalid(
            f"{what}: issuer '{c.issuer.rfc4514_string()}' is not the vTM manager of its host"
        )
    eku = extension(c, ExtensionOID.EXTENDED_KEY_USAGE, what)
    if eku is None or TCG_KP_EK_CERTIFICATE not in eku.value:
        raise CertificateInvalid(f"{what}: lacks extendedKeyUsage tcg-kp-EKCertificate")
    bc = extension(c, ExtensionOID.BASIC_CONSTRAINTS, what)
    if bc is not None and bc.value.ca:
        raise CertificateInvalid(f"{what}: is a CA certificate")
    if host_id is not None and identity.host_id != host_id:
        raise CertificateInvalid(f"{what}: for host {identity.host_id!r}, not {host_id!r}")
    if vm_uuid is not None and identity.vm_uuid != vm_uuid:
        raise CertificateInvalid(f"{what}: for VM {identity.vm_uuid}, not {vm_uuid}")
    if vek_public is not None:
        if not isinstance(vek_public, PublicArea):
            raise InvalidInput(f"vek_public: expected a PublicArea, got {type(vek_public).__name__}")
        check_same_key(c, vek_public.public_key(), what)
    try:
        key = c.public_key()
    except ValueError as exc:
        raise CertificateInvalid(f"{what}: unreadable public key ({exc})") from None
    return VerifiedVekCertificate(
        host_id=identity.host_id,
        vm_uuid=identity.vm_uuid,
        manager_name=identity.manager_name,
        vek_public_key=key,
        not_before=c.not_valid_before_utc,
        not_after=c.not_valid_after_utc,
        certificate=c,
    )
