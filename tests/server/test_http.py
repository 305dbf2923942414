"""The HTTP surface of a real server (uvicorn, TLS, SQLite): health, metrics, the checked-in OpenAPI
schema, and problem details (RFC 9457) for every kind of error."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import pytest

from vroot.errors import NotFound, VerificationError

ROOT = Path(__file__).resolve().parent.parent.parent
PROBLEM_KEYS = {"type", "title", "status", "detail", "error", "category"}


def http(server, *, token: str | None = None) -> httpx.Client:  # noqa: ANN001
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=str(server.ca)),
                        headers=headers, timeout=10)


def assert_problem(response: httpx.Response, status: int, error: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert PROBLEM_KEYS <= set(body), body
    assert (body["status"], body["error"], body["type"]) == (status, error, f"urn:vroot:error:{error}")
    return body


def test_health_needs_no_credentials(server):
    with http(server) as c:
        r = c.get("/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_metrics_count_requests_by_route_and_agents_by_state(server, tmp_path):
    server.add_agent("host:m1", tmp_path)
    with http(server) as c:
        c.get("/v1/health")
        c.get("/v1/agents/host:m1")  # 401: counted under its template, not its path
        c.get("/no/such/path")
        text = c.get("/metrics").text
    assert '# TYPE vroot_http_requests_total counter' in text
    assert 'vroot_http_requests_total{method="GET",route="/v1/health",status="200"} 1' in text
    assert 'vroot_http_requests_total{method="GET",route="/v1/agents/{agent_id}",status="401"} 1' in text
    assert 'route="unmatched",status="404"} 1' in text
    assert "/no/such/path" not in text
    assert 'vroot_agents{kind="host",state="active"} 1' in text
    assert 'vroot_latest_verdicts{verdict="trusted"} 0' in text


def test_served_openapi_schema_is_the_checked_in_one(server):
    """Regenerate with `python -m vroot.server.api > docs/openapi.json` after changing the API."""
    with http(server) as c:
        served = c.get("/openapi.json").json()
    checked_in = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert served == checked_in, "docs/openapi.json is stale: run python -m vroot.server.api > docs/openapi.json"
    assert {"/v1/health", "/v1/enrollments", "/v1/agents/{agent_id}/tasks", "/v1/crl"} <= set(served["paths"])


def test_bad_json_is_a_400_problem(server):
    with http(server) as c:
        r = c.post("/v1/enrollments", content=b'{"host_id": ', headers={"content-type": "application/json"})
    assert_problem(r, 400, "InvalidInput")


def test_schema_violation_is_a_422_problem_without_the_input(server):
    secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQ="
    body = {"enrollment_id": "zz", "secret": secret, "client_key": "x", "vtm_manager_public": "",
            "vtm_manager_certify_info": "", "vtm_manager_certify_signature": "", "extra": 1}  # fmt: skip
    with http(server) as c:
        r = c.post("/v1/enrollments/host:a/activation", json=body)
    problem = assert_problem(r, 422, "RequestInvalid")
    locs = {tuple(e["loc"]) for e in problem["errors"]}
    assert ("body", "enrollment_id") in locs and ("body", "extra") in locs
    assert secret not in r.text


def test_undecodable_bytes_are_a_400_problem(server):
    body = {"host_id": "h1", "ek_certificate": "AAAA", "ek_public": "AAAA", "ak_public": "AAAA"}
    with http(server) as c:
        r = c.post("/v1/enrollments", json=body)
    assert_problem(r, 400, "InvalidInput")


def test_unknown_agent_is_a_404_problem(server):
    with pytest.raises(NotFound, match="agent host:nobody does not exist"):
        server.operator().get("/v1/agents/host:nobody")
    with http(server, token=server.token) as c:
        assert_problem(c.get("/v1/agents/host:nobody"), 404, "NotFound")


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic dXNlcjpwdw==", "Bearer"])
def test_operator_endpoints_refuse_wrong_auth(server, header):
    headers = {"Authorization": header} if header else {}
    with http(server) as c:
        r = c.get("/v1/agents", headers=headers)
    problem = assert_problem(r, 401, "Unauthenticated")
    assert problem["category"] == "VerificationError"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "wrong-token" not in r.text


def test_operator_token_of_another_server_is_refused(server_factory):
    one, two = server_factory(), server_factory()
    with pytest.raises(VerificationError, match="operator token is not valid"):
        one.client(token=two.token).get("/v1/agents")
    assert one.operator().get("/v1/agents") == {"agents": []}


def test_unknown_route_and_method_are_problems(server):
    with http(server) as c:
        assert_problem(c.get("/v2/nothing"), 404, "NotFound")
        assert_problem(c.delete("/v1/health"), 405, "MethodNotAllowed")


def test_oversized_body_is_refused_before_it_is_read(server):
    limit = server.settings.max_body_bytes
    with http(server) as c:
        r = c.post("/v1/enrollments", content=b"x" * (limit + 1), headers={"content-type": "application/json"})
        assert_problem(r, 413, "ContentTooLarge")

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(limit // 65536 + 2):
                yield b" " * 65536

        r = c.post("/v1/enrollments", content=chunks(), headers={"content-type": "application/json"})
        assert_problem(r, 413, "ContentTooLarge")
        assert c.get("/v1/health").status_code == 200  # and it keeps serving


def test_crl_is_der_from_the_operations_ca(server, tmp_path):
    from cryptography import x509

    server.add_agent("host:c1", tmp_path)
    server.operator().post("/v1/agents/host:c1/revoke", {"reason": "key_compromise"})
    with http(server) as c:
        r = c.get("/v1/crl")
    assert r.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(r.content)
    assert crl.issuer == server.services.keys.ops.certificate.subject
    assert crl.is_signature_valid(server.services.keys.ops.certificate.public_key())
    serial = server.services.store.agents.get("host:c1").client_serial
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
