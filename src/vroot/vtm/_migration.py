"""What the vTM manager does for a migration (MIG-5, MIG-7, MIG-9): lock and save a vTM, resume it,
install an imported one (locked), unlock it, discard it.

The lock is durable: the record says `locked` (so no restart, `start` or liveness check serves the
guest again) *before* anything else happens, and the locked vTM's swtpm is stopped with its volatile
state (vPCRs, loaded objects, sessions) stored in its state directory, encrypted with its state key
like the rest (swtpm's CMD_STORE_VOLATILE). Resuming starts swtpm from that state
(`--flags not-need-init`), so a vTM comes back with its vPCRs whether the agent kept running or
crashed in between.

While the lock is taken, the manager holds the vTM's only data channel: a guest command that comes
after the lock waits (it is not served) and then finds the swtpm gone, so it cannot change the state
being exported. swtpm serves one data client at a time; a guest (QEMU) that holds the control channel
must be paused by its VMM first: then `lock_and_save` fails with `SwtpmError` and nothing is locked.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field, replace

from vroot._fs import atomic_write
from vroot.errors import (
    Conflict,
    MigrationBlobDuplicated,
    MigrationStateMismatch,
    NotFound,
    SwtpmError,
    TmError,
)
from vroot.tpm2 import HashAlg
from vroot.vtm._record import VtmPaths, VtmRecord, read_record, write_pid, write_record
from vroot.vtm._statekey import STATE_KEY_SIZE, seal_state_key, unseal_state_key

__all__ = ["LockedState", "discard", "install_migrated", "lock_and_save", "resume", "unlock"]

VPCR_BANK = HashAlg.SHA256
VOLATILE_FILE = "tpm2-00.volatilestate"
_LOCK_TIMEOUT = 2.0  # seconds to wait for the data channel (a guest mid-command)


@dataclass(frozen=True, slots=True)
class LockedState:
    """A locked vTM's state, taken from its swtpm (plaintext TPM secrets: memory only)."""

    record: VtmRecord
    permanent: bytes = field(repr=False)
    volatile: bytes = field(repr=False)
    vpcrs: dict[int, bytes]
    timings: dict[str, float]


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


def _store_volatile(proc) -> None:  # noqa: ANN001 - SwtpmProcess
    """swtpm_ioctl -v: swtpm writes its volatile state to the state directory (encrypted with --key)."""
    target = (
        ["--unix", str(proc.ctrl_path)]
        if proc.ctrl_path is not None
        else ["--tcp", f"{proc.host}:{proc.ctrl_port}"]
    )
    binary = shutil.which("swtpm_ioctl")
    if binary is None:
        raise SwtpmError("swtpm_ioctl not found (Debian package swtpm-tools)")
    done = subprocess.run([binary, *target, "-v"], capture_output=True, timeout=10, check=False)
    if done.returncode != 0:
        raise SwtpmError(
            f"swtpm pid {proc.pid}: storing volatile state failed: {done.stderr.decode(errors='replace').strip()}"
        )


def _set_locked(vpaths: VtmPaths, record: VtmRecord, migration_id: str | None) -> VtmRecord:
    record = record.with_locked(migration_id)
    write_record(vpaths, record)
    return record


