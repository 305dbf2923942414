"""Host attestation end to end (RA-2, RA-5, RA-6, HW-F2), on SQLite and on PostgreSQL: a real HTTPS
server, two enrolled swtpm-backed simulated hosts whose host agents and task loops run, a baseline
learnt from host-a's own logs with a policy for their group. `vroot attest` says trusted and the
signed result verifies offline; a replayed nonce, evidence signed by the other host's AK, and a
tampered boot loader after a reboot are each refused or judged untrusted, recorded, and a change
of verdict reaches the event stream and a webhook receiver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from attest_helpers import (
    EventStream,
    Host,
    WebhookReceiver,
    attest,
    enrolled_host,
    learnt_manifest,
    upload_library,
    wait_for,
)
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from server_helpers import Server, launch_server, stop_server
from vtm_helpers import kill_recorded_swtpms, make_host

from vroot.attestation.ear import verify_ear
from vroot.cli.main import run
from vroot.errors import Conflict, SignatureInvalid

pytestmark = pytest.mark.tpm
SECRET = "s3cret-for-the-webhook-hmac"


@dataclass
class World:
    server: Server
    a: Host
    b: Host

    @property
    def op(self):  # noqa: ANN201
        return self.server.operator()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="va", dir="/tmp"))
    root.chmod(0o711)
    dirs = [make_host(root, name) for name in ("host-a", "host-b")]  # and the manufacturer CA
    database = request.getfixturevalue("pg_database")() if request.param == "postgresql" else None
    server = launch_server(tmp_path_factory.mktemp("attest") / "srv", database=database,
                           manufacturer_cas=(root / "manufacturer-ca",), attestation_interval_seconds=3600,
                           event_keepalive_seconds=0.5)  # fmt: skip
    hosts: list[Host] = []
    try:
        assert server.services.store.dialect == request.param
        hosts += [enrolled_host(server, d) for d in dirs]
        upload_library(server.operator(), learnt_manifest(hosts[0].directory))
        yield World(server=server, a=hosts[0], b=hosts[1])
    finally:
        for host in hosts:
            host.close()
        stop_server(server)
        kill_recorded_swtpms(root)
        shutil.rmtree(root, ignore_errors=True)


def test_ra2_ra5_attest_cli_says_trusted_and_the_ear_verifies_offline(world, capsys):
    server = world.server
    args = ["attest", "host-a", "--server", server.url, "--token", server.token, "--ca", str(server.ca)]
    assert run([*args, "--json", "--wait", "30"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["agent_id"], result["verdict"], result["findings"]) == ("host:host-a", "trusted", [])
    assert result["policy_id"] == "default@1/hosts@1" and result["status"] == "affirming"
    assert set(result["pcrs"]["sha256"]) == {*map(str, range(11)), "14"}

    pem = server.client().get("/v1/result-key")  # no credentials: relying parties fetch it
    ear = verify_ear(result["ear"], public_key=load_pem_public_key(pem), now=datetime.now(UTC))
    assert (ear.subject, ear.status) == ("host:host-a", "affirming")
    assert ear.vector == {"instance-identity": 2, "hardware": 2, "executables": 2, "configuration": 2,
                          "file-system": 2}  # fmt: skip
    submodule = ear.claims["submods"]["host:host-a"]
    assert submodule["vroot.verdict"] == "trusted" and submodule["vroot.ima"]["entries_seen"] == 5
    with pytest.raises(SignatureInvalid):  # and not under any other key
        verify_ear(result["ear"], public_key=ec.generate_private_key(ec.SECP256R1()).public_key(), now=datetime.now(UTC))

    assert run(args) == 0  # the human table
    table = capsys.readouterr().out
    assert "verdict     TRUSTED" in table and "findings    none" in table and "hardware affirming" in table
    history = world.op.get("/v1/agents/host:host-a/results", params={"limit": 2})["results"]
    assert [r["id"] for r in history] == [history[0]["id"], result["id"]] and history[0]["id"] > result["id"]
    assert world.op.get("/v1/agents/host:host-a/result")["id"] == history[0]["id"]


def test_ra2_replayed_evidence_is_refused_and_recorded(world):
    """The agent answers a second challenge with the evidence of the first: its nonce was used."""
    a, op, store = world.a, world.op, world.server.services.store
    a.stop_loop()
    try:
        me = a.client()
        first = op.post("/v1/agents/host:host-a/attestations")
        task = me.next_task(a.agent_id, wait=5)
        assert task["id"] == first["task_id"]
        evidence = a.local.call("POST", "/v1/deep-quote", {"qualifying_data": task["payload"]["nonce"]})
        me.post_result(a.agent_id, task["id"], ok=True, result={"evidence": evidence})
        assert op.get(f"/v1/agents/host:host-a/attestations/{task['id']}")["result"]["verdict"] == "trusted"
        with pytest.raises(Conflict, match="is done"):  # the same task twice: refused, nothing recorded
            me.post_result(a.agent_id, task["id"], ok=True, result={"evidence": evidence})

        second = op.post("/v1/agents/host:host-a/attestations")
        task2 = me.next_task(a.agent_id, wait=5)
        assert task2["id"] == second["task_id"]
        me.post_result(a.agent_id, task2["id"], ok=True, result={"evidence": evidence})  # replayed
        result = op.get(f"/v1/agents/host:host-a/attestations/{task2['id']}")["result"]
        assert result["verdict"] == "untrusted"
        [finding] = result["findings"]
        assert finding["id"] == "attestation.nonce.reused" and finding["seen"] == "NonceReused"
        assert result["trustworthiness_vector"] == {"hardware": 96} and result["status"] == "contraindicated"
        # the second challenge was used up too: an honest answer to it now would be refused as well
        assert store.nonces.find(bytes.fromhex(task2["payload"]["nonce"])).used_at is not None
        assert store.tasks.get(task2["id"]).result == {"result_id": result["id"], "verdict": "untrusted"}
    finally:
        a.start_loop()
    assert attest(op, a.agent_id)["verdict"] == "trusted"  # the next honest attestation is fine


def test_ra5_evidence_signed_by_another_hosts_ak_is_refused(world):
    """host-b's TM quotes host-a's nonce; the server checks it with host-a's ENROLLED AK."""
    a, b, op = world.a, world.b, world.op
    a.stop_loop()
    try:
        me = a.client()
        op.post("/v1/agents/host:host-a/attestations")
        task = me.next_task(a.agent_id, wait=5)
        forged = b.local.call("POST", "/v1/deep-quote", {"qualifying_data": task["payload"]["nonce"]})
        forged["host_id"] = "host-a"
        me.post_result(a.agent_id, task["id"], ok=True, result={"evidence": forged})
        result = op.get(f"/v1/agents/host:host-a/attestations/{task['id']}")["result"]
    finally:
        a.start_loop()
    assert result["verdict"] == "untrusted"
    assert [f["id"] for f in result["findings"]] == ["attestation.quote.signature_invalid"]
    assert result["trustworthiness_vector"] == {"instance-identity": 2, "hardware": 96}
    assert attest(op, b.agent_id)["verdict"] == "trusted"  # host-b itself is fine


