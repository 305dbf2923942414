"""The vTM manager (VMM layer): one TM-rooted vTM per VM (VMM-F1..F6, VMM-S1..S3).

Runs inside the host agent, which holds the only connection to the host TM. A vTM is a swtpm
whose state is encrypted with a per-vTM key; that key is sealed in the host TM to the host's
trusted state (`_statekey`). At creation the vTM gets a vEK and an X.509 vEK certificate signed
inside the host TM by the vTM-manager key (usable only in the trusted state), stored in the vTM's
NV where guest software looks for it. Every launch is measured into host PCR 14.

vTM swtpm processes are started detached: they outlive the agent (a guest keeps its TPM while
the agent restarts), and the next agent adopts them by PID or restarts them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from vroot._fs import atomic_write, file_sha256, make_private_dir
from vroot.errors import Conflict, InvalidInput, NotFound, SwtpmError, TmError, Unavailable
from vroot.host._config import MANAGER_HANDLE, HostConfig, HostPaths
from vroot.host._hosttm import HostTm
from vroot.host._provision import HostKeys
from vroot.measure._launch import LAUNCH_PCR, VtmLaunch
from vroot.vtm._record import (
    VtmPaths,
    VtmRecord,
    parse_vm_uuid,
    read_pid,
    read_record,
    write_pid,
    write_record,
)
from vroot.vtm._statekey import STATE_KEY_SIZE, seal_state_key, unseal_state_key

__all__ = ["VtmManager", "VtmStatus"]


@dataclass(frozen=True, slots=True, kw_only=True)
class VtmStatus:
    """A vTM as `list` shows it."""

    record: VtmRecord
    running: bool
    pid: int | None
    endpoint: str  # what QEMU or a tool connects to

    def to_json(self) -> dict:
        return {
            "vm_uuid": self.record.vm_uuid,
            "kind": self.record.kind,
            "transport": self.record.transport,
            "endpoint": self.endpoint,
            "running": self.running,
            "pid": self.pid,
            "desired": self.record.desired,
            "locked": self.record.locked,  # the migration holding it locked, or None
            "vek_name": self.record.vek_name,
            "created_at": self.record.created_at,
        }


class VtmManager:
    """Creates, starts, stops and destroys the vTMs of one host; restores them after a restart."""

    def __init__(
        self,
        config: HostConfig,
        paths: HostPaths,
        host: HostTm,
        keys: HostKeys,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.config = config
        self.paths = paths
        self.host = host
        self.keys = keys
        self.clock = clock
        self.rng = rng
        self.processes: dict[str, object] = {}  # vm uuid -> SwtpmProcess
        self._swtpm_sha256: str | None = None

    # -- queries --------------------------------------------------------------------------------

    def vtm_paths(self, vm_uuid: str) -> VtmPaths:
        return VtmPaths(self.paths.vtm(parse_vm_uuid(vm_uuid)))

    def record(self, vm_uuid: str) -> VtmRecord:
        return read_record(self.vtm_paths(vm_uuid))

    def list(self) -> list[VtmStatus]:
        out = []
        if not self.paths.vtms.is_dir():
            return out
        for entry in sorted(self.paths.vtms.iterdir()):
            try:
                record = read_record(VtmPaths(entry))
            except (NotFound, InvalidInput):
                continue
            out.append(self.status(record))
        return out

    def status(self, record: VtmRecord) -> VtmStatus:
        proc = self.processes.get(record.vm_uuid)
        running = proc is not None and proc.alive
        vpaths = self.vtm_paths(record.vm_uuid)
        endpoint = str(vpaths.socket) if record.transport == "unix" else f"127.0.0.1:{record.tcp_port}"
        return VtmStatus(record=record, running=running, pid=proc.pid if running else None, endpoint=endpoint)

    # -- life cycle -----------------------------------------------------------------------------

    def create(self, vm_uuid: str, *, kind: str = "ecc", tcp_port: int | None = None) -> VtmStatus:
        """Create and start the vTM of `vm_uuid` (VMM-F1, VMM-F2): one per VM, for life.

        Nothing that looks like a vTM is left when this fails part-way: the record is written
        last, and the directory is removed on any error.
        """
        vm_uuid = parse_vm_uuid(vm_uuid)
        vpaths = self.vtm_paths(vm_uuid)
        if vpaths.record.exists():
            raise Conflict(f"VM {vm_uuid} already has a vTM (one vTM per VM, bound for life)")
        if vpaths.root.exists():
            self._remove_half_made(vpaths)
        record = VtmRecord(
            vm_uuid=vm_uuid,
            kind=kind,
            created_at=self.clock().isoformat(),
            transport="unix" if tcp_port is None else "tcp",
            tcp_port=tcp_port,
            vek_name="",
            config_sha256="",
            desired="running",
        )
        record = _with_config_digest(replace(record, uid=self._allocate_uid()))
        try:
            self._prepare_dirs(vpaths, record.uid)
            key = self.rng(STATE_KEY_SIZE)
            atomic_write(vpaths.sealed_key, seal_state_key(self.host.client, key, self.keys.trusted))
            proc = self._spawn(record, vpaths, key)
            try:
                with self.open_vtm(vm_uuid, process=proc) as vtm:
                    vek_public, certificate = self._provision_vek(vtm, record)
                record = _with_config_digest(replace(record, vek_name=vek_public.name().hex()))
                atomic_write(vpaths.vek_certificate, certificate, mode=0o644)
                self._measure_launch(record)
                write_pid(vpaths, proc.pid)
                write_record(vpaths, record)
            except BaseException:
                proc.stop()
                raise
        except BaseException as exc:
            self.processes.pop(vm_uuid, None)
            shutil.rmtree(vpaths.root, ignore_errors=True)
            if isinstance(exc, OSError):  # a full disk, a read-only file system...
                raise Unavailable(f"vTM {vm_uuid} not created: {exc.strerror or exc}; nothing was kept") from exc
            raise
        self.processes[vm_uuid] = proc
        return self.status(record)

    def start(self, vm_uuid: str) -> VtmStatus:
        """Start a stopped vTM: unseal its state key (only in the host's trusted state), launch, measure."""
        vpaths = self.vtm_paths(vm_uuid)
        record = read_record(vpaths)
        if record.locked is not None:
            raise Conflict(f"vTM {record.vm_uuid} is locked by migration {record.locked}: it does not start")
        proc = self.processes.get(record.vm_uuid)
        if proc is not None and proc.alive:
            return self.status(record)
        key = unseal_state_key(
            self.host.client, vpaths.sealed_key.read_bytes(), self.keys.trusted, vm_uuid=record.vm_uuid
        )
        proc = self._spawn(record, vpaths, key)
        try:
            self._measure_launch(record)
        except BaseException:
            proc.stop()
            raise
        write_pid(vpaths, proc.pid)
        record = record.with_desired("running")
        write_record(vpaths, record)
        self.processes[record.vm_uuid] = proc
        return self.status(record)

    def stop(self, vm_uuid: str, *, desired: str = "stopped") -> VtmStatus:
        """Stop a vTM's swtpm by PID (its NV state stays, encrypted; its vPCRs reset like a power-off)."""
        vpaths = self.vtm_paths(vm_uuid)
        record = read_record(vpaths)
        proc = self.processes.pop(record.vm_uuid, None)
        if proc is not None:
            self._power_off(record.vm_uuid, proc)
        write_pid(vpaths, None)
        record = record.with_desired(desired)
        write_record(vpaths, record)
        return self.status(record)

    def destroy(self, vm_uuid: str) -> None:
        """Stop a vTM and delete it: state, sealed key, certificate. The VM's vTM is gone for good."""
        vpaths = self.vtm_paths(vm_uuid)
        read_record(vpaths)  # NotFound for an unknown VM
        proc = self.processes.pop(parse_vm_uuid(vm_uuid), None)
        if proc is not None:
            self._power_off(vm_uuid, proc)
        vpaths.record.unlink()  # first: from here on the directory is not a vTM
        shutil.rmtree(vpaths.root, ignore_errors=True)

    def restore(self) -> list[str]:
        """After an agent start: adopt running vTMs, restart those that should run. Returns messages."""
        messages = []
        if not self.paths.vtms.is_dir():
            return messages
        for entry in sorted(self.paths.vtms.iterdir()):
            vpaths = VtmPaths(entry)
            if not vpaths.record.exists():
                if entry.is_dir() and not entry.name.startswith("."):
                    self._remove_half_made(vpaths)
                    messages.append(f"removed half-made vTM directory {entry.name}")
                continue
            record = read_record(vpaths)
            adopted = self._adopt(record, vpaths)
            if adopted is not None:
                self.processes[record.vm_uuid] = adopted
                messages.append(f"adopted vTM {record.vm_uuid} (pid {adopted.pid})")
            elif record.desired == "running" and record.locked is None:
                try:
                    self.start(record.vm_uuid)
                    messages.append(f"restarted vTM {record.vm_uuid}")
                except Exception as exc:  # one vTM's failure must not stop the others
                    messages.append(f"vTM {record.vm_uuid} not started: {exc}")
        return messages

    def check(self) -> list[str]:
        """Restart every vTM whose swtpm died under this manager. Returns messages.

        Only processes this manager started or adopted count: a vTM that could not start (the
        host left its trusted state) is not retried in a loop; one restart is tried per death.
        """
        messages = []
        for vm_uuid, proc in list(self.processes.items()):
            if proc.alive:
                continue
            del self.processes[vm_uuid]
            try:
                self.start(vm_uuid)
                messages.append(f"vTM {vm_uuid}: swtpm died, restarted")
            except Exception as exc:
                messages.append(f"vTM {vm_uuid}: swtpm died, restart failed: {exc}")
        return messages

    def stop_all(self) -> None:
        """Stop every vTM process this manager holds, keeping each one's desired state."""
        for vm_uuid in list(self.processes):
            self._power_off(vm_uuid, self.processes.pop(vm_uuid))
            write_pid(self.vtm_paths(vm_uuid), None)

    # -- access to a vTM --------------------------------------------------------------------------

    @contextmanager
    def open_vtm(self, vm_uuid: str, *, process=None) -> Iterator:  # noqa: ANN001
        """A `TmClient` on the vTM (when no guest holds it): for provisioning and simulated guests."""
        from vroot.tm import TmClient

        proc = process or self.processes.get(parse_vm_uuid(vm_uuid))
        if proc is None or not proc.alive:
            raise NotFound(f"vTM {vm_uuid} is not running")
        if getattr(proc, "ctrl_only", False):
            with proc.data_channel() as tcti, TmClient.open(tcti) as client:
                yield client
        else:
            with TmClient.open(proc.tcti) as client:
                yield client

    # -- internals --------------------------------------------------------------------------------

    def _power_off(self, vm_uuid: str, proc) -> None:  # noqa: ANN001
        """Stop a vTM's swtpm by PID, after an orderly TPM2_Shutdown when no guest holds the vTM (a
        guest's OS shuts its TPM down itself); an unorderly stop would count as a DA failure."""
        if proc.alive:
            try:
                with self.open_vtm(vm_uuid, process=proc) as vtm:
                    vtm.shutdown()
            except (SwtpmError, TmError, NotFound):
                pass
        proc.stop()

    def _allocate_uid(self) -> int | None:
        """A uid of its own for a new vTM's swtpm (VMM-S1): the lowest free slot above the base.
        None when the agent is not root (it cannot switch users) or the host disables it."""
        base = self.config.vtm_uid_base
        if base is None or os.geteuid() != 0:
            return None
        for parent in self.paths.root.parents:  # the vTM's uid must be able to pass through them
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                raise InvalidInput(
                    f"{parent} is not searchable by others, so a vTM's own uid cannot reach its state under "
                    f"{self.paths.root}: `chmod o+x {parent}`, or set vtm_uid_base = 0 in host.toml"
                )
        taken = {s.record.uid for s in self.list()}
        return next(base + slot for slot in range(len(taken) + 1) if base + slot not in taken)

    def _prepare_dirs(self, vpaths: VtmPaths, uid: int | None) -> None:
        """vtms/ and the vTM's directory root-owned (0711 with per-vTM uids: passable, not listable;
        else 0700); state/ 0700 and owned by the vTM's uid, so no other vTM reaches its files."""
        mode = 0o711 if uid is not None else 0o700
        if uid is not None:
            os.chmod(self.paths.root, os.stat(self.paths.root).st_mode & 0o777 | 0o011)
        for directory in (self.paths.vtms, vpaths.root):
            directory.mkdir(mode=mode, parents=True, exist_ok=True)
            os.chmod(directory, mode)
        make_private_dir(vpaths.state)
        if uid is not None:
            for path in (vpaths.state, *vpaths.state.iterdir()):
                os.chown(path, uid, uid, follow_symlinks=False)

    def _spawn(self, record: VtmRecord, vpaths: VtmPaths, key: bytes, **options):  # noqa: ANN003, ANN202
        """Start the vTM's swtpm; `options` go to `start_swtpm` (`load_state`, `startup_clear`)."""
        from vroot.tm.swtpm import start_swtpm

        self._prepare_dirs(vpaths, record.uid)
        # A detached swtpm's stderr would go to an unnamed file: it logs to its state directory.
        common = {"state_key": key, "detached": True, "log_path": vpaths.log, "runas": record.uid, **options}
        if record.transport == "tcp":
            return start_swtpm(vpaths.state, tcp_port=record.tcp_port, **common)
        return start_swtpm(vpaths.state, unix_path=vpaths.socket, ctrl_only=True, **common)

    def _adopt(self, record: VtmRecord, vpaths: VtmPaths):  # noqa: ANN202
        from vroot.tm.swtpm import SwtpmProcess

        pid = read_pid(vpaths)
        if pid is None:
            return None
        try:
            if record.transport == "tcp":
                return SwtpmProcess.adopt(pid, state_dir=vpaths.state, tcp_port=record.tcp_port)
            return SwtpmProcess.adopt(pid, state_dir=vpaths.state, unix_path=vpaths.socket, ctrl_only=True)
        except SwtpmError:
            write_pid(vpaths, None)
            return None

    def _provision_vek(self, vtm, record: VtmRecord):  # noqa: ANN001, ANN202
        """Create the vEK in the vTM, certify it with the vTM-manager key, store the certificate in NV."""
        from vroot.tpm2 import parse_public

        with vtm.create_primary_ek(record.kind) as ek:
            vek_public = parse_public(ek.public)
        der = self._issue_vek_certificate(vek_public, record)
        vtm.write_ek_certificate(der, record.kind)
        return vek_public, der

    def _issue_vek_certificate(self, vek_public, record: VtmRecord) -> bytes:  # noqa: ANN001
        """A vEK certificate (DER) for `vek_public`, signed inside the host TM by the vTM-manager key
        (only in the host's trusted state; VMM-F4, MIG-10)."""
        import uuid

        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        from vroot.pki import issue_vek_certificate
        from vroot.tm import PolicyPcr
        from vroot.tpm2 import parse_public

        policy = [PolicyPcr.of(self.config.trusted_selection)]
        with self.host.client.persistent(MANAGER_HANDLE) as manager:
            certificate = issue_vek_certificate(
                vek_public=vek_public,
                manager_public=parse_public(self.keys.manager_public),
                host_id=self.config.host_id,
                vm_uuid=uuid.UUID(record.vm_uuid),
                now=self.clock(),
                serial=x509.random_serial_number(),
                sign_digest=lambda digest: self.host.client.sign_digest(manager, digest, policy=policy),
            )
        return certificate.public_bytes(Encoding.DER)

    def _measure_launch(self, record: VtmRecord) -> None:
        if self._swtpm_sha256 is None:
            binary = shutil.which("swtpm")
            if binary is None:
                raise SwtpmError("swtpm is not installed")
            self._swtpm_sha256 = file_sha256(Path(binary))
        launch = VtmLaunch(
            vm_uuid=record.vm_uuid,
            swtpm_sha256=self._swtpm_sha256,
            config_sha256=record.config_sha256,
            vek_name=record.vek_name,
        )
        self.host.client.pcr_extend(LAUNCH_PCR, self.host.launch_log.measure(launch))

    def _remove_half_made(self, vpaths: VtmPaths) -> None:
        pid = read_pid(vpaths)
        if pid is not None:
            from vroot.tm.swtpm import SwtpmProcess

            try:
                SwtpmProcess.adopt(
                    pid, state_dir=vpaths.state, unix_path=vpaths.socket, ctrl_only=True
                ).stop()
            except SwtpmError:
                port = _tcp_port_of(pid)  # a TCP vTM (an interrupted import): its record is not there to say
                if port is not None:
                    try:
                        SwtpmProcess.adopt(pid, state_dir=vpaths.state, tcp_port=port).stop()
                    except SwtpmError:
                        pass
        shutil.rmtree(vpaths.root, ignore_errors=True)


def _tcp_port_of(pid: int) -> int | None:
    """The data port in a swtpm's `--server type=tcp,port=N` (from /proc), or None."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    for arg in argv:
        if arg.startswith("type=tcp,"):
            options = dict(part.partition("=")[::2] for part in arg.split(","))
            if options.get("port", "").isdigit():
                return int(options["port"])
    return None


def _with_config_digest(record: VtmRecord) -> VtmRecord:
    """The record with `config_sha256` = SHA-256 of the launch-relevant configuration."""
    config = {
        "vm_uuid": record.vm_uuid,
        "kind": record.kind,
        "transport": record.transport,
        "tcp_port": record.tcp_port,
        "vek_name": record.vek_name,
        "swtpm": [
            "socket",
            "--tpm2",
            "key aes-256-cbc",
            "ctrl-only" if record.transport == "unix" else "tcp",
        ],
    }
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    return replace(record, config_sha256=digest)
