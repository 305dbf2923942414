"""Host enrollment against a real server with a real simulated host (RA-1): its swtpm TM answers
TPM2_ActivateCredential; the server checks the EK certificate against the manufacturer CA, the
answer, and the AK's certification of the vTM-manager key, then issues the AK and client
certificates. On SQLite and on PostgreSQL. Attacks: an AK swapped between the challenge and the
answer, an answer after the challenge expired, an EK of an unknown manufacturer."""

from __future__ import annotations

import base64
import os
import stat
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from vtm_helpers import make_host

from vroot.agent import enroll_host, load_credentials
from vroot.errors import (
    ActivationFailed,
    CertificateInvalid,
    Conflict,
    NonceExpired,
    NotFound,
    Revoked,
    TmError,
)
from vroot.host import HostPaths, load_config, load_host_keys
from vroot.host._config import AK_HANDLE, EK_HANDLE
from vroot.host._hosttm import HostTm
from vroot.pca import verify_ak_certificate
from vroot.pki import create_ca, save_ca
from vroot.tpm2 import parse_public

pytestmark = pytest.mark.tpm


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def begin(client, host_dir) -> dict:  # noqa: ANN001
    keys = load_host_keys(HostPaths(host_dir))
    return client.post("/v1/enrollments", {"host_id": load_config(HostPaths(host_dir)).host_id,
                                           "ek_certificate": b64(keys.ek_certificate),
                                           "ek_public": b64(keys.ek_public), "ak_public": b64(keys.ak_public)})  # fmt: skip


def activation(host_dir, challenge: dict, secret: bytes) -> dict:  # noqa: ANN001
    keys = load_host_keys(HostPaths(host_dir))
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return {"enrollment_id": challenge["enrollment_id"], "secret": b64(secret),
            "client_key": key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode(),
            "vtm_manager_public": b64(keys.manager_public),
            "vtm_manager_certify_info": b64(keys.manager_certify_attest),
            "vtm_manager_certify_signature": b64(keys.manager_certify_signature)}  # fmt: skip


def open_tm(host_dir):  # noqa: ANN001, ANN201
    paths = HostPaths(host_dir)
    return HostTm.open(load_config(paths), paths, detached=False)


def activate_in_tm(host_dir, challenge: dict) -> bytes:  # noqa: ANN001
    host = open_tm(host_dir)
    try:
        tm = host.client
        with tm.persistent(AK_HANDLE) as ak, tm.persistent(EK_HANDLE) as ek:
            return tm.activate_credential(ak, ek, base64.b64decode(challenge["credential_blob"]),
                                          base64.b64decode(challenge["encrypted_secret"]))  # fmt: skip
    finally:
        host.close(stop_tm=True)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_ra1_host_enrolls_and_its_client_certificate_works(server_factory, short_tmp, backend):
    host_dir = make_host(short_tmp, "host-a")
    server = server_factory(backend=backend, manufacturer_cas=(short_tmp / "manufacturer-ca",))
    assert server.services.store.dialect == backend
    creds = enroll_host(host_dir, server.url, server.ca)

    assert creds.agent_id == "host:host-a" and load_credentials(host_dir) == creds
    assert stat.S_IMODE(creds.client_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds.directory.stat().st_mode) == 0o700
    agent = server.operator().get("/v1/agents/host:host-a")
    assert agent["state"] == "active" and agent["kind"] == "host"
    record = server.services.store.agents.get("host:host-a")
    keys = load_host_keys(HostPaths(host_dir))
    assert parse_public(record.ak_public) == parse_public(keys.ak_public)
    assert record.vtm_manager_public == keys.manager_public
    assert server.services.store.enrollments.find("host:host-a") is None  # the challenge was used up

    ak_cert = x509.load_pem_x509_certificate(creds.ak_certificate.read_bytes())
    verified = verify_ak_certificate(ak_cert, pca_certificate=server.services.keys.pca.certificate,
                                     ak_public=parse_public(keys.ak_public), now=datetime.now(UTC))  # fmt: skip
    assert verified.agent_id == "host:host-a" and not verified.virtual
    client_cert = x509.load_pem_x509_certificate(creds.client_certificate.read_bytes())
    assert client_cert.serial_number == record.client_serial

    with creds.client() as client:  # mutual TLS with the new certificate
        assert client.next_task("host:host-a", wait=0) is None
        task = server.operator().post("/v1/agents/host:host-a/tasks", {"kind": "ping"})
        assert client.next_task("host:host-a", wait=5)["id"] == task["id"]
        old_key = creds.client_key.read_bytes()
        again = enroll_host(host_dir, server.url, server.ca)  # enrolling again replaces the certificate
        assert again == creds and creds.client_key.read_bytes() != old_key
        with pytest.raises(Revoked, match="is revoked"):  # the open connection's old certificate
            client.next_task("host:host-a", wait=0)
    with again.client() as client:
        assert client.next_task("host:host-a", wait=0) is None


