"""Guest (vTM) enrollment (RA-1, RA-7, VMM-F4, VMM-S3): a vEK is accepted only through the vTM-manager
key that the enrolled host's AK certified; one negative test per link, each a `CertificateInvalid`
saying why. Software stand-ins from test_pca_fakes."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from test_pca_fakes import (
    MANAGER_ATTRS,
    NOW,
    SoftTm,
    ak_area,
    certify,
    counter_rng,
    ecc_key,
    manufacturer,
    soft_host,
)

from vroot.errors import CertificateInvalid, InvalidInput, KeyAttributesInvalid
from vroot.host._provision import manager_qualifying_data
from vroot.pca import (
    EnrollmentKind,
    begin_enrollment,
    begin_vtm_enrollment,
    complete_enrollment,
    enrolled_host,
    verify_manager_key,
)
from vroot.pki import issue_vek_certificate, software_signer
from vroot.tpm2 import ObjectAttributes, public_area_from_key

A = ObjectAttributes
CA = manufacturer()
VM = uuid.UUID("6f1c1e58-2b43-4c8e-9d7a-0e1f2a3b4c5d")
OTHER_VM = uuid.UUID("00000000-0000-4000-8000-000000000001")


@pytest.fixture(scope="module")
def host():  # noqa: ANN201
    return soft_host("host-a", CA)


@pytest.fixture(scope="module")
def vtm():  # noqa: ANN201
    return SoftTm("host-a/vm-1")


def begin(soft, vtm, /, **changes):  # noqa: ANN001, ANN003, ANN201
    args = {
        "vek_certificate": soft.vek_certificate(vtm, VM).public_bytes(Encoding.DER),
        "vek_public": vtm.ek.encode(sized=True),
        "vak_public": vtm.ak.encode(sized=True),
        "host": soft.record(),
        "now": NOW,
        "rng": counter_rng(b"vtm"),
    } | changes
    return begin_vtm_enrollment(**args)


def test_ra1_host_then_vtm_enrollment(host, vtm):
    """The whole path: the host enrolls, its record is made from the verified enrollment, then a vTM
    on it enrolls and activates against its vEK."""
    challenge, pending = begin_enrollment(
        ek_certificate=host.ek_certificate, ek_public=host.tm.ek, ak_public=host.tm.ak,
        trust_anchors=[CA.certificate], now=NOW, rng=counter_rng(), host_id=host.host_id,
    )  # fmt: skip
    secret = host.tm.activate(host.tm.ak, challenge.credential_blob, challenge.encrypted_secret)
    record = enrolled_host(
        complete_enrollment(pending, activated_secret=secret, now=NOW),
        manager_public=host.manager.encode(sized=True),
        manager_certify_attest=host.certify_attest,
        manager_certify_signature=host.certify_signature,
    )
    assert record == host.record()
    vchallenge, vpending = begin(host, vtm, host=record, vm_uuid=VM)
    vsecret = vtm.activate(vtm.ak, vchallenge.credential_blob, vchallenge.encrypted_secret)
    verified = complete_enrollment(vpending, activated_secret=vsecret, now=NOW + timedelta(seconds=5))
    assert verified.kind is EnrollmentKind.VTM and verified.virtual
    assert (verified.host_id, verified.vm_uuid) == ("host-a", VM)
    assert verified.ak_name == vtm.ak.name() and verified.ek_name == vtm.ek.name()


def test_vmm_f4_manager_key_is_the_one_the_host_ak_certified(host):
    assert verify_manager_key(host.record()).name() == host.manager.name()


def test_ra7_vek_from_another_host(host, vtm):
    """A vEK certificate made by another host's vTM manager does not verify against this host's record."""
    other = soft_host("host-b", CA, serial=0xB)
    with pytest.raises(CertificateInvalid, match="signature does not verify"):
        begin(host, vtm, vek_certificate=other.vek_certificate(vtm, VM))


def test_ra7_forged_vek_signed_by_a_software_key(host, vtm):
    """A forger with a software key shaped like a manager key, claiming to be this host's manager."""
    forger_key = ecc_key("forger")
    forger = public_area_from_key(forger_key.public_key(), object_attributes=MANAGER_ATTRS, auth_policy=b"\x5a" * 32)
    forged = issue_vek_certificate(
        vek_public=vtm.ek, manager_public=forger, host_id="host-a", vm_uuid=VM, now=NOW,
        serial=5, sign_digest=software_signer(forger_key),
    )  # fmt: skip
    with pytest.raises(CertificateInvalid, match="signature does not verify"):
        begin(host, vtm, vek_certificate=forged)
    # ...and slipping the forger's key into the host record fails at the AK's certification.
    with pytest.raises(CertificateInvalid, match="not certified by the enrolled AK.*certified name"):
        begin(host, vtm, vek_certificate=forged, host=host.record(manager_public=forger.encode(sized=True)))


def test_ra7_manager_key_not_certified_by_the_host_ak(host, vtm):
    """The manager key's certification was signed by another AK (another host's, or a software key)."""
    other = soft_host("host-b", CA, serial=0xB)
    attest, sig = certify(other.tm.ak_key, other.tm.ak, host.manager, manager_qualifying_data("host-a"))
    record = host.record(manager_certify_attest=attest, manager_certify_signature=sig)
    with pytest.raises(CertificateInvalid, match="not certified by the enrolled AK.*does not verify"):
        begin(host, vtm, host=record)


