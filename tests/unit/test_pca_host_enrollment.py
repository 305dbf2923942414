"""Host enrollment by credential activation (RA-1, HW-F2): `begin_enrollment` / `complete_enrollment`,
one negative test per check. The TM is a software stand-in (test_pca_fakes.SoftTm)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from test_pca_fakes import NOW, SoftTm, ak_area, counter_rng, ecc_key, manufacturer, soft_host

from vroot.errors import (
    ActivationFailed,
    CertificateInvalid,
    InvalidInput,
    KeyAttributesInvalid,
    NonceExpired,
    VerificationError,
)
from vroot.pca import (
    DEFAULT_ENROLLMENT_TTL,
    SECRET_SIZE,
    EnrollmentKind,
    PendingEnrollment,
    begin_enrollment,
    complete_enrollment,
)
from vroot.pki import VROOT_VIRTUAL_TPM_POLICY, create_ca, ek_certificate_builder, issue_ek_certificate
from vroot.tpm2 import EccCurve, HashAlg, ObjectAttributes, Scheme, TpmAlg, public_area_from_key

A = ObjectAttributes
CA = manufacturer()


@pytest.fixture
def host():  # noqa: ANN201
    return soft_host("host-a", CA)


def begin(host, **changes):  # noqa: ANN001, ANN003, ANN201
    args = {
        "ek_certificate": host.ek_certificate.public_bytes(Encoding.DER),
        "ek_public": host.tm.ek.encode(sized=True),
        "ak_public": host.tm.ak.encode(sized=True),
        "trust_anchors": [CA.certificate],
        "now": NOW,
        "rng": counter_rng(),
    } | changes
    return begin_enrollment(**args)


# -- it works ---------------------------------------------------------------------------------------


def test_ra1_host_enrollment_completes(host):
    challenge, pending = begin(host, host_id="host-a")
    secret = host.tm.activate(host.tm.ak, challenge.credential_blob, challenge.encrypted_secret)
    assert len(secret) == SECRET_SIZE
    verified = complete_enrollment(pending, activated_secret=secret, now=NOW + timedelta(seconds=30))
    assert verified.kind is EnrollmentKind.HOST and not verified.virtual
    assert verified.ak == host.tm.ak and verified.ak_name == host.tm.ak.name()
    assert verified.ek_name == host.tm.ek.name() and verified.host_id == "host-a" and verified.vm_uuid is None
    assert verified.ek_certificate == host.ek_certificate.public_bytes(Encoding.DER)
    assert verified.enrolled_at == NOW + timedelta(seconds=30)
    assert challenge.enrollment_id == pending.enrollment_id == verified.enrollment_id
    assert challenge.expires_at == pending.expires_at == NOW + DEFAULT_ENROLLMENT_TTL


def test_ra1_pending_enrollment_never_holds_the_secret(host):
    challenge, pending = begin(host)
    secret = host.tm.activate(host.tm.ak, challenge.credential_blob, challenge.encrypted_secret)
    stored = b"".join(
        v if isinstance(v, bytes) else str(v).encode() for v in dataclasses.astuple(pending)
    ) + repr(pending).encode()
    assert secret not in stored and secret.hex().encode() not in stored
    assert "secret_digest" not in repr(pending)


def test_ra1_enrollment_through_an_intermediate_ca(host):
    root = create_ca(common_name="maker root", now=NOW - timedelta(days=10), key=ecc_key("root"))
    inter = create_ca(common_name="maker EK CA 2", now=NOW - timedelta(days=9), issuer=root, key=ecc_key("i"))
    cert = issue_ek_certificate(inter, host.tm.ek, now=NOW - timedelta(days=1), serial=9)
    _, pending = begin(host, ek_certificate=cert, trust_anchors=[root.certificate], intermediates=[inter.certificate])
    assert pending.ek_name == host.tm.ek.name()
    with pytest.raises(CertificateInvalid, match="no issuer"):
        begin(host, ek_certificate=cert, trust_anchors=[root.certificate])


def test_ra1_rsa_ak_is_accepted(host):
    key = rsa.generate_private_key(65537, 2048)
    ak = public_area_from_key(key.public_key())
    host.tm.loaded.add(ak.name())
    challenge, pending = begin(host, ak_public=ak)
    secret = host.tm.activate(ak, challenge.credential_blob, challenge.encrypted_secret)
    assert complete_enrollment(pending, activated_secret=secret, now=NOW).ak == ak


def test_each_enrollment_draws_a_fresh_secret_and_id(host):
    c1, p1 = begin(host, rng=counter_rng(b"one"))
    c2, p2 = begin(host, rng=counter_rng(b"two"))
    assert c1.enrollment_id != c2.enrollment_id and p1.secret_digest != p2.secret_digest
    assert c1.credential_blob != c2.credential_blob


# -- EK certificate ------------------------------------------------------------------------------------


def test_bad_ek_chain_another_manufacturer(host):
    other = manufacturer("someone else")
    with pytest.raises(CertificateInvalid, match="no issuer"):
        begin(host, trust_anchors=[other.certificate])


def test_bad_ek_chain_same_name_other_key(host):
    impostor = create_ca(common_name="maker TPM manufacturer CA", now=NOW - timedelta(days=30), key=ecc_key("x"))
    forged = issue_ek_certificate(impostor, host.tm.ek, now=NOW - timedelta(days=1), serial=3)
    with pytest.raises(CertificateInvalid, match="signature does not verify|no issuer"):
        begin(host, ek_certificate=forged)


def test_bad_ek_chain_expired(host):
    with pytest.raises(CertificateInvalid, match="expired"):
        begin(host, now=NOW + timedelta(days=3651))


def test_bad_ek_certificate_bytes(host):
    with pytest.raises(InvalidInput, match="not a DER X.509 certificate"):
        begin(host, ek_certificate=b"\x30\x03junk")


def test_ek_key_mismatch(host):
    other = SoftTm("other host")
    with pytest.raises(CertificateInvalid, match="another public key"):
        begin(host, ek_public=other.ek)


def test_ek_area_that_is_not_an_ek_is_refused(host):
    """Same key as certified, but a signing key's attributes: not something MakeCredential may target."""
    fake = dataclasses.replace(host.tm.ek, object_attributes=A.FIXEDTPM | A.SIGN_ENCRYPT)
    with pytest.raises(KeyAttributesInvalid, match="not an EK"):
        begin(host, ek_public=fake)


