"""The dashboard's static routes (issue 6, point 1): served at /ui/ without a token (they hold no
data) with a same-origin-only Content-Security-Policy; only the packaged files, never a path from
the request; none in the OpenAPI schema; every API call of the page still needs the operator token."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from vroot.server import Services, create_app, init_server


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    result = init_server(tmp_path_factory.mktemp("srv"), now=datetime.now(UTC), rng=os.urandom, database="sqlite://")
    services = Services.open(result.settings)
    try:
        yield TestClient(create_app(result.settings, services), base_url="https://testserver")
    finally:
        services.close()


def test_the_page_and_its_modules_are_served_with_a_same_origin_policy(client):
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    for name in ("app.js", "api.js", "dom.js", "fleet.js", "agent.js", "chain.js", "migrations.js", "live.js"):
        got = client.get(f"/ui/{name}")
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/javascript"), name
        assert "http://" not in got.text and "https://" not in got.text, f"{name} fetches from elsewhere"
    assert client.get("/ui/style.css").headers["content-type"].startswith("text/css")


def test_root_redirects_to_the_dashboard(client):
    for path in ("/", "/ui"):
        got = client.get(path, follow_redirects=False)
        assert (got.status_code, got.headers["location"]) == (307, "/ui/")


@pytest.mark.parametrize("path", ["/ui/__init__.py", "/ui/..%2F_app.py", "/ui/nothing.js", "/ui/%2e%2e%2fpyproject.toml"])
def test_only_packaged_dashboard_files_are_served(client, path):
    got = client.get(path)
    assert got.status_code in (404, 422), (path, got.status_code)
    assert "import" not in got.text


def test_the_ui_is_not_in_the_api_schema_and_the_api_still_needs_the_token(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")]
    refused = client.get("/v1/agents")
    assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
