"""EK certificates from the test manufacturer CA and their chain validation (vroot.pki; HW-F2, RA-1).

One negative test per step of `verify_certificate_chain` / `verify_ek_certificate`."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from vroot.errors import CertificateInvalid, InvalidInput
from vroot.pki import (
    TCG_AT_TPM_MANUFACTURER,
    TCG_KP_EK_CERTIFICATE,
    CertificateAuthority,
    create_ca,
    is_virtual_tm_certificate,
    issue_ek_certificate,
    save_ca,
    verify_certificate_chain,
    verify_ek_certificate,
)
from vroot.pki._oids import SUBJECT_DIRECTORY_ATTRIBUTES
from vroot.tpm2 import AK_ATTRIBUTES, ObjectAttributes, PublicArea, SymDef, TpmAlg, public_area_from_key

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=30)
A = ObjectAttributes
# The TCG EK template attributes (EK Credential Profile, template L-1 / L-2).
EK_ATTRS = A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.ADMINWITHPOLICY | A.RESTRICTED | A.DECRYPT
AES128CFB = SymDef(TpmAlg.AES, 128, TpmAlg.CFB)


def ek_area(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> PublicArea:
    return public_area_from_key(
        key.public_key(), object_attributes=EK_ATTRS, scheme=None, symmetric=AES128CFB
    )


@pytest.fixture(scope="module")
def root() -> CertificateAuthority:
    return create_ca(common_name="vroot test manufacturer root", now=NOW)


@pytest.fixture(scope="module")
def inter(root: CertificateAuthority) -> CertificateAuthority:
    return create_ca(common_name="vroot test EK intermediate", now=NOW, issuer=root, path_length=0)


@pytest.fixture(scope="module")
def ek() -> PublicArea:
    return ek_area(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def ek_cert(inter: CertificateAuthority, ek: PublicArea) -> x509.Certificate:
    return issue_ek_certificate(inter, ek, now=NOW, serial=0x1234)


@dataclass(frozen=True)
class Issuer:
    """Like a CertificateAuthority, but free to be a bad one."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @property
    def name(self) -> x509.Name:
        return self.certificate.subject


def make_cert(
    issuer: CertificateAuthority | Issuer | tuple[x509.Name, ec.EllipticCurvePrivateKey],
    public_key: ec.EllipticCurvePublicKey,
    *,
    subject: str = "",
    ca: bool | None = False,
    path_length: int | None = None,
    cert_sign: bool | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
    not_before: datetime = NOW,
    not_after: datetime = NOW + timedelta(days=365),
    extra: list[tuple[x509.ExtensionType, bool]] = (),
    key_ids: bool = True,
) -> x509.Certificate:
    """A certificate with the knobs the negative tests turn."""
    name, key = issuer if isinstance(issuer, tuple) else (issuer.name, issuer.private_key)
    b = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]) if subject else x509.Name([])
        )
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if key_ids:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    if cert_sign is not None:
        b = b.add_extension(
            x509.KeyUsage(True, False, False, False, not ca, cert_sign, cert_sign, False, False),
            critical=True,
        )
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    for value, critical in extra:
        b = b.add_extension(value, critical=critical)
    return b.sign(key, hashes.SHA256())


def sub_ca(issuer: CertificateAuthority | Issuer, name: str, **kw: object) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    return Issuer(make_cert(issuer, key.public_key(), subject=name, **{"ca": True} | kw), key)


def new_leaf_key() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


# -- the shape ---------------------------------------------------------------------------------------


def test_ek_certificate_has_the_tcg_shape(ek_cert: x509.Certificate, inter: CertificateAuthority) -> None:
    c = ek_cert
    assert c.subject == x509.Name([]) and c.issuer == inter.name and c.serial_number == 0x1234
    exts = c.extensions
    san = exts.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    assert san.critical
    (dirname,) = san.value.get_values_for_type(x509.DirectoryName)
    assert [(a.oid.dotted_string, a.value) for a in dirname] == [
        ("2.23.133.2.1", "id:56524F54"),
        ("2.23.133.2.2", "vroot simulated TM"),
        ("2.23.133.2.3", "id:00000001"),
    ]
    bc = exts.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical and not bc.value.ca
    ku = exts.get_extension_for_oid(ExtensionOID.KEY_USAGE)
    assert ku.critical and ku.value.key_agreement and not ku.value.key_encipherment
    assert list(exts.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value) == [TCG_KP_EK_CERTIFICATE]
    inter_ski = inter.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert exts.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == inter_ski
    sda = exts.get_extension_for_oid(SUBJECT_DIRECTORY_ATTRIBUTES).value.value
    # SEQUENCE { SEQUENCE { OID 2.23.133.2.16, SET { SEQUENCE { "2.0", 0, 164 } } } }
    assert sda == bytes.fromhex(
        "3019 3017 0605 6781050210 310e 300c 0c03322e30 020100 020200a4".replace(" ", "")
    )
    assert not is_virtual_tm_certificate(c)


