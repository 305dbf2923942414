"""A fuzz run of the API from its own OpenAPI schema (schemathesis) against the real HTTPS server,
with the operator token: valid and invalid requests to every operation, a bounded number of
examples each. No answer may be a 5xx, and every error must be a problem document."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from server_helpers import Server, launch_server, stop_server

ROOT = Path(__file__).resolve().parent.parent.parent
SCHEMA = schemathesis.openapi.from_dict(json.loads((ROOT / "docs" / "openapi.json").read_text()))
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
# Invalid requests for every operation that takes any input (one that takes none has no invalid form).
CASES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, GenerationMode.NEGATIVE) for op in OPERATIONS if list(op.iter_parameters()) or len(op.body)
]
EXAMPLES = 20


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = launch_server(tmp_path_factory.mktemp("fuzz") / "srv", max_wait_seconds=0.5)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.mark.parametrize(("operation", "mode"), CASES, ids=[f"{op.label} {m.value}" for op, m in CASES])
def test_no_server_errors(fuzzed_server, operation, mode):
    server = fuzzed_server
    client = httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=str(server.ca)), timeout=30)
    seen: list[int] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:  # noqa: ANN001
        kwargs = case.as_transport_kwargs(base_url=server.url)
        headers = {**(kwargs.get("headers") or {}), "Authorization": f"Bearer {server.token}"}
        response = client.request(kwargs["method"], kwargs["url"], headers=headers, params=kwargs.get("params"),
                                  content=_content(kwargs))  # fmt: skip
        seen.append(response.status_code)
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json", response.text
            assert response.json()["status"] == response.status_code

    try:
        run()
    finally:
        client.close()
    assert seen, "no request was made"
    assert server.client().get("/v1/health")["status"] == "ok"


def _content(kwargs: dict) -> bytes | None:  # noqa: ANN001
    if "json" in kwargs:
        return json.dumps(kwargs["json"]).encode()
    data = kwargs.get("data")
    return data.encode() if isinstance(data, str) else data
