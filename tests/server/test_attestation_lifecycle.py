"""Host attestation over a host's life (RA-5, RA-6): before any policy, with its host agent down,
after its AK certificate or the agent is revoked, across a server restart (the incremental IMA
state is kept: only new entries are appraised), under the scheduler of two replicas, and with
`vroot host run DIR --server URL --ca PEM` answering on its own. Real swtpm-backed hosts, SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from attest_helpers import attest, enrolled_host, learnt_manifest, upload_library, wait_for
from cryptography import x509
from server_helpers import restart_server, serve_again, stop_server, terminate
from vtm_helpers import make_host

from vroot.agent import load_credentials
from vroot.attestation.ear import verify_ear
from vroot.cli.main import run
from vroot.errors import Conflict, Revoked
from vroot.eventlog import encode_ima_binary, ima_ng_entry, parse_ima_log
from vroot.tpm2 import HashAlg

pytestmark = pytest.mark.tpm
VROOT = str(Path(sys.executable).parent / "vroot")


@pytest.fixture
def solo(server_factory, short_tmp):  # noqa: ANN001, ANN201
    """One enrolled host (agent and task loop running) on a server without a scheduler."""
    directory = make_host(short_tmp, "host-a")
    server = server_factory(manufacturer_cas=(short_tmp / "manufacturer-ca",), scheduler_interval_seconds=0)
    host = enrolled_host(server, directory)
    try:
        yield server, host
    finally:
        host.close()


def test_no_policy_and_a_dead_host_agent_are_errors_never_trust(solo):
    server, host = solo
    op = server.operator()
    result = attest(op, host.agent_id)
    assert result["verdict"] == "error" and result["status"] == "none" and result["trustworthiness_vector"] == {}
    assert [f["id"] for f in result["findings"]] == ["attestation.policy.missing"]
    assert result["pcrs"]["sha256"] and result["reset_count"] is not None  # the evidence itself verified
    args = ["attest", host.agent_id, "--server", server.url, "--token", server.token, "--ca", str(server.ca)]
    assert run(args) == 2  # nothing was appraised: not a yes, not a no

    upload_library(op, learnt_manifest(host.directory))
    host.agent.stop(stop_vtms=True, stop_tm=False)
    down = attest(op, host.agent_id)
    assert down["verdict"] == "error"
    [finding] = down["findings"]
    assert finding["id"] == "attestation.agent.failed" and finding["seen"] == "Unavailable"
    [*_, task] = server.services.store.tasks.list(agent_id=host.agent_id)
    assert task.state.value == "failed" and task.result == {"result_id": down["id"], "verdict": "error"}


def test_revoked_ak_certificate_fails_the_attestation_and_is_recorded(solo):
    server, host = solo
    op, store = server.operator(), server.services.store
    upload_library(op, learnt_manifest(host.directory))
    assert attest(op, host.agent_id)["verdict"] == "trusted"
    ak = x509.load_pem_x509_certificate(load_credentials(host.directory).ak_certificate.read_bytes())
    store.revocations.add(ak.serial_number, reason="key_compromise", now=server.clock())  # the client cert still works
    result = attest(op, host.agent_id)
    assert result["verdict"] == "untrusted"
    [finding] = result["findings"]
    assert finding["id"] == "attestation.revoked" and "key_compromise" in finding["message"]
    assert result["trustworthiness_vector"] == {"instance-identity": 96}
    [*_, event] = store.events.since(0, kinds=["verdict.changed"], agent_id=host.agent_id)
    assert event.body == {"result_id": result["id"], "verdict": "untrusted", "previous": "trusted"}


def test_revoked_agent_is_untrusted_at_once_and_its_answer_is_refused(solo):
    server, host = solo
    op, store = server.operator(), server.services.store
    upload_library(op, learnt_manifest(host.directory))
    trusted = attest(op, host.agent_id)
    assert trusted["verdict"] == "trusted"
    host.stop_loop()
    me = host.client()
    op.post(f"/v1/agents/{host.agent_id}/attestations")
    task = me.next_task(host.agent_id, wait=5)
    evidence = host.local.call("POST", "/v1/deep-quote", {"qualifying_data": task["payload"]["nonce"]})

    assert op.post(f"/v1/agents/{host.agent_id}/revoke", {"reason": "key_compromise"})["state"] == "revoked"
    latest = op.get(f"/v1/agents/{host.agent_id}/result")
    assert latest["id"] > trusted["id"] and latest["verdict"] == "untrusted"
    assert [f["id"] for f in latest["findings"]] == ["attestation.revoked"]
    with pytest.raises(Revoked):  # the evidence for the open task can no longer be posted
        me.post_result(host.agent_id, task["id"], ok=True, result={"evidence": evidence})
    assert op.get(f"/v1/agents/{host.agent_id}/result")["id"] == latest["id"]
    with pytest.raises(Conflict, match="only active agents are attested"):
        op.post(f"/v1/agents/{host.agent_id}/attestations")
    ak = x509.load_pem_x509_certificate(load_credentials(host.directory).ak_certificate.read_bytes())
    assert store.revocations.find(ak.serial_number).reason == "key_compromise"


def grow_ima(host, path: str, content: bytes) -> None:  # noqa: ANN001
    """What the host's kernel does when it runs a new file: extend PCR 10 and append the entry.
    (Uses the host agent's own TM connection while the agent is idle.)"""
    log_path = host.directory / "logs" / "ima.bin"
    log = parse_ima_log(log_path.read_bytes())
    entry = ima_ng_entry(path, HashAlg.SHA256.digest(content), alg=HashAlg.SHA256)
    tm = host.agent.agent.host
    tm.client.pcr_extend(10, {alg: alg.digest(entry.template_data) for alg in tm.banks})
    log_path.write_bytes(encode_ima_binary(log.replace(entries=(*log.entries, entry))))


def test_server_restart_keeps_the_ima_state_and_appraises_only_new_entries(solo):
    server, host = solo
    tool = b"#!/bin/sh\necho late\n"
    upload_library(server.operator(), learnt_manifest(host.directory, extra_ima={"/usr/bin/late-tool": HashAlg.SHA256.digest(tool)}))
    first = attest(server.operator(), host.agent_id)
    assert first["verdict"] == "trusted"
    state = server.services.store.ima_state.get(host.agent_id)
    assert (state.entries, state.reset_count) == (5, first["reset_count"])

    server = restart_server(server)  # a new process: only the directory and the database remain
    try:
        grow_ima(host, "/usr/bin/late-tool", tool)
        second = attest(server.operator(), host.agent_id)
        assert second["verdict"] == "trusted" and second["rebooted"] is False
        ear = verify_ear(second["ear"], public_key=server.services.keys.result_signing_key.public_key(),
                         now=datetime.now(UTC))  # fmt: skip
        assert ear.claims["submods"][host.agent_id]["vroot.ima"] == {"entries_seen": 6, "new_entries": 1}
        after = server.services.store.ima_state.get(host.agent_id)
        assert (after.entries, after.version) == (6, state.version + 1)

        grow_ima(host, "/usr/bin/not-in-the-baseline", b"x")  # a bad file keeps the host untrusted...
        bad = attest(server.operator(), host.agent_id)
        assert [f["id"] for f in bad["findings"]] == ["ima.file.unknown"] and bad["findings"][0]["event_index"] == 6
        server = restart_server(server)
        still = attest(server.operator(), host.agent_id)  # ...after a restart too, without re-reading
        assert still["verdict"] == "untrusted" and [f["event_index"] for f in still["findings"]] == [6]
        ear = verify_ear(still["ear"], public_key=server.services.keys.result_signing_key.public_key(),
                         now=datetime.now(UTC))  # fmt: skip
        assert ear.claims["submods"][host.agent_id]["vroot.ima"] == {"entries_seen": 7, "new_entries": 0}
    finally:
        host.stop_loop()
        stop_server(server)


def test_ra6_scheduler_of_two_replicas_attests_each_host_once_per_interval(server_factory, short_tmp, tmp_path):
    directory = make_host(short_tmp, "host-a")
    server = server_factory(manufacturer_cas=(short_tmp / "manufacturer-ca",), attestation_interval_seconds=2,
                            scheduler_interval_seconds=0.2)  # fmt: skip
    replica = serve_again(server)  # a second scheduler on the same database
    host = enrolled_host(server, directory)
    try:
        op = server.operator()
        server.add_agent("host:idle", tmp_path)  # group "default", which has no policy: never scheduled
        op.request("PATCH", f"/v1/agents/{host.agent_id}", json={"group": "fleet"})
        upload_library(op, learnt_manifest(host.directory), group="fleet")
        store = server.services.store
        results = wait_for(lambda: (r := store.results.history(host.agent_id, limit=10)) and len(r) >= 3 and r,
                           timeout=20, what="three scheduled results")  # fmt: skip
        assert all(r.verdict.value == "trusted" for r in results)
        tasks = [t for t in store.tasks.list(agent_id=host.agent_id, limit=100) if t.kind == "attest"]
        done = sorted((t for t in tasks if t.state.value == "done"), key=lambda t: t.created_at)
        # the next challenge comes an interval after the previous verdict (recorded as its task
        # closes), whichever replica's scheduler makes it; how fast the agent answers does not matter
        waits = [(b.created_at - a.finished_at).total_seconds() for a, b in zip(done, done[1:], strict=False)]
        assert waits and min(waits) >= 1.9, f"challenged again sooner than the interval: {waits}"
        assert len(done) >= len(results) and len(tasks) - len(done) <= 1  # no duplicate open task
        assert store.tasks.list(agent_id="host:idle") == []
    finally:
        host.close()
        stop_server(replica)


def test_host_run_with_server_answers_attestations(server_factory, short_tmp):
    """`vroot host run DIR --server URL --ca PEM` (after `vroot server enroll-host`) runs the task loop."""
    directory = make_host(short_tmp, "host-cli")
    server = server_factory(manufacturer_cas=(short_tmp / "manufacturer-ca",), scheduler_interval_seconds=0,
                            max_wait_seconds=1)  # the killed agent's last long-poll ends soon  # fmt: skip
    assert run(["server", "enroll-host", str(directory), "--server", server.url, "--ca", str(server.ca)]) == 0
    upload_library(server.operator(), learnt_manifest(directory))
    proc = subprocess.Popen([VROOT, "host", "run", str(directory), "--server", server.url, "--ca", str(server.ca)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TSS2_LOG": "all+NONE"})  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready:") and server.url in line, (line, proc.stderr.read() if proc.poll() else "")
        result = attest(server.operator(), "host:host-cli", timeout=60)
        assert result["verdict"] == "trusted"
    finally:
        terminate(proc, timeout=60)
    assert proc.returncode == 0, proc.stderr.read()


def test_expired_queued_challenge_is_replaced(solo):
    """A task whose nonce expired before the agent took it is cancelled and queued again fresh."""
    server, host = solo
    host.stop_loop()
    op, store = server.operator(), server.services.store
    first = op.post(f"/v1/agents/{host.agent_id}/attestations")
    assert op.post(f"/v1/agents/{host.agent_id}/attestations")["task_id"] == first["task_id"]  # one open per agent
    server.clock.offset = timedelta(seconds=121)  # past the nonce's time to live
    second = op.post(f"/v1/agents/{host.agent_id}/attestations")
    assert second["task_id"] != first["task_id"] and second["state"] == "queued"
    assert store.tasks.get(first["task_id"]).state.value == "failed"
    assert "expired" in store.tasks.get(first["task_id"]).result["error"]