def lock_and_save(manager, vm_uuid: str, migration_id: str) -> LockedState:  # noqa: ANN001 - VtmManager
    """Lock the vTM of `vm_uuid` for `migration_id` and take its complete state (MIG-5).

    Proven on return: the record says locked (durable), no swtpm serves this vTM, its volatile state
    is stored encrypted in its state directory (for `resume`), and the returned blobs are the state
    as it was when the lock was taken: no guest command ran after the lock. A vTM that was stopped is
    started cold to be read. On failure before the state is taken the vTM is resumed and unlocked.
    """
    from vroot.tm import TmClient

    t0 = time.perf_counter()
    vpaths = manager.vtm_paths(vm_uuid)
    record = read_record(vpaths)
    if record.locked is not None and record.locked != migration_id:
        raise Conflict(f"vTM {record.vm_uuid} is already locked by migration {record.locked}")
    record = _set_locked(vpaths, record, migration_id)
    timings: dict[str, float] = {}
    proc = manager.processes.get(record.vm_uuid)
    try:
        if proc is None or not proc.alive:
            if (vpaths.state / VOLATILE_FILE).exists():
                raise Conflict(
                    f"vTM {record.vm_uuid} is stopped with a saved volatile state: resume it first"
                )
            key = unseal_state_key(manager.host.client, vpaths.sealed_key.read_bytes(), manager.keys.trusted,
                                   vm_uuid=record.vm_uuid)  # fmt: skip
            proc = manager._spawn(record, vpaths, key)
            manager.processes[record.vm_uuid] = proc
        t_lock = time.perf_counter()
        with proc.data_channel(attach_timeout=_LOCK_TIMEOUT, timeout=_LOCK_TIMEOUT) as tcti:
            try:
                with TmClient.open(tcti) as vtm:
                    vpcrs = vtm.pcr_read({VPCR_BANK: range(24)})[VPCR_BANK]
            except TmError as exc:
                raise SwtpmError(
                    f"vTM {record.vm_uuid} did not answer within {_LOCK_TIMEOUT} s: a guest holds its data "
                    "channel (pause the VM first); not locked"
                ) from exc
            timings["lock_acquire_ms"] = _ms(t_lock)
            state = proc.save_state()
            _store_volatile(proc)
            manager.processes.pop(record.vm_uuid, None)
            proc.stop()
            write_pid(vpaths, None)
        timings["lock_ms"] = _ms(t_lock)
    except BaseException:
        if proc is not None and proc.alive:
            manager.processes[record.vm_uuid] = proc
            _set_locked(vpaths, record, None)
        raise
    timings["total_ms"] = _ms(t0)
    return LockedState(record=record, permanent=state.permanent, volatile=state.volatile, vpcrs=dict(vpcrs),
                       timings=timings)  # fmt: skip


def resume(manager, vm_uuid: str, migration_id: str) -> VtmRecord:  # noqa: ANN001
    """Start a vTM locked by `migration_id` again from its stored volatile state, and unlock it.

    Used by the source on abort (before commit) and by the destination on finalize (after commit).
    Idempotent: a vTM no longer locked by that migration is left as it is.
    """
    vpaths = manager.vtm_paths(vm_uuid)
    record = read_record(vpaths)
    if record.locked != migration_id:
        return record
    proc = manager.processes.get(record.vm_uuid)
    if proc is None or not proc.alive:
        proc = manager._adopt(record, vpaths)  # a swtpm left running by a crash mid-lock
    if proc is None or not proc.alive:
        key = unseal_state_key(manager.host.client, vpaths.sealed_key.read_bytes(), manager.keys.trusted,
                               vm_uuid=record.vm_uuid)  # fmt: skip
        volatile = vpaths.state / VOLATILE_FILE
        # With a stored volatile state swtpm resumes it (vPCRs kept); without one, a cold start.
        proc = manager._spawn(record, vpaths, key, startup_clear=not volatile.exists())
        try:
            manager._measure_launch(record)
        except BaseException:
            proc.stop()
            raise
        volatile.unlink(missing_ok=True)  # now in the running TPM; a later cold start must not reload it
    write_pid(vpaths, proc.pid)
    manager.processes[record.vm_uuid] = proc
    return _set_locked(vpaths, record, None)


def unlock(manager, vm_uuid: str, migration_id: str) -> VtmRecord:  # noqa: ANN001
    """The destination's finalize: the imported vTM starts serving its guest."""
    return resume(manager, vm_uuid, migration_id)


def discard(manager, vm_uuid: str, migration_id: str) -> bool:  # noqa: ANN001
    """Destroy the vTM of `vm_uuid` if (and only if) `migration_id` holds it locked, or a half-made
    directory of it is left. True when something was removed. The source's finalize (after commit)
    and the destination's abort."""
    vpaths = manager.vtm_paths(vm_uuid)
    try:
        record = read_record(vpaths)
    except NotFound:
        if vpaths.root.exists():
            manager._remove_half_made(vpaths)
            return True
        return False
    if record.locked != migration_id:
        return False
    manager.destroy(vm_uuid)
    return True


