"""A migration benchmark's world, from vroot's public APIs: a real HTTPS RA server (in a thread of
this process), simulated swtpm-backed hosts each running `vroot host run DIR --server URL` as its
own process (host agent + task loop, as a host would), a host baseline learnt from the first host's
logs, VMs with vTMs booted from VM images and their guests enrolled (no guest task loops: a
migration does not need them).

    with migration_world(["host-a", "host-b"], migration={"timeout_seconds": 60}) as w:
        vm = w.new_vm("host-a")
        w.attest_hosts()
        w.op.post("/v1/migrations", {"vm_uuid": vm})

Everything started is stopped by PID when the context ends, even on failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

POLICY = """kind: vroot.policy
group: default
baseline: hosts
event_pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
ima: {require_allowlist: true}
"""
TRUSTED_PCRS = (0, 1, 7)  # as the migration tests: vTM state keys sealed to PCRs 0, 1, 7
VROOT = Path(sys.executable).with_name("vroot")


@dataclass
class HostProc:
    name: str
    directory: Path
    proc: subprocess.Popen
    local: Any  # vroot.host.AgentClient

    @property
    def agent_id(self) -> str:
        return f"host:{self.name}"


@dataclass
class World:
    root: Path
    url: str
    ca: Path
    op: Any  # vroot.agent.ServerClient with the operator token
    services: Any  # vroot.server.Services (the store, in this process)
    hosts: dict[str, HostProc] = field(default_factory=dict)
    images: Path | None = None

    @property
    def store(self) -> Any:
        return self.services.store

    def new_vm(self, host: str, *, enroll: bool = True) -> str:
        """A VM on `host`: its vTM created, a simulated measured boot into it, its guest enrolled."""
        from vroot.agent import GuestSimulator

        h = self.hosts[host]
        vm = str(uuid.uuid4())
        h.local.call("POST", "/v1/vtms", {"vm_uuid": vm})
        h.local.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(self.images)})
        if enroll:
            GuestSimulator(h.directory, server_url=self.url, ca_certificate=self.ca).attester(vm).enroll(self.url, self.ca)
        return vm

    def attest_hosts(self, *, timeout: float = 60.0) -> dict[str, str]:
        """Attest every host now (a fresh verdict for placement); their verdicts."""
        tasks = {h.agent_id: self.op.post(f"/v1/agents/{h.agent_id}/attestations") for h in self.hosts.values()}
        deadline = time.monotonic() + timeout
        verdicts: dict[str, str] = {}
        while len(verdicts) < len(tasks):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no attestation result for {sorted(set(tasks) - set(verdicts))}")
            for agent, task in tasks.items():
                if agent not in verdicts:
                    result = self.op.get(f"/v1/agents/{agent}/attestations/{task['task_id']}")["result"]
                    if result is not None:
                        verdicts[agent] = result["verdict"]
            time.sleep(0.05)
        return verdicts

    def engine_results(self, migration_id: str) -> dict[str, Any]:
        """Each engine's answer to this migration's tasks, by task kind (from the store)."""
        prefix = f"mig:{migration_id}:"
        out = {}
        for h in self.hosts.values():
            for t in self.store.tasks.list(agent_id=h.agent_id, limit=10_000):
                if t.key and t.key.startswith(prefix) and isinstance(t.result, Mapping):
                    out[t.kind] = t.result
        return out


def _learnt_manifest(host_dir: Path) -> bytes:
    from vroot.baseline import dump_manifest, learn_baseline
    from vroot.eventlog import parse_ima_log, parse_tcg_log

    logs = host_dir / "logs"
    baseline = learn_baseline(tcg_log=parse_tcg_log((logs / "boot.tcg").read_bytes()),
                              ima_log=parse_ima_log((logs / "ima.bin").read_bytes()), name="hosts", version="1")  # fmt: skip
    return dump_manifest(baseline, format="json")


def _start_host(directory: Path, url: str, ca: Path) -> HostProc:
    from vroot.host import AgentClient, HostPaths

    log = open(directory.parent / f"{directory.name}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([str(VROOT), "host", "run", str(directory), "--server", url, "--ca", str(ca)],
                            stdout=subprocess.PIPE, stderr=log, text=True)  # fmt: skip
    log.close()
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("ready:"):
        proc.kill()
        proc.wait(10)
        raise RuntimeError(f"host agent {directory.name} did not start: {line!r} (see {log.name})")
    return HostProc(name=directory.name, directory=directory, proc=proc,
                    local=AgentClient(HostPaths(directory).agent_socket, timeout=120))  # fmt: skip


def _stop_host(h: HostProc) -> None:
    """Shut the host agent down (its vTMs and TM too), then make sure its process is gone, by PID."""
    if h.proc.poll() is None:
        try:
            h.local.call("POST", "/v1/shutdown", {"stop_vtms": True, "stop_tm": True})
        except Exception:  # noqa: BLE001 - it may be gone already; the signal below decides
            pass
        try:
            h.proc.wait(30)
        except subprocess.TimeoutExpired:
            h.proc.send_signal(signal.SIGTERM)
            try:
                h.proc.wait(10)
            except subprocess.TimeoutExpired:
                h.proc.kill()
                h.proc.wait(10)
    if h.proc.stdout:
        h.proc.stdout.close()


def _kill_recorded_swtpms(root: Path) -> None:
    """SIGKILL every swtpm whose PID file is under `root` and whose command line names `root`."""
    for pid_file in list(root.rglob("swtpm.pid")):
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if b"swtpm" in cmdline and str(root).encode() in cmdline:
            os.kill(pid, signal.SIGKILL)


def _toml_value(v: object) -> str:
    return json.dumps(v) if not isinstance(v, bool) else str(v).lower()


@contextmanager
def migration_world(hosts: list[str], *, migration: Mapping[str, object] | None = None,
                    server_options: Mapping[str, object] | None = None) -> Iterator[World]:  # fmt: skip
    """A server and `hosts` (enrolled, running, trusted once attested), a host baseline uploaded.
    `migration` is written as the server's [migration] table; `server_options` as [server] options."""
    from vroot.agent import ServerClient, enroll_host
    from vroot.host import HostConfig, init_host
    from vroot.measure import VM_CHAIN, write_images
    from vroot.server import Services, init_server, load_settings, start_server

    root = Path(tempfile.mkdtemp(prefix="mb", dir="/tmp"))
    root.chmod(0o711)  # vTMs run as their own uids and must pass through
    procs: list[HostProc] = []
    services = running = op = None
    try:
        now = datetime.now(UTC)
        dirs = []
        for name in hosts:
            init_host(root / name, config=HostConfig(host_id=name, mode="simulate", trusted_pcrs=TRUSTED_PCRS), now=now,
                      serial=0x5EED, manufacturer_ca_dir=root / "manufacturer-ca")  # fmt: skip
            dirs.append(root / name)
        options = {"attestation_interval_seconds": 3600, "scheduler_interval_seconds": 0, "poll_interval_seconds": 0.2,
                   "deep_batch_seconds": 10.0, **(server_options or {})}  # fmt: skip
        result = init_server(root / "server", now=now - timedelta(minutes=5), rng=os.urandom,
                             manufacturer_cas=(root / "manufacturer-ca",), listen="127.0.0.1:0", options=options)  # fmt: skip
        if migration:
            with open(root / "server" / "server.toml", "a") as f:
                f.write("\n[migration]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in migration.items()))
        settings = load_settings(root / "server", environ={})
        services = Services.open(settings, clock=lambda: datetime.now(UTC))
        running = start_server(settings, services)
        ca = root / "server" / "tls" / "ca.pem"
        op = ServerClient(running.url, ca_certificate=ca, token=result.operator_token)
        world = World(root=root, url=running.url, ca=ca, op=op, services=services)
        for d in dirs:
            enroll_host(d, running.url, ca)
            h = _start_host(d, running.url, ca)
            procs.append(h)
            world.hosts[h.name] = h
        op.request("PUT", "/v1/baselines/hosts/1", content=_learnt_manifest(dirs[0]),
                   headers={"content-type": "application/json"})  # fmt: skip
        op.request("PUT", "/v1/policies/default", content=POLICY.encode(), headers={"content-type": "application/yaml"})
        world.images = write_images(root / "vm-images", VM_CHAIN).path
        yield world
    finally:
        for h in procs:
            _stop_host(h)
        if op is not None:
            op.close()
        if running is not None:
            running.stop()
        if services is not None:
            services.close()
        _kill_recorded_swtpms(root)
        shutil.rmtree(root, ignore_errors=True)