def test_vmm_s3_vtm_certificate_cannot_enroll_a_host(host):
    """A certificate carrying vroot's virtual mark is refused as a host EK certificate, even when a
    manufacturer CA signed it."""
    ski = CA.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = ek_certificate_builder(
        ek_public=host.tm.ek, issuer_name=CA.name,
        authority_key_identifier=x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
        now=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30), serial=11,
        manufacturer="id:56524F54", model="m", version="v",
    ).add_extension(x509.CertificatePolicies([x509.PolicyInformation(VROOT_VIRTUAL_TPM_POLICY, None)]), False)  # fmt: skip
    marked = builder.sign(CA.private_key, hashes.SHA256())
    with pytest.raises(CertificateInvalid, match="vTM"):
        begin(host, ek_certificate=marked)


# -- AK attributes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"object_attributes": A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.SIGN_ENCRYPT}, "restricted"),
        ({"object_attributes": A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.RESTRICTED | A.SIGN_ENCRYPT}, "FIXEDTPM"),
        ({"object_attributes": A.FIXEDTPM | A.SENSITIVEDATAORIGIN | A.RESTRICTED | A.SIGN_ENCRYPT}, "FIXEDPARENT"),
        ({"object_attributes": A.FIXEDTPM | A.FIXEDPARENT | A.RESTRICTED | A.SIGN_ENCRYPT}, "SENSITIVEDATAORIGIN"),
        ({"object_attributes": A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.RESTRICTED | A.DECRYPT | A.SIGN_ENCRYPT}, "restricted"),  # noqa: E501
        ({"scheme": None}, "scheme NULL"),
        ({"scheme": Scheme(TpmAlg.ECDAA, HashAlg.SHA256)}, "scheme ECDAA"),
        ({"scheme": Scheme(TpmAlg.ECDSA, HashAlg.SHA1)}, "hash sha1"),
        ({"name_alg": HashAlg.SHA1}, "nameAlg sha1"),
        ({"curve": EccCurve.BN_P256}, "curve"),
    ],
)
def test_ak_attributes_are_checked(host, changes, match):
    with pytest.raises(KeyAttributesInvalid, match=match):
        begin(host, ak_public=ak_area(host.tm.ak_key, **changes))


def test_small_rsa_ak_is_refused(host):
    ak = public_area_from_key(rsa.generate_private_key(65537, 1024).public_key())
    with pytest.raises(KeyAttributesInvalid, match="1024 bits"):
        begin(host, ak_public=ak)


def test_ak_bytes_that_do_not_decode(host):
    with pytest.raises(InvalidInput, match="AK public area"):
        begin(host, ak_public=b"\x00\x01\x02")


# -- activation -----------------------------------------------------------------------------------------


def test_wrong_secret_fails_activation(host):
    _, pending = begin(host)
    with pytest.raises(ActivationFailed, match="not the one wrapped") as info:
        complete_enrollment(pending, activated_secret=bytes(SECRET_SIZE), now=NOW)
    assert isinstance(info.value, VerificationError)


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_secret_of_the_wrong_length_fails_activation(host, length):
    challenge, pending = begin(host)
    secret = host.tm.activate(host.tm.ak, challenge.credential_blob, challenge.encrypted_secret)
    with pytest.raises(ActivationFailed):
        complete_enrollment(pending, activated_secret=(secret * 3)[:length], now=NOW)


