"""EK certificates in the shape of the TCG EK Credential Profile for TPM Family 2.0 (section 3.2):
issue them from the test manufacturer CA, and verify one against its manufacturer's CA chain.

The shape, shared with the vEK certificates of `_vek`:
    subject                     empty
    subjectAltName (critical)   directoryName: tpmManufacturer, tpmModel, tpmVersion (2.23.133.2.1-3)
    basicConstraints (critical) CA:FALSE
    keyUsage (critical)         keyEncipherment (RSA EK) or keyAgreement (ECC EK)
    extendedKeyUsage            tcg-kp-EKCertificate (2.23.133.8.1)
    authorityKeyIdentifier      the issuer's key
    subjectDirectoryAttributes  tpmSpecification (family "2.0", level, revision)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID

from vroot.errors import CertificateInvalid, InvalidInput
from vroot.pki import _der
from vroot.pki._ca import CertificateAuthority
from vroot.pki._chain import verify_certificate_chain
from vroot.pki._oids import (
    SUBJECT_DIRECTORY_ATTRIBUTES,
    TCG_AT_TPM_MANUFACTURER,
    TCG_AT_TPM_MODEL,
    TCG_AT_TPM_SPECIFICATION,
    TCG_AT_TPM_VERSION,
    TCG_KP_EK_CERTIFICATE,
)
from vroot.pki._x509 import check_now, check_same_key, describe, extension, load_certificate
from vroot.tpm2 import ObjectAttributes, ObjectType, PublicArea

# "VROT" as a TCG vendor ID (TPM_PT_MANUFACTURER as 4 ASCII bytes, written "id:" + hex).
VROOT_MANUFACTURER = "id:56524F54"
MAX_SERIAL = (1 << 159) - 1  # RFC 5280 4.1.2.2: positive, at most 20 octets
MAX_TPM_INFO = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class TpmInfo:
    """What an EK certificate's subjectAltName says about the TPM (TCG EK Credential Profile 3.2.9)."""

    manufacturer: str | None
    model: str | None
    version: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedEkCertificate:
    """An EK certificate whose chain verified.

    Proves: a CA chaining to one of the given trust anchors certified `public_key` (equal to the
    expected EK when one was given) with the TPM description `tpm`, valid at the time checked.
    Does not prove: that the key is in a TPM right now, or that it is the TPM you talk to: caller
    must run credential activation (TPM2_ActivateCredential) against this key (RA-1).
    """

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    public_key: Any
    tpm: TpmInfo
    not_before: datetime
    not_after: datetime


def check_ek_public(area: PublicArea, what: str) -> None:
    """`area` looks like an endorsement key: an RSA or ECC restricted decryption (storage) key, fixedTPM."""
    if not isinstance(area, PublicArea):
        raise InvalidInput(f"{what}: expected a PublicArea, got {type(area).__name__}")
    if area.type not in (ObjectType.RSA, ObjectType.ECC):
        raise InvalidInput(f"{what}: an EK is an RSA or ECC key, not {area.type.name}")
    attrs = area.object_attributes
    need = ObjectAttributes.RESTRICTED | ObjectAttributes.DECRYPT | ObjectAttributes.FIXEDTPM
    if attrs & need != need or attrs & ObjectAttributes.SIGN_ENCRYPT:
        raise InvalidInput(f"{what}: not an EK (want a fixedTPM restricted decryption key, got {attrs!r})")


def check_serial(serial: int) -> int:
    if not isinstance(serial, int) or not 0 < serial <= MAX_SERIAL:
        raise InvalidInput("certificate serial must be an integer in 1..2^159-1")
    return serial


def _check_info(value: str, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TPM_INFO or not value.isprintable():
        raise InvalidInput(f"{what} must be 1..{MAX_TPM_INFO} printable characters, got {value!r}")
    return value


def _tpm_specification(family: str, level: int, revision: int) -> bytes:
    """subjectDirectoryAttributes ::= SEQUENCE OF Attribute { tpmSpecification: SEQUENCE { family
    UTF8String, level INTEGER, revision INTEGER } } (EK Credential Profile 3.2.10)."""
    spec = _der.sequence(_der.utf8_string(family), _der.integer(level), _der.integer(revision))
    attribute = _der.sequence(
        _der.object_identifier(TCG_AT_TPM_SPECIFICATION.dotted_string), _der.set_of(spec)
    )
    return _der.sequence(attribute)


def ek_certificate_builder(
    *,
    ek_public: PublicArea,
    issuer_name: x509.Name,
    authority_key_identifier: x509.AuthorityKeyIdentifier,
    now: datetime,
    not_after: datetime,
    serial: int,
    manufacturer: str,
    model: str,
    version: str,
    spec_revision: int = 164,
) -> x509.CertificateBuilder:
    """An unsigned EK certificate of the TCG shape above, for `ek_public`. Shared by EK and vEK."""
    check_ek_public(ek_public, "EK public area")
    check_now(now)
    if not_after <= now:
        raise InvalidInput("certificate would expire before it starts")
    san = x509.SubjectAlternativeName(
        [
            x509.DirectoryName(
                x509.Name(
                    [
                        x509.RelativeDistinguishedName(
                            [
                                x509.NameAttribute(
                                    TCG_AT_TPM_MANUFACTURER, _check_info(manufacturer, "manufacturer")
                                )
                            ]
                        ),
                        x509.RelativeDistinguishedName(
                            [x509.NameAttribute(TCG_AT_TPM_MODEL, _check_info(model, "model"))]
                        ),
                        x509.RelativeDistinguishedName(
                            [x509.NameAttribute(TCG_AT_TPM_VERSION, _check_info(version, "version"))]
                        ),
                    ]
                )
            )
        ]
    )
    rsa = ek_public.type is ObjectType.RSA
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=rsa,
        data_encipherment=False,
        key_agreement=not rsa,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer_name)
        .public_key(ek_public.public_key())
        .serial_number(check_serial(serial))
        .not_valid_before(now)
        .not_valid_after(not_after)
        .add_extension(san, critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([TCG_KP_EK_CERTIFICATE]), critical=False)
        .add_extension(authority_key_identifier, critical=False)
        .add_extension(
            x509.UnrecognizedExtension(
                SUBJECT_DIRECTORY_ATTRIBUTES, _tpm_specification("2.0", 0, spec_revision)
            ),
            critical=False,
        )
    )


