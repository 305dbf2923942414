"""Helpers for the attestation tests (importable as `attest_helpers`): enrolled simulated hosts with
their host agent and task loop running, baselines learnt from a host's own logs, an event-stream
reader and a webhook receiver. Everything started here is stopped by the caller's `close()`."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import queue
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from server_helpers import Server

from vroot.agent import (
    GuestSimulator,
    RunningTaskLoop,
    ServerClient,
    enroll_host,
    load_credentials,
    start_host_loop,
)
from vroot.baseline import dump_manifest, learn_baseline
from vroot.eventlog import parse_ima_log, parse_tcg_log
from vroot.host import AgentClient

TESTS = Path(__file__).resolve().parent.parent


def _load_vtm_conftest():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("vroot_tests_vtm_conftest", TESTS / "vtm" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_vtm = _load_vtm_conftest()
start_agent = _vtm.start_agent  # the host agent in a thread, as the vTM tests run it

POLICY = """kind: vroot.policy
group: {group}
baseline: {baseline}
event_pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
ima: {{require_allowlist: true}}
"""


@dataclass
class Host:
    """An enrolled simulated host: its host agent runs in a thread, its task loop in another."""

    name: str
    directory: Path
    server: Server
    agent: Any  # tests/vtm/conftest.RunningAgent
    loop: RunningTaskLoop | None = None
    clients: list[ServerClient] = field(default_factory=list)
    guests: GuestSimulator | None = None  # the guest attesters of its VMs, synced by hand (`sync_guests`)

    @property
    def agent_id(self) -> str:
        return f"host:{self.name}"

    @property
    def local(self) -> AgentClient:
        """The host agent's local API."""
        return self.agent.client

    def start_loop(self) -> None:
        if self.loop is None:
            self.loop = start_host_loop(self.directory, wait=0.5)

    def stop_loop(self) -> None:
        if self.loop is not None:
            self.loop.stop(timeout=15)
            assert not self.loop.thread.is_alive(), "task loop did not stop"
            self.loop = None

    def client(self) -> ServerClient:
        """A client with the host's enrolled TLS identity (to act as its agent by hand)."""
        c = load_credentials(self.directory).client()
        self.clients.append(c)
        return c

    def sync_guests(self) -> list[str]:
        """Enroll the guests of VMs not enrolled yet and (re)start their task loops (RA-1, RA-3)."""
        if self.guests is None:
            self.guests = GuestSimulator(self.directory, server_url=self.server.url, ca_certificate=self.server.ca,
                                         wait=0.5, interval=3600)  # fmt: skip
        return self.guests.sync()

    def stop_guest(self, vm: str) -> None:
        """Stop the task loop of one simulated guest (to act as it by hand)."""
        assert self.guests is not None
        running = self.guests.loops[vm]
        self.guests.stop_guest(vm, timeout=15)
        assert not running.thread.is_alive(), "guest loop did not stop"

    def close(self) -> None:
        try:
            if self.guests is not None:
                self.guests.stop(timeout=15)
            self.stop_loop()
        finally:
            for c in self.clients:
                c.close()
            self.agent.stop()


def enrolled_host(server: Server, directory: Path, *, loop: bool = True) -> Host:
    """The simulated host at `directory` (`make_host`), enrolled with `server`, its agent running."""
    enroll_host(directory, server.url, server.ca)
    host = Host(name=directory.name, directory=directory, server=server, agent=start_agent(directory))
    if loop:
        host.start_loop()
    return host


def learnt_manifest(host_dir: Path, *, name: str = "hosts", version: str = "1",
                    extra_ima: dict[str, bytes] | None = None, logs: Path | None = None) -> bytes:  # fmt: skip
    """A baseline manifest (JSON) learnt from the host's own boot and IMA logs (or those in `logs`,
    e.g. a VM's guest/ directory), plus `extra_ima` (path -> SHA-256 file digest) in its IMA allowlist."""
    logs = logs if logs is not None else host_dir / "logs"
    baseline = learn_baseline(tcg_log=parse_tcg_log((logs / "boot.tcg").read_bytes()),
                              ima_log=parse_ima_log((logs / "ima.bin").read_bytes()), name=name, version=version)  # fmt: skip
    doc = json.loads(dump_manifest(baseline, format="json"))
    for path, digest in (extra_ima or {}).items():
        doc["ima"]["digests"][path] = [digest.hex()]
    return json.dumps(doc).encode()


