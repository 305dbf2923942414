"""Software stand-ins for the PCA unit tests (imported by the other tests/unit/test_pca_*.py), and
tests that they behave as a TM would: a software TPM2_ActivateCredential (part 1, 24), a manufacturer
CA with EK certificates, a host with an AK-certified vTM-manager key, and vEK certificates.

The swtpm-backed test (tests/vtm/test_pca_enrollment.py) does the same with real TMs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from vroot.host._provision import manager_qualifying_data
from vroot.pca import EnrolledHost
from vroot.pki import (
    CertificateAuthority,
    create_ca,
    issue_ek_certificate,
    issue_vek_certificate,
    software_signer,
)
from vroot.tpm2 import (
    AK_ATTRIBUTES,
    TPM_GENERATED_VALUE,
    AttestType,
    CertifyInfo,
    HashAlg,
    ObjectAttributes,
    PublicArea,
    SigAlg,
    Signature,
    SymDef,
    TpmAlg,
    UnverifiedAttest,
    kdfa,
    kdfe,
    make_credential,
    policy_secret,
    public_area_from_key,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
A = ObjectAttributes
EK_ATTRS = A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.ADMINWITHPOLICY | A.RESTRICTED | A.DECRYPT
MANAGER_ATTRS = A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.SIGN_ENCRYPT
AES128_CFB = SymDef(TpmAlg.AES, 128, TpmAlg.CFB)


def counter_rng(seed: bytes = b"pca"):
    """Deterministic bytes (SHA-256 in counter mode): tests are reproducible."""
    state = {"n": 0}

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            state["n"] += 1
            out += hashlib.sha256(seed + state["n"].to_bytes(4, "big")).digest()
        return out[:n]

    return rng


def ecc_key(label: str) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(hashlib.sha256(label.encode()).digest(), "big") % (2**255)
    return ec.derive_private_key(scalar or 1, ec.SECP256R1())


def ek_area(key: ec.EllipticCurvePrivateKey) -> PublicArea:
    return public_area_from_key(
        key.public_key(),
        object_attributes=EK_ATTRS,
        scheme=None,
        symmetric=AES128_CFB,
        auth_policy=policy_secret(None, b"\x40\x00\x00\x0b", alg=HashAlg.SHA256),
    )


def ak_area(key: ec.EllipticCurvePrivateKey, **changes) -> PublicArea:  # noqa: ANN003
    return dataclasses.replace(public_area_from_key(key.public_key(), object_attributes=AK_ATTRIBUTES), **changes)


def _aes_cfb_decrypt(key: bytes, data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    out, feedback = bytearray(), bytes(16)
    for i in range(0, len(data), 16):
        chunk = data[i : i + 16]
        stream = dec.update(feedback)
        out += bytes(a ^ b for a, b in zip(chunk, stream, strict=False))
        feedback = chunk
    return bytes(out)


def _u16(data: bytes, pos: int) -> tuple[int, int]:
    return int.from_bytes(data[pos : pos + 2], "big"), pos + 2


class SoftTm:
    """A software TM: an ECC EK and the objects "loaded" beside it. `activate` is TPM2_ActivateCredential:
    it returns the secret only for a blob made to its EK for the name of a loaded object."""

    def __init__(self, label: str) -> None:
        self.ek_key = ecc_key(f"{label}/ek")
        self.ek = ek_area(self.ek_key)
        self.ak_key = ecc_key(f"{label}/ak")
        self.ak = ak_area(self.ak_key)
        self.loaded = {self.ak.name()}

    def activate(self, ak: PublicArea, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        name = ak.name()
        if name not in self.loaded:
            raise ValueError("object not loaded (TPM_RC_HANDLE)")
        alg = self.ek.name_alg
        size, pos = _u16(encrypted_secret, 0)
        assert size == len(encrypted_secret) - 2
        xs, pos = _u16(encrypted_secret, pos)
        qx = encrypted_secret[pos : pos + xs]
        ys, pos = _u16(encrypted_secret, pos + xs)
        qy = encrypted_secret[pos : pos + ys]
        point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + qx + qy)
        z = self.ek_key.exchange(ec.ECDH(), point)
        seed = kdfe(alg, z, "IDENTITY", qx, self.ek.unique.x, alg.digest_size * 8)
        total, pos = _u16(credential_blob, 0)
        assert total == len(credential_blob) - 2
        hs, pos = _u16(credential_blob, pos)
        integrity, enc_identity = credential_blob[pos : pos + hs], credential_blob[pos + hs :]
        hmac_key = kdfa(alg, seed, "INTEGRITY", b"", b"", alg.digest_size * 8)
        if not hmac.compare_digest(integrity, hmac.new(hmac_key, enc_identity + name, alg.new).digest()):
            raise ValueError("integrity check failed (TPM_RC_INTEGRITY)")
        plain = _aes_cfb_decrypt(kdfa(alg, seed, "STORAGE", name, b"", 128), enc_identity)
        n, _ = _u16(plain, 0)
        return plain[2 : 2 + n]


def sign_attest(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return Signature(SigAlg.ECDSA, HashAlg.SHA256, r=r.to_bytes(32, "big"), s=s.to_bytes(32, "big")).encode()


def certify(signer_key: ec.EllipticCurvePrivateKey, signer: PublicArea, obj: PublicArea, qualifying: bytes):  # noqa: ANN201
    """TPM2_Certify of `obj` by `signer` in software: (TPMS_ATTEST, TPMT_SIGNATURE) bytes."""
    attest = UnverifiedAttest(
        magic=TPM_GENERATED_VALUE,
        type=AttestType.CERTIFY,
        qualified_signer=signer.name(),
        extra_data=qualifying,
        clock=1000,
        reset_count=1,
        restart_count=0,
        safe=True,
        firmware_version=0x20250101,
        attested=CertifyInfo(obj.name(), obj.name()),
    ).encode()
    return attest, sign_attest(signer_key, attest)


@dataclasses.dataclass
class SoftHost:
    """A host: a SoftTm, its EK certificate, and a vTM-manager key its AK certified."""

    host_id: str
    tm: SoftTm
    ek_certificate: x509.Certificate
    manager_key: ec.EllipticCurvePrivateKey
    manager: PublicArea
    certify_attest: bytes
    certify_signature: bytes

    def record(self, **changes) -> EnrolledHost:  # noqa: ANN003
        """The server's record of this host, as `enrolled_host` would make it."""
        values = {
            "host_id": self.host_id,
            "ak_public": self.tm.ak.encode(sized=True),
            "manager_public": self.manager.encode(sized=True),
            "manager_certify_attest": self.certify_attest,
            "manager_certify_signature": self.certify_signature,
        }
        return EnrolledHost(**(values | changes))

    def vek_certificate(self, vtm: SoftTm, vm: uuid.UUID, *, serial: int = 77, now: datetime = NOW):  # noqa: ANN201
        return issue_vek_certificate(
            vek_public=vtm.ek,
            manager_public=self.manager,
            host_id=self.host_id,
            vm_uuid=vm,
            now=now,
            serial=serial,
            sign_digest=software_signer(self.manager_key),
            validity_days=30,
        )


