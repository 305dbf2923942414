"""A real AK certificate from another PKI (RA-1): a GCE VM's vTPM AK certificate verifies with
`verify_external_ak_certificate` when Google's roots are the trust anchors, and is refused otherwise.

Data: ../shared/corpora/go-tpm-tools (MANIFEST.md): `gce-ca-certs/*` are Google's CA certificates,
`gce-cos-85-*/ak_cert.der` the AK certificate of a GCE VM (issued by `tpm_ek_intermediate_2.crt`
under `tpm_ek_root_1.cer`), `ak_public.tpmt_public.bin` its AK. Google's AK certificates carry
tcg-kp-EKCertificate rather than tcg-kp-AIKCertificate, on the leaf and on every CA: that is the
`required_eku` a verifier of that PKI must pass.
"""

from __future__ import annotations

import dataclasses
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from vroot.errors import CertificateInvalid, KeyAttributesInvalid
from vroot.pca import TCG_KP_AIK_CERTIFICATE, verify_ak_certificate, verify_external_ak_certificate
from vroot.pki import TCG_KP_EK_CERTIFICATE
from vroot.tpm2 import ObjectAttributes, parse_public, public_area_from_key

pytestmark = [
    pytest.mark.corpora,
    # Google's CA names carry CNs longer than X.520's 64 characters; cryptography warns and reads them.
    pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning"),
]

WHEN = datetime(2024, 6, 1, tzinfo=UTC)
CASES = ["gce-cos-85-no-nonce", "gce-cos-85-nonce9009"]


def load(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)


@pytest.fixture(scope="module")
def gce(corpora: Path) -> dict[str, x509.Certificate]:
    d = corpora / "go-tpm-tools" / "gce-ca-certs"
    certs = {p.name: load(p) for p in sorted(d.iterdir())}
    assert len(certs) == 5
    return certs


def roots_and_intermediates(gce: dict[str, x509.Certificate]):  # noqa: ANN201
    roots = [c for c in gce.values() if c.subject == c.issuer]
    return roots, [c for c in gce.values() if c.subject != c.issuer]


def case(corpora: Path, name: str):  # noqa: ANN201
    d = corpora / "go-tpm-tools" / name
    return (d / "ak_cert.der").read_bytes(), parse_public((d / "ak_public.tpmt_public.bin").read_bytes())


@pytest.mark.parametrize("name", CASES)
def test_ra1_gce_ak_certificate_verifies_under_googles_roots(corpora, gce, name):
    der, ak = case(corpora, name)
    roots, inters = roots_and_intermediates(gce)
    v = verify_external_ak_certificate(
        der, trust_anchors=roots, intermediates=inters, ak_public=ak, now=WHEN, required_eku=TCG_KP_EK_CERTIFICATE
    )
    assert v.chain[1] == gce["tpm_ek_intermediate_2.crt"] and v.chain[2] == gce["tpm_ek_root_1.cer"]
    assert v.ak_name == ak.name() and v.certificate.public_bytes(Encoding.DER) == der


def test_gce_ak_certificate_is_not_an_aik_certificate(corpora, gce):
    der, ak = case(corpora, CASES[0])
    roots, inters = roots_and_intermediates(gce)
    with pytest.raises(CertificateInvalid, match="lacks extendedKeyUsage 2.23.133.8.3"):
        verify_external_ak_certificate(
            der, trust_anchors=roots, intermediates=inters, ak_public=ak, now=WHEN, required_eku=TCG_KP_AIK_CERTIFICATE
        )


def test_gce_ak_certificate_is_not_a_vroot_pca_certificate(corpora, gce):
    """Google's root as if it were our PCA: the certificate is not one the PCA issues."""
    der, ak = case(corpora, CASES[0])
    with pytest.raises(CertificateInvalid, match="no issuer"):
        verify_ak_certificate(der, pca_certificate=gce["tpm_ek_root_1.cer"], ak_public=ak, now=WHEN)


def test_gce_ak_certificate_without_the_intermediate(corpora, gce):
    der, ak = case(corpora, CASES[0])
    roots, inters = roots_and_intermediates(gce)
    inters = [c for c in inters if c != gce["tpm_ek_intermediate_2.crt"]]
    with pytest.raises(CertificateInvalid, match="no issuer"):
        verify_external_ak_certificate(
            der, trust_anchors=roots, intermediates=inters, ak_public=ak, now=WHEN, required_eku=TCG_KP_EK_CERTIFICATE
        )


def test_gce_ak_certificate_for_another_ak(corpora, gce):
    """Both corpus cases come from one VM (one AK), so the other AK is a software RSA key shaped as an AK."""
    der, _ = case(corpora, CASES[0])
    other = public_area_from_key(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
    roots, inters = roots_and_intermediates(gce)
    with pytest.raises(CertificateInvalid, match="another public key"):
        verify_external_ak_certificate(
            der, trust_anchors=roots, intermediates=inters, ak_public=other, now=WHEN, required_eku=TCG_KP_EK_CERTIFICATE
        )


def test_gce_ak_with_its_attributes_changed_is_refused(corpora, gce):
    """The certificate covers the key, not the attributes: a claimed AK area that is not restricted
    is refused by the AK check even though the key matches."""
    der, ak = case(corpora, CASES[0])
    roots, inters = roots_and_intermediates(gce)
    loose = dataclasses.replace(ak, object_attributes=ak.object_attributes & ~ObjectAttributes.RESTRICTED)
    with pytest.raises(KeyAttributesInvalid, match="restricted"):
        verify_external_ak_certificate(
            der, trust_anchors=roots, intermediates=inters, ak_public=loose, now=WHEN, required_eku=TCG_KP_EK_CERTIFICATE
        )


def test_gce_ak_certificate_outside_its_validity(corpora, gce):
    der, ak = case(corpora, CASES[0])
    roots, inters = roots_and_intermediates(gce)
    with pytest.raises(CertificateInvalid, match="not yet valid"):
        verify_external_ak_certificate(
            der, trust_anchors=roots, intermediates=inters, ak_public=ak, now=datetime(2021, 1, 1, tzinfo=UTC),
            required_eku=TCG_KP_EK_CERTIFICATE,
        )  # fmt: skip
