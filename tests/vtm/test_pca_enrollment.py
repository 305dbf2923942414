"""PCA enrollment end to end on swtpm-backed hosts and vTMs (RA-1, RA-7, VMM-F4, VMM-S3).

A simulated host (its EK certificate from the test manufacturer CA in `short_tmp/manufacturer-ca`)
enrolls: its own TM answers TPM2_ActivateCredential with the AK and EK at vroot's persistent handles.
Then a vTM created through the agent API enrolls against the host's record: a vAK under its vEK, the
vEK certificate from `POST /v1/vtms/{vm}/certificate`, activation inside the vTM. The PCA issues AK
and vAK certificates, and revokes one. Attacks: a vEK certificate of a VM on another host, and an
AK swapped between the challenge and the answer.
"""

from __future__ import annotations

import base64
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from vtm_helpers import make_host

from vroot.errors import ActivationFailed, CertificateInvalid, Revoked, TmError
from vroot.host import load_host_keys
from vroot.host._config import AK_HANDLE, EK_HANDLE
from vroot.pca import (
    SECRET_SIZE,
    EnrolledHost,
    EnrollmentKind,
    VerifiedEnrollment,
    begin_enrollment,
    begin_vtm_enrollment,
    build_crl,
    complete_enrollment,
    enrolled_host,
    init_pca,
    issue_ak_certificate,
    verify_ak_certificate,
)
from vroot.pki import is_virtual_tm_certificate, load_ca
from vroot.tpm2 import parse_public

pytestmark = pytest.mark.tpm


def now() -> datetime:
    return datetime.now(UTC)


def enroll_host(running, short_tmp: Path) -> tuple[VerifiedEnrollment, EnrolledHost]:  # noqa: ANN001
    """The host agent's side and the PCA's side of a host enrollment, with the host's real TM."""
    keys = load_host_keys(running.paths)
    host_id = running.agent.config.host_id
    challenge, pending = begin_enrollment(
        ek_certificate=keys.ek_certificate,
        ek_public=keys.ek_public,
        ak_public=keys.ak_public,
        trust_anchors=[load_ca(short_tmp / "manufacturer-ca").certificate],
        now=now(),
        rng=os.urandom,
        host_id=host_id,
    )
    tm = running.agent.host.client
    with tm.persistent(AK_HANDLE) as ak, tm.persistent(EK_HANDLE) as ek:
        secret = tm.activate_credential(ak, ek, challenge.credential_blob, challenge.encrypted_secret)
    verified = complete_enrollment(pending, activated_secret=secret, now=now())
    record = enrolled_host(
        verified,
        manager_public=keys.manager_public,
        manager_certify_attest=keys.manager_certify_attest,
        manager_certify_signature=keys.manager_certify_signature,
    )
    return verified, record


def new_vtm(running) -> tuple[str, bytes]:  # noqa: ANN001
    vm = str(uuid.uuid4())
    running.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    der = base64.b64decode(running.client.call("POST", f"/v1/vtms/{vm}/certificate")["der"])
    return vm, der


def enroll_vtm(running, vm: str, vek_certificate: bytes, host: EnrolledHost) -> VerifiedEnrollment:  # noqa: ANN001
    """The guest's side (vAK under the vEK, activation in the vTM) and the PCA's side."""
    with running.agent.manager.open_vtm(vm) as vtm, vtm.create_primary_ek("ecc") as ek:
        with vtm.load(ek, vtm.create_ak(ek, "ecc")) as vak:
            challenge, pending = begin_vtm_enrollment(
                vek_certificate=vek_certificate, vek_public=ek.public, vak_public=vak.public, host=host,
                now=now(), rng=os.urandom, vm_uuid=uuid.UUID(vm),
            )  # fmt: skip
            secret = vtm.activate_credential(vak, ek, challenge.credential_blob, challenge.encrypted_secret)
    return complete_enrollment(pending, activated_secret=secret, now=now())


