"""The demo's attestation server: a real `vroot server run` process, and the operator's side of it.

    server = DemoServer.start(directory, manufacturer_ca=ca_dir)   # init + a process on loopback
    op = server.operator()                                         # a ServerClient with the token
    results = attest_all(op, ["host:host-a", "vm:…", …])           # trigger, wait, the results
    done = follow_migrations(op, ["<migration id>", …])           # poll until each has ended
    server.stop()                                                  # SIGTERM by PID (SIGKILL after 15 s)

The server is started as `python -m vroot.cli.entry server run DIR` on a free loopback port, with
continuous attestation off (every result shown is one the demo asked for). It is stopped by its
PID only; `stop()` is idempotent and the caller calls it in a `finally`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from vroot.errors import Unavailable, VrootError

__all__ = ["HOST_POLICY", "VM_POLICY", "DemoServer", "attest_all", "follow_migrations", "publish_library"]

START_TIMEOUT = 30.0
ATTEST_TIMEOUT = 60.0
MIGRATION_TIMEOUT = 60.0
# What the server does between the demo's requests: nothing on its own (scheduler off), VMs of one
# host that answer together share one deep quote, long polls wake quickly.
OPTIONS: dict[str, object] = {
    "attestation_interval_seconds": 3600,
    "scheduler_interval_seconds": 0,
    "deep_batch_seconds": 2.0,
    "poll_interval_seconds": 0.2,
}

HOST_POLICY = """kind: vroot.policy
group: {group}
baseline: {baseline}
event_pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
ima: {{require_allowlist: true}}
"""
VM_POLICY = HOST_POLICY


@dataclass
class DemoServer:
    """A `vroot server run` process this demo started (its PID is `process.pid`)."""

    directory: Path
    url: str
    token: str = field(repr=False)
    process: subprocess.Popen
    log: Path
    clients: list[Any] = field(default_factory=list)

    @property
    def ca(self) -> Path:
        return self.directory / "tls" / "ca.pem"

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(cls, directory: Path, *, manufacturer_ca: Path, attempts: int = 3) -> DemoServer:
        """`init_server` in `directory`, then the server process on a free loopback port, polled
        until /v1/health answers over TLS (verified against the server's operations CA)."""
        from vroot.server import init_server
        from vroot.tm import free_tcp_port

        init = init_server(directory, now=datetime.now(UTC) - timedelta(minutes=1), rng=os.urandom,
                           manufacturer_cas=(manufacturer_ca,), listen="127.0.0.1:8443", options=OPTIONS)  # fmt: skip
        log = directory / "server.log"
        last = ""
        for _ in range(attempts):  # a port taken between choosing it and binding it: choose again
            port = free_tcp_port()
            env = {**os.environ, "VROOT_SERVER_LISTEN": f"127.0.0.1:{port}", "TSS2_LOG": "all+NONE"}
            with log.open("ab") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "vroot.cli.entry", "server", "run", str(directory), "--log-level", "warning"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                )  # fmt: skip
            server = cls(directory=directory, url=f"https://127.0.0.1:{port}", token=init.operator_token,
                         process=process, log=log)  # fmt: skip
            try:
                server._wait_ready()
                return server
            except Unavailable as exc:
                last = exc.diagnostics()
                server.stop()
            except BaseException:  # interrupted while waiting: the process must not outlive us
                server.stop()
                raise
        raise Unavailable(f"the demo's server did not start: {last}")

    def _wait_ready(self) -> None:
        from vroot.agent import ServerClient

        deadline = time.monotonic() + START_TIMEOUT
        with ServerClient(self.url, ca_certificate=self.ca, timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                    raise Unavailable(f"server process exited ({self.process.returncode}): {tail[0]}")
                try:
                    if client.get("/v1/health").get("status") == "ok":
                        return
                except VrootError:
                    pass
                if time.monotonic() > deadline:
                    raise Unavailable(f"no answer from {self.url} within {START_TIMEOUT:g} s")
                time.sleep(0.1)

    def operator(self) -> Any:
        """A ServerClient with the operator token (closed by `stop`)."""
        from vroot.agent import ServerClient

        client = ServerClient(self.url, ca_certificate=self.ca, token=self.token)
        self.clients.append(client)
        return client

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the server process (by PID), SIGKILL it if it has not stopped in `timeout`; its code."""
        for client in self.clients:
            client.close()
        self.clients.clear()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def publish_library(op: Any, *, group: str, baseline: str, manifest: bytes, version: int = 1) -> None:
    """Upload a baseline (JSON manifest) and the group's policy naming it (RA-5)."""
    op.request("PUT", f"/v1/baselines/{baseline}/{version}", content=manifest,
               headers={"content-type": "application/json"})  # fmt: skip
    policy = HOST_POLICY.format(group=group, baseline=baseline).encode()
    op.request("PUT", f"/v1/policies/{group}", content=policy, headers={"content-type": "application/yaml"})


def attest_all(
    op: Any, agent_ids: list[str], *, timeout: float = ATTEST_TIMEOUT
) -> dict[str, dict[str, Any]]:
    """Ask the server to attest every agent now (all at once, so the VMs of a host share one deep
    quote), then poll until each has its result. Unavailable if one does not come in `timeout`."""
    tasks = {a: op.post(f"/v1/agents/{a}/attestations") for a in agent_ids}
    results: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(results) < len(tasks):
        for agent_id, task in tasks.items():
            if agent_id not in results:
                got = op.get(f"/v1/agents/{agent_id}/attestations/{task['task_id']}")["result"]
                if got is not None:
                    results[agent_id] = got
        if len(results) < len(tasks):
            if time.monotonic() > deadline:
                missing = sorted(set(tasks) - set(results))
                raise Unavailable(f"no attestation result for {', '.join(missing)} within {timeout:g} s")
            time.sleep(0.1)
    return {a: results[a] for a in agent_ids}


def follow_migrations(
    op: Any, migration_ids: list[str], *, timeout: float = MIGRATION_TIMEOUT
) -> list[dict[str, Any]]:
    """Poll `GET /v1/migrations/{id}` until each migration has completed or been aborted (MC-F3);
    their last documents, in the order given. Unavailable if one is still open after `timeout`."""
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(migration_ids):
        for migration_id in migration_ids:
            if migration_id not in done:
                m = op.get(f"/v1/migrations/{migration_id}")
                if m["state"] in ("completed", "aborted"):
                    done[migration_id] = m
        if len(done) < len(migration_ids):
            if time.monotonic() > deadline:
                still = sorted(set(migration_ids) - set(done))
                raise Unavailable(f"migrations {', '.join(still)} still open after {timeout:g} s")
            time.sleep(0.05)
    return [done[m] for m in migration_ids]
