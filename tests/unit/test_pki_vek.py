"""vEK certificates (VMM-F4, VMM-S3, RA-7): signed by the vTM-manager key, in the TCG EK shape, marked
virtual; one negative test per step of `verify_vek_certificate`. The manager key is a software key
answering as TPM2_Sign would (tests/tpm/test_pki_tm_signing.py does it in a swtpm)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID

from vroot.errors import CertificateInvalid, InvalidInput
from vroot.pki import (
    TCG_KP_EK_CERTIFICATE,
    VROOT_VIRTUAL_TPM_POLICY,
    VROOT_VTM_IDENTITY,
    VekIdentity,
    create_ca,
    encode_vtm_identity,
    is_virtual_tm_certificate,
    issue_ek_certificate,
    issue_vek_certificate,
    manager_issuer_name,
    software_signer,
    tm_signed_certificate,
    vek_identity,
    verify_vek_certificate,
)
from vroot.tpm2 import ObjectAttributes, PublicArea, SymDef, TpmAlg, public_area_from_key

NOW = datetime(2025, 3, 1, tzinfo=UTC)
LATER = NOW + timedelta(days=1)
HOST = "host-7.example"
VM = uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
A = ObjectAttributes
EK_ATTRS = A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.ADMINWITHPOLICY | A.RESTRICTED | A.DECRYPT
MANAGER_ATTRS = (
    A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.SIGN_ENCRYPT
)  # policy only, no userWithAuth


def vek_area(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> PublicArea:
    return public_area_from_key(
        key.public_key(),
        object_attributes=EK_ATTRS,
        scheme=None,
        symmetric=SymDef(TpmAlg.AES, 128, TpmAlg.CFB),
    )


@pytest.fixture(scope="module")
def manager_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def manager(manager_key: ec.EllipticCurvePrivateKey) -> PublicArea:
    return public_area_from_key(
        manager_key.public_key(), object_attributes=MANAGER_ATTRS, auth_policy=b"\x5a" * 32
    )


@pytest.fixture(scope="module")
def vek() -> PublicArea:
    return vek_area(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def cert(vek: PublicArea, manager: PublicArea, manager_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return issue_vek_certificate(
        vek_public=vek,
        manager_public=manager,
        host_id=HOST,
        vm_uuid=VM,
        now=NOW,
        serial=0xABCDEF,
        sign_digest=software_signer(manager_key),
        validity_days=30,
    )


def craft(
    manager: PublicArea,
    manager_key: ec.EllipticCurvePrivateKey,
    vek: PublicArea,
    *,
    issuer: x509.Name | None = None,
    aki_key: ec.EllipticCurvePublicKey | None = None,
    policy: bool = True,
    identity: bytes | None | str = "default",
    eku: bool = True,
    ca: bool = False,
    extra: tuple[tuple[x509.ExtensionType, bool], ...] = (),
) -> x509.Certificate:
    """A vEK-like certificate, properly signed by the manager key, with one thing changed."""
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer or manager_issuer_name(HOST))
        .public_key(vek.public_key())
        .serial_number(5)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(aki_key or manager.public_key()),
            critical=False,
        )
    )
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([TCG_KP_EK_CERTIFICATE]), critical=False)
    if policy:
        b = b.add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(VROOT_VIRTUAL_TPM_POLICY, None)]), False
        )
    if identity == "default":
        identity = encode_vtm_identity(VekIdentity(host_id=HOST, vm_uuid=VM, manager_name=manager.name()))
    if identity is not None:
        b = b.add_extension(x509.UnrecognizedExtension(VROOT_VTM_IDENTITY, identity), critical=False)
    for value, critical in extra:
        b = b.add_extension(value, critical=critical)
    return tm_signed_certificate(b, issuer_public=manager, sign_digest=software_signer(manager_key))


# -- what a good one is ------------------------------------------------------------------------------


def test_vek_certificate_verifies_and_names_host_vm_and_manager(
    cert: x509.Certificate, manager: PublicArea, vek: PublicArea
) -> None:
    """VMM-F4: the vEK certificate ties the vEK to the VM, the host and the TM-resident manager key."""
    v = verify_vek_certificate(
        cert, manager_public=manager, now=LATER, vek_public=vek, host_id=HOST, vm_uuid=VM
    )
    assert (v.host_id, v.vm_uuid, v.manager_name) == (HOST, VM, manager.name())
    assert v.vek_public_key.public_numbers() == vek.public_key().public_numbers()
    assert (v.not_before, v.not_after) == (NOW, NOW + timedelta(days=30))
    assert v.certificate == cert
    der = cert.public_bytes(serialization.Encoding.DER)
    assert verify_vek_certificate(der, manager_public=manager, now=LATER).vm_uuid == VM


def test_vek_certificate_has_the_ek_shape_and_the_virtual_marks(
    cert: x509.Certificate, manager: PublicArea
) -> None:
    """VMM-S3: the vTM is told apart from a hardware TM by policy, extension and SAN model."""
    assert cert.subject == x509.Name([])
    assert cert.issuer == manager_issuer_name(HOST)
    assert cert.issuer.rfc4514_string() == f"2.5.4.5={HOST},CN=vroot vTM manager,O=vroot"
    exts = cert.extensions
    assert exts.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).critical
    (dirname,) = exts.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DirectoryName
    )
    assert [a.value for a in dirname] == ["id:56524F54", "vroot vTM (virtual TPM)", "id:00000001"]
    assert list(exts.get_extension_for_class(x509.ExtendedKeyUsage).value) == [TCG_KP_EK_CERTIFICATE]
    assert exts.get_extension_for_class(x509.KeyUsage).value.key_agreement
    aki = exts.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki == x509.SubjectKeyIdentifier.from_public_key(manager.public_key()).digest
    (policy,) = exts.get_extension_for_class(x509.CertificatePolicies).value
    assert policy.policy_identifier == VROOT_VIRTUAL_TPM_POLICY
    identity = exts.get_extension_for_oid(VROOT_VTM_IDENTITY)
    assert not identity.critical
    assert is_virtual_tm_certificate(cert)
    assert vek_identity(cert) == VekIdentity(host_id=HOST, vm_uuid=VM, manager_name=manager.name())


def test_rsa_vek_and_rsa_manager(vek: PublicArea) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    mgr = public_area_from_key(key.public_key(), object_attributes=MANAGER_ATTRS)
    rsa_vek = vek_area(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    c = issue_vek_certificate(
        vek_public=rsa_vek, manager_public=mgr, host_id="h", vm_uuid=VM, now=NOW, serial=1,
        sign_digest=software_signer(key),
    )  # fmt: skip
    assert c.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    assert verify_vek_certificate(c, manager_public=mgr, now=LATER, vek_public=rsa_vek).host_id == "h"


def test_hardware_ek_certificate_is_not_virtual(vek: PublicArea) -> None:
    ca = create_ca(common_name="manufacturer", now=NOW)
    hw = issue_ek_certificate(ca, vek, now=NOW, serial=3)
    assert not is_virtual_tm_certificate(hw)
    assert vek_identity(hw) is None


# -- one negative test per step ----------------------------------------------------------------------


def test_manager_key_that_is_not_fixed_tpm_fails(
    cert: x509.Certificate, manager_key: ec.EllipticCurvePrivateKey
) -> None:
    loose = public_area_from_key(manager_key.public_key(), object_attributes=A.SIGN_ENCRYPT | A.USERWITHAUTH)
    with pytest.raises(CertificateInvalid, match="fixedTPM unrestricted signing key"):
        verify_vek_certificate(cert, manager_public=loose, now=LATER)


def test_signed_by_another_key_fails(cert: x509.Certificate) -> None:
    other = public_area_from_key(
        ec.generate_private_key(ec.SECP256R1()).public_key(), object_attributes=MANAGER_ATTRS
    )
    with pytest.raises(CertificateInvalid, match="signature does not verify"):
        verify_vek_certificate(cert, manager_public=other, now=LATER)


def test_flipped_signature_byte_fails(cert: x509.Certificate, manager: PublicArea) -> None:
    der = bytearray(cert.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x40
    with pytest.raises(CertificateInvalid, match="signature does not verify"):
        verify_vek_certificate(bytes(der), manager_public=manager, now=LATER)


def test_wrong_authority_key_identifier_fails(manager: PublicArea, manager_key, vek: PublicArea) -> None:  # noqa: ANN001
    c = craft(manager, manager_key, vek, aki_key=ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(CertificateInvalid, match="authorityKeyIdentifier is not the vTM-manager key's"):
        verify_vek_certificate(c, manager_public=manager, now=LATER)


def test_unknown_critical_extension_fails(manager: PublicArea, manager_key, vek: PublicArea) -> None:  # noqa: ANN001
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.7"), b"\x05\x00")
    c = craft(manager, manager_key, vek, extra=((odd, True),))
    with pytest.raises(CertificateInvalid, match="unknown critical extension"):
        verify_vek_certificate(c, manager_public=manager, now=LATER)


def test_expired_and_not_yet_valid_fail(cert: x509.Certificate, manager: PublicArea) -> None:
    with pytest.raises(CertificateInvalid, match="expired"):
        verify_vek_certificate(cert, manager_public=manager, now=NOW + timedelta(days=31))
    with pytest.raises(CertificateInvalid, match="not yet valid"):
        verify_vek_certificate(cert, manager_public=manager, now=NOW - timedelta(minutes=1))


def test_without_the_virtual_policy_fails(manager: PublicArea, manager_key, vek: PublicArea) -> None:  # noqa: ANN001
    """RA-7, forged vTM: a certificate that does not say 'virtual' is not a vEK certificate."""
    c = craft(manager, manager_key, vek, policy=False)
    assert is_virtual_tm_certificate(c)  # the classifier sees the other mark
    with pytest.raises(CertificateInvalid, match="not marked virtual"):
        verify_vek_certificate(c, manager_public=manager, now=LATER)


def test_without_the_identity_extension_fails(manager: PublicArea, manager_key, vek: PublicArea) -> None:  # noqa: ANN001
    c = craft(manager, manager_key, vek, identity=None)
    assert is_virtual_tm_certificate(c) and vek_identity(c) is None
    with pytest.raises(CertificateInvalid, match="no vroot vTM identity extension"):
        verify_vek_certificate(c, manager_public=manager, now=LATER)


def test_without_any_virtual_mark_fails(manager: PublicArea, manager_key, vek: PublicArea) -> None:  # noqa: ANN001
    c = craft(manager, manager_key, vek, policy=False, identity=None)
    assert not is_virtual_tm_certificate(c)
    with pytest.raises(CertificateInvalid, match="not marked virtual"):
        verify_vek_certificate(c, manager_public=manager, now=LATER)


def test_malformed_identity_extension_fails(manager: PublicArea, manager_key, vek: PublicArea) -> None:  # noqa: ANN001
    c = craft(manager, manager_key, vek, identity=b"\x30\x03\x0c\x01h")
    with pytest.raises(CertificateInvalid, match="malformed vTM identity extension"):
        verify_vek_certificate(c, manager_public=manager, now=LATER)
    with pytest.raises(InvalidInput, match="vTM identity"):
        vek_identity(c)


def test_identity_naming_another_manager_key_fails(manager: PublicArea, manager_key, vek: PublicArea) -> None:  # noqa: ANN001
    other_name = b"\x00\x0b" + bytes(32)
    c = craft(
        manager, manager_key, vek,
        identity=encode_vtm_identity(VekIdentity(host_id=HOST, vm_uuid=VM, manager_name=other_name)),
    )  # fmt: skip
    with pytest.raises(CertificateInvalid, match="names vTM-manager key 000b0000"):
        verify_vek_certificate(c, manager_public=manager, now=LATER)


def test_issuer_of_another_host_fails(manager: PublicArea, manager_key, vek: PublicArea) -> None:  # noqa: ANN001
    c = craft(manager, manager_key, vek, issuer=manager_issuer_name("host-8"))
    with pytest.raises(CertificateInvalid, match="is not the vTM manager of its host"):
        verify_vek_certificate(c, manager_public=manager, now=LATER)


def test_without_ek_usage_fails(manager: PublicArea, manager_key, vek: PublicArea) -> None:  # noqa: ANN001
    c = craft(manager, manager_key, vek, eku=False)
    with pytest.raises(CertificateInvalid, match="lacks extendedKeyUsage tcg-kp-EKCertificate"):
        verify_vek_certificate(c, manager_public=manager, now=LATER)


def test_ca_flag_fails(manager: PublicArea, manager_key, vek: PublicArea) -> None:  # noqa: ANN001
    c = craft(manager, manager_key, vek, ca=True)
    with pytest.raises(CertificateInvalid, match="is a CA certificate"):
        verify_vek_certificate(c, manager_public=manager, now=LATER)


def test_another_host_fails(cert: x509.Certificate, manager: PublicArea) -> None:
    with pytest.raises(CertificateInvalid, match="for host 'host-7.example', not 'host-8'"):
        verify_vek_certificate(cert, manager_public=manager, now=LATER, host_id="host-8")


def test_another_vm_fails(cert: x509.Certificate, manager: PublicArea) -> None:
    """VMM-F2: a vTM is bound to its VM for life; its certificate says which."""
    other = uuid.UUID(int=VM.int ^ 1)
    with pytest.raises(CertificateInvalid, match=f"for VM {VM}, not {other}"):
        verify_vek_certificate(cert, manager_public=manager, now=LATER, vm_uuid=other)


def test_another_vek_fails(cert: x509.Certificate, manager: PublicArea) -> None:
    with pytest.raises(CertificateInvalid, match="certifies another public key"):
        verify_vek_certificate(
            cert,
            manager_public=manager,
            now=LATER,
            vek_public=vek_area(ec.generate_private_key(ec.SECP256R1())),
        )


def test_hardware_ek_certificate_is_no_vek_certificate(vek: PublicArea, manager: PublicArea) -> None:
    hw = issue_ek_certificate(create_ca(common_name="manufacturer", now=NOW), vek, now=NOW, serial=3)
    with pytest.raises(CertificateInvalid, match="signature does not verify"):
        verify_vek_certificate(hw, manager_public=manager, now=LATER)


# -- issuing: bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"host_id": "has space"}, "host id"),
        ({"host_id": "under_score"}, "host id"),
        ({"host_id": "x" * 65}, "host id"),
        ({"vm_uuid": str(VM)}, "uuid.UUID"),
        ({"now": datetime(2025, 1, 1)}, "timezone-aware"),
        ({"validity_days": -1}, "positive"),
        ({"serial": -5}, "serial"),
    ],
)
def test_issue_rejects_bad_arguments(
    manager: PublicArea, manager_key: ec.EllipticCurvePrivateKey, vek: PublicArea, change: dict, match: str
) -> None:
    args = {
        "vek_public": vek, "manager_public": manager, "host_id": HOST, "vm_uuid": VM, "now": NOW, "serial": 9,
        "sign_digest": software_signer(manager_key),
    } | change  # fmt: skip
    with pytest.raises(InvalidInput, match=match):
        issue_vek_certificate(**args)


def test_issue_refuses_keys_of_the_wrong_kind(manager: PublicArea, manager_key, vek: PublicArea) -> None:  # noqa: ANN001
    with pytest.raises(InvalidInput, match="not an EK"):
        issue_vek_certificate(
            vek_public=manager, manager_public=manager, host_id=HOST, vm_uuid=VM, now=NOW, serial=9,
            sign_digest=software_signer(manager_key),
        )  # fmt: skip
    with pytest.raises(InvalidInput, match="fixedTPM unrestricted signing key"):
        issue_vek_certificate(
            vek_public=vek, manager_public=vek, host_id=HOST, vm_uuid=VM, now=NOW, serial=9,
            sign_digest=software_signer(manager_key),
        )  # fmt: skip


def test_issue_fails_closed_when_the_tm_signs_with_another_key(manager: PublicArea, vek: PublicArea) -> None:
    with pytest.raises(CertificateInvalid, match="signature does not verify"):
        issue_vek_certificate(
            vek_public=vek, manager_public=manager, host_id=HOST, vm_uuid=VM, now=NOW, serial=9,
            sign_digest=software_signer(ec.generate_private_key(ec.SECP256R1())),
        )  # fmt: skip


def test_classifier_and_identity_take_der_and_refuse_garbage(cert: x509.Certificate) -> None:
    der = cert.public_bytes(serialization.Encoding.DER)
    assert is_virtual_tm_certificate(der) and vek_identity(der).vm_uuid == VM
    with pytest.raises(InvalidInput, match="not a DER X.509 certificate"):
        is_virtual_tm_certificate(b"\x30\x00")
    with pytest.raises(InvalidInput, match="not a DER X.509 certificate"):
        verify_vek_certificate(b"junk", manager_public=None, now=LATER)  # type: ignore[arg-type]