def test_ra1_host_and_vtm_enroll_and_get_certificates(agent, short_tmp):
    host_enrollment, host = enroll_host(agent, short_tmp)
    keys = load_host_keys(agent.paths)
    assert host_enrollment.kind is EnrollmentKind.HOST and host_enrollment.host_id == "host-a"
    assert host_enrollment.ak == parse_public(keys.ak_public)
    assert host_enrollment.ek_name == parse_public(keys.ek_public).name()

    vm, vek_certificate = new_vtm(agent)
    vtm_enrollment = enroll_vtm(agent, vm, vek_certificate, host)
    assert vtm_enrollment.kind is EnrollmentKind.VTM and vtm_enrollment.virtual
    assert (vtm_enrollment.host_id, vtm_enrollment.vm_uuid) == ("host-a", uuid.UUID(vm))
    assert vtm_enrollment.ek_certificate == vek_certificate
    record = agent.client.call("GET", f"/v1/vtms/{vm}")
    assert vtm_enrollment.ek_name.hex() == record["vek_name"]

    pca = init_pca(short_tmp / "server", now=now() - timedelta(minutes=1)).pca
    host_cert = issue_ak_certificate(pca=pca, ak_public=host_enrollment.ak, agent_id="host-a",
                                     ek_name=host_enrollment.ek_name, virtual=False, now=now(), serial=1)  # fmt: skip
    vak_cert = issue_ak_certificate(pca=pca, ak_public=vtm_enrollment.ak, agent_id=f"vm-{vm}",
                                    ek_name=vtm_enrollment.ek_name, virtual=True, now=now(), serial=2)  # fmt: skip
    assert not is_virtual_tm_certificate(host_cert) and is_virtual_tm_certificate(vak_cert)
    v = verify_ak_certificate(vak_cert, pca_certificate=pca.certificate, ak_public=vtm_enrollment.ak, now=now())
    assert v.virtual and v.ek_name == vtm_enrollment.ek_name and v.agent_id == f"vm-{vm}"

    crl = build_crl(ca=pca, revoked=[(2, now(), "key_compromise")], now=now(), next_update=now() + timedelta(hours=1))
    verify_ak_certificate(host_cert, pca_certificate=pca.certificate, ak_public=host_enrollment.ak, now=now(), crl=crl)
    with pytest.raises(Revoked, match="serial 0x2 was revoked"):
        verify_ak_certificate(vak_cert, pca_certificate=pca.certificate, ak_public=vtm_enrollment.ak, now=now(),
                              crl=crl)  # fmt: skip


def test_ra7_vek_certificate_of_another_host_is_refused(agent, agent_factory, short_tmp):
    _, host_a = enroll_host(agent, short_tmp)
    other = agent_factory(make_host(short_tmp, "host-b"))
    _, host_b = enroll_host(other, short_tmp)
    vm, vek_certificate = new_vtm(other)
    with pytest.raises(CertificateInvalid, match="signature does not verify"):
        enroll_vtm(other, vm, vek_certificate, host_a)
    # The same vTM enrolls against its own host's record: only the host binding was wrong.
    assert enroll_vtm(other, vm, vek_certificate, host_b).host_id == "host-b"


def test_ra7_host_record_with_another_hosts_manager_key(agent, agent_factory, short_tmp):
    """Pairing this host's AK with another host's vTM-manager key (and its certification) fails: the
    certification was made by the other host's AK."""
    _, host_a = enroll_host(agent, short_tmp)
    other = agent_factory(make_host(short_tmp, "host-b"))
    keys_b = load_host_keys(other.paths)
    mixed = EnrolledHost(host_id="host-a", ak_public=host_a.ak_public, manager_public=keys_b.manager_public,
                         manager_certify_attest=keys_b.manager_certify_attest,
                         manager_certify_signature=keys_b.manager_certify_signature)  # fmt: skip
    vm, vek_certificate = new_vtm(other)
    with pytest.raises(CertificateInvalid, match="not certified by the enrolled AK of host 'host-a'"):
        enroll_vtm(other, vm, vek_certificate, mixed)


def test_ra1_ak_swapped_between_begin_and_complete(agent, short_tmp):
    """The challenge names the host AK; the host answers with another AK of the same TM. The TM will not
    open the credential for it, and no other answer completes the enrollment."""
    keys = load_host_keys(agent.paths)
    challenge, pending = begin_enrollment(
        ek_certificate=keys.ek_certificate, ek_public=keys.ek_public, ak_public=keys.ak_public,
        trust_anchors=[load_ca(short_tmp / "manufacturer-ca").certificate], now=now(), rng=os.urandom,
    )  # fmt: skip
    tm = agent.agent.host.client
    with tm.persistent(EK_HANDLE) as ek, tm.load(ek, tm.create_ak(ek, "ecc")) as swapped:
        assert swapped.name != pending.ak_name
        with pytest.raises(TmError, match="ActivateCredential"):
            tm.activate_credential(swapped, ek, challenge.credential_blob, challenge.encrypted_secret)
    with pytest.raises(ActivationFailed):
        complete_enrollment(pending, activated_secret=os.urandom(SECRET_SIZE), now=now())


def test_ra1_vak_swapped_between_begin_and_complete(agent, short_tmp):
    """The same in a vTM: the challenge was made for one vAK, the guest activates with another."""
    _, host = enroll_host(agent, short_tmp)
    vm, vek_certificate = new_vtm(agent)
    with agent.agent.manager.open_vtm(vm) as vtm, vtm.create_primary_ek("ecc") as ek:
        first, second = vtm.create_ak(ek, "ecc"), vtm.create_ak(ek, "ecc")
        with vtm.load(ek, first) as vak:
            challenge, pending = begin_vtm_enrollment(
                vek_certificate=vek_certificate, vek_public=ek.public, vak_public=vak.public, host=host,
                now=now(), rng=os.urandom,
            )  # fmt: skip
        with vtm.load(ek, second) as swapped, pytest.raises(TmError, match="ActivateCredential"):
            vtm.activate_credential(swapped, ek, challenge.credential_blob, challenge.encrypted_secret)
    with pytest.raises(ActivationFailed):
        complete_enrollment(pending, activated_secret=os.urandom(SECRET_SIZE), now=now())