def test_rsa_ek_certificate_uses_key_encipherment(root: CertificateAuthority) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    area = ek_area(key)
    cert = issue_ek_certificate(root, area, now=NOW, serial=7, model="m", manufacturer="id:00001014")
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_encipherment and not ku.key_agreement
    v = verify_ek_certificate(cert, trust_anchors=[root.certificate], ek_public=area, now=LATER)
    assert v.tpm.manufacturer == "id:00001014" and v.tpm.model == "m"


def test_ek_certificate_ends_with_its_ca(root: CertificateAuthority, ek: PublicArea) -> None:
    cert = issue_ek_certificate(
        root, ek, now=root.certificate.not_valid_after_utc - timedelta(days=1), serial=1
    )
    assert cert.not_valid_after_utc == root.certificate.not_valid_after_utc


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"serial": 0}, "serial"),
        ({"serial": 1 << 159}, "serial"),
        ({"now": datetime(2025, 1, 1)}, "timezone-aware"),
        ({"validity_days": 0}, "positive"),
        ({"model": ""}, "model"),
        ({"manufacturer": "x" * 65}, "manufacturer"),
        ({"version": "a\nb"}, "version"),
    ],
)
def test_issue_rejects_bad_arguments(
    root: CertificateAuthority, ek: PublicArea, kwargs: dict, match: str
) -> None:
    args = {"now": NOW, "serial": 5} | kwargs
    with pytest.raises(InvalidInput, match=match):
        issue_ek_certificate(root, ek, **args)


def test_issue_refuses_a_key_that_is_not_an_ek(root: CertificateAuthority) -> None:
    ak = public_area_from_key(new_leaf_key(), object_attributes=AK_ATTRIBUTES)
    with pytest.raises(InvalidInput, match="not an EK"):
        issue_ek_certificate(root, ak, now=NOW, serial=5)


# -- verification that passes --------------------------------------------------------------------------


def test_verify_through_an_intermediate(
    ek_cert: x509.Certificate, root: CertificateAuthority, inter: CertificateAuthority, ek: PublicArea
) -> None:
    der = ek_cert.public_bytes(serialization.Encoding.DER)
    v = verify_ek_certificate(
        der, trust_anchors=[root.certificate], intermediates=[inter.certificate], ek_public=ek, now=LATER
    )
    assert v.chain == (ek_cert, inter.certificate, root.certificate)
    assert v.tpm.manufacturer == "id:56524F54" and v.tpm.version == "id:00000001"
    assert v.not_before == NOW and v.certificate == ek_cert
    assert v.public_key.public_numbers() == ek.public_key().public_numbers()


def test_verify_with_the_intermediate_as_anchor(
    ek_cert: x509.Certificate, inter: CertificateAuthority, ek: PublicArea
) -> None:
    v = verify_ek_certificate(ek_cert, trust_anchors=[inter.certificate], ek_public=ek, now=LATER)
    assert len(v.chain) == 2


def test_path_building_skips_a_same_named_impostor(
    ek_cert: x509.Certificate, root: CertificateAuthority, inter: CertificateAuthority, ek: PublicArea
) -> None:
    impostor = create_ca(common_name="vroot test EK intermediate", now=NOW, issuer=root)
    v = verify_ek_certificate(
        ek_cert,
        trust_anchors=[root.certificate],
        intermediates=[impostor.certificate, inter.certificate],
        ek_public=ek,
        now=LATER,
    )
    assert v.chain[1] == inter.certificate


