"""The baseline library and attestation requests through the operator API of a real server (issue 4,
point 5; RA-2, RA-5): manifests checked before they are stored, immutable baseline versions,
policies with optimistic versions and an optional baseline pin, agents' groups; attestation
requests and hostile answers to them, recorded as failed results; `vroot attest` exit codes."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime

import pytest

from vroot.cli.main import run
from vroot.errors import Conflict, InvalidInput, NotFound, VerificationError
from vroot.server._library import Library
from vroot.store import AgentKind, AgentRecord

SHA = "AB" * 32
BASELINE_YAML = f"""kind: vroot.baseline
name: fw
version: "2024.1"
reference_values:
  - component: shim
    version: "15.8"
    pcr: 4
    event_type: EV_EFI_BOOT_SERVICES_APPLICATION
    digests: {{sha256: "{SHA}"}}
""".encode()
POLICY = "kind: vroot.policy\ngroup: {group}\nbaseline: {baseline}\nevent_pcrs: [4]\n"


def put(op, path: str, body: bytes, *, kind: str = "yaml", **headers: str):  # noqa: ANN001, ANN201
    return op.request("PUT", path, content=body, headers={"content-type": f"application/{kind}", **headers})


def test_baselines_go_in_as_yaml_or_json_and_versions_are_immutable(server):
    op = server.operator()
    first = put(op, "/v1/baselines/fw/1", BASELINE_YAML)
    assert (first["name"], first["version"], first["label"]) == ("fw", 1, "2024.1")
    assert first["manifest"]["reference_values"][0]["digests"] == {"sha256": SHA.lower()}  # canonical form
    as_json = json.dumps({**first["manifest"], "version": "2024.2"}).encode()
    assert put(op, "/v1/baselines/fw/2", as_json, kind="json")["label"] == "2024.2"
    assert op.get("/v1/baselines/fw")["version"] == 2 and op.get("/v1/baselines/fw/1")["label"] == "2024.1"
    assert [(b["name"], b["version"]) for b in op.get("/v1/baselines", params={"latest": True})["baselines"]] == [("fw", 2)]
    with pytest.raises(Conflict, match="version 1 already exists"):
        put(op, "/v1/baselines/fw/1", BASELINE_YAML)
    with pytest.raises(InvalidInput, match="is of baseline 'fw', not 'other'"):
        put(op, "/v1/baselines/other/1", BASELINE_YAML)
    with pytest.raises(InvalidInput, match="reference_values.0.pcr"):
        put(op, "/v1/baselines/fw/3", BASELINE_YAML.replace(b"pcr: 4", b"pcr: 99"))
    with pytest.raises(InvalidInput):
        put(op, "/v1/baselines/fw/3", b"\x00\xff not a manifest")
    with pytest.raises(NotFound):
        op.get("/v1/baselines/fw/3")
    assert len(op.get("/v1/baselines")["baselines"]) == 2


def test_policies_have_optimistic_versions_and_may_pin_a_baseline(server):
    op = server.operator()
    with pytest.raises(InvalidInput, match="not stored"):
        put(op, "/v1/policies/hosts", POLICY.format(group="hosts", baseline="fw").encode())
    put(op, "/v1/baselines/fw/1", BASELINE_YAML)
    put(op, "/v1/baselines/fw/2", BASELINE_YAML.replace(b"2024.1", b"2024.2"))
    with pytest.raises(InvalidInput, match="policy of group 'other', not 'hosts'"):
        put(op, "/v1/policies/hosts", POLICY.format(group="other", baseline="fw").encode())
    with pytest.raises(InvalidInput, match="must name its baseline"):
        put(op, "/v1/policies/hosts", b"kind: vroot.policy\ngroup: hosts\n")

    created = put(op, "/v1/policies/hosts", POLICY.format(group="hosts", baseline="fw").encode())
    assert (created["version"], created["baseline"], created["baseline_version"]) == (1, "fw", None)
    library = Library(server.services.store, clock=server.clock)
    assert library.resolve("hosts").policy_id == "hosts@1/fw@2"  # the newest baseline version
    with pytest.raises(Conflict, match="already exists"):  # no If-Match: create only
        put(op, "/v1/policies/hosts", POLICY.format(group="hosts", baseline="fw").encode())
    with pytest.raises(Conflict, match="is at version 1, not 7"):
        put(op, "/v1/policies/hosts", POLICY.format(group="hosts", baseline="fw").encode(), **{"If-Match": '"7"'})
    with pytest.raises(InvalidInput, match="If-Match"):
        put(op, "/v1/policies/hosts", POLICY.format(group="hosts", baseline="fw").encode(), **{"If-Match": "abc"})
    pinned = op.request("PUT", "/v1/policies/hosts", content=POLICY.format(group="hosts", baseline="fw").encode(),
                        params={"baseline_version": 1}, headers={"If-Match": '"1"', "content-type": "application/yaml"})  # fmt: skip
    assert (pinned["version"], pinned["baseline_version"]) == (2, 1)
    resolved = library.resolve("hosts")
    assert (resolved.policy_id, resolved.baseline.version) == ("hosts@2/fw@1", "2024.1")
    assert op.get("/v1/policies/hosts")["version"] == 2 and len(op.get("/v1/policies")["policies"]) == 1
    with pytest.raises(NotFound):
        op.get("/v1/policies/nobody")


def test_policy_etag_header(server):
    import ssl

    import httpx

    op = server.operator()
    put(op, "/v1/baselines/fw/1", BASELINE_YAML)
    tls = ssl.create_default_context(cafile=str(server.ca))
    with httpx.Client(base_url=server.url, verify=tls, headers={"Authorization": f"Bearer {server.token}"}) as c:
        r = c.put("/v1/policies/g1", content=POLICY.format(group="g1", baseline="fw"), headers={"content-type": "application/yaml"})
        assert r.status_code == 201 and r.headers["etag"] == '"1"'
        r = c.put("/v1/policies/g1", content=POLICY.format(group="g1", baseline="fw"),
                  headers={"content-type": "application/yaml", "If-Match": r.headers["etag"]})  # fmt: skip
        assert r.status_code == 200 and r.headers["etag"] == '"2"'
        assert c.get("/v1/policies/g1").headers["etag"] == '"2"'
        anonymous = httpx.put(f"{server.url}/v1/policies/g1", content=b"x", verify=tls)
        assert anonymous.status_code == 401


def test_agents_group_and_labels_can_be_assigned(server, tmp_path):
    server.add_agent("host:h1", tmp_path)
    op = server.operator()
    agent = op.request("PATCH", "/v1/agents/host:h1", json={"group": "fleet", "labels": {"zone": "z1"}})
    assert (agent["group"], agent["labels"]) == ("fleet", {"zone": "z1"})
    assert server.services.store.agents.get("host:h1").group == "fleet"
    assert op.request("PATCH", "/v1/agents/host:h1", json={"labels": {}})["group"] == "fleet"  # group kept
    with pytest.raises(InvalidInput):
        op.request("PATCH", "/v1/agents/host:h1", json={"group": "a/b"})
    with pytest.raises(NotFound):
        op.request("PATCH", "/v1/agents/host:nope", json={"group": "fleet"})


def test_attestation_requests_are_checked(server, tmp_path):
    op, store = server.operator(), server.services.store
    with pytest.raises(NotFound):
        op.post("/v1/agents/host:nope/attestations")
    store.agents.add(AgentRecord(id="vm:1", kind=AgentKind.GUEST, ek_public=b"e", created_at=datetime.now(UTC)))
    with pytest.raises(Conflict, match="no active host"):  # a VM is attested through its host's deep quote
        op.post("/v1/agents/vm:1/attestations")
    store.agents.add(AgentRecord(id="host:new", kind=AgentKind.HOST, ek_public=b"e", created_at=datetime.now(UTC)))
    with pytest.raises(Conflict, match="enrolling"):
        op.post("/v1/agents/host:new/attestations")
    server.add_agent("host:h1", tmp_path)
    with pytest.raises(InvalidInput, match="queued by the server"):  # no attest task without its nonce
        op.post("/v1/agents/host:h1/tasks", {"kind": "attest", "payload": {"nonce": "00" * 32}})
    with pytest.raises(InvalidInput, match="queued by the server"):  # nor a deep quote without its batch
        op.post("/v1/agents/host:h1/tasks", {"kind": "deep-quote", "payload": {"qualifying_data": "00" * 32}})
    with pytest.raises(NotFound, match="not been attested"):
        op.get("/v1/agents/host:h1/result")
    assert op.get("/v1/agents/host:h1/results") == {"results": []}
    task = op.post("/v1/agents/host:h1/attestations")
    assert task["state"] == "queued" and task["result"] is None
    with pytest.raises(NotFound):
        op.get(f"/v1/agents/host:new/attestations/{task['task_id']}")


@pytest.mark.parametrize(("answer", "status", "finding"), [
    ({"evidence": {"host_id": "h"}}, "done", "attestation.evidence.malformed"),
    ("just text", "done", "attestation.evidence.malformed"),
    ({"evidence": {}, "extra": 1}, "done", "attestation.evidence.malformed"),
    ({"error": "TmError", "detail": "the TM is in failure mode"}, "failed", "attestation.agent.failed"),
])  # fmt: skip
def test_hostile_or_failed_answers_are_recorded_and_use_up_the_nonce(server, tmp_path, answer, status, finding):
    agent = server.client(cert=server.add_agent("host:h1", tmp_path))
    op, store = server.operator(), server.services.store
    op.post("/v1/agents/host:h1/attestations")
    task = agent.next_task("host:h1", wait=1)
    done = agent.post_result("host:h1", task["id"], ok=status == "done", result=answer)
    assert done["state"] == status
    result = op.get("/v1/agents/host:h1/result")
    assert done["result"] == {"result_id": result["id"], "verdict": result["verdict"]}
    assert result["verdict"] == ("error" if status == "failed" else "untrusted")
    assert [f["id"] for f in result["findings"]] == [finding]
    assert store.nonces.find(bytes.fromhex(task["payload"]["nonce"])).used_at is not None
    assert server.client().get("/v1/health")["status"] == "ok"


def test_result_key_is_public(server):
    pem = server.client().get("/v1/result-key")
    assert pem == server.services.keys.result_public_pem and pem.startswith(b"-----BEGIN PUBLIC KEY-----")


def test_attest_cli_exit_codes_for_bad_input_and_unreachable(server, tmp_path, capsys, monkeypatch):
    """Exit 0 and 1 come only from a verdict (see the TPM tests); anything else is 2."""
    monkeypatch.delenv("VROOT_TOKEN", raising=False)
    base = ["--token", server.token, "--ca", str(server.ca)]
    assert run(["attest", "host:nope", "--server", server.url, *base]) == 2
    assert "agent host:nope does not exist" in capsys.readouterr().err
    server.add_agent("host:h1", tmp_path)  # no agent answers it
    assert run(["attest", "h1", "--server", server.url, *base, "--wait", "0.3"]) == 2
    assert "no result from host:h1 within 0.3 s" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{s.getsockname()[1]}"
    assert run(["attest", "h1", "--server", closed, *base]) == 2
    assert run(["attest", "h1", "--server", server.url, "--ca", str(server.ca)]) == 2  # no token
    assert "give the operator token" in capsys.readouterr().err
    assert run(["attest", "h1", "--server", server.url, "--ca", str(server.ca), "--token", "0" * 64]) == 2
    err = capsys.readouterr().err
    assert "operator token is not valid" in err and "0" * 64 not in err
    with pytest.raises(VerificationError):  # and the API itself refuses without the token
        server.client().post("/v1/agents/host:h1/attestations")