def manufacturer(label: str = "maker") -> CertificateAuthority:
    return create_ca(common_name=f"{label} TPM manufacturer CA", now=NOW - timedelta(days=30), key=ecc_key(label))


def soft_host(host_id: str, ca: CertificateAuthority, *, serial: int = 0x5EED) -> SoftHost:
    tm = SoftTm(host_id)
    cert = issue_ek_certificate(ca, tm.ek, now=NOW - timedelta(days=1), serial=serial)
    manager_key = ecc_key(f"{host_id}/manager")
    manager = public_area_from_key(manager_key.public_key(), object_attributes=MANAGER_ATTRS, auth_policy=b"\x5a" * 32)
    attest, sig = certify(tm.ak_key, tm.ak, manager, manager_qualifying_data(host_id))
    return SoftHost(host_id, tm, cert, manager_key, manager, attest, sig)


# -- the fakes behave as a TM would ----------------------------------------------------------------


def test_soft_activation_returns_the_secret_for_the_named_ak():
    tm = SoftTm("t1")
    blob, enc = make_credential(tm.ek, tm.ak.name(), b"s" * 32, rng=counter_rng())
    assert tm.activate(tm.ak, blob, enc) == b"s" * 32


def test_soft_activation_refuses_a_blob_for_another_name():
    tm = SoftTm("t1")
    other = ak_area(ecc_key("other"))
    tm.loaded.add(other.name())
    blob, enc = make_credential(tm.ek, tm.ak.name(), b"s" * 32, rng=counter_rng())
    with pytest.raises(ValueError, match="TPM_RC_INTEGRITY"):
        tm.activate(other, blob, enc)


def test_soft_activation_refuses_a_blob_for_another_ek():
    tm, other = SoftTm("t1"), SoftTm("t2")
    blob, enc = make_credential(other.ek, tm.ak.name(), b"s" * 32, rng=counter_rng())
    with pytest.raises(ValueError, match="TPM_RC_INTEGRITY"):
        tm.activate(tm.ak, blob, enc)
