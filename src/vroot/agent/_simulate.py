"""Simulated guests (DESIGN.md section 1: the guest attester "simulated by `vroot host --simulate`"):
the host agent plays the guest attester of every VM it runs a vTM for.

    guests = GuestSimulator(host_dir, server_url=url, ca_certificate=ca)
    guests.sync()          # enroll each running vTM's guest not enrolled yet; one task loop per VM
    guests.start()         # the same every `interval` seconds, in a thread (new vTMs, destroyed ones)
    guests.stop()

Each VM's attester talks to its vTM through the host agent's local API (`SimulatedGuestTm`: the
agent serves one request at a time, so the guests never race the agent for a vTM) and to the
server with its own identity `vm:<uuid>`, kept where the VM's own disk would be:
HOST_DIR/vtms/<uuid>/guest/server/ (destroyed with the vTM). A guest whose enrollment is refused
is tried again at the next sync, and the refusal logged.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from vroot.agent._attest import RunningTaskLoop
from vroot.agent._guest import GuestAttester
from vroot.agent._guest_tm import SimulatedGuestTm
from vroot.agent._loop import TaskLoop
from vroot.errors import NotFound, VrootError
from vroot.host import AgentClient, HostPaths

__all__ = ["GuestSimulator"]

log = logging.getLogger("vroot.agent")


class GuestSimulator:
    """The guest attesters of one host's VMs, each with its own task loop thread."""

    def __init__(self, host_dir: str | Path, *, server_url: str, ca_certificate: str | Path, wait: float = 25.0,
                 interval: float = 5.0) -> None:  # fmt: skip
        self.paths = HostPaths(Path(host_dir))
        self.agent = AgentClient(self.paths.agent_socket)
        self.server_url = server_url
        self.ca_certificate = Path(ca_certificate)
        self.wait = wait
        self.interval = interval
        self.loops: dict[str, RunningTaskLoop] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def attester(self, vm_uuid: str) -> GuestAttester:
        """The guest attester of VM `vm_uuid` on this host."""
        return GuestAttester(SimulatedGuestTm(self.agent, vm_uuid), self.paths.vtm(vm_uuid) / "guest" / "server")

    def sync(self) -> list[str]:
        """Enroll every running vTM's guest that is not enrolled, start its task loop, and stop the loops
        of vTMs that are gone. Returns what it did, one message each."""
        messages = []
        running = {v["vm_uuid"] for v in self.agent.call("GET", "/v1/vtms")["vtms"] if v["running"]}
        with self._lock:
            for vm in [vm for vm, loop in self.loops.items() if not loop.thread.is_alive()]:
                self.loops.pop(vm).client.close()  # its loop ended (e.g. refused credentials): start again
                messages.append(f"vm:{vm}: task loop ended, starting it again")
            gone = sorted(set(self.loops) - running)
            _stop_all([self.loops.pop(vm) for vm in gone], timeout=self.wait + 5)
            messages += [f"vm:{vm}: vTM not running, guest stopped" for vm in gone]
            for vm in sorted(running - set(self.loops)):
                attester = self.attester(vm)
                try:
                    try:
                        attester.credentials()
                    except NotFound:
                        creds = attester.enroll(self.server_url, self.ca_certificate)
                        messages.append(f"{creds.agent_id}: enrolled")
                    client, loop = attester.task_loop(server_url=self.server_url, ca_certificate=self.ca_certificate,
                                                      wait=self.wait)  # fmt: skip
                except VrootError as exc:
                    log.warning("guest of VM %s not started: %s", vm, exc.diagnostics())
                    messages.append(f"vm:{vm}: not started: {exc.diagnostics()}")
                    continue
                self.loops[vm] = _start(loop, client, name=f"vroot-guest-{vm[:8]}")
        return messages

    def stop_guest(self, vm_uuid: str, *, timeout: float = 60.0) -> None:
        """Stop the task loop of one VM's guest (the next `sync` starts it again)."""
        with self._lock:
            running = self.loops.pop(vm_uuid, None)
        if running is not None:
            running.stop(timeout=timeout)

    def start(self) -> None:
        """Sync now and then every `interval` seconds in a thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vroot-guests", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for message in self.sync():
                    log.info("%s", message)
            except VrootError as exc:  # the host agent or the server is away: try again later
                log.warning("guest sync: %s", exc.diagnostics())
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the sync thread and every guest's loop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            _stop_all(list(self.loops.values()), timeout=timeout)
            self.loops.clear()


def _stop_all(loops: list[RunningTaskLoop], *, timeout: float) -> None:
    """Stop many loops within one long-poll wait: all are told first, then each is joined."""
    for running in loops:
        running.stopping.set()
    for running in loops:
        running.stop(timeout=timeout)


def _start(loop: TaskLoop, client, *, name: str) -> RunningTaskLoop:  # noqa: ANN001
    stopping = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stopping,), name=name, daemon=True)
    thread.start()
    return RunningTaskLoop(loop=loop, client=client, thread=thread, stopping=stopping)