def test_ra5_tampered_boot_loader_after_reboot_is_untrusted_and_published(world, capsys):
    a, op, server = world.a, world.op, world.server
    before = attest(op, a.agent_id)
    assert before["verdict"] == "trusted"
    stream = EventStream(server, params={"kind": "verdict.changed", "agent_id": a.agent_id})
    receiver = WebhookReceiver(failures=1)  # the first delivery fails: it must come again
    hook = op.post("/v1/webhooks", {"url": receiver.url, "kinds": ["verdict.changed"], "secret": SECRET})
    loader = a.directory / "images" / "bootloader.efi"
    good = loader.read_bytes()
    try:
        loader.write_bytes(bytes([good[0] ^ 1]) + good[1:])
        a.local.call("POST", "/v1/reboot", {})
        args = ["attest", a.agent_id, "--server", server.url, "--token", server.token, "--ca", str(server.ca), "--json"]
        assert run(args) == 1
        result = json.loads(capsys.readouterr().out)
        assert result["verdict"] == "untrusted" and result["rebooted"] is True
        assert result["reset_count"] > before["reset_count"]
        unknown = [f for f in result["findings"] if f["id"] == "baseline.event.unknown"]
        assert [f["pcr"] for f in unknown] == [4], result["findings"]
        assert result["trustworthiness_vector"]["executables"] == 96
        assert result["trustworthiness_vector"]["hardware"] == 2  # the quote itself verified
        ima = server.services.store.ima_state.get(a.agent_id)  # the reboot restarted the IMA state
        assert (ima.reset_count, ima.entries) == (result["reset_count"], 5)

        event = stream.next(lambda e: e["body"]["verdict"] == "untrusted")
        assert event["agent_id"] == a.agent_id and event["kind"] == "verdict.changed"
        assert event["body"] == {"result_id": result["id"], "verdict": "untrusted", "previous": "trusted"}
        delivered = wait_for(lambda: [d for d in receiver.deliveries(SECRET) if d["id"] == event["id"]],
                             what="the webhook delivery")  # fmt: skip
        assert delivered == [event]
        refused = receiver.deliveries(SECRET, accepted=False)[0]
        assert refused == event  # the same event was refused once, then delivered again
    finally:
        loader.write_bytes(good)
        a.local.call("POST", "/v1/reboot", {})
        stream.close()
    again = attest(op, a.agent_id)
    assert again["verdict"] == "trusted" and again["rebooted"] is True
    op.request("DELETE", f"/v1/webhooks/{hook['id']}")
    receiver.close()