def issue_ek_certificate(
    ca: CertificateAuthority,
    ek_public: PublicArea,
    *,
    now: datetime,
    serial: int,
    manufacturer: str = VROOT_MANUFACTURER,
    model: str = "vroot simulated TM",
    version: str = "id:00000001",
    validity_days: int = 3650,
) -> x509.Certificate:
    """An EK certificate for `ek_public` signed by `ca` (HW-F2), valid from `now` for `validity_days`
    but never past the CA's own expiry. `ek_public` must be an EK (restricted decryption, fixedTPM)."""
    check_now(now)
    if validity_days <= 0:
        raise InvalidInput(f"validity_days must be positive, got {validity_days}")
    not_after = min(now + timedelta(days=validity_days), ca.certificate.not_valid_after_utc)
    ski = extension(ca.certificate, ExtensionOID.SUBJECT_KEY_IDENTIFIER, "CA certificate")
    aki = (
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)
        if ski is not None
        else x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key())
    )
    builder = ek_certificate_builder(
        ek_public=ek_public,
        issuer_name=ca.name,
        authority_key_identifier=aki,
        now=now,
        not_after=not_after,
        serial=serial,
        manufacturer=manufacturer,
        model=model,
        version=version,
    )
    return builder.sign(ca.private_key, hashes.SHA256())


def tpm_info(cert: x509.Certificate) -> TpmInfo:
    """The TPM manufacturer/model/version of the subjectAltName directoryName (None where absent).
    Read from the certificate as it is: verify the certificate before trusting them."""
    found: dict[x509.ObjectIdentifier, str] = {}
    san = extension(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME, f"certificate {describe(cert)}")
    if san is not None:
        for name in san.value.get_values_for_type(x509.DirectoryName):
            for attr in name:
                if attr.oid in (TCG_AT_TPM_MANUFACTURER, TCG_AT_TPM_MODEL, TCG_AT_TPM_VERSION):
                    value = attr.value if isinstance(attr.value, str) else attr.value.decode("latin-1")
                    found.setdefault(attr.oid, value)
    return TpmInfo(
        manufacturer=found.get(TCG_AT_TPM_MANUFACTURER),
        model=found.get(TCG_AT_TPM_MODEL),
        version=found.get(TCG_AT_TPM_VERSION),
    )


def verify_ek_certificate(
    cert: x509.Certificate | bytes,
    *,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    ek_public: PublicArea | None,
    now: datetime,
    required_eku: x509.ObjectIdentifier | None = TCG_KP_EK_CERTIFICATE,
) -> VerifiedEkCertificate:
    """Verify an EK certificate (HW-F2): the chain to `trust_anchors` (see `verify_certificate_chain`:
    signatures, validity at `now`, CA flags, path lengths, `required_eku`), then, when `ek_public` is
    given, that the certified key is that EK.

    `required_eku=None` accepts a leaf without tcg-kp-EKCertificate (an AK certificate, say). Pass
    `ek_public=None` only when the caller compares `public_key` itself. Raises `CertificateInvalid`
    with one reason; `InvalidInput` for bytes that are not a certificate.
    """
    leaf = load_certificate(cert, "EK certificate")
    try:
        chain = verify_certificate_chain(
            leaf, trust_anchors=trust_anchors, intermediates=intermediates, now=now, required_eku=required_eku
        )
    except CertificateInvalid as exc:
        raise CertificateInvalid(f"EK certificate not trusted: {exc}") from None
    if ek_public is not None:
        if not isinstance(ek_public, PublicArea):
            raise InvalidInput(f"ek_public: expected a PublicArea, got {type(ek_public).__name__}")
        check_same_key(leaf, ek_public.public_key(), f"EK certificate {describe(leaf)}")
    try:
        key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateInvalid(f"EK certificate {describe(leaf)}: unreadable public key ({exc})") from None
    return VerifiedEkCertificate(
        certificate=leaf,
        chain=chain,
        public_key=key,
        tpm=tpm_info(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
    )
