"""Crashes at every step of a vTM migration (DESIGN.md section 6 invariants; MIG-8, MIG-9, VMM-S4, DP-4).

A crash is simulated in-process by raising `Crash` (a BaseException the engine does not handle, as a
killed process runs no handler) at a step, then dropping the agent and engine objects and starting a
new agent on the same directory (restore, then recover from the journals). One case kills a real
host agent process by PID. After each: exactly one live (unlocked, serving) copy of the vTM, with the
secret sealed before the move still unsealable; before commit the source resumes, after commit the
destination completes.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from migration_helpers import Host, export, import_, step, ticket

from vroot import guest
from vroot.host import AgentClient, HostPaths
from vroot.migration import engine as engine_module
from vroot.tpm2 import HashAlg
from vroot.vtm import _migration as vtm_migration

pytestmark = pytest.mark.tpm


class Crash(BaseException):
    """The process dies here."""


def _crash(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
    raise Crash


def _setup(hosts):  # noqa: ANN001, ANN202
    a, b = hosts("host-a"), hosts("host-b")
    vm = a.create_vtm()
    with a.manager.open_vtm(vm) as vtm:
        vtm.pcr_extend(16, {HashAlg.SHA256: bytes(range(32))})
        sealed = guest.seal(vtm, b"secret", pcrs={HashAlg.SHA256: [16]}).encode()
    return a, b, vm, sealed


def _live(hosts_: list[Host], vm: str) -> list[str]:
    """The hosts where the vTM of `vm` is live: recorded, unlocked and its swtpm serving."""
    out = []
    for h in hosts_:
        try:
            record = h.manager.record(vm)
        except Exception:
            continue
        proc = h.manager.processes.get(vm)
        if record.locked is None and proc is not None and proc.alive:
            out.append(h.host_id)
    return out


def _check_one_live_copy(hosts_: list[Host], vm: str, sealed: bytes, where: str) -> None:
    assert _live(hosts_, vm) == [where]
    host = next(h for h in hosts_ if h.host_id == where)
    with host.manager.open_vtm(vm) as vtm:
        assert guest.unseal(vtm, sealed) == b"secret"  # vPCR 16 kept, sealed secret not lost (DP-4)
    others = [h for h in hosts_ if h.host_id != where]
    for h in others:
        assert not h.manager.vtm_paths(vm).root.exists(), f"a copy of the vTM is left on {h.host_id}"


def test_source_crash_while_locking_resumes_the_source(hosts, monkeypatch):
    """MIG-5, MIG-8: the source dies after locking, before the blob exists: on restart it resumes its
    vTM (the blob never left), the migration is aborted, and the destination discards its preparation."""
    a, b, vm, sealed = _setup(hosts)
    t = ticket(a, b, vm)
    monkeypatch.setattr(engine_module.MigrationEngine, "_seal", _crash)
    with pytest.raises(Crash):
        export(a, b, t)
    monkeypatch.undo()
    assert a.manager.record(vm).locked == t.migration_id
    a.crash()
    assert step(a, "status", {"migration_id": t.migration_id})["state"] == "aborted"
    step(b, "abort-in", {"migration_id": t.migration_id})
    _check_one_live_copy([a, b], vm, sealed, "host-a")


def test_source_crash_after_saving_blob_before_journal(hosts, monkeypatch):
    """MIG-5: the source dies with the blob written but not yet journaled as exported (so never handed
    out): it resumes on restart, and a retried export of that migration is refused."""
    a, b, vm, sealed = _setup(hosts)
    t = ticket(a, b, vm)
    real = a.engine.journals.save_blob

    def save_then_die(*args):  # noqa: ANN002, ANN202
        real(*args)
        raise Crash

    monkeypatch.setattr(a.engine.journals, "save_blob", save_then_die)
    with pytest.raises(Crash):
        export(a, b, t)
    a.crash()
    with pytest.raises(Exception, match="already aborted"):
        export(a, b, t)
    _check_one_live_copy([a, b], vm, sealed, "host-a")


@pytest.mark.parametrize("decision", ["abort", "commit"])
def test_source_crash_after_export_waits_for_the_controller(hosts, decision):
    """MIG-8, MIG-9: the source dies after exporting: on restart its vTM stays locked (it cannot know
    whether the controller committed); abort resumes it, commit completes at the destination and
    destroys the source copy."""
    a, b, vm, sealed = _setup(hosts)
    t = ticket(a, b, vm)
    exported = export(a, b, t)
    a.crash()
    assert a.manager.record(vm).locked == t.migration_id and _live([a, b], vm) == []
    import_(b, t, exported)
    if decision == "abort":
        step(b, "abort-in", {"migration_id": t.migration_id})
        step(a, "abort-out", {"migration_id": t.migration_id})
        _check_one_live_copy([a, b], vm, sealed, "host-a")
    else:
        step(b, "finalize-in", {"migration_id": t.migration_id})
        step(a, "finalize-out", {"migration_id": t.migration_id})
        _check_one_live_copy([a, b], vm, sealed, "host-b")


def test_destination_crash_while_importing_discards_the_half(hosts, monkeypatch):
    """MIG-7: the destination dies mid-import (its vTM started, not yet certified): on restart the half-made
    vTM (process and directory) is gone and the journal is back to prepared; the same blob then imports."""
    a, b, vm, sealed = _setup(hosts)
    t = ticket(a, b, vm)
    exported = export(a, b, t)
    monkeypatch.setattr(type(b.manager), "_issue_vek_certificate", _crash)
    with pytest.raises(Crash):
        import_(b, t, exported)
    monkeypatch.undo()
    half = b.manager.vtm_paths(vm)
    pid = int(half.pid.read_text())
    assert half.root.exists() and Path(f"/proc/{pid}").exists()
    b.crash()
    assert not half.root.exists()
    assert _wait_gone(pid)
    assert step(b, "status", {"migration_id": t.migration_id})["state"] == "prepared"
    import_(b, t, exported)
    step(b, "finalize-in", {"migration_id": t.migration_id})
    step(a, "finalize-out", {"migration_id": t.migration_id})
    _check_one_live_copy([a, b], vm, sealed, "host-b")


@pytest.mark.parametrize("decision", ["abort", "commit"])
def test_destination_crash_after_import_waits_for_the_controller(hosts, decision):
    """MIG-7, MIG-8: the destination dies after importing: its copy stays locked across the restart until
    the controller's commit (then it serves) or abort (then it is discarded and the source resumes)."""
    a, b, vm, sealed = _setup(hosts)
    t = ticket(a, b, vm)
    import_(b, t, export(a, b, t))
    b.crash()
    assert b.manager.record(vm).locked == t.migration_id and _live([a, b], vm) == []
    if decision == "commit":
        step(b, "finalize-in", {"migration_id": t.migration_id})
        step(a, "finalize-out", {"migration_id": t.migration_id})
        _check_one_live_copy([a, b], vm, sealed, "host-b")
    else:
        step(b, "abort-in", {"migration_id": t.migration_id})
        step(a, "abort-out", {"migration_id": t.migration_id})
        _check_one_live_copy([a, b], vm, sealed, "host-a")


