"""Helpers for the VM attestation tests (importable as `deep_helpers`): a world of a real HTTPS server,
two enrolled swtpm-backed simulated hosts whose host agents and task loops run, VMs with vTMs on
them (booted from VM images), their guest attesters simulated by the hosts and enrolled, a host
baseline learnt from host-a's logs (group "default") and a VM baseline learnt from a VM's guest
logs (group "vms"). Everything started is stopped when the context ends."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attest_helpers import Host, enrolled_host, learnt_manifest, upload_library
from server_helpers import Server, launch_server, stop_server
from vtm_helpers import kill_recorded_swtpms, make_host

from vroot.host import HostPaths
from vroot.measure import VM_CHAIN, write_images
from vroot.store import Store, TaskRecord
from vroot.vtm import VtmPaths

# Simulated hosts whose vTM state keys are sealed to PCRs 0, 1 and 7 only, so that a host with a
# tampered boot loader (PCR 4) still starts its vTMs: its VMs look fine while the host is not.
TRUSTED_PCRS = (0, 1, 7)


@dataclass
class VmWorld:
    server: Server
    a: Host
    b: Host
    vms_a: list[str]  # two VMs on host-a
    vm_b: str  # one VM on host-b
    images: Path
    backend: str

    @property
    def op(self):  # noqa: ANN201
        return self.server.operator()

    @property
    def store(self) -> Store:
        return self.server.services.store


def guest_logs(host: Host, vm: str) -> Path:
    return VtmPaths(HostPaths(host.directory).vtm(vm)).guest


def new_vm(host: Host, images: Path) -> str:
    """A new VM on `host`: its vTM created, then a simulated measured boot into it."""
    vm = str(uuid.uuid4())
    host.local.call("POST", "/v1/vtms", {"vm_uuid": vm})
    host.local.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(images)})
    return vm


def boot_vms(host: Host, vms: list[str], images: Path) -> None:
    for vm in vms:
        host.local.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(images)})


def deep_quote_tasks(store: Store, host_agent: str) -> list[TaskRecord]:
    return [t for t in store.tasks.list(agent_id=host_agent, limit=1000) if t.kind == "deep-quote"]


def attest_many(op: Any, agent_ids: list[str], *, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Trigger attestations of all `agent_ids` at once, then wait for every result."""
    tasks = [op.post(f"/v1/agents/{a}/attestations") for a in agent_ids]
    deadline = time.monotonic() + timeout
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    while None in results:
        assert time.monotonic() < deadline, f"no result for {[a for a, r in zip(agent_ids, results, strict=True) if r is None]}"
        for i, (agent, task) in enumerate(zip(agent_ids, tasks, strict=True)):
            if results[i] is None:
                results[i] = op.get(f"/v1/agents/{agent}/attestations/{task['task_id']}")["result"]
        time.sleep(0.1)
    return results  # type: ignore[return-value]


@contextmanager
def vm_world(server_dir: Path, *, database: str | None = None, backend: str = "sqlite") -> Iterator[VmWorld]:
    root = Path(tempfile.mkdtemp(prefix="vd", dir="/tmp"))
    root.chmod(0o711)
    hosts: list[Host] = []
    server = None
    try:
        dirs = [make_host(root, name, trusted_pcrs=TRUSTED_PCRS) for name in ("host-a", "host-b")]
        server = launch_server(server_dir, database=database, manufacturer_cas=(root / "manufacturer-ca",),
                               attestation_interval_seconds=3600, deep_batch_seconds=10.0, scheduler_interval_seconds=0,
                               event_keepalive_seconds=0.5)  # fmt: skip
        hosts += [enrolled_host(server, d) for d in dirs]
        a, b = hosts
        op = server.operator()
        upload_library(op, learnt_manifest(a.directory))
        images = write_images(root / "vm-images", VM_CHAIN).path
        vms_a = [new_vm(a, images) for _ in range(2)]
        vm_b = new_vm(b, images)
        vm_manifest = learnt_manifest(a.directory, name="vms", logs=guest_logs(a, vms_a[0]))
        upload_library(op, vm_manifest, group="vms", baseline="vms")
        for host in hosts:
            assert sorted(host.sync_guests()) == sorted(
                f"vm:{vm}: enrolled" for vm in (vms_a if host is a else [vm_b])
            )  # fmt: skip
        yield VmWorld(server=server, a=a, b=b, vms_a=vms_a, vm_b=vm_b, images=images, backend=backend)
    finally:
        for host in hosts:
            host.close()
        if server is not None:
            stop_server(server)
        kill_recorded_swtpms(root)
        shutil.rmtree(root, ignore_errors=True)

