"""The host's side of attestation (RA-2, RA-4, HW-F2): answer the server's `attest` and
`deep-quote` tasks with a deep quote from the local host agent, in a task loop that runs beside
`vroot host run`, and, with `simulate_guests`, the guest attesters of the host's VMs.

    loop = start_host_loop(host_dir)                   # after `vroot host enroll`
    ...                                                # the host agent serves meanwhile
    loop.stop()

An `attest` task carries the server's nonce (hex), a `deep-quote` task the Merkle root over the
challenges of the host's VMs waiting for it (`qualifying_data`, hex). Either way the handler asks
the host agent on HOST_DIR/agent.sock for `POST /v1/deep-quote` with it as qualifying data and
returns the evidence bundle as the task result ({"evidence": ...}). It checks nothing about the
evidence: the server verifies it with the AK it enrolled. A host agent that does not answer makes
the task fail (the server records that as an "error" result), never the loop.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vroot.agent._client import ServerClient
from vroot.agent._enroll import load_credentials
from vroot.agent._loop import Task, TaskHandler, TaskLoop
from vroot.agent._migrate import migration_handlers
from vroot.errors import InvalidInput
from vroot.host import AgentClient, HostPaths

__all__ = ["RunningTaskLoop", "attest_handler", "host_task_loop", "start_host_loop"]

_NONCE = re.compile(r"[0-9a-f]{2,128}")


def attest_handler(host_dir: str | Path, *, timeout: float = 120.0, field: str = "nonce") -> TaskHandler:
    """The `attest` task handler of the host at `host_dir` (its host agent must be running); with
    `field="qualifying_data"`, the `deep-quote` one."""
    agent = AgentClient(HostPaths(Path(host_dir)).agent_socket, timeout=timeout)

    def handle(task: Task) -> dict[str, Any]:
        payload = task.payload if isinstance(task.payload, Mapping) else {}
        nonce = payload.get(field)
        if not isinstance(nonce, str) or _NONCE.fullmatch(nonce) is None:
            raise InvalidInput(f"a {task.kind} task carries its {field} as 2-128 lower-case hex digits")
        return {"evidence": agent.call("POST", "/v1/deep-quote", {"qualifying_data": nonce})}

    return handle


def host_task_loop(host_dir: str | Path, *, server_url: str | None = None, ca_certificate: str | Path | None = None,
                   wait: float = 25.0) -> tuple[ServerClient, TaskLoop]:  # fmt: skip
    """A client with the host's enrolled identity and a task loop answering `attest` tasks. The
    server URL and CA default to the ones of the enrollment (HOST_DIR/server/)."""
    creds = load_credentials(host_dir)
    client = ServerClient(server_url or creds.server_url, ca_certificate=ca_certificate or creds.ca_certificate,
                          client_cert=creds.client_certificate, client_key=creds.client_key)  # fmt: skip
    handlers = {"attest": attest_handler(host_dir), "deep-quote": attest_handler(host_dir, field="qualifying_data"),
                **migration_handlers(host_dir, agent_id=creds.agent_id,
                                     ops_ca=ca_certificate or creds.ca_certificate)}  # fmt: skip
    return client, TaskLoop(client, creds.agent_id, handlers, wait=wait)


@dataclass
class RunningTaskLoop:
    """A task loop running in a thread; `stop()` ends it (within one long-poll wait), and the
    simulated guests running with it (`guests`)."""

    loop: TaskLoop
    client: ServerClient
    thread: threading.Thread
    stopping: threading.Event
    guests: Any = None  # a GuestSimulator

    def stop(self, timeout: float = 60.0) -> None:
        self.stopping.set()
        try:
            if self.guests is not None:
                self.guests.stop(timeout=timeout)
        finally:
            self.thread.join(timeout)
            self.client.close()


def start_host_loop(host_dir: str | Path, *, server_url: str | None = None, ca_certificate: str | Path | None = None,
                    wait: float = 25.0, simulate_guests: bool = False,
                    guest_interval: float = 5.0) -> RunningTaskLoop:  # fmt: skip
    """Run `host_task_loop` in a daemon thread; with `simulate_guests`, also the guest attesters of the
    host's VMs (`GuestSimulator`: enrolled and synced every `guest_interval` seconds)."""
    client, loop = host_task_loop(host_dir, server_url=server_url, ca_certificate=ca_certificate, wait=wait)
    stopping = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stopping,), name="vroot-task-loop", daemon=True)
    thread.start()
    running = RunningTaskLoop(loop=loop, client=client, thread=thread, stopping=stopping)
    if simulate_guests:
        from vroot.agent._simulate import GuestSimulator

        creds = load_credentials(host_dir)
        running.guests = GuestSimulator(host_dir, server_url=server_url or creds.server_url,
                                        ca_certificate=ca_certificate or creds.ca_certificate, wait=wait,
                                        interval=guest_interval)  # fmt: skip
        running.guests.start()
    return running
