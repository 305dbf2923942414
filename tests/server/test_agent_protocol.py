"""The agent protocol over a real HTTPS server with mutual TLS (DESIGN.md section 5): agents
authenticate with client certificates from the operations CA, long-poll for tasks and post
results; revocation takes effect at the next request; certificates of another CA never get in."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from server_helpers import write_identity

from vroot.agent import Task, TaskLoop
from vroot.errors import Conflict, InvalidInput, NotFound, Revoked, Unavailable, VerificationError
from vroot.pca import issue_client_certificate
from vroot.pki import create_ca


def test_agent_with_its_certificate_polls_and_gets_nothing_when_idle(server, tmp_path):
    agent = server.client(cert=server.add_agent("host:a1", tmp_path))
    started = time.monotonic()
    assert agent.next_task("host:a1", wait=0.5) is None
    assert 0.4 < time.monotonic() - started < 5


def test_long_poll_returns_a_task_enqueued_while_it_waits(server, tmp_path):
    agent = server.client(cert=server.add_agent("host:a1", tmp_path))
    got: list = []
    poller = threading.Thread(target=lambda: got.append(agent.next_task("host:a1", wait=20)))
    started = time.monotonic()
    poller.start()
    time.sleep(0.5)  # the poll is waiting now
    queued = server.operator().post("/v1/agents/host:a1/tasks", {"kind": "ping", "payload": {"n": 1}})
    poller.join(25)
    assert not poller.is_alive()
    elapsed = time.monotonic() - started
    [task] = got
    assert task is not None and task["id"] == queued["id"] and task["payload"] == {"n": 1}
    assert task["state"] == "leased" and task["attempts"] == 1
    assert elapsed < 5, f"woken after {elapsed:.1f}s, not at once"


def test_result_completes_the_task_once(server, tmp_path):
    agent = server.client(cert=server.add_agent("host:a1", tmp_path))
    server.operator().post("/v1/agents/host:a1/tasks", {"kind": "ping"})
    task = agent.next_task("host:a1", wait=0)
    done = agent.post_result("host:a1", task["id"], ok=True, result={"verdict": "trusted"})
    assert done["state"] == "done" and done["result"] == {"verdict": "trusted"}
    with pytest.raises(Conflict, match="is done"):
        agent.post_result("host:a1", task["id"], ok=False, result=None)
    assert agent.next_task("host:a1", wait=0) is None


def test_two_agents_cannot_take_each_others_tasks(server, tmp_path):
    a = server.client(cert=server.add_agent("host:a1", tmp_path))
    b = server.client(cert=server.add_agent("host:b1", tmp_path))
    server.operator().post("/v1/agents/host:a1/tasks", {"kind": "ping"})
    with pytest.raises(VerificationError, match="host:b1's, not host:a1's"):
        b.next_task("host:a1", wait=0)
    assert b.next_task("host:b1", wait=0) is None  # b's own queue is empty
    task = a.next_task("host:a1", wait=0)
    with pytest.raises(NotFound, match="host:b1 has no task"):
        b.post_result("host:b1", task["id"], ok=True, result={"stolen": True})
    with pytest.raises(VerificationError, match="not host:a1's"):
        b.post_result("host:a1", task["id"], ok=True, result={"stolen": True})
    assert server.services.store.tasks.get(task["id"]).state.value == "leased"


def test_agent_endpoints_need_a_client_certificate(server):
    anonymous = server.client()
    with pytest.raises(VerificationError, match="need the client certificate"):
        anonymous.next_task("host:a1", wait=0)
    operator = server.operator()  # an operator token is not an agent identity
    with pytest.raises(VerificationError, match="need the client certificate"):
        operator.next_task("host:a1", wait=0)


def test_revoked_client_certificate_is_refused_at_once(server, tmp_path):
    """Revocation takes effect at the next request, on a connection that is already open."""
    agent = server.client(cert=server.add_agent("host:a1", tmp_path))
    assert agent.next_task("host:a1", wait=0) is None  # the TLS connection is now open and pooled
    revoked = server.operator().post("/v1/agents/host:a1/revoke", {"reason": "key_compromise"})
    assert revoked["state"] == "revoked"
    with pytest.raises(Revoked, match="is revoked"):
        agent.next_task("host:a1", wait=0)
    with pytest.raises(Conflict, match="already revoked"):
        server.operator().post("/v1/agents/host:a1/revoke", {})
    with pytest.raises(Conflict, match="revoked; tasks go to active agents only"):
        server.operator().post("/v1/agents/host:a1/tasks", {"kind": "ping"})


def test_certificate_serial_revoked_without_the_agent_is_refused(server, tmp_path):
    """A serial in store.revocations is refused even while the agent record still names it."""
    agent = server.client(cert=server.add_agent("host:a1", tmp_path))
    serial = server.services.store.agents.get("host:a1").client_serial
    server.services.store.revocations.add(serial, reason="key_compromise", now=server.clock())
    with pytest.raises(Revoked):
        agent.next_task("host:a1", wait=0)


def test_client_certificate_from_another_ca_is_refused(server, tmp_path):
    """Same agent id, same shape, signed by a look-alike CA: the TLS handshake fails."""
    server.add_agent("host:a1", tmp_path / "real")
    now = datetime.now(UTC) - timedelta(minutes=1)
    rogue_ca = create_ca(common_name="vroot operations CA", now=now)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_client_certificate(ops_ca=rogue_ca, agent_id="host:a1", public_key=key.public_key(), now=now,
                                    serial=server.services.store.agents.get("host:a1").client_serial)  # fmt: skip
    rogue = server.client(cert=write_identity(tmp_path / "rogue", "host:a1",
                                              cert.public_bytes(serialization.Encoding.PEM), key))  # fmt: skip
    with pytest.raises(Unavailable):
        rogue.next_task("host:a1", wait=0)
    assert server.client().get("/v1/health")["status"] == "ok"  # the server keeps serving


def test_certificate_of_a_replaced_enrollment_is_refused(server, tmp_path):
    """An agent that enrolled again holds a new serial; the old certificate no longer works."""
    old = server.client(cert=server.add_agent("host:a1", tmp_path / "old"))
    store, keys = server.services.store, server.services.keys
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_client_certificate(ops_ca=keys.ops, agent_id="host:a1", public_key=key.public_key(),
                                    now=server.clock() - timedelta(minutes=1), serial=server.services.serial())  # fmt: skip
    store.agents.activate("host:a1", ak_public=b"ak2", ak_certificate=b"", client_serial=cert.serial_number,
                          now=server.clock())  # fmt: skip
    new = server.client(cert=write_identity(tmp_path / "new", "host:a1",
                                            cert.public_bytes(serialization.Encoding.PEM), key))  # fmt: skip
    assert new.next_task("host:a1", wait=0) is None
    with pytest.raises(Revoked):
        old.next_task("host:a1", wait=0)


def test_enqueue_checks_its_input(server, tmp_path):
    server.add_agent("host:a1", tmp_path)
    op = server.operator()
    with pytest.raises(NotFound):
        op.post("/v1/agents/host:zz/tasks", {"kind": "ping"})
    with pytest.raises(InvalidInput):
        op.post("/v1/agents/host:a1/tasks", {"kind": "Attest Now"})
    first = op.post("/v1/agents/host:a1/tasks", {"kind": "ping", "key": "periodic"})
    again = op.post("/v1/agents/host:a1/tasks", {"kind": "ping", "key": "periodic"})
    assert first["id"] == again["id"]


def test_task_loop_dispatches_by_kind_and_posts_results(server, tmp_path):
    agent = server.client(cert=server.add_agent("host:a1", tmp_path))
    op = server.operator()
    ids = [op.post("/v1/agents/host:a1/tasks", {"kind": k, "payload": {"i": i}})["id"]
           for i, k in enumerate(["echo", "fail", "unknown"])]  # fmt: skip

    def fail(task: Task) -> None:
        raise InvalidInput(f"task {task.id} wanted to fail")

    loop = TaskLoop(agent, "host:a1", {"echo": lambda t: {"echo": t.payload}, "fail": fail}, wait=0)
    handled = [loop.run_once() for _ in range(3)]
    assert [t.id for t in handled] == ids and loop.run_once() is None
    store = server.services.store
    echo, failed, unknown = (store.tasks.get(i) for i in ids)
    assert (echo.state.value, echo.result) == ("done", {"echo": {"i": 0}})
    assert failed.state.value == "failed" and failed.result["error"] == "InvalidInput"
    assert unknown.state.value == "failed" and "no handler for 'unknown'" in unknown.result["detail"]


def test_task_loop_runs_until_stopped(server, tmp_path):
    agent = server.client(cert=server.add_agent("host:a1", tmp_path))
    seen = threading.Event()
    loop = TaskLoop(agent, "host:a1", {"ping": lambda t: seen.set() or "pong"}, wait=1)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    try:
        server.operator().post("/v1/agents/host:a1/tasks", {"kind": "ping"})
        assert seen.wait(10)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