def test_expired_enrollment(host):
    challenge, pending = begin(host, ttl=timedelta(minutes=2))
    secret = host.tm.activate(host.tm.ak, challenge.credential_blob, challenge.encrypted_secret)
    assert complete_enrollment(pending, activated_secret=secret, now=NOW + timedelta(minutes=2))
    with pytest.raises(NonceExpired, match="expired at"):
        complete_enrollment(pending, activated_secret=secret, now=NOW + timedelta(minutes=2, seconds=1))


def test_ra1_ak_swapped_between_begin_and_complete(host):
    """The agent began with one AK but holds another: the TM refuses to open the blob for it, and no
    other answer completes the enrollment."""
    challenge, pending = begin(host)
    swapped = ak_area(ecc_key("swapped"))
    host.tm.loaded = {swapped.name()}
    with pytest.raises(ValueError, match="TPM_RC_HANDLE|TPM_RC_INTEGRITY"):
        host.tm.activate(host.tm.ak, challenge.credential_blob, challenge.encrypted_secret)
    with pytest.raises(ValueError, match="TPM_RC_INTEGRITY"):
        host.tm.activate(swapped, challenge.credential_blob, challenge.encrypted_secret)
    with pytest.raises(ActivationFailed):
        complete_enrollment(pending, activated_secret=counter_rng(b"guess")(SECRET_SIZE), now=NOW)


def test_ra1_pending_record_with_a_swapped_ak_does_not_complete(host):
    """Editing the stored pending enrollment to name another AK breaks the digest it was kept with,
    even with the right secret."""
    challenge, pending = begin(host)
    secret = host.tm.activate(host.tm.ak, challenge.credential_blob, challenge.encrypted_secret)
    swapped = ak_area(ecc_key("swapped"))
    edited = dataclasses.replace(pending, ak_public=swapped.encode(sized=True), ak_name=swapped.name())
    with pytest.raises(ActivationFailed):
        complete_enrollment(edited, activated_secret=secret, now=NOW)
    assert complete_enrollment(pending, activated_secret=secret, now=NOW).ak_name == host.tm.ak.name()


def test_activation_error_does_not_carry_the_secret(host):
    challenge, pending = begin(host)
    secret = host.tm.activate(host.tm.ak, challenge.credential_blob, challenge.encrypted_secret)
    wrong = bytes([secret[0] ^ 1]) + secret[1:]
    with pytest.raises(ActivationFailed) as info:
        complete_enrollment(pending, activated_secret=wrong, now=NOW)
    assert secret.hex() not in str(info.value) and wrong.hex() not in str(info.value)


# -- inputs ---------------------------------------------------------------------------------------------


def test_pending_enrollment_invariants(host):
    _, pending = begin(host)
    with pytest.raises(InvalidInput, match="ak_name"):
        dataclasses.replace(pending, ak_name=host.tm.ek.name())
    with pytest.raises(InvalidInput, match="ek_name"):
        dataclasses.replace(pending, ek_name=host.tm.ak.name())
    with pytest.raises(InvalidInput, match="expires_at"):
        dataclasses.replace(pending, expires_at=pending.issued_at)
    with pytest.raises(InvalidInput, match="vm_uuid"):
        dataclasses.replace(pending, kind=EnrollmentKind.VTM, host_id="host-a")
    assert isinstance(pending, PendingEnrollment) and dataclasses.replace(pending, kind="host").kind is EnrollmentKind.HOST


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"rng": lambda n: b"short"}, "rng"),
        ({"ttl": timedelta(0)}, "ttl"),
        ({"ttl": timedelta(days=2)}, "ttl"),
        ({"now": NOW.replace(tzinfo=None)}, "timezone-aware"),
        ({"host_id": "bad host id"}, "host id"),
    ],
)
def test_bad_arguments_are_invalid_input(host, changes, match):
    with pytest.raises(InvalidInput, match=match):
        begin(host, **changes)


def test_complete_needs_bytes_and_a_pending_enrollment(host):
    _, pending = begin(host)
    with pytest.raises(InvalidInput, match="bytes"):
        complete_enrollment(pending, activated_secret="00" * 32, now=NOW)
    with pytest.raises(InvalidInput, match="PendingEnrollment"):
        complete_enrollment({"enrollment_id": "x"}, activated_secret=bytes(32), now=NOW)


def test_an_ecc_p384_ak_is_accepted(host):
    key = ec.generate_private_key(ec.SECP384R1())
    ak = public_area_from_key(key.public_key(), scheme=Scheme(TpmAlg.ECDSA, HashAlg.SHA384))
    _, pending = begin(host, ak_public=ak)
    assert pending.ak_name == ak.name()
