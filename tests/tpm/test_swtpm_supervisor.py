"""vroot.tm.swtpm: start (unix, TCP), readiness, state key through an fd, state save/load, stop by
PID, no orphan when the parent dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vroot.errors import SwtpmError
from vroot.tm.client import TmClient
from vroot.tm.swtpm import free_tcp_port, running_pids, start_swtpm, swtpm_capabilities
from vroot.tpm2 import HashAlg

pytestmark = pytest.mark.tpm

MARKER = b"VROOT-PLAINTEXT-NV-MARKER-0123456789" * 4
EXTEND = {HashAlg.SHA256: bytes(range(32)), HashAlg.SHA1: bytes(range(20))}


def pid_gone(pid: int) -> bool:
    """No such process, or a zombie (the reaper in a container may be slow)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_gone(pid):
            return True
        time.sleep(0.01)
    return pid_gone(pid)


def get_random_ok(proc) -> None:
    with TmClient.open(proc.tcti) as tm:
        assert len(tm.get_random(16)) == 16


def test_capabilities_probe():
    caps = swtpm_capabilities()
    assert "tpm-2.0" in caps
    assert "cmdarg-key-fd" in caps


def test_unix_socket_start_ready_stop(swtpm_factory):
    proc = swtpm_factory()
    assert proc.alive and proc.unix_path is not None
    assert proc.tcti == f"swtpm:path={proc.unix_path}"
    assert proc.ctrl_path == Path(f"{proc.unix_path}.ctrl")
    assert proc.pid in running_pids()
    get_random_ok(proc)
    assert proc.stop() == 0  # SIGTERM: clean exit
    assert not proc.alive and pid_gone(proc.pid)
    assert proc.pid not in running_pids()
    assert proc.stop() == 0  # idempotent


def test_tcp_start_ready_stop(swtpm_factory):
    proc = swtpm_factory(tcp=True)
    assert proc.tcti == f"swtpm:host=127.0.0.1,port={proc.tcp_port}"
    assert proc.ctrl_port == proc.tcp_port + 1
    get_random_ok(proc)
    with socket.create_connection(("127.0.0.1", proc.ctrl_port), timeout=2):
        pass  # the control channel listens on port + 1
    pid = proc.pid
    proc.stop()
    assert wait_gone(pid)


def test_context_manager_stops(tmp_path):
    with start_swtpm(tmp_path / "st", tcp_port=free_tcp_port()) as proc:
        pid = proc.pid
        get_random_ok(proc)
    assert wait_gone(pid)


def test_stop_escalates_to_sigkill(swtpm_factory):
    proc = swtpm_factory()
    os.kill(proc.pid, signal.SIGSTOP)  # a stopped process does not act on SIGTERM
    try:
        t = time.monotonic()
        rc = proc.stop(timeout=0.3)
        assert rc == -signal.SIGKILL
        assert time.monotonic() - t < 3
    finally:
        if not pid_gone(proc.pid):
            os.kill(proc.pid, signal.SIGKILL)


def test_restart_after_sigkill_on_the_same_socket(swtpm_factory):
    first = swtpm_factory()
    with TmClient.open(first.tcti) as tm:
        tm.write_ek_certificate(MARKER)
    os.kill(first.pid, signal.SIGKILL)  # leaves its socket files behind
    first.stop()
    assert first.unix_path is not None and first.unix_path.exists()
    again = swtpm_factory(state_dir=first.state_dir, unix_path=first.unix_path)
    with TmClient.open(again.tcti) as tm:
        assert tm.ek_certificate() == MARKER


def test_unix_path_too_long(tmp_path):
    path = Path("/tmp") / ("x" * 100)
    with pytest.raises(SwtpmError, match="too long.*107"):
        start_swtpm(tmp_path / "st", unix_path=path)


def test_needs_one_address(tmp_path):
    with pytest.raises(SwtpmError, match="exactly one"):
        start_swtpm(tmp_path / "st")


def test_port_in_use(swtpm_factory, tmp_path):
    busy = swtpm_factory(tcp=True)
    with pytest.raises(SwtpmError, match="in use"):
        start_swtpm(tmp_path / "other", tcp_port=busy.tcp_port)
    with pytest.raises(SwtpmError, match="already served"):
        start_swtpm(tmp_path / "other", unix_path=swtpm_factory().unix_path)


