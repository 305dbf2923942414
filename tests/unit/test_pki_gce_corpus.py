"""Real TM certificates: GCE vTPM AK certificates chain to Google's EK/AK CA roots (vroot.pki chain
validation; what the PCA does with a manufacturer's CA files, RA-1, HW-F2).

Data: ../shared/corpora/go-tpm-tools (MANIFEST.md): `gce-ca-certs/*` are Google's CA certificates,
`gce-cos-85-*/ak_cert.der` the AK certificate of a GCE VM, issued by `tpm_ek_intermediate_2.crt`
under `tpm_ek_root_1.cer`.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from vroot.errors import CertificateInvalid
from vroot.pki import (
    TCG_KP_EK_CERTIFICATE,
    is_virtual_tm_certificate,
    vek_identity,
    verify_certificate_chain,
    verify_ek_certificate,
)
from vroot.tpm2 import parse_public

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
    return {p.name: load(p) for p in sorted(d.iterdir())}


def split(certs: dict[str, x509.Certificate]) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    roots = [c for c in certs.values() if c.subject == c.issuer]
    return roots, [c for c in certs.values() if c.subject != c.issuer]


@pytest.mark.parametrize("case", CASES)
def test_ak_certificate_chains_to_the_gce_root(
    corpora: Path, gce: dict[str, x509.Certificate], case: str
) -> None:
    d = corpora / "go-tpm-tools" / case
    roots, inters = split(gce)
    assert len(roots) == 2 and len(inters) == 3
    ak_public = parse_public((d / "ak_public.tpmt_public.bin").read_bytes())
    # An AK certificate is not an EK certificate: the EKU requirement is lifted...
    v = verify_ek_certificate(
        (d / "ak_cert.der").read_bytes(),
        trust_anchors=roots,
        intermediates=inters,
        ek_public=ak_public,
        now=WHEN,
        required_eku=None,
    )
    assert v.chain[1] == gce["tpm_ek_intermediate_2.crt"] and v.chain[2] == gce["tpm_ek_root_1.cer"]
    assert (v.tpm.manufacturer, v.tpm.model, v.tpm.version) == ("id:474F4F47", "vTPM", "id:20160511")
    # ...though Google's certificates do carry tcg-kp-EKCertificate, on the leaf and every CA.
    chain = verify_certificate_chain(
        v.certificate, trust_anchors=roots, intermediates=inters, now=WHEN, required_eku=TCG_KP_EK_CERTIFICATE
    )
    assert chain == v.chain


def test_gce_vtpm_is_not_a_vroot_vtm(corpora: Path) -> None:
    """VMM-S3 classifier: Google's vTPM does not carry vroot's virtual marks."""
    der = (corpora / "go-tpm-tools" / CASES[0] / "ak_cert.der").read_bytes()
    assert is_virtual_tm_certificate(der) is False
    assert vek_identity(der) is None


def test_without_the_issuing_intermediate_it_fails(corpora: Path, gce: dict[str, x509.Certificate]) -> None:
    roots, inters = split(gce)
    inters = [c for c in inters if c != gce["tpm_ek_intermediate_2.crt"]]
    with pytest.raises(CertificateInvalid, match="no issuer"):
        verify_certificate_chain(
            (corpora / "go-tpm-tools" / CASES[0] / "ak_cert.der").read_bytes(),
            trust_anchors=roots, intermediates=inters, now=WHEN, required_eku=None,
        )  # fmt: skip


def test_under_the_other_root_it_fails(corpora: Path, gce: dict[str, x509.Certificate]) -> None:
    _, inters = split(gce)
    with pytest.raises(CertificateInvalid, match="no issuer"):
        verify_certificate_chain(
            (corpora / "go-tpm-tools" / CASES[0] / "ak_cert.der").read_bytes(),
            trust_anchors=[gce["gcp_ek_ak_ca_root.crt"]], intermediates=inters, now=WHEN, required_eku=None,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("when", "match"),
    [(datetime(2021, 1, 1, tzinfo=UTC), "not yet valid"), (datetime(2052, 1, 1, tzinfo=UTC), "expired")],
)
def test_outside_validity_it_fails(
    corpora: Path, gce: dict[str, x509.Certificate], when: datetime, match: str
) -> None:
    roots, inters = split(gce)
    with pytest.raises(CertificateInvalid, match=match):
        verify_certificate_chain(
            (corpora / "go-tpm-tools" / CASES[0] / "ak_cert.der").read_bytes(),
            trust_anchors=roots, intermediates=inters, now=when, required_eku=None,
        )  # fmt: skip


def test_another_ak_key_fails(corpora: Path, gce: dict[str, x509.Certificate]) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from vroot.tpm2 import public_area_from_key

    roots, inters = split(gce)
    other = public_area_from_key(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
    with pytest.raises(CertificateInvalid, match="another public key"):
        verify_ek_certificate(
            (corpora / "go-tpm-tools" / CASES[0] / "ak_cert.der").read_bytes(), trust_anchors=roots,
            intermediates=inters, ek_public=other, now=WHEN, required_eku=None,
        )  # fmt: skip
