"""AK and vAK certificates the PCA issues after credential activation (RA-1, VMM-S3), their
verification, and the check of AK certificates issued by someone else's CA (a cloud's vTPM PKI).

An AK certificate (`issue_ak_certificate`) is a leaf of `_issue`'s shape with:
    subjectPublicKeyInfo        the AK's public key
    extendedKeyUsage            tcg-kp-AIKCertificate (2.23.133.8.3)
    certificatePolicies         VROOT_VIRTUAL_TPM_POLICY, for a vAK only  -- the virtual mark
    VROOT_AK_IDENTITY           non-critical:
        VrootAkIdentity ::= SEQUENCE {
            akName   OCTET STRING,   -- TPM name of the AK: nameAlg ‖ H(TPMT_PUBLIC), so its attributes
            ekName   OCTET STRING,   -- TPM name of the (v)EK the credential was activated against
            virtual  BOOLEAN         -- TRUE: the AK lives in a vroot vTM, not a hardware TM
        }
The name pins the whole public area (restricted, fixedTPM, scheme), which an SPKI alone does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, ObjectIdentifier

from vroot.errors import CertificateInvalid, InvalidInput
from vroot.pca._attributes import check_ak_public
from vroot.pca._crl import VerifiedCrl, check_not_revoked
from vroot.pca._issue import check_agent_id, check_digital_signature, leaf_builder, sign, subject_agent_id
from vroot.pki import VROOT_VIRTUAL_TPM_POLICY, CertificateAuthority, _der, verify_certificate_chain
from vroot.pki._oids import VROOT_ARC
from vroot.pki._vek_ext import check_tpm_name
from vroot.pki._x509 import check_same_key, describe, extension, extensions, load_certificate
from vroot.tpm2 import PublicArea

__all__ = [
    "TCG_KP_AIK_CERTIFICATE",
    "VROOT_AK_IDENTITY",
    "AkIdentity",
    "VerifiedAkCertificate",
    "VerifiedExternalAkCertificate",
    "decode_ak_identity",
    "encode_ak_identity",
    "issue_ak_certificate",
    "verify_ak_certificate",
    "verify_external_ak_certificate",
]

# TCG OID registry: tcg-kp-AIKCertificate, the extended key usage of AK certificates.
TCG_KP_AIK_CERTIFICATE = ObjectIdentifier("2.23.133.8.3")
# vroot's AK identity extension (see module docstring). Never change: issued certificates carry it.
VROOT_AK_IDENTITY = ObjectIdentifier(VROOT_ARC + ".3")
MAX_AK_IDENTITY_BYTES = 256
_BOOLEAN = 0x01
_POLICY_TEXT = "vroot vAK: an attestation key in a vroot vTM (virtual TPM), not a hardware TM"


@dataclass(frozen=True, slots=True, kw_only=True)
class AkIdentity:
    """What the AK identity extension says. As decoded from a certificate, unverified."""

    ak_name: bytes
    ek_name: bytes
    virtual: bool

    def __post_init__(self) -> None:
        check_tpm_name(self.ak_name)
        check_tpm_name(self.ek_name)
        if not isinstance(self.virtual, bool):
            raise InvalidInput("AK identity: virtual must be a bool")


def encode_ak_identity(identity: AkIdentity) -> bytes:
    return _der.sequence(
        _der.octet_string(identity.ak_name),
        _der.octet_string(identity.ek_name),
        _der.tlv(_BOOLEAN, b"\xff" if identity.virtual else b"\x00"),
    )


def decode_ak_identity(data: bytes) -> AkIdentity:
    """Parse the DER extension value strictly; `InvalidInput` for anything else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput(f"AK identity: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_AK_IDENTITY_BYTES:
        raise InvalidInput(f"AK identity: {len(data)} bytes, more than {MAX_AK_IDENTITY_BYTES}")
    start, end = _der.read_single(data, _der.SEQUENCE, "AK identity")
    items = _der.elements(data, start, end, limit=3)
    if tuple(tag for tag, _ in items) != (_der.OCTET_STRING, _der.OCTET_STRING, _BOOLEAN):
        raise InvalidInput("AK identity: want OCTET STRING, OCTET STRING, BOOLEAN")
    (_, ak_name), (_, ek_name), (_, flag) = items
    if flag not in (b"\x00", b"\xff"):
        raise InvalidInput("AK identity: BOOLEAN not in DER form")
    return AkIdentity(ak_name=ak_name, ek_name=ek_name, virtual=flag == b"\xff")


def issue_ak_certificate(
    *,
    pca: CertificateAuthority,
    ak_public: PublicArea,
    agent_id: str,
    ek_name: bytes,
    virtual: bool,
    now: datetime,
    serial: int,
    validity_days: int = 365,
) -> x509.Certificate:
    """The PCA's certificate for an AK (or, with `virtual=True`, a vAK) whose credential activation
    succeeded: subject CN=`agent_id`, the AK's key and TPM name, the EK's TPM name, marked virtual
    for a vAK (VMM-S3). `KeyAttributesInvalid` if `ak_public` is not a proper AK.
    Caller must: pass only the `ak`/`ek_name`/`virtual` of a `VerifiedEnrollment`.
    """
    if not isinstance(ak_public, PublicArea):
        raise InvalidInput(f"ak_public: expected a PublicArea, got {type(ak_public).__name__}")
    check_ak_public(ak_public, what="vAK" if virtual else "AK")
    identity = AkIdentity(ak_name=ak_public.name(), ek_name=bytes(ek_name), virtual=bool(virtual))
    builder = leaf_builder(
        pca,
        common_name=check_agent_id(agent_id),
        public_key=ak_public.public_key(),
        now=now,
        serial=serial,
        validity_days=validity_days,
        what="AK",
    )
    builder = builder.add_extension(x509.ExtendedKeyUsage([TCG_KP_AIK_CERTIFICATE]), critical=False)
    if identity.virtual:
        policy = x509.PolicyInformation(VROOT_VIRTUAL_TPM_POLICY, [x509.UserNotice(None, _POLICY_TEXT)])
        builder = builder.add_extension(x509.CertificatePolicies([policy]), critical=False)
    builder = builder.add_extension(
        x509.UnrecognizedExtension(VROOT_AK_IDENTITY, encode_ak_identity(identity)), critical=False
    )
    return sign(builder, pca)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedAkCertificate:
    """An AK certificate that verified under the PCA.

    Proves: the PCA certified, after credential activation, that the AK with TPM name `ak_name`
    (equal to the `ak_public` the caller gave) belongs to agent `agent_id` and lives in the (v)TM
    whose EK is `ek_name`; `virtual` says whether that is a vTM; valid at the time checked; not on
    the CRL when one was given (`revocation_checked`).
    Does not prove: that the TM's platform is in a good state (attestation does), or revocation
    status when `revocation_checked` is False.
    """

    agent_id: str
    ak_name: bytes
    ek_name: bytes
    virtual: bool
    serial: int
    not_before: datetime
    not_after: datetime
    revocation_checked: bool
    certificate: x509.Certificate


def _has_virtual_policy(cert: x509.Certificate, what: str) -> bool:
    ext = extension(cert, ExtensionOID.CERTIFICATE_POLICIES, what)
    return ext is not None and any(p.policy_identifier == VROOT_VIRTUAL_TPM_POLICY for p in ext.value)


def verify_ak_certificate(
    cert: x509.Certificate | bytes,
    *,
    pca_certificate: x509.Certificate,
    ak_public: PublicArea,
    now: datetime,
    crl: VerifiedCrl | x509.CertificateRevocationList | bytes | None = None,
) -> VerifiedAkCertificate:
    """Verify an AK certificate issued by the PCA for `ak_public` (DESIGN.md section 5, first check).

    Checks, each failure a `CertificateInvalid` with its reason: the chain to `pca_certificate`
    (signature, validity at `now`, not a CA, extendedKeyUsage tcg-kp-AIKCertificate); keyUsage
    digitalSignature; the certified key is `ak_public`'s; the AK identity extension is there, well
    formed, and names `ak_public`; the virtual mark agrees with it; the subject is an agent id.
    Then `ak_public` must still be a proper AK (`KeyAttributesInvalid`), and with `crl`, the
    certificate must not be revoked (`Revoked`; a bad or stale CRL is `CertificateInvalid`).
    """
    c = load_certificate(cert, "AK certificate")
    what = f"AK certificate {describe(c)}"
    if not isinstance(ak_public, PublicArea):
        raise InvalidInput(f"ak_public: expected a PublicArea, got {type(ak_public).__name__}")
    verify_certificate_chain(
        c, trust_anchors=[pca_certificate], now=now, required_eku=TCG_KP_AIK_CERTIFICATE
    )
    check_digital_signature(c, what)
    check_same_key(c, ak_public.public_key(), what)
    try:
        raw = extensions(c, what).get_extension_for_oid(VROOT_AK_IDENTITY).value.value
    except x509.ExtensionNotFound:
        raise CertificateInvalid(f"{what}: no vroot AK identity extension") from None
    try:
        identity = decode_ak_identity(raw)
    except InvalidInput as exc:
        raise CertificateInvalid(f"{what}: malformed AK identity extension ({exc})") from None
    if identity.ak_name != ak_public.name():
        raise CertificateInvalid(
            f"{what}: certifies AK name {identity.ak_name.hex()}, not {ak_public.name().hex()}"
        )
    if _has_virtual_policy(c, what) != identity.virtual:
        raise CertificateInvalid(f"{what}: virtual mark and AK identity disagree")
    agent_id = subject_agent_id(c, what)
    check_ak_public(ak_public, what="vAK" if identity.virtual else "AK")
    if crl is not None:
        check_not_revoked(c, crl=crl, issuer=pca_certificate, now=now)
    return VerifiedAkCertificate(
        agent_id=agent_id,
        ak_name=identity.ak_name,
        ek_name=identity.ek_name,
        virtual=identity.virtual,
        serial=c.serial_number,
        not_before=c.not_valid_before_utc,
        not_after=c.not_valid_after_utc,
        revocation_checked=crl is not None,
        certificate=c,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedExternalAkCertificate:
    """An AK certificate from another PKI (e.g. a cloud provider's vTPM CA) that verified.

    Proves: a CA chaining to the given trust anchors certified `ak_public`'s key, and `ak_public`
    has proper AK attributes. Does not prove: that the AK is in the TM you talk to beyond that CA's
    word (its issuance policy, typically its own credential activation), nor revocation (no CRL
    or OCSP is fetched).
    """

    chain: tuple[x509.Certificate, ...]
    ak_name: bytes
    certificate: x509.Certificate


def verify_external_ak_certificate(
    cert: x509.Certificate | bytes,
    *,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    ak_public: PublicArea,
    now: datetime,
    required_eku: ObjectIdentifier | None,
) -> VerifiedExternalAkCertificate:
    """Verify an AK certificate issued by a CA other than the PCA: the chain (`verify_certificate_chain`
    with `required_eku`, which the caller must choose for that PKI: GCE's AK certificates carry
    tcg-kp-EKCertificate), keyUsage digitalSignature, the certified key is `ak_public`'s
    (`CertificateInvalid` for each), and `ak_public` is a proper AK (`KeyAttributesInvalid`)."""
    c = load_certificate(cert, "AK certificate")
    what = f"AK certificate {describe(c)}"
    if not isinstance(ak_public, PublicArea):
        raise InvalidInput(f"ak_public: expected a PublicArea, got {type(ak_public).__name__}")
    chain = verify_certificate_chain(
        c, trust_anchors=trust_anchors, intermediates=intermediates, now=now, required_eku=required_eku
    )
    check_digital_signature(c, what)
    check_same_key(c, ak_public.public_key(), what)
    check_ak_public(ak_public)
    return VerifiedExternalAkCertificate(chain=chain, ak_name=ak_public.name(), certificate=c)