def test_free_tcp_port_pair():
    port = free_tcp_port()
    for p in (port, port + 1):
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_early_exit_reports_stderr(tmp_path):
    state = tmp_path / "corrupt"
    state.mkdir()
    (state / "tpm2-00.permall").write_bytes(b"garbage" * 100)
    with pytest.raises(SwtpmError, match=r"exited with status \d+ .*corrupt state.*libtpms") as err:
        start_swtpm(state, tcp_port=free_tcp_port())
    assert "pid" in str(err.value)


def test_state_dir_is_a_file(tmp_path):
    bad = tmp_path / "not-a-dir"
    bad.write_text("x")
    with pytest.raises(SwtpmError, match="state directory"):
        start_swtpm(bad, tcp_port=free_tcp_port())


def test_log_file(swtpm_factory, tmp_path):
    log = tmp_path / "swtpm.log"
    proc = swtpm_factory(log_path=log)
    get_random_ok(proc)
    proc.stop()
    assert log.exists()


def _state_bytes(state_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(state_dir.iterdir()) if p.is_file())


def test_state_key_via_fd_encrypts_state(swtpm_factory, tmp_path):
    key = os.urandom(32)
    # Without a key the NV marker is visible in the state files ...
    plain = swtpm_factory(name="plain")
    with TmClient.open(plain.tcti) as tm:
        tm.write_ek_certificate(MARKER)
    plain.stop()
    assert MARKER in _state_bytes(plain.state_dir)
    # ... with one it is not, and the key itself is not written anywhere either.
    enc = swtpm_factory(name="enc", state_key=key)
    with TmClient.open(enc.tcti) as tm:
        tm.write_ek_certificate(MARKER)
    assert "--key" in " ".join(Path(f"/proc/{enc.pid}/cmdline").read_bytes().decode().split("\0"))
    assert key.hex() not in Path(f"/proc/{enc.pid}/cmdline").read_bytes().decode()
    enc.stop()
    data = _state_bytes(enc.state_dir)
    assert MARKER not in data and key not in data
    assert not any(key in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    # The right key reads it back.
    again = swtpm_factory(state_dir=enc.state_dir, state_key=key)
    with TmClient.open(again.tcti) as tm:
        assert tm.ek_certificate() == MARKER


def test_wrong_or_missing_state_key(swtpm_factory):
    key = os.urandom(32)
    first = swtpm_factory(name="keyed", state_key=key)
    with TmClient.open(first.tcti) as tm:
        tm.write_ek_certificate(MARKER)
    first.stop()
    with pytest.raises(SwtpmError, match="wrong or missing state key"):
        swtpm_factory(state_dir=first.state_dir, state_key=os.urandom(32))
    with pytest.raises(SwtpmError, match="wrong or missing state key"):
        swtpm_factory(state_dir=first.state_dir)
    with pytest.raises(SwtpmError, match="32 bytes"):
        swtpm_factory(state_dir=first.state_dir, state_key=b"short")


def test_cold_restart_keeps_nv_resets_pcrs(swtpm_factory):
    first = swtpm_factory(name="cold")
    with TmClient.open(first.tcti) as tm:
        tm.write_ek_certificate(MARKER)
        tm.pcr_extend(16, EXTEND)
        with tm.create_primary_ek() as ek:
            ek_public = ek.public
        assert tm.pcr_read({HashAlg.SHA256: [16]})[HashAlg.SHA256][16] != bytes(32)
    first.stop()
    second = swtpm_factory(state_dir=first.state_dir, tcp=True)
    with TmClient.open(second.tcti) as tm:
        assert tm.ek_certificate() == MARKER  # NV survives
        with tm.create_primary_ek() as ek:
            assert ek.public == ek_public  # so does the endorsement seed
        assert tm.pcr_read({HashAlg.SHA256: [16]})[HashAlg.SHA256][16] == bytes(32)  # PCRs reset


def test_save_and_load_state_keeps_pcrs(swtpm_factory):
    src = swtpm_factory(name="src", tcp=True)
    with TmClient.open(src.tcti) as tm:
        tm.write_ek_certificate(MARKER)
        tm.pcr_extend(16, EXTEND)
        tm.pcr_extend(23, EXTEND)
        before = tm.pcr_read()
        with tm.create_primary_ek() as ek:
            ek_public = ek.public
        assert tm.transient_handles() == []
    state = src.save_state()
    assert state.permanent and state.volatile
    assert "bytes>" in repr(state) and MARKER.hex() not in repr(state)
    assert src.alive  # saving does not stop the source
    src.stop()

    dst = swtpm_factory(name="dst", load_state=state)  # a fresh dir, unix socket
    with TmClient.open(dst.tcti) as tm:
        assert tm.pcr_read() == before
        assert tm.ek_certificate() == MARKER
        with tm.create_primary_ek() as ek:
            assert ek.public == ek_public
        tm.pcr_extend(16, EXTEND)  # and it runs on
    # The loaded state was written to the destination's dir: a cold start of it keeps NV.
    dst.stop()
    cold = swtpm_factory(state_dir=dst.state_dir)
    with TmClient.open(cold.tcti) as tm:
        assert tm.ek_certificate() == MARKER


def test_load_state_with_state_key(swtpm_factory):
    key = os.urandom(32)
    src = swtpm_factory(name="src", state_key=key)
    with TmClient.open(src.tcti) as tm:
        tm.write_ek_certificate(MARKER)
        tm.pcr_extend(16, EXTEND)
        before = tm.pcr_read({HashAlg.SHA256: [16]})
    state = src.save_state()
    src.stop()
    assert MARKER in state.permanent  # blobs are decrypted: keep them in memory only
    other_key = os.urandom(32)
    dst = swtpm_factory(name="dst", load_state=state, state_key=other_key)
    with TmClient.open(dst.tcti) as tm:
        assert tm.pcr_read({HashAlg.SHA256: [16]}) == before
    dst.stop()
    assert MARKER not in _state_bytes(dst.state_dir)  # re-encrypted with the destination's key
    again = swtpm_factory(state_dir=dst.state_dir, state_key=other_key)
    with TmClient.open(again.tcti) as tm:
        assert tm.ek_certificate() == MARKER


def test_save_state_of_stopped_swtpm_fails(swtpm_factory):
    proc = swtpm_factory()
    proc.stop()
    with pytest.raises(SwtpmError):
        proc.save_state()


def test_without_startup_clear_answers_initialize(swtpm_factory):
    proc = swtpm_factory(startup_clear=False)
    with TmClient.open(proc.tcti) as tm:
        from tpm2_pytss import TPM2_SU

        tm.esapi.startup(TPM2_SU.CLEAR)
        assert len(tm.get_random(8)) == 8


_CHILD = textwrap.dedent(
    """
    import atexit, os, sys, time
    from pathlib import Path

    def report():  # registered first, so it runs after vroot's own atexit hook
        gone = not os.path.exists(f"/proc/{pid}")
        print("stopped-by-atexit" if gone else "still-running", flush=True)

    atexit.register(report)
    from vroot.tm.swtpm import start_swtpm
    p = start_swtpm(Path(sys.argv[1]), unix_path=Path(sys.argv[2]))
    pid = p.pid
    print(p.pid, flush=True)
    if sys.argv[3] == "wait":
        time.sleep(60)
    # else: a normal interpreter exit without stop()
    """
)


def _run_child(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], int]:
    sock = Path(f"/tmp/vr-orphan-{os.getpid()}-{mode}.sock")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path / "st"), str(sock), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip().isdigit(), f"child printed {line!r}"
    return child, int(line)


def test_no_orphan_when_parent_is_killed(tmp_path):
    child, swtpm_pid = _run_child(tmp_path, "wait")
    try:
        assert not pid_gone(swtpm_pid)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
        assert wait_gone(swtpm_pid, 3.0), "swtpm outlived its killed parent"
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(5)
        if not pid_gone(swtpm_pid):
            os.kill(swtpm_pid, signal.SIGKILL)


def test_atexit_stops_children(tmp_path):
    child, swtpm_pid = _run_child(tmp_path, "exit")
    try:
        assert child.wait(10) == 0
        assert child.stdout is not None
        assert child.stdout.read().strip() == "stopped-by-atexit"
        assert wait_gone(swtpm_pid, 3.0), "swtpm outlived its parent's normal exit"
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(5)
        if not pid_gone(swtpm_pid):
            os.kill(swtpm_pid, signal.SIGKILL)
