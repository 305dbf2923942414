"""Detached swtpms and `SwtpmProcess.adopt`: a vTM outlives the host agent that started it.

A detached swtpm has its own session, no parent-death signal and no atexit stop; a later process
re-attaches by PID after checking that the PID is a live swtpm serving the expected state
directory and sockets, and follows it through a pidfd (it is not that process's child).
"""

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
from test_swtpm_supervisor import pid_gone, wait_gone  # zombies count as gone

from vroot.errors import SwtpmError
from vroot.tm.client import TmClient
from vroot.tm.swtpm import SwtpmProcess, running_pids, start_swtpm
from vroot.tpm2 import HashAlg

pytestmark = pytest.mark.tpm

DIGEST = {HashAlg.SHA256: bytes(range(32)), HashAlg.SHA1: bytes(range(20))}
PCR16 = {HashAlg.SHA256: [16]}


def adopt_like(proc: SwtpmProcess, **kw) -> SwtpmProcess:
    """Adopt `proc` by PID with the addresses it was started with (overridable)."""
    args = {"state_dir": proc.state_dir, "ctrl_only": proc.ctrl_only}
    if proc.unix_path is not None:
        args["unix_path"] = proc.unix_path
    else:
        args["tcp_port"] = proc.tcp_port
    args.update(kw)
    return SwtpmProcess.adopt(proc.pid, **args)


def test_detached_swtpm_is_forgotten_adopted_used_and_stopped(swtpm_factory):
    first = swtpm_factory(ctrl_only=True, detached=True)
    assert first.detached and not first.adopted
    assert first.pid not in running_pids()  # not stopped by this process's atexit hook
    assert os.getsid(first.pid) == first.pid  # its own session
    with first.data_channel() as tcti, TmClient.open(tcti) as tm:
        tm.pcr_extend(16, DIGEST)
        want = tm.pcr_read(PCR16)

    again = adopt_like(first)  # a new object knowing only the PID and the addresses
    assert again.adopted and again.detached and again.alive and again.returncode is None
    assert again.pid == first.pid and "adopted" in repr(again)
    with again.data_channel() as tcti, TmClient.open(tcti) as tm:
        assert tm.pcr_read(PCR16) == want  # the same running TPM, PCRs and all
    assert again.save_state().volatile
    assert again.stop(timeout=2.0) is None  # not our child through this object: no status
    assert not again.alive and wait_gone(first.pid)
    assert first.returncode == 0  # the Popen that started it collects the status: SIGTERM, clean exit
    assert again.stop() is None  # idempotent


@pytest.mark.parametrize("mode", [{}, {"tcp": True}])
def test_adopt_in_unix_and_tcp_modes(swtpm_factory, mode):
    first = swtpm_factory(detached=True, **mode)
    again = adopt_like(first)
    assert again.tcti == first.tcti
    with TmClient.open(again.tcti) as tm:
        assert len(tm.get_random(8)) == 8
    again.stop(timeout=2.0)
    assert wait_gone(first.pid)


def test_adopt_refuses_what_is_not_that_swtpm(swtpm_factory, tmp_path):
    vtm = swtpm_factory(ctrl_only=True, detached=True)
    unix = swtpm_factory(detached=True)
    tcp = swtpm_factory(detached=True, tcp=True)
    with pytest.raises(SwtpmError, match=r"not a `swtpm socket --tpm2` process"):
        SwtpmProcess.adopt(os.getpid(), state_dir=vtm.state_dir, unix_path=vtm.unix_path, ctrl_only=True)
    with pytest.raises(SwtpmError, match=r"serves the state directory .*, not .*other"):
        adopt_like(vtm, state_dir=tmp_path / "other")
    with pytest.raises(SwtpmError, match="does not serve its control channel on .*elsewhere.sock"):
        adopt_like(vtm, unix_path=vtm.unix_path.with_name("elsewhere.sock"))
    with pytest.raises(SwtpmError, match="has a data server: it is not in ctrl-only"):
        adopt_like(unix, ctrl_only=True)
    with pytest.raises(SwtpmError, match="does not serve its data channel on"):
        adopt_like(vtm, ctrl_only=False)
    with pytest.raises(SwtpmError, match=rf"does not serve its data channel on 127.0.0.1:{tcp.tcp_port + 2}"):
        adopt_like(tcp, tcp_port=tcp.tcp_port + 2)
    with pytest.raises(SwtpmError, match="exactly one of tcp_port and unix_path"):
        SwtpmProcess.adopt(vtm.pid, state_dir=vtm.state_dir)
    for proc in (vtm, unix, tcp):  # none of the refusals touched them
        assert proc.alive


