"""Long-polls are woken, not polled (DESIGN.md section 7): with a 30 s poll interval, a task queued
while an agent waits reaches it at once, on SQLite through the in-process hub and on PostgreSQL
through LISTEN/NOTIFY from another replica's store."""

from __future__ import annotations

import threading
import time

import pytest

from vroot.store import Store


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_task_queued_elsewhere_wakes_the_waiting_agent(server_factory, tmp_path, backend):
    server = server_factory(backend=backend, poll_interval_seconds=30)
    agent = server.client(cert=server.add_agent("host:w1", tmp_path))
    got: list = []
    poller = threading.Thread(target=lambda: got.append(agent.next_task("host:w1", wait=20)))
    poller.start()
    time.sleep(0.7)  # the poll has read the empty queue and waits
    started = time.monotonic()
    if backend == "postgresql":  # another replica: its own Store on the same database
        with Store.open(server.settings.database_url) as replica:
            queued = replica.tasks.enqueue(agent_id="host:w1", kind="ping", payload={}, now=server.clock())
        queued_id = queued.id
    else:
        queued_id = server.operator().post("/v1/agents/host:w1/tasks", {"kind": "ping"})["id"]
    poller.join(25)
    elapsed = time.monotonic() - started
    assert got and got[0] is not None and got[0]["id"] == queued_id
    assert elapsed < 5, f"woken after {elapsed:.1f} s: the notification did not arrive"