def test_ra7_manager_certification_for_another_host_id(host, vtm):
    attest, sig = certify(host.tm.ak_key, host.tm.ak, host.manager, manager_qualifying_data("host-z"))
    with pytest.raises(CertificateInvalid, match="not certified by the enrolled AK.*qualifying data"):
        begin(host, vtm, host=host.record(manager_certify_attest=attest, manager_certify_signature=sig))


def test_ra7_host_record_with_another_ak(host, vtm):
    other = SoftTm("intruder")
    with pytest.raises(CertificateInvalid, match="not certified by the enrolled AK"):
        begin(host, vtm, host=host.record(ak_public=other.ak.encode(sized=True)))


def test_ra7_certifying_key_that_is_not_an_ak(host, vtm):
    """A certification by an unrestricted key proves nothing (it could sign any TPMS_ATTEST)."""
    loose = ak_area(host.tm.ak_key, object_attributes=A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.SIGN_ENCRYPT)
    with pytest.raises(CertificateInvalid, match="not certified by the enrolled AK.*restricted"):
        begin(host, vtm, host=host.record(ak_public=loose.encode(sized=True)))


def test_vek_certificate_for_another_vm(host, vtm):
    with pytest.raises(CertificateInvalid, match="for VM"):
        begin(host, vtm, vm_uuid=OTHER_VM)


def test_vek_key_mismatch(host, vtm):
    with pytest.raises(CertificateInvalid, match="another public key"):
        begin(host, vtm, vek_public=SoftTm("another vTM").ek)


def test_vek_certificate_expired(host, vtm):
    with pytest.raises(CertificateInvalid, match="expired"):
        begin(host, vtm, now=NOW + timedelta(days=31))


def test_vmm_s3_host_ek_certificate_is_not_a_vek(host, vtm):
    """A hardware EK certificate (manufacturer-signed, unmarked) does not pass as a vEK certificate."""
    with pytest.raises(CertificateInvalid, match="signature does not verify"):
        begin(host, vtm, vek_certificate=host.ek_certificate, vek_public=host.tm.ek)


def test_vak_that_is_not_restricted(host, vtm):
    loose = ak_area(vtm.ak_key, object_attributes=A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.SIGN_ENCRYPT)
    with pytest.raises(KeyAttributesInvalid, match="vAK: not a restricted signing key"):
        begin(host, vtm, vak_public=loose)


def test_vak_not_fixedtpm(host, vtm):
    movable = ak_area(vtm.ak_key, object_attributes=A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.RESTRICTED | A.SIGN_ENCRYPT)
    with pytest.raises(KeyAttributesInvalid, match="FIXEDTPM"):
        begin(host, vtm, vak_public=movable)


def test_vtm_activation_with_the_wrong_vak(host, vtm):
    """A vAK swapped after begin: the vTM will not open the blob for it."""
    challenge, _ = begin(host, vtm)
    swapped = ak_area(ecc_key("vak swapped"))
    vtm2 = SoftTm("host-a/vm-1")
    vtm2.loaded = {swapped.name()}
    with pytest.raises(ValueError, match="TPM_RC_INTEGRITY"):
        vtm2.activate(swapped, challenge.credential_blob, challenge.encrypted_secret)


def test_enrolled_host_checks_the_certification(host):
    challenge, pending = begin_enrollment(
        ek_certificate=host.ek_certificate, ek_public=host.tm.ek, ak_public=host.tm.ak,
        trust_anchors=[CA.certificate], now=NOW, rng=counter_rng(),
    )  # fmt: skip
    secret = host.tm.activate(host.tm.ak, challenge.credential_blob, challenge.encrypted_secret)
    enrollment = complete_enrollment(pending, activated_secret=secret, now=NOW)
    args = {
        "manager_public": host.manager.encode(sized=True),
        "manager_certify_attest": host.certify_attest,
        "manager_certify_signature": host.certify_signature,
    }
    with pytest.raises(InvalidInput, match="needs a host id"):
        enrolled_host(enrollment, **args)
    with pytest.raises(CertificateInvalid, match="qualifying data"):
        enrolled_host(enrollment, host_id="host-b", **args)
    bad_sig = host.certify_signature[:-1] + bytes([host.certify_signature[-1] ^ 1])
    with pytest.raises(CertificateInvalid, match="not certified"):
        enrolled_host(enrollment, host_id="host-a", **(args | {"manager_certify_signature": bad_sig}))
    assert enrolled_host(enrollment, host_id="host-a", **args).host_id == "host-a"
    with pytest.raises(InvalidInput, match="VerifiedEnrollment of a host"):
        enrolled_host(dataclasses.replace(enrollment, kind=EnrollmentKind.VTM), host_id="host-a", **args)


def test_enrolled_host_record_validates_its_fields(host):
    with pytest.raises(InvalidInput, match="host id"):
        host.record(host_id="no spaces allowed")
    with pytest.raises(InvalidInput, match="bytes"):
        host.record(manager_public="not bytes")
    with pytest.raises(InvalidInput, match="EnrolledHost"):
        verify_manager_key({"host_id": "host-a"})