def test_adopt_refuses_a_process_that_is_not_swtpm(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        # right after fork the child still shows the parent's command line: wait for the exec
        deadline = time.monotonic() + 5
        while not Path(f"/proc/{sleeper.pid}/cmdline").read_bytes().startswith(b"sleep"):
            assert time.monotonic() < deadline, "sleep did not start"
            time.sleep(0.005)
        with pytest.raises(SwtpmError, match=r"not a `swtpm socket --tpm2` process .*sleep"):
            SwtpmProcess.adopt(sleeper.pid, state_dir=tmp_path, unix_path=tmp_path / "s.sock")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_adopt_refuses_exited_and_zombie_swtpms(swtpm_factory):
    stopped = swtpm_factory(ctrl_only=True, detached=True)
    stopped.stop()  # exited and reaped
    with pytest.raises(SwtpmError, match="is not running"):
        adopt_like(stopped)
    zombie = swtpm_factory(ctrl_only=True, detached=True)
    os.kill(zombie.pid, signal.SIGKILL)  # exited, not reaped yet: a zombie
    assert wait_gone(zombie.pid)
    with pytest.raises(SwtpmError, match="is not running"):
        adopt_like(zombie)


def test_adopt_refuses_a_socket_another_process_now_serves(swtpm_factory):
    vtm = swtpm_factory(ctrl_only=True, detached=True)
    vtm.unix_path.unlink()  # the path is taken over while swtpm still runs
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as impostor:
        impostor.bind(str(vtm.unix_path))
        impostor.listen(1)
        with pytest.raises(SwtpmError, match=rf"served by pid {os.getpid()}, not by swtpm pid {vtm.pid}"):
            adopt_like(vtm)


def test_adopt_while_qemu_holds_the_control_channel(swtpm_factory):
    """A running VM's vTM can be adopted (no command is sent); its data channel waits for QEMU to go."""
    vtm = swtpm_factory(ctrl_only=True, detached=True)
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    holder.connect(str(vtm.ctrl_path))  # stands for QEMU
    try:
        again = adopt_like(vtm)
        with pytest.raises(SwtpmError, match="held by another client"):
            with again.data_channel(attach_timeout=0.2):
                pass
    finally:
        holder.close()
    with again.data_channel() as tcti, TmClient.open(tcti) as tm:
        assert len(tm.get_random(8)) == 8


def test_adopted_swtpm_that_dies_is_seen_dead(swtpm_factory):
    vtm = swtpm_factory(ctrl_only=True, detached=True)
    again = adopt_like(vtm)
    os.kill(vtm.pid, signal.SIGKILL)
    deadline = time.monotonic() + 3
    while again.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not again.alive
    assert again.stop(timeout=1.0) is None
    with pytest.raises(SwtpmError, match="cannot open a data channel"):
        with again.data_channel(attach_timeout=0.2):
            pass


_STARTER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from vroot.tm.swtpm import start_swtpm
    p = start_swtpm(Path(sys.argv[1]), unix_path=Path(sys.argv[2]), ctrl_only=True, detached=True)
    print(p.pid, flush=True)
    # a normal exit: the atexit hook runs and the starting thread ends (PR_SET_PDEATHSIG would fire)
    """
)


def test_detached_swtpm_survives_the_process_that_started_it(tmp_path):
    sock = Path(f"/tmp/vr-detached-{os.getpid()}.sock")
    state = tmp_path / "vtm"
    starter = subprocess.run(
        [sys.executable, "-c", _STARTER, str(state), str(sock)], capture_output=True, text=True, timeout=30
    )
    assert starter.returncode == 0, starter.stderr
    pid = int(starter.stdout.strip())
    adopted = None
    try:
        time.sleep(0.2)  # give a wrongly attached swtpm time to die with its parent
        assert not pid_gone(pid), "the detached swtpm died with the process that started it"
        adopted = SwtpmProcess.adopt(pid, state_dir=state, unix_path=sock, ctrl_only=True)
        with adopted.data_channel() as tcti, TmClient.open(tcti) as tm:
            assert len(tm.get_random(16)) == 16
        adopted.stop(timeout=2.0)
        assert wait_gone(pid)
    finally:
        if adopted is not None:
            adopted.stop(timeout=2.0)
        elif not pid_gone(pid):
            os.kill(pid, signal.SIGKILL)  # by PID: the one we were told about
        sock.unlink(missing_ok=True)


def test_detached_argument_checks(tmp_path):
    with pytest.raises(SwtpmError, match="ctrl-only mode needs a unix socket"):
        SwtpmProcess.adopt(os.getpid(), state_dir=tmp_path, tcp_port=2321, ctrl_only=True)
    # a detached start that fails is still stopped and reported
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "tpm2-00.permall").write_bytes(b"garbage" * 100)
    sock = Path(f"/tmp/vr-bad-{os.getpid()}.sock")
    try:
        with pytest.raises(SwtpmError, match="exited with status"):
            start_swtpm(bad, unix_path=sock, ctrl_only=True, detached=True)
    finally:
        sock.unlink(missing_ok=True)
