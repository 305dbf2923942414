"""The test manufacturer CA: create, save, load (vroot.pki; DESIGN.md section 3, HW-F2)."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID

from vroot.errors import Conflict, InvalidInput, NotFound
from vroot.pki import CertificateAuthority, create_ca, load_ca, save_ca

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def root() -> CertificateAuthority:
    return create_ca(common_name="vroot test manufacturer root", now=NOW)


def ext(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.Extension:
    return cert.extensions.get_extension_for_oid(oid)


def test_root_ca_shape(root: CertificateAuthority) -> None:
    cert = root.certificate
    assert cert.subject == cert.issuer
    assert isinstance(root.private_key, ec.EllipticCurvePrivateKey)
    assert root.private_key.curve.name == "secp256r1"
    bc = ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical and bc.value.ca and bc.value.path_length is None
    ku = ext(cert, ExtensionOID.KEY_USAGE)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    ski = ext(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER).value.digest
    assert ext(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value.key_identifier == ski
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + timedelta(days=3650)
    cert.verify_directly_issued_by(cert)


def test_intermediate_is_signed_by_its_issuer_and_ends_with_it(root: CertificateAuthority) -> None:
    inter = create_ca(
        common_name="vroot EK intermediate", now=NOW, issuer=root, path_length=0, validity_days=99999
    )
    cert = inter.certificate
    assert cert.issuer == root.certificate.subject
    cert.verify_directly_issued_by(root.certificate)
    assert ext(cert, ExtensionOID.BASIC_CONSTRAINTS).value.path_length == 0
    root_ski = ext(root.certificate, ExtensionOID.SUBJECT_KEY_IDENTIFIER).value.digest
    assert ext(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value.key_identifier == root_ski
    assert cert.not_valid_after_utc == root.certificate.not_valid_after_utc  # capped at the issuer's


def test_rsa_key_and_serial_are_taken_as_given() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = create_ca(common_name="rsa root", now=NOW, key=key, serial=4242)
    assert ca.private_key is key and ca.certificate.serial_number == 4242


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"now": datetime(2025, 1, 1)}, "timezone-aware"),
        ({"common_name": ""}, "must not be empty"),
        ({"validity_days": 0}, "positive"),
        ({"path_length": -1}, "path_length"),
    ],
)
def test_create_ca_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"common_name": "x", "now": NOW} | kwargs
    with pytest.raises(InvalidInput, match=match):
        create_ca(**args)


def test_key_and_certificate_must_match(root: CertificateAuthority) -> None:
    with pytest.raises(InvalidInput, match="does not belong"):
        CertificateAuthority(
            certificate=root.certificate, private_key=ec.generate_private_key(ec.SECP256R1())
        )


def test_repr_hides_the_key(root: CertificateAuthority) -> None:
    assert "private" not in repr(root).lower() and "vroot test manufacturer root" in repr(root)


def test_save_and_load_round_trip(root: CertificateAuthority, tmp_path: Path) -> None:
    d = tmp_path / "ca"
    save_ca(root, d)
    assert sorted(p.name for p in d.iterdir()) == ["ca-cert.pem", "ca-key.pem"]  # no temporary files left
    assert stat.S_IMODE((d / "ca-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    loaded = load_ca(d)
    assert loaded.certificate == root.certificate
    assert loaded.private_key.private_numbers() == root.private_key.private_numbers()


def test_save_refuses_to_replace_a_ca(root: CertificateAuthority, tmp_path: Path) -> None:
    save_ca(root, tmp_path)
    other = create_ca(common_name="another", now=NOW)
    with pytest.raises(Conflict, match="already exists"):
        save_ca(other, tmp_path)
    assert load_ca(tmp_path).certificate == root.certificate
    save_ca(other, tmp_path, overwrite=True)
    assert load_ca(tmp_path).certificate == other.certificate
    assert stat.S_IMODE((tmp_path / "ca-key.pem").stat().st_mode) == 0o600


def test_load_missing_directory_or_file_is_not_found(root: CertificateAuthority, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="directory"):
        load_ca(tmp_path / "nope")
    save_ca(root, tmp_path)
    os.unlink(tmp_path / "ca-key.pem")
    with pytest.raises(NotFound, match="ca-key.pem"):
        load_ca(tmp_path)


def test_load_garbage_is_invalid_input(root: CertificateAuthority, tmp_path: Path) -> None:
    save_ca(root, tmp_path)
    (tmp_path / "ca-cert.pem").write_text("not a certificate")
    with pytest.raises(InvalidInput, match="not a PEM certificate"):
        load_ca(tmp_path)
    save_ca(root, tmp_path, overwrite=True)
    (tmp_path / "ca-key.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(InvalidInput, match="not an unencrypted PEM private key"):
        load_ca(tmp_path)


def test_load_mismatched_key_is_invalid_input(root: CertificateAuthority, tmp_path: Path) -> None:
    save_ca(root, tmp_path / "a")
    save_ca(create_ca(common_name="b", now=NOW), tmp_path / "b")
    os.replace(tmp_path / "b" / "ca-key.pem", tmp_path / "a" / "ca-key.pem")
    with pytest.raises(InvalidInput, match="does not belong"):
        load_ca(tmp_path / "a")
