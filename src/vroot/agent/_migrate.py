"""The host's side of migration tasks (MC-S1, VMM-S5; DESIGN.md section 6): the controller's
`prepare-migration-in`, `migrate-out`, `import`, `finalize-in/out` and `abort-in/out` tasks,
carried out by the host agent's migration engine (`POST /v1/migrations/<step>` on
HOST_DIR/agent.sock) only after the task verified:

- the controller's certificate chains to the operations CA this host enrolled with and carries the
  migration-controller usage (`verify_controller_certificate`);
- the task is signed by that key, addressed to this agent, of the kind it was queued as, and not
  expired (`verify_migration_task`).

The engine then gets the SIGNED arguments, never the unsigned payload around them. An abort for a
migration this host never heard of is done (nothing to undo); every other engine refusal fails the
task with its reason, which the controller reads.

Simulated VMs: a real VM's memory and disk (its event logs, its guest attester's credentials)
move with the VM by the VMM's own migration, outside vroot. For the VMs a simulated host plays,
whose boot logs live in the vTM's `guest/` directory, the source's `migrate-out` answer carries
those logs (`simulated_vm`, not secret) and the destination writes them back after `import`, so
the moved VM's guest can quote with them there.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from vroot._fs import atomic_write
from vroot.agent._loop import Task, TaskHandler
from vroot.controller import MIGRATION_TASK_KINDS, verify_controller_certificate, verify_migration_task
from vroot.errors import InvalidInput, NotFound
from vroot.host import AgentClient, HostPaths

__all__ = ["migration_handlers"]

MAX_CERTIFICATE = 16 * 1024
MAX_LOG = 16 * 1024 * 1024
SIMULATED_VM_FILES = ("boot.tcg", "ima.bin")
_VM = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def migration_handlers(host_dir: str | Path, *, agent_id: str, ops_ca: str | Path,
                       clock: Callable[[], datetime] = _utcnow, timeout: float = 120.0) -> dict[str, TaskHandler]:  # fmt: skip
    """A handler per migration task kind for the host at `host_dir`, trusting the controller that
    the operations CA at `ops_ca` certified."""
    anchor = x509.load_pem_x509_certificate(Path(ops_ca).read_bytes())
    engine = AgentClient(HostPaths(Path(host_dir)).agent_socket, timeout=timeout)

    def handle(task: Task) -> dict[str, Any]:
        payload = task.payload if isinstance(task.payload, Mapping) else {}
        pem, token = payload.get("controller_certificate"), payload.get("signed")
        if not isinstance(pem, str) or len(pem) > MAX_CERTIFICATE or not isinstance(token, str):
            raise InvalidInput("a migration task carries the controller's certificate and a signed task")
        now = clock()
        controller = verify_controller_certificate(pem.encode(), ops_ca=anchor, now=now)
        signed = verify_migration_task(token, controller=controller, agent_id=agent_id, now=now,
                                       kinds=frozenset({task.kind}))  # fmt: skip
        try:
            result = engine.call("POST", f"/v1/migrations/{signed.kind}", dict(signed.args))
        except NotFound:
            if signed.kind.startswith("abort-"):
                return {"migration_id": str(signed.migration_id), "state": "absent", "note": "nothing to undo here"}
            raise
        vm = str(signed.args.get("vm_uuid", ""))
        if signed.kind == "migrate-out" and _VM.fullmatch(vm):
            logs = {name: base64.b64encode(path.read_bytes()).decode()
                    for name in SIMULATED_VM_FILES if (path := _guest_dir(host_dir, vm) / name).is_file()}  # fmt: skip
            if logs:
                result = {**result, "simulated_vm": logs}
        elif signed.kind == "import" and _VM.fullmatch(vm) and isinstance(signed.args.get("simulated_vm"), Mapping):
            _write_guest_logs(_guest_dir(host_dir, vm), signed.args["simulated_vm"])
        return result

    return dict.fromkeys(MIGRATION_TASK_KINDS, handle)


def _guest_dir(host_dir: str | Path, vm: str) -> Path:
    return HostPaths(Path(host_dir)).vtm(vm) / "guest"


def _write_guest_logs(directory: Path, logs: Mapping[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in SIMULATED_VM_FILES:
        text = logs.get(name)
        if isinstance(text, str) and len(text) <= MAX_LOG * 4 // 3 + 4:
            atomic_write(directory / name, base64.b64decode(text), mode=0o644)
