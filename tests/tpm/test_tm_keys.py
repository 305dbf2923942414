"""TmClient keys: EK from the TCG templates (= tpm2_createek), SRK (= tpm2_createprimary), AK,
names, persistence and EK certificates in NV."""

from __future__ import annotations

import datetime
import hashlib
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tpm2_pytss import TPM2B_PUBLIC, TPMA_OBJECT

from vroot.errors import InvalidInput, TmError
from vroot.tm._policy import EK_POLICY_SHA256
from vroot.tm.client import KeyBlob, TmClient, public_pem

pytestmark = pytest.mark.tpm
A = TPMA_OBJECT


def attrs(public: bytes) -> int:
    return int(TPM2B_PUBLIC.unmarshal(public)[0].publicArea.objectAttributes)


def auth_policy(public: bytes) -> bytes:
    return bytes(TPM2B_PUBLIC.unmarshal(public)[0].publicArea.authPolicy)


@pytest.mark.parametrize("kind,tool_alg", [("ecc", "ecc"), ("rsa", "rsa")])
def test_ek_equals_tpm2_createek(swtpm, tools_env, tmp_path, kind, tool_alg):
    with TmClient.open(swtpm.tcti) as tm:
        with tm.create_primary_ek(kind) as ek:
            ours = ek.public
            assert ek.needs_endorsement_policy
        assert tm.transient_handles() == []
    subprocess.run(
        ["tpm2_createek", "-G", tool_alg, "-c", tmp_path / "ek.ctx", "-u", tmp_path / "ek.pub"],
        env=tools_env(swtpm),
        check=True,
        capture_output=True,
        timeout=60,
    )
    theirs = (tmp_path / "ek.pub").read_bytes()
    assert ours == theirs  # same template, same seed: the same key, byte for byte
    assert public_pem(ours) == public_pem(theirs)


def test_ek_template_properties(tm):
    with tm.create_primary_ek() as ek:
        a = attrs(ek.public)
        assert a & A.RESTRICTED and a & A.DECRYPT and a & A.FIXEDTPM and a & A.ADMINWITHPOLICY
        assert not a & A.USERWITHAUTH
        assert auth_policy(ek.public) == EK_POLICY_SHA256
        assert 0x80000000 <= ek.handle < 0x81000000 and not ek.persistent
        key = serialization.load_pem_public_key(public_pem(ek.public))
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"


def test_ek_is_deterministic(tm):
    with tm.create_primary_ek() as a:
        first = a.public
    with tm.create_primary_ek() as b:
        assert b.public == first


def test_srk_equals_tpm2_createprimary(swtpm, tools_env, tmp_path):
    with TmClient.open(swtpm.tcti) as tm, tm.create_srk() as srk:
        ours = srk.public
        assert not srk.needs_endorsement_policy
        assert attrs(ours) == int(A.DEFAULT_TPM2_TOOLS_CREATEPRIMARY_ATTRS)
    env = tools_env(swtpm)
    subprocess.run(
        ["tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", tmp_path / "srk.ctx"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    subprocess.run(
        ["tpm2_readpublic", "-c", tmp_path / "srk.ctx", "-o", tmp_path / "srk.pub"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert ours == (tmp_path / "srk.pub").read_bytes()


def test_ak_attributes_and_names(tm):
    with tm.create_primary_ek() as ek:
        blob = tm.create_ak(ek)
        assert isinstance(blob, KeyBlob) and "bytes>" in repr(blob)
        a = attrs(blob.public)
        assert a & A.RESTRICTED and a & A.SIGN_ENCRYPT and a & A.FIXEDTPM and a & A.USERWITHAUTH
        assert not a & A.DECRYPT
        with tm.load(ek, blob) as ak:
            pub, name, qname = tm.read_public(ak)
            assert pub == blob.public == ak.public
            assert name == ak.name
            assert (
                name
                == b"\x00\x0b" + hashlib.sha256(TPM2B_PUBLIC.unmarshal(pub)[0].publicArea.marshal()).digest()
            )
            _, ek_name, ek_qname = tm.read_public(ek)
            # QN(EK) = H(QN(endorsement) || Name(EK)), QN(AK) = H(QN(EK) || Name(AK))
            assert ek_qname == b"\x00\x0b" + hashlib.sha256(bytes.fromhex("4000000b") + ek_name).digest()
            assert qname == b"\x00\x0b" + hashlib.sha256(ek_qname + name).digest()


def test_persist_read_public_evict(tm):
    handle = 0x81010001
    with tm.create_primary_ek() as ek:
        ek_public = ek.public
        with tm.persist(ek, handle) as p:
            assert p.persistent and p.handle == handle and p.needs_endorsement_policy
    assert tm.transient_handles() == []
    assert handle in tm.persistent_handles()
    pub, name, _ = tm.read_public(handle)
    assert pub == ek_public
    with tm.persistent(handle) as ek:  # a persistent EK is usable as a parent (policy session)
        blob = tm.create_ak(ek)
        with tm.load(ek, blob) as ak:
            assert tm.read_public(ak)[0] == blob.public
    assert handle in tm.persistent_handles()  # closing only forgot it
    tm.evict(handle)
    assert handle not in tm.persistent_handles()
    with pytest.raises(TmError):
        tm.read_public(handle)


def _self_signed(ek_pem: bytes) -> bytes:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vroot test CA")]))
        .public_key(serialization.load_pem_public_key(ek_pem))  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(f"ek{i}.vroot.test") for i in range(30)]), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_ek_certificate_write_and_read(tm):
    assert tm.ek_certificate("ecc") is None
    assert tm.ek_certificate("rsa") is None
    with tm.create_primary_ek() as ek:
        der = _self_signed(public_pem(ek.public))
        ek_public = ek.public
    assert len(der) > 512  # several NV chunks
    tm.write_ek_certificate(der, "ecc")
    assert tm.ek_certificate("ecc") == der
    assert tm.ek_certificate("rsa") is None
    cert = x509.load_der_x509_certificate(tm.ek_certificate("ecc"))  # type: ignore[arg-type]
    assert cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == public_pem(ek_public)
    with tm.create_primary_ek() as ek:  # the template lookup reads past the certificate
        assert ek.public == ek_public
    with pytest.raises(TmError) as err:  # defined and write-locked
        tm.write_ek_certificate(der, "ecc")
    assert err.value.rc is not None


def test_bad_inputs(tm):
    with pytest.raises(InvalidInput, match="kind"):
        tm.create_primary_ek("dsa")  # type: ignore[arg-type]
    with tm.create_srk() as srk:
        with pytest.raises(InvalidInput, match="trailing"):
            tm.load(srk, KeyBlob(b"\x00\x00" + b"junk", b"\x00\x00"))
        with pytest.raises(InvalidInput):
            tm.load(srk, KeyBlob(b"\x00\x10", b""))
    assert tm.transient_handles() == []