def upload_library(operator: ServerClient, manifest: bytes, *, group: str = "default", baseline: str = "hosts",
                   version: int = 1) -> None:  # fmt: skip
    operator.request("PUT", f"/v1/baselines/{baseline}/{version}", content=manifest,
                     headers={"content-type": "application/json"})  # fmt: skip
    policy = POLICY.format(group=group, baseline=baseline).encode()
    try:
        current = operator.get(f"/v1/policies/{group}")["version"]
    except Exception:  # noqa: BLE001 - none yet
        current = None
    headers = {"content-type": "application/yaml", **({"If-Match": f'"{current}"'} if current else {})}
    operator.request("PUT", f"/v1/policies/{group}", content=policy, headers=headers)


def attest(operator: ServerClient, agent_id: str, *, timeout: float = 30.0) -> dict[str, Any]:
    """Trigger an attestation through the API and wait for its result."""
    task = operator.post(f"/v1/agents/{agent_id}/attestations")
    deadline = time.monotonic() + timeout
    while task["result"] is None:
        assert time.monotonic() < deadline, f"no result for {agent_id} task {task['task_id']}"
        time.sleep(0.1)
        task = operator.get(f"/v1/agents/{agent_id}/attestations/{task['task_id']}")
    return task["result"]


def wait_for(predicate: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class EventStream:
    """Reads GET /v1/events in a thread (reconnecting with Last-Event-ID when the server ends the
    stream), collecting parsed messages and comment lines."""

    def __init__(self, server: Server, *, params: dict[str, Any] | None = None, last_event_id: int | None = None) -> None:
        self._server = server
        self._params = params or {}
        self.last_id = last_event_id
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.comments: list[str] = []
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._connected = threading.Event()
        self._thread.start()
        assert self._connected.wait(10), "event stream did not connect"

    def _run(self) -> None:
        verify = ssl.create_default_context(cafile=str(self._server.ca))
        with httpx.Client(base_url=self._server.url, verify=verify, timeout=30) as http:
            while not self._stop.is_set():
                headers = {"Authorization": f"Bearer {self._server.token}"}
                if self.last_id is not None:
                    headers["Last-Event-ID"] = str(self.last_id)
                try:
                    with http.stream("GET", "/v1/events", headers=headers, params=self._params) as response:
                        assert response.status_code == 200, response.read()
                        self.connections += 1
                        self._read(response)
                except httpx.HTTPError:
                    if self._stop.is_set():
                        return
                    time.sleep(0.2)

    def _read(self, response: httpx.Response) -> None:
        message: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                self.comments.append(line)
                self._connected.set()
            elif line == "":
                if "data" in message:
                    doc = json.loads(message["data"])
                    assert str(doc["id"]) == message["id"] and doc["kind"] == message["event"]
                    self.last_id = doc["id"]
                    self.events.put(doc)
                message = {}
            else:
                name, _, value = line.partition(": ")
                message[name] = value
            if self._stop.is_set():
                return

    def next(self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no matching event arrived"
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if predicate(event):
                return event

    def close(self) -> None:
        self._stop.set()
        self._thread.join(35)


class WebhookReceiver:
    """A tiny HTTP server on loopback recording every POST (headers, body, the status it answered);
    answers `failures` 500s first."""

    def __init__(self, *, failures: int = 0) -> None:
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = 500 if receiver.failures > 0 else 204
                receiver.failures -= 1
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/hook"

    def deliveries(self, secret: str, *, accepted: bool = True) -> list[dict[str, Any]]:
        """The events received (only those answered 2xx if `accepted`); each one's HMAC-SHA256
        signature under `secret` is asserted."""
        out = []
        for headers, body, status in list(self.received):
            if accepted and status >= 300:
                continue
            signed = headers["x-vroot-timestamp"].encode() + b"." + body
            want = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["x-vroot-signature"], want), "bad webhook signature"
            doc = json.loads(body)
            assert str(doc["id"]) == headers["x-vroot-event-id"] and doc["kind"] == headers["x-vroot-event"]
            out.append(doc)
        return out

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)
