"""vEK certificates signed inside a real TM (swtpm) by the vTM-manager key (VMM-F4, VMM-S2, VMM-S3),
and the certificate stored where guest software looks for an EK certificate (VM-F1).

The vTM-manager key is an unrestricted signing key under the SRK, once usable with its (empty)
password and once only under PolicyPCR(sha256:16); the "vEK" is the TCG-template EK of the same
swtpm (standing in for a vTM's EK). Certificates are built by vroot.pki, signed with TPM2_Sign
through `tm.sign_digest`, then verified in pure Python, by cryptography and by openssl.
"""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from vroot.errors import CertificateInvalid, TmError, TmPolicyFailed
from vroot.pki import (
    ek_certificate_builder,
    issue_vek_certificate,
    manager_issuer_name,
    tm_signed_certificate,
    verify_vek_certificate,
)
from vroot.tm import PolicyPcr
from vroot.tpm2 import HashAlg, ObjectAttributes, ObjectType, PublicArea, parse_public

pytestmark = pytest.mark.tpm

NOW = datetime(2025, 3, 1, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
HOST = "host-1"
VM = uuid.UUID("6f1c9a52-5d0e-4f0a-9a43-2f1d3c9b7e10")
PCR16 = {HashAlg.SHA256: [16]}


def ek_public(tm: Any) -> PublicArea:
    with tm.create_primary_ek("ecc") as ek:
        return parse_public(ek.public)


def issue(
    tm: Any, key: Any, vek: PublicArea, *, policy: list | None = None, vm: uuid.UUID = VM
) -> x509.Certificate:
    return issue_vek_certificate(
        vek_public=vek,
        manager_public=parse_public(key.public),
        host_id=HOST,
        vm_uuid=vm,
        now=NOW,
        serial=0x5EED,
        sign_digest=lambda d: tm.sign_digest(key, d, policy=policy),
        validity_days=7,
    )


def self_signed_wrapper(
    tm: Any, key: Any, manager: PublicArea, policy: list | None = None
) -> x509.Certificate:
    """The manager key as a self-signed CA certificate (signed in the TM too), so that tools that want
    an issuer certificate (cryptography, openssl) can check the vEK certificate against it."""
    name = manager_issuer_name(HOST)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(manager.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, False, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(manager.public_key()), critical=False)
    )
    return tm_signed_certificate(
        builder, issuer_public=manager, sign_digest=lambda d: tm.sign_digest(key, d, policy=policy)
    )


