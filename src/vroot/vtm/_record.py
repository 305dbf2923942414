"""A vTM's directory and its record (`vtm.json`).

vtms/<vm-uuid>/            mode 0700, one per VM for its whole life (VMM-F2)
    vtm.json               this record; written last at creation, so a directory without it
                           is an interrupted create and never looks like a vTM
    state/                 swtpm's state, encrypted by swtpm with the vTM's state key
    state-key.sealed       that key, sealed in the host TM to the host's trusted state
    vek.crt                the vEK certificate (DER), also in the vTM's NV
    tpm.sock               the control socket QEMU connects to (unix transport)
    swtpm.pid              the running swtpm's PID
    guest/                 logs of the simulated guest boot
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from vroot._fs import atomic_write
from vroot.errors import InvalidInput, NotFound

__all__ = ["VtmPaths", "VtmRecord", "parse_vm_uuid", "read_pid", "read_record", "write_pid", "write_record"]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def parse_vm_uuid(text: str) -> str:
    """The canonical (lowercase, hyphenated) form of a VM UUID; `InvalidInput` otherwise."""
    try:
        value = str(uuid.UUID(str(text).strip()))
    except (ValueError, AttributeError, TypeError):
        raise InvalidInput(f"{text!r} is not a VM UUID") from None
    assert _UUID.match(value)
    return value


class VtmPaths:
    """The files of one vTM's directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    record = property(lambda self: self.root / "vtm.json")
    state = property(lambda self: self.root / "state")
    sealed_key = property(lambda self: self.root / "state-key.sealed")
    vek_certificate = property(lambda self: self.root / "vek.crt")
    socket = property(lambda self: self.root / "state" / "tpm.sock")
    log = property(lambda self: self.root / "state" / "swtpm.log")
    pid = property(lambda self: self.root / "swtpm.pid")
    guest = property(lambda self: self.root / "guest")


@dataclass(frozen=True, slots=True, kw_only=True)
class VtmRecord:
    """What the manager knows about a vTM across restarts. Nothing here is secret."""

    vm_uuid: str
    kind: str  # vEK algorithm: "ecc" (P-256) or "rsa" (2048)
    created_at: str  # RFC 3339
    transport: str  # "unix" (QEMU: ctrl socket tpm.sock) or "tcp" (tests, tools: server + ctrl ports)
    tcp_port: int | None
    vek_name: str  # hex TPM name of the vEK
    config_sha256: str
    desired: str  # "running" or "stopped": what the host agent restores after a restart
    uid: int | None = None  # the uid the vTM's swtpm runs as (VMM-S1), None: the agent's
    # The migration holding this vTM locked (no swtpm serves the guest; nothing starts it), or None:
    # a source between lock and finalize/abort, a destination between import and finalize.
    locked: str | None = None

    def __post_init__(self) -> None:
        parse_vm_uuid(self.vm_uuid)
        if self.kind not in ("ecc", "rsa"):
            raise InvalidInput(f"vEK kind must be ecc or rsa, not {self.kind!r}")
        if self.transport not in ("unix", "tcp") or (self.transport == "tcp") != (self.tcp_port is not None):
            raise InvalidInput("a vTM has a tcp transport with a port, or a unix one without")
        if self.desired not in ("running", "stopped"):
            raise InvalidInput(f"desired state must be running or stopped, not {self.desired!r}")

    def with_desired(self, desired: str) -> VtmRecord:
        return replace(self, desired=desired)

    def with_locked(self, migration_id: str | None) -> VtmRecord:
        return replace(self, locked=migration_id)


def write_record(paths: VtmPaths, record: VtmRecord) -> None:
    atomic_write(paths.record, json.dumps(asdict(record), indent=2, sort_keys=True).encode())


def read_record(paths: VtmPaths) -> VtmRecord:
    """The record of the vTM at `paths`; `NotFound` if there is none (no vTM, or a half-made one)."""
    try:
        doc = json.loads(paths.record.read_text())
    except FileNotFoundError:
        raise NotFound(f"no vTM for VM {paths.root.name}") from None
    except ValueError as exc:
        raise InvalidInput(f"{paths.record}: {exc}") from None
    try:
        return VtmRecord(**doc)
    except TypeError as exc:
        raise InvalidInput(f"{paths.record}: {exc}") from None


def read_pid(paths: VtmPaths) -> int | None:
    try:
        return int(paths.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def write_pid(paths: VtmPaths, pid: int | None) -> None:
    if pid is None:
        try:
            os.unlink(paths.pid)
        except FileNotFoundError:
            pass
    else:
        atomic_write(paths.pid, f"{pid}\n".encode())