def test_ra1_ak_swapped_between_begin_and_activation_fails(server_factory, short_tmp):
    """The challenge names the host AK; the host tries another AK of the same TM: the TM refuses,
    a guessed answer fails, the challenge is gone, and no agent becomes active."""
    host_dir = make_host(short_tmp, "host-a")
    server = server_factory(manufacturer_cas=(short_tmp / "manufacturer-ca",))
    client = server.client()
    challenge = begin(client, host_dir)
    host = open_tm(host_dir)
    try:
        tm = host.client
        with tm.persistent(EK_HANDLE) as ek, tm.load(ek, tm.create_ak(ek, "ecc")) as swapped:
            with pytest.raises(TmError, match="ActivateCredential"):
                tm.activate_credential(swapped, ek, base64.b64decode(challenge["credential_blob"]),
                                       base64.b64decode(challenge["encrypted_secret"]))  # fmt: skip
    finally:
        host.close(stop_tm=True)
    with pytest.raises(ActivationFailed, match="not the one wrapped"):
        client.post("/v1/enrollments/host:host-a/activation", activation(host_dir, challenge, os.urandom(32)))
    with pytest.raises(NotFound, match="no enrollment in progress"):  # single use, even when wrong
        client.post("/v1/enrollments/host:host-a/activation", activation(host_dir, challenge, os.urandom(32)))
    assert server.services.store.agents.get("host:host-a").state.value == "enrolling"
    assert server.operator().get("/v1/agents", params={"state": "active"}) == {"agents": []}


def test_ra1_expired_enrollment_is_refused(server_factory, short_tmp):
    host_dir = make_host(short_tmp, "host-a")
    server = server_factory(manufacturer_cas=(short_tmp / "manufacturer-ca",), enrollment_ttl_seconds=60)
    client = server.client()
    challenge = begin(client, host_dir)
    secret = activate_in_tm(host_dir, challenge)  # the right secret...
    server.clock.offset = timedelta(seconds=61)  # ...too late
    with pytest.raises(NonceExpired, match="expired"):
        client.post("/v1/enrollments/host:host-a/activation", activation(host_dir, challenge, secret))
    assert server.services.store.agents.get("host:host-a").state.value == "enrolling"
    assert server.services.store.agents.get("host:host-a").client_serial is None


def test_ra1_ek_of_an_unknown_manufacturer_is_refused_and_nothing_stored(server_factory, short_tmp):
    host_dir = make_host(short_tmp, "host-a")
    other = short_tmp / "other-ca"
    save_ca(create_ca(common_name="vroot test TPM manufacturer CA", now=datetime.now(UTC) - timedelta(days=1)), other)
    server = server_factory(manufacturer_cas=(other,))
    with pytest.raises(CertificateInvalid):
        enroll_host(host_dir, server.url, server.ca)
    assert server.services.store.agents.find("host:host-a") is None
    assert server.services.store.enrollments.find("host:host-a") is None


def test_enrolled_ek_cannot_be_claimed_by_another_tm(server_factory, short_tmp):
    """host-b presents its own genuine EK under host-a's name: refused, host-a stays as it was."""
    host_a = make_host(short_tmp, "host-a")
    host_b = make_host(short_tmp, "host-b")
    server = server_factory(manufacturer_cas=(short_tmp / "manufacturer-ca",))
    enroll_host(host_a, server.url, server.ca)
    keys_b = load_host_keys(HostPaths(host_b))
    with pytest.raises(Conflict, match="another EK"):
        server.client().post("/v1/enrollments", {"host_id": "host-a", "ek_certificate": b64(keys_b.ek_certificate),
                                                 "ek_public": b64(keys_b.ek_public), "ak_public": b64(keys_b.ak_public)})  # fmt: skip
    assert server.services.store.agents.get("host:host-a").state.value == "active"


def test_enrollment_waits_for_no_host_agent(server_factory, short_tmp):
    """Enrollment opens the host TM itself, so it refuses while a host agent holds it."""
    import fcntl

    host_dir = make_host(short_tmp, "host-a")
    server = server_factory(manufacturer_cas=(short_tmp / "manufacturer-ca",))
    paths = HostPaths(host_dir)
    fd = os.open(paths.agent_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a running host agent holds
        with pytest.raises(Conflict, match="enroll before `vroot host run`"):
            enroll_host(host_dir, server.url, server.ca)
    finally:
        os.close(fd)
    assert enroll_host(host_dir, server.url, server.ca).agent_id == "host:host-a"