def test_vek_certificate_signed_in_the_tm_verifies(tm: Any, tmp_path: Path) -> None:
    """VMM-F4: the vTM-manager key signs inside the TM; vroot, cryptography and openssl all accept it."""
    srk = tm.create_srk()
    key = tm.load(srk, tm.create_signing_key(srk, "ecc"))
    manager = parse_public(key.public)
    assert manager.type is ObjectType.ECC and manager.object_attributes & ObjectAttributes.FIXEDTPM
    vek = ek_public(tm)
    cert = issue(tm, key, vek)

    v = verify_vek_certificate(
        cert, manager_public=manager, now=LATER, vek_public=vek, host_id=HOST, vm_uuid=VM
    )
    assert (v.host_id, v.vm_uuid, v.manager_name) == (HOST, VM, manager.name())
    _, tm_name, _ = tm.read_public(key)
    assert v.manager_name == tm_name  # the name the TM itself gives the key

    wrapper = self_signed_wrapper(tm, key, manager)
    cert.verify_directly_issued_by(wrapper)
    (tmp_path / "manager.pem").write_bytes(wrapper.public_bytes(Encoding.PEM))
    (tmp_path / "vek.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    out = subprocess.run(
        ["openssl", "verify", "-attime", str(int(LATER.timestamp())), "-CAfile", "manager.pem", "vek.pem"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0 and "vek.pem: OK" in out.stdout, out.stdout + out.stderr


def test_rsa_manager_key_signs_too(tm: Any) -> None:
    srk = tm.create_srk()
    key = tm.load(srk, tm.create_signing_key(srk, "rsa"))
    cert = issue(tm, key, ek_public(tm))
    assert cert.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.11"  # sha256WithRSAEncryption
    assert verify_vek_certificate(cert, manager_public=parse_public(key.public), now=LATER).vm_uuid == VM


def test_policy_bound_manager_key_signs_only_in_the_trusted_state(tm: Any) -> None:
    """VMM-S2: the vTM-manager key is usable only under PolicyPCR of the host's trusted state."""
    tm.pcr_extend(16, {HashAlg.SHA256: hashlib.sha256(b"trusted host state").digest()})
    policy_digest = tm.pcr_policy_digest(PCR16)
    srk = tm.create_srk()
    key = tm.load(srk, tm.create_signing_key(srk, "ecc", policy_digest=policy_digest))
    manager = parse_public(key.public)
    assert manager.auth_policy == policy_digest
    assert not manager.object_attributes & ObjectAttributes.USERWITHAUTH  # the policy is mandatory
    vek = ek_public(tm)
    steps = [PolicyPcr.of(PCR16)]

    cert = issue(tm, key, vek, policy=steps)
    assert verify_vek_certificate(cert, manager_public=manager, now=LATER, vek_public=vek).host_id == HOST
    cert.verify_directly_issued_by(self_signed_wrapper(tm, key, manager, steps))

    with pytest.raises(TmError):  # the password alone does not authorise it
        issue(tm, key, vek)
    tm.pcr_extend(16, {HashAlg.SHA256: hashlib.sha256(b"host changed").digest()})
    with pytest.raises(TmPolicyFailed):  # no certificate once the host left its trusted state
        issue(tm, key, vek, policy=steps)


def test_what_must_fail_fails(tm: Any) -> None:
    """Another signing key, an expired certificate, another VM, no virtual mark: each CertificateInvalid."""
    srk = tm.create_srk()
    key = tm.load(srk, tm.create_signing_key(srk, "ecc"))
    manager = parse_public(key.public)
    vek = ek_public(tm)
    cert = issue(tm, key, vek)
    verify_vek_certificate(cert, manager_public=manager, now=LATER, vm_uuid=VM)

    with tm.load(srk, tm.create_signing_key(srk, "ecc")) as other_key:
        other = parse_public(other_key.public)
        forged = issue(tm, other_key, vek)  # a valid vEK certificate, by another TM key
    with pytest.raises(CertificateInvalid, match="signature does not verify"):
        verify_vek_certificate(forged, manager_public=manager, now=LATER)
    with pytest.raises(CertificateInvalid, match="signature does not verify"):
        verify_vek_certificate(cert, manager_public=other, now=LATER)

    with pytest.raises(CertificateInvalid, match="expired"):
        verify_vek_certificate(cert, manager_public=manager, now=NOW + timedelta(days=8))

    other_vm = uuid.UUID(int=VM.int + 1)
    with pytest.raises(CertificateInvalid, match=f"for VM {VM}, not {other_vm}"):
        verify_vek_certificate(cert, manager_public=manager, now=LATER, vm_uuid=other_vm)
    for_other_vm = issue(tm, key, vek, vm=other_vm)
    with pytest.raises(CertificateInvalid, match=f"for VM {other_vm}, not {VM}"):
        verify_vek_certificate(for_other_vm, manager_public=manager, now=LATER, vm_uuid=VM)

    # The same key, the EK shape, but no virtual marks: a "hardware" EK certificate from the manager key.
    plain = tm_signed_certificate(
        ek_certificate_builder(
            ek_public=vek,
            issuer_name=manager_issuer_name(HOST),
            authority_key_identifier=x509.AuthorityKeyIdentifier.from_issuer_public_key(manager.public_key()),
            now=NOW,
            not_after=NOW + timedelta(days=7),
            serial=3,
            manufacturer="id:56524F54",
            model="looks like hardware",
            version="id:00000001",
        ),
        issuer_public=manager,
        sign_digest=lambda d: tm.sign_digest(key, d),
    )
    with pytest.raises(CertificateInvalid, match="not marked virtual"):
        verify_vek_certificate(plain, manager_public=manager, now=LATER)


def test_guest_tools_find_the_vek_certificate_in_nv(
    tm: Any, swtpm: Any, tools_env: Callable[[Any], dict[str, str]], tmp_path: Path
) -> None:
    """VM-F1: the vEK certificate sits at the TCG EK-certificate NV index (0x01C0000A, ECC), where
    unmodified tpm2-tools (tpm2_nvread, tpm2_getekcertificate) find it, and it certifies the EK
    that tpm2_createek makes."""
    srk = tm.create_srk()
    key = tm.load(srk, tm.create_signing_key(srk, "ecc"))
    manager = parse_public(key.public)
    der = issue(tm, key, ek_public(tm)).public_bytes(Encoding.DER)
    tm.write_ek_certificate(der, "ecc")
    assert tm.ek_certificate("ecc") == der
    tm.close()  # swtpm serves one connection at a time

    env = tools_env(swtpm)

    def run(*argv: str) -> None:
        done = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"{argv[0]}: {done.stderr}"

    run("tpm2_nvread", "0x01c0000a", "-o", "nv.der")
    run("tpm2_getekcertificate", "-o", "ek-cert.der")
    run("tpm2_createek", "-G", "ecc", "-c", "ek.ctx", "-u", "ek.pub")
    assert (tmp_path / "nv.der").read_bytes() == der
    found = (tmp_path / "ek-cert.der").read_bytes()
    assert found == der
    guest_ek = parse_public((tmp_path / "ek.pub").read_bytes())
    v = verify_vek_certificate(found, manager_public=manager, now=LATER, vek_public=guest_ek, vm_uuid=VM)
    assert v.host_id == HOST