def install_migrated(
    manager,  # noqa: ANN001 - VtmManager
    *,
    vm_uuid: str,
    kind: str,
    vek_name: bytes,
    permanent: bytes,
    volatile: bytes,
    vpcrs: dict[int, bytes],
    migration_id: str,
    tcp_port: int | None = None,
) -> tuple[VtmRecord, bytes, dict[str, float]]:
    """Install an imported vTM state on this host, locked by `migration_id` (MIG-7, MIG-10).

    A fresh state key sealed under this host's trusted-state policy; swtpm started with the state;
    proven before anything is kept: its vEK (from the imported endorsement seed) has the recorded name,
    and its vPCRs equal the exported ones (proof of life). Then a new vEK certificate is signed by this
    host's vTM-manager key (in this TM, in its trusted state), the volatile state is stored encrypted,
    the swtpm stopped, and the record written last, locked. Returns (record, certificate DER, timings).
    Nothing is left on failure (the directory is removed).
    """
    from vroot.tpm2 import parse_public
    from vroot.vtm.manager import _with_config_digest

    timings: dict[str, float] = {}
    vpaths = manager.vtm_paths(vm_uuid)
    if vpaths.record.exists():
        raise MigrationBlobDuplicated(
            f"this host already has a vTM for VM {vm_uuid}: importing would make a copy"
        )
    if vpaths.root.exists():
        manager._remove_half_made(vpaths)
    record = VtmRecord(
        vm_uuid=vm_uuid,
        kind=kind,
        created_at=manager.clock().isoformat(),
        transport="unix" if tcp_port is None else "tcp",
        tcp_port=tcp_port,
        vek_name=vek_name.hex(),
        config_sha256="",
        desired="running",
        locked=migration_id,
    )
    record = _with_config_digest(replace(record, uid=manager._allocate_uid()))
    from vroot.tm.swtpm import SwtpmState

    proc = None
    try:
        t0 = time.perf_counter()
        manager._prepare_dirs(vpaths, record.uid)
        key = manager.rng(STATE_KEY_SIZE)
        atomic_write(vpaths.sealed_key, seal_state_key(manager.host.client, key, manager.keys.trusted))
        timings["seal_state_key_ms"] = _ms(t0)
        t0 = time.perf_counter()
        proc = manager._spawn(
            record, vpaths, key, load_state=SwtpmState(permanent=permanent, volatile=volatile)
        )
        write_pid(vpaths, proc.pid)  # a crash from here leaves a half-made vTM that restore() stops and removes
        timings["start_vtm_ms"] = _ms(t0)
        t0 = time.perf_counter()
        with manager.open_vtm(vm_uuid, process=proc) as vtm:
            with vtm.create_primary_ek(kind) as ek:
                vek_public = parse_public(ek.public)
            got = vtm.pcr_read({VPCR_BANK: range(24)})[VPCR_BANK]
        if vek_public.name() != vek_name:
            raise MigrationStateMismatch(
                f"imported vTM of VM {vm_uuid} has vEK {vek_public.name().hex()}, the migration records {vek_name.hex()}"
            )
        differ = [i for i in range(24) if got.get(i) != vpcrs.get(i)]
        if differ:
            raise MigrationStateMismatch(
                f"imported vTM of VM {vm_uuid}: vPCRs {', '.join(map(str, differ))} differ from the exported values"
            )
        timings["proof_of_life_ms"] = _ms(t0)
        t0 = time.perf_counter()
        certificate = manager._issue_vek_certificate(vek_public, record)
        atomic_write(vpaths.vek_certificate, certificate, mode=0o644)
        timings["vek_certificate_ms"] = _ms(t0)
        t0 = time.perf_counter()
        _store_volatile(proc)
        proc.stop()
        proc = None
        write_pid(vpaths, None)
        write_record(vpaths, record)
        timings["park_ms"] = _ms(t0)
    except Exception:  # a crash instead leaves the half-made directory to restore() and recover()
        if proc is not None:
            proc.stop()
        shutil.rmtree(vpaths.root, ignore_errors=True)
        raise
    return record, certificate, timings