def test_openssl_agrees(
    ek_cert: x509.Certificate, root: CertificateAuthority, inter: CertificateAuthority, tmp_path: Path
) -> None:
    """Interop: `openssl verify` accepts the chain vroot issued (RA-1: any PCA can check it)."""
    pem = serialization.Encoding.PEM
    (tmp_path / "root.pem").write_bytes(root.certificate.public_bytes(pem))
    (tmp_path / "inter.pem").write_bytes(inter.certificate.public_bytes(pem))
    (tmp_path / "ek.pem").write_bytes(ek_cert.public_bytes(pem))
    out = subprocess.run(
        [shutil.which("openssl") or "openssl", "verify", "-attime", str(int(LATER.timestamp())),
         "-CAfile", "root.pem", "-untrusted", "inter.pem", "ek.pem"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ek.pem: OK" in out.stdout


# -- one negative test per step ----------------------------------------------------------------------


def test_flipped_signature_byte_fails(ek_cert: x509.Certificate, inter: CertificateAuthority) -> None:
    der = bytearray(ek_cert.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01
    with pytest.raises(CertificateInvalid, match="signature does not verify"):
        verify_ek_certificate(bytes(der), trust_anchors=[inter.certificate], ek_public=None, now=LATER)


def test_other_ca_with_the_same_name_fails(ek_cert: x509.Certificate) -> None:
    """Same names, other keys: the key identifiers differ, so no issuer is found."""
    other_root = create_ca(common_name="vroot test manufacturer root", now=NOW)
    other_inter = create_ca(common_name="vroot test EK intermediate", now=NOW, issuer=other_root)
    with pytest.raises(CertificateInvalid, match="no issuer 'CN=vroot test EK intermediate,O=vroot'"):
        verify_ek_certificate(
            ek_cert, trust_anchors=[other_root.certificate], intermediates=[other_inter.certificate],
            ek_public=None, now=LATER,
        )  # fmt: skip


def test_same_named_issuer_without_key_ids_fails_on_the_signature(root: CertificateAuthority) -> None:
    real = sub_ca(root, "issuer", key_ids=False)
    impostor = sub_ca(root, "issuer", key_ids=False)
    leaf = make_cert(real, new_leaf_key(), key_ids=False)
    with pytest.raises(CertificateInvalid, match="signature does not verify under issuer 'CN=issuer'"):
        verify_certificate_chain(
            leaf,
            trust_anchors=[root.certificate],
            intermediates=[impostor.certificate],
            now=LATER,
            required_eku=None,
        )
    chain = verify_certificate_chain(
        leaf, trust_anchors=[root.certificate], intermediates=[impostor.certificate, real.certificate], now=LATER,
        required_eku=None,
    )  # fmt: skip
    assert chain[1] == real.certificate


def test_missing_intermediate_fails(ek_cert: x509.Certificate, root: CertificateAuthority) -> None:
    with pytest.raises(CertificateInvalid, match="no issuer 'CN=vroot test EK intermediate,O=vroot'"):
        verify_ek_certificate(ek_cert, trust_anchors=[root.certificate], ek_public=None, now=LATER)


def test_expired_and_not_yet_valid_fail(ek_cert: x509.Certificate, inter: CertificateAuthority) -> None:
    with pytest.raises(CertificateInvalid, match="not yet valid"):
        verify_ek_certificate(
            ek_cert, trust_anchors=[inter.certificate], ek_public=None, now=NOW - timedelta(seconds=1)
        )
    with pytest.raises(CertificateInvalid, match="expired"):
        verify_ek_certificate(
            ek_cert, trust_anchors=[inter.certificate], ek_public=None, now=NOW + timedelta(days=4000)
        )


def test_expired_intermediate_fails(root: CertificateAuthority, ek: PublicArea) -> None:
    short = create_ca(common_name="short-lived", now=NOW, issuer=root, validity_days=10)
    cert = issue_ek_certificate(short, ek, now=NOW, serial=9)  # capped at the intermediate's end
    assert cert.not_valid_after_utc == short.certificate.not_valid_after_utc
    with pytest.raises(CertificateInvalid, match="expired"):
        verify_ek_certificate(
            cert, trust_anchors=[root.certificate], intermediates=[short.certificate], ek_public=ek, now=LATER
        )


def test_issuer_that_is_not_a_ca_fails(root: CertificateAuthority) -> None:
    not_ca = sub_ca(root, "not a CA", ca=False)
    leaf = make_cert(not_ca, new_leaf_key(), eku=[TCG_KP_EK_CERTIFICATE])
    with pytest.raises(CertificateInvalid, match="is not a CA"):
        verify_certificate_chain(
            leaf, trust_anchors=[root.certificate], intermediates=[not_ca.certificate], now=LATER,
            required_eku=TCG_KP_EK_CERTIFICATE,
        )  # fmt: skip
    no_bc = sub_ca(root, "no basic constraints", ca=None)
    leaf = make_cert(no_bc, new_leaf_key())
    with pytest.raises(CertificateInvalid, match="is not a CA"):
        verify_certificate_chain(
            leaf,
            trust_anchors=[root.certificate],
            intermediates=[no_bc.certificate],
            now=LATER,
            required_eku=None,
        )


def test_path_length_exceeded_fails(root: CertificateAuthority) -> None:
    first = sub_ca(root, "first", path_length=0)
    second = sub_ca(first, "second")
    leaf = make_cert(second, new_leaf_key())
    with pytest.raises(CertificateInvalid, match="pathLenConstraint 0"):
        verify_certificate_chain(
            leaf, trust_anchors=[root.certificate], intermediates=[first.certificate, second.certificate],
            now=LATER, required_eku=None,
        )  # fmt: skip
    ok = make_cert(first, new_leaf_key())  # pathlen 0 still allows a leaf
    assert (
        len(
            verify_certificate_chain(
                ok,
                trust_anchors=[root.certificate],
                intermediates=[first.certificate],
                now=LATER,
                required_eku=None,
            )
        )
        == 3
    )


def test_issuer_without_key_cert_sign_fails(root: CertificateAuthority) -> None:
    signer = sub_ca(root, "no keyCertSign", cert_sign=False)
    leaf = make_cert(signer, new_leaf_key())
    with pytest.raises(CertificateInvalid, match="keyUsage lacks keyCertSign"):
        verify_certificate_chain(
            leaf,
            trust_anchors=[root.certificate],
            intermediates=[signer.certificate],
            now=LATER,
            required_eku=None,
        )


def test_leaf_without_the_eku_fails(root: CertificateAuthority) -> None:
    leaf = make_cert(root, new_leaf_key(), eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    with pytest.raises(CertificateInvalid, match="lacks extendedKeyUsage 2.23.133.8.1"):
        verify_certificate_chain(
            leaf, trust_anchors=[root.certificate], now=LATER, required_eku=TCG_KP_EK_CERTIFICATE
        )
    # the requirement is a parameter: an AK certificate need not carry it
    verify_certificate_chain(leaf, trust_anchors=[root.certificate], now=LATER, required_eku=None)


def test_ca_whose_eku_excludes_the_leaf_eku_fails(root: CertificateAuthority) -> None:
    tls_ca = sub_ca(root, "TLS only", eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    leaf = make_cert(tls_ca, new_leaf_key(), eku=[TCG_KP_EK_CERTIFICATE])
    with pytest.raises(CertificateInvalid, match="extendedKeyUsage excludes 2.23.133.8.1"):
        verify_certificate_chain(
            leaf, trust_anchors=[root.certificate], intermediates=[tls_ca.certificate], now=LATER,
            required_eku=TCG_KP_EK_CERTIFICATE,
        )  # fmt: skip
    any_ca = sub_ca(root, "any", eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
    leaf = make_cert(any_ca, new_leaf_key(), eku=[TCG_KP_EK_CERTIFICATE])
    verify_certificate_chain(
        leaf, trust_anchors=[root.certificate], intermediates=[any_ca.certificate], now=LATER,
        required_eku=TCG_KP_EK_CERTIFICATE,
    )  # fmt: skip


def test_leaf_that_is_a_ca_fails(root: CertificateAuthority, inter: CertificateAuthority) -> None:
    with pytest.raises(CertificateInvalid, match="is a CA"):
        verify_certificate_chain(
            inter.certificate, trust_anchors=[root.certificate], now=LATER, required_eku=None
        )


def test_anchor_as_leaf_fails(root: CertificateAuthority) -> None:
    with pytest.raises(CertificateInvalid, match="itself a trust anchor"):
        verify_certificate_chain(
            root.certificate, trust_anchors=[root.certificate], now=LATER, required_eku=None
        )


def test_unknown_critical_extension_fails(root: CertificateAuthority) -> None:
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    leaf = make_cert(root, new_leaf_key(), extra=[(odd, True)])
    with pytest.raises(CertificateInvalid, match="unknown critical extension 1.3.6.1.4.1.99999.1"):
        verify_certificate_chain(leaf, trust_anchors=[root.certificate], now=LATER, required_eku=None)
    fine = make_cert(root, new_leaf_key(), extra=[(odd, False)])
    verify_certificate_chain(fine, trust_anchors=[root.certificate], now=LATER, required_eku=None)


def test_sha1_signature_fails(root: CertificateAuthority, tmp_path: Path) -> None:
    """cryptography will not sign with SHA-1, so openssl makes the legacy certificate."""
    now = datetime.now(UTC)
    ca = create_ca(common_name="sha1 test", now=now - timedelta(days=1))
    save_ca(ca, tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "leaf-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    openssl = shutil.which("openssl") or "openssl"
    csr = subprocess.run(
        [openssl, "req", "-new", "-key", "leaf-key.pem", "-subj", "/CN=leaf"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    ).stdout
    der = subprocess.run(
        [openssl, "x509", "-req", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem", "-sha1", "-days", "2",
         "-set_serial", "7", "-outform", "DER"],
        input=csr, cwd=tmp_path, capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert x509.load_der_x509_certificate(der).signature_hash_algorithm.name == "sha1"
    with pytest.raises(CertificateInvalid, match="signature hash sha1 is not allowed"):
        verify_certificate_chain(der, trust_anchors=[ca.certificate], now=now, required_eku=None)


def test_other_ek_key_fails(ek_cert: x509.Certificate, inter: CertificateAuthority) -> None:
    other = ek_area(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CertificateInvalid, match="certifies another public key"):
        verify_ek_certificate(ek_cert, trust_anchors=[inter.certificate], ek_public=other, now=LATER)


def test_chain_loop_among_intermediates_ends(root: CertificateAuthority) -> None:
    """Named adversarial case: two intermediates that issue each other; path building must stop."""
    ka, kb = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    na = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "A")])
    nb = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "B")])
    a = make_cert((nb, kb), ka.public_key(), subject="A", ca=True)
    b = make_cert((na, ka), kb.public_key(), subject="B", ca=True)
    leaf = make_cert((na, ka), new_leaf_key())
    with pytest.raises(CertificateInvalid, match="no issuer|no path"):
        verify_certificate_chain(
            leaf, trust_anchors=[root.certificate], intermediates=[a, b], now=LATER, required_eku=None
        )


@pytest.mark.parametrize(
    ("cert", "kwargs", "match"),
    [
        (b"\x30\x03\x02\x01\x00", {}, "not a DER X.509 certificate"),
        ("text", {}, "expected a certificate or DER bytes"),
        (None, {"trust_anchors": []}, "no trust anchors"),
        (None, {"now": datetime(2025, 1, 1)}, "timezone-aware"),
    ],
)
def test_bad_input_is_invalid_input(
    ek_cert: x509.Certificate, root: CertificateAuthority, cert: object, kwargs: dict, match: str
) -> None:
    args = {"trust_anchors": [root.certificate], "ek_public": None, "now": LATER} | kwargs
    with pytest.raises(InvalidInput, match=match):
        verify_ek_certificate(ek_cert if cert is None else cert, **args)


def test_tpm_info_reads_the_san(ek_cert: x509.Certificate) -> None:
    from vroot.pki import tpm_info

    info = tpm_info(ek_cert)
    assert (info.manufacturer, info.model, info.version) == (
        "id:56524F54",
        "vroot simulated TM",
        "id:00000001",
    )
    bare = make_cert(
        create_ca(common_name="x", now=NOW), new_leaf_key(),
        extra=[(x509.SubjectAlternativeName([x509.DirectoryName(x509.Name([x509.NameAttribute(TCG_AT_TPM_MANUFACTURER, "id:1")]))]), True)],
    )  # fmt: skip
    assert tpm_info(bare).manufacturer == "id:1" and tpm_info(bare).model is None
