"""Request validation and the error table, in process (FastAPI's TestClient: no TLS, so only what
needs no agent certificate): every refusal is a problem document with the status the one table
gives its class, and nothing is stored for a refused request."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from vroot import errors as E
from vroot.server import Forbidden, Services, Unauthenticated, create_app, init_server
from vroot.server.api import STATUS, status_for
from vroot.store import AgentKind, AgentRecord


@pytest.fixture
def app_client(tmp_path) -> Iterator[tuple[TestClient, Services, str]]:  # noqa: ANN001
    result = init_server(tmp_path / "srv", now=datetime.now(UTC), rng=os.urandom)
    services = Services.open(result.settings)
    try:
        with TestClient(create_app(result.settings, services)) as client:
            client.headers["Authorization"] = f"Bearer {result.operator_token}"
            yield client, services, result.operator_token
    finally:
        services.close()


class _Custom(E.NotFound):
    """A subclass defined outside vroot.errors takes its family's status."""


@pytest.mark.parametrize(("exc", "status"), [
    (E.InvalidInput("x"), 400), (E.TpmStructureError("x"), 400), (E.NotFound("x"), 404), (_Custom("x"), 404),
    (E.Conflict("x"), 409), (Unauthenticated("x"), 401), (Forbidden("x"), 403), (E.Revoked("x"), 403),
    (E.NonceExpired("x"), 403), (E.NonceReused("x"), 403), (E.ActivationFailed("x"), 422),
    (E.CertificateInvalid("x"), 422), (E.SignatureInvalid("x"), 422), (E.Unavailable("x"), 503),
    (E.SwtpmError("x"), 503), (E.TmError("x"), 500), (E.VrootError("x"), 500), (ValueError("x"), 500),
])  # fmt: skip
def test_one_table_maps_error_classes_by_mro(exc, status):
    assert status_for(exc) == status
    assert all(issubclass(cls, E.VrootError) for cls in STATUS)


def test_unknown_field_is_refused_by_name(app_client):
    client, services, _ = app_client
    r = client.post("/v1/enrollments", json={"host_id": "h", "ek_certificate": "", "ek_public": "",
                                             "ak_public": "", "admin": True})  # fmt: skip
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert ["body", "admin"] in [e["loc"] for e in r.json()["errors"]]
    assert services.store.agents.list() == []


@pytest.mark.parametrize("field", ["ek_certificate", "ek_public"])
def test_not_base64_is_refused(app_client, field):
    client, _, _ = app_client
    body = {"host_id": "h", "ek_certificate": "AAAA", "ek_public": "AAAA", "ak_public": "AAAA", field: "!!!!"}
    r = client.post("/v1/enrollments", json=body)
    assert r.status_code == 422 and [e["loc"] for e in r.json()["errors"]] == [["body", field]]


def _activation(client_key: str) -> dict:
    return {"enrollment_id": "0" * 32, "secret": base64.b64encode(os.urandom(32)).decode(), "client_key": client_key,
            "vtm_manager_public": "AAAA", "vtm_manager_certify_info": "AAAA", "vtm_manager_certify_signature": "AAAA"}  # fmt: skip


def test_client_key_must_be_a_pem_key_or_a_csr_that_verifies(app_client):
    client, _, _ = app_client
    r = client.post("/v1/enrollments/host:h/activation", json=_activation("not a key"))
    assert r.status_code == 400 and "client_key" in r.json()["detail"]
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "host:h")])).sign(key, hashes.SHA256())  # fmt: skip
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 1  # break the signature
    broken = "-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(bytes(der)).decode() + \
        "-----END CERTIFICATE REQUEST-----\n"  # fmt: skip
    r = client.post("/v1/enrollments/host:h/activation", json=_activation(broken))
    assert r.status_code == 400 and r.json()["error"] == "InvalidInput"
    good = csr.public_bytes(serialization.Encoding.PEM).decode()
    r = client.post("/v1/enrollments/host:h/activation", json=_activation(good))
    assert r.status_code == 404 and "agent host:h does not exist" in r.json()["detail"]  # the key was fine


def test_payload_that_is_not_strict_json_is_refused(app_client):
    client, services, _ = app_client
    services.store.agents.add(AgentRecord(id="host:h", kind=AgentKind.HOST, ek_public=b"e", created_at=datetime.now(UTC)))
    services.store.agents.activate("host:h", ak_public=b"a", ak_certificate=b"", client_serial=7, now=datetime.now(UTC))
    r = client.post("/v1/agents/host:h/tasks", content=b'{"kind": "ping", "payload": {"x": NaN}}',
                    headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"] == "InvalidInput"
    assert services.store.tasks.list(agent_id="host:h") == []
    deep = b'{"kind": "ping", "payload": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"
    r = client.post("/v1/agents/host:h/tasks", content=deep, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and r.headers["content-type"] == "application/problem+json"


def test_revocation_reason_is_one_of_rfc_5280s(app_client):
    client, services, _ = app_client
    services.store.agents.add(AgentRecord(id="host:h", kind=AgentKind.HOST, ek_public=b"e", created_at=datetime.now(UTC)))
    r = client.post("/v1/agents/host:h/revoke", json={"reason": "because"})
    assert r.status_code == 422 and services.store.agents.get("host:h").state.value == "enrolling"


def test_agent_endpoints_without_tls_have_no_certificate(app_client):
    client, _, _ = app_client
    r = client.get("/v1/agents/host:h/tasks")
    assert r.status_code == 401 and r.json()["error"] == "Unauthenticated"