def test_crashes_after_commit_complete(hosts, monkeypatch):
    """MIG-8, MIG-9: both sides die right after recording the commit (before unlocking / destroying):
    on restart the destination unlocks its copy and the source destroys its own; the source never resumes."""
    a, b, vm, sealed = _setup(hosts)
    t = ticket(a, b, vm)
    import_(b, t, export(a, b, t))
    monkeypatch.setattr(vtm_migration, "unlock", _crash)
    monkeypatch.setattr(vtm_migration, "discard", _crash)
    with pytest.raises(Crash):
        step(b, "finalize-in", {"migration_id": t.migration_id})
    with pytest.raises(Crash):
        step(a, "finalize-out", {"migration_id": t.migration_id})
    monkeypatch.undo()
    a.crash()
    b.crash()
    with pytest.raises(Exception, match="cannot become aborted"):
        step(a, "abort-out", {"migration_id": t.migration_id})
    _check_one_live_copy([a, b], vm, sealed, "host-b")
    assert {step(h, "status", {"migration_id": t.migration_id})["state"] for h in (a, b)} == {"done"}


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not Path(f"/proc/{pid}").exists():
            return True
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.01)
    return False


def _start_agent_process(directory: Path) -> subprocess.Popen:
    vroot = str(Path(sys.executable).parent / "vroot")
    proc = subprocess.Popen([vroot, "host", "run", str(directory)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    client = AgentClient(HostPaths(directory).agent_socket)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            client.call("GET", "/v1/host")
            return proc
        except Exception:
            if proc.poll() is not None:
                raise AssertionError("host agent process exited") from None
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("host agent process did not answer")


def test_source_agent_process_killed_after_export(hosts, short_tmp):
    """MIG-8, MIG-9, VMM-S4: a real host agent process (the source) is killed by PID (SIGKILL) right after
    it exported; a new agent process keeps the vTM locked; the controller commits; the destination
    serves the vTM with the secret sealed before the move, and the source copy is destroyed."""
    from vtm_helpers import make_host

    b = hosts("host-b")
    a_dir = make_host(short_tmp, "host-a")
    a = Host.open(a_dir)  # set up the vTM in process, then hand the host to an agent process
    vm = a.create_vtm()
    with a.manager.open_vtm(vm) as vtm:
        vtm.pcr_extend(16, {HashAlg.SHA256: bytes(range(32))})
        sealed = guest.seal(vtm, b"secret", pcrs={HashAlg.SHA256: [16]}).encode()
    t = ticket(a, b, vm)
    a.agent.close()  # vTMs and host TM keep running (detached), as after an agent upgrade
    proc = _start_agent_process(a_dir)
    client = AgentClient(HostPaths(a_dir).agent_socket)
    try:
        target = b.engine.prepare_in(t)
        exported = client.call("POST", "/v1/migrations/export-out", {
            "ticket": t.to_json(), **{k: target[k] for k in ("target_public", "certify_attest", "certify_signature")},
            "destination_ak_public": base64.b64encode(b.ak_public).decode(),
        })  # fmt: skip
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc = _start_agent_process(a_dir)
        status = client.call("GET", f"/v1/vtms/{vm}")
        assert status["running"] is False
        assert (
            client.call("POST", "/v1/migrations/status", {"migration_id": t.migration_id})["state"]
            == "exported"
        )
        import_(b, t, exported)
        step(b, "finalize-in", {"migration_id": t.migration_id})  # the controller committed
        assert (
            client.call("POST", "/v1/migrations/finalize-out", {"migration_id": t.migration_id})["state"]
            == "done"
        )
        assert client.call("GET", "/v1/vtms")["vtms"] == []
    finally:
        try:
            client.call("POST", "/v1/shutdown", {"stop_vtms": True, "stop_tm": True})
            proc.wait(20)
        except Exception:
            proc.kill()
            proc.wait(10)
    with b.manager.open_vtm(vm) as vtm:
        assert guest.unseal(vtm, sealed) == b"secret"
    assert not (a_dir / "vtms" / vm).exists()  # the source copy: state, sealed key, record
