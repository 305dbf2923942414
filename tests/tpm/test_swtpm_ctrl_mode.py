"""swtpm in ctrl-only (QEMU) mode and vroot's own data channel (CMD_SET_DATAFD + a Python TCTI).

QEMU's `-tpmdev emulator` needs a swtpm with only a control socket; vroot reaches the same TPM by
attaching a data channel over that socket, and gets a clear error while another client (QEMU)
holds it. The data channel works in the TCP and unix modes too.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
from pathlib import Path

import pytest
from tpm2_pytss.TSS2_Exception import TSS2_Exception

from vroot.errors import SwtpmError, TmError
from vroot.tm._datachannel import attach_data_channel, ctrl_connections
from vroot.tm._pytcti import SocketTcti
from vroot.tm.client import TmClient
from vroot.tm.swtpm import start_swtpm
from vroot.tpm2 import HashAlg

pytestmark = pytest.mark.tpm

DIGEST = {HashAlg.SHA256: bytes(range(32)), HashAlg.SHA1: bytes(range(20))}
GET_RANDOM_8 = bytes.fromhex("80010000000c0000017b0008")


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().rstrip(b"\0").split(b"\0")]


def test_ctrl_only_serves_only_a_control_socket(swtpm_factory):
    proc = swtpm_factory(ctrl_only=True)
    argv = cmdline(proc.pid)
    assert "--server" not in argv and f"type=unixio,path={proc.unix_path}" in argv
    assert proc.ctrl_only and proc.ctrl_path == proc.unix_path
    assert not Path(f"{proc.unix_path}.ctrl").exists()
    with pytest.raises(SwtpmError, match=r"only a control channel.*data_channel\(\)"):
        _ = proc.tcti
    assert "ctrl " in repr(proc)


def test_data_channel_in_ctrl_only_mode(swtpm_factory):
    proc = swtpm_factory(ctrl_only=True)
    with proc.data_channel() as tcti, TmClient.open(tcti) as tm:
        assert isinstance(tcti, SocketTcti)
        tm.pcr_extend(16, DIGEST)
        first = tm.pcr_read({HashAlg.SHA256: [16]})
    assert ctrl_connections(str(proc.ctrl_path)) == 0  # the control connection is not kept
    for _ in range(5):  # detaching takes effect at once: back-to-back channels all work
        with proc.data_channel() as tcti, TmClient.open(tcti) as tm:
            assert tm.pcr_read({HashAlg.SHA256: [16]}) == first != {HashAlg.SHA256: {16: bytes(32)}}
    assert proc.save_state().volatile  # the control channel is free between data channels


def test_one_data_channel_at_a_time(swtpm_factory):
    proc = swtpm_factory(ctrl_only=True)
    with proc.data_channel() as tcti, TmClient.open(tcti) as tm:
        with pytest.raises(SwtpmError, match="0x1f.*already attached"):
            with proc.data_channel():
                pass
        assert len(tm.get_random(8)) == 8  # the first channel is unharmed


def test_held_control_channel_is_refused_clearly(swtpm_factory):
    """While a client (QEMU) holds the control channel, swtpm would queue us unanswered: refuse."""
    proc = swtpm_factory(ctrl_only=True)
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    holder.connect(str(proc.ctrl_path))
    try:
        with pytest.raises(SwtpmError, match=r"held by another client \(a running QEMU"):
            with proc.data_channel(attach_timeout=0.2):
                pass
        with pytest.raises(SwtpmError, match="held by another client"):
            proc.save_state()
    finally:
        holder.close()
    with proc.data_channel() as tcti, TmClient.open(tcti) as tm:  # free again once it lets go
        assert len(tm.get_random(8)) == 8


def test_unanswered_set_datafd_times_out_clearly(swtpm_factory):
    proc = swtpm_factory(ctrl_only=True)
    os.kill(proc.pid, signal.SIGSTOP)  # connects (backlog) but never answers
    try:
        with pytest.raises(SwtpmError, match="no answer to CMD_SET_DATAFD"):
            attach_data_channel(str(proc.ctrl_path), pid=proc.pid, timeout=0.3)
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def test_response_timeout_breaks_the_channel_with_a_reason(swtpm_factory):
    proc = swtpm_factory(ctrl_only=True)
    with pytest.raises(TmError) as err:
        with proc.data_channel(timeout=0.3) as tcti, TmClient.open(tcti) as tm:
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                tm.get_random(8)
            finally:
                os.kill(proc.pid, signal.SIGCONT)
    notes = "\n".join(getattr(err.value, "__notes__", []))
    assert "no complete response within 0.3 s" in notes
    assert tcti.error is not None and repr(tcti) == f"SocketTcti(swtpm pid {proc.pid}, closed)"


def test_socket_served_by_another_process_is_refused(swtpm_factory, tmp_path):
    proc = swtpm_factory(ctrl_only=True)
    fake = tmp_path / "fake.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(fake))
        listener.listen(1)
        with pytest.raises(SwtpmError, match=rf"served by pid {os.getpid()}, not by swtpm pid {proc.pid}"):
            attach_data_channel(str(fake), pid=proc.pid, timeout=0.5)


def _fake_tpm() -> tuple[SocketTcti, socket.socket]:
    ours, peer = socket.socketpair()
    return SocketTcti(ours, timeout=2.0, name="fake"), peer


@pytest.mark.parametrize("size", [9, 4097, 0xFFFFFFFF])
def test_response_size_is_bounded(size):
    tcti, peer = _fake_tpm()
    with peer:
        tcti.transmit(GET_RANDOM_8)
        assert peer.recv(4096) == GET_RANDOM_8
        peer.sendall(struct.pack(">HII", 0x8001, size, 0) + bytes(64))
        with pytest.raises(TSS2_Exception) as err:
            tcti.receive()
        assert f"announces {size} bytes" in "\n".join(err.value.__notes__)
        with pytest.raises(TSS2_Exception):  # out of step with the TPM: refuses from now on
            tcti.transmit(GET_RANDOM_8)
    tcti.close()


def test_truncated_response_is_an_io_error():
    tcti, peer = _fake_tpm()
    with peer:
        tcti.transmit(GET_RANDOM_8)
        peer.recv(4096)
        peer.sendall(struct.pack(">HII", 0x8001, 20, 0) + b"abc")
    # the TPM side went away mid-frame
    with pytest.raises(TSS2_Exception, match="IO"):
        tcti.receive()
    assert tcti.error is not None and "connection closed after 3 of 10 bytes" in tcti.error
    tcti.close()


def test_data_channel_in_unix_and_tcp_modes(swtpm_factory):
    for proc in (swtpm_factory(), swtpm_factory(tcp=True)):
        with proc.data_channel() as tcti, TmClient.open(tcti) as tm:
            assert len(tm.get_random(8)) == 8


def test_data_socket_held_by_a_client_is_refused(swtpm_factory):
    """unix mode: swtpm serves one data connection at a time; a held one is reported, not queued behind."""
    proc = swtpm_factory()
    with proc.data_channel() as tcti, TmClient.open(tcti) as tm:
        assert len(tm.get_random(8)) == 8
        with pytest.raises(SwtpmError, match="data socket .* held by another client"):
            with proc.data_channel(attach_timeout=0.2):
                pass


def test_saved_state_loads_into_a_ctrl_only_swtpm(swtpm_factory, tmp_path):
    """A live state (PCRs included) moves into QEMU mode: readiness is proven the same way."""
    source = swtpm_factory()
    with TmClient.open(source.tcti) as tm:
        tm.pcr_extend(16, DIGEST)
        want = tm.pcr_read({HashAlg.SHA256: [16]})
    state = source.save_state()
    source.stop()
    target = swtpm_factory(ctrl_only=True, state_dir=tmp_path / "moved", load_state=state)
    with target.data_channel() as tcti, TmClient.open(tcti) as tm:
        assert tm.pcr_read({HashAlg.SHA256: [16]}) == want


def test_ctrl_only_argument_checks(tmp_path):
    with pytest.raises(SwtpmError, match="ctrl-only mode needs a unix socket"):
        start_swtpm(tmp_path / "st", tcp_port=2321, ctrl_only=True)
    with pytest.raises(SwtpmError, match="too long"):
        start_swtpm(tmp_path / "st", unix_path=Path("/tmp") / ("y" * 108), ctrl_only=True)
