"""The swtpm data channel: TPM command/response frames, and attaching one through the control socket.

A swtpm started with only a control channel (`--ctrl type=unixio,path=P`, no `--server`: the way
QEMU's `-tpmdev emulator` wants it) has no socket to connect to for TPM commands. Its client
passes one end of a socket pair over the control socket (CMD_SET_DATAFD, the fd in SCM_RIGHTS)
and then speaks TPM 2.0 frames on the other end. swtpm keeps that data channel after the control
connection closes, and drops it when the client closes its end.

swtpm serves one control client at a time and does not even accept the next one while a client
(QEMU, all the time it runs) holds the channel: a second client would wait, unanswered. So
`attach_data_channel` first looks in /proc/net/unix for a connection on the control socket and
fails with a clear `SwtpmError` instead of queueing behind QEMU.

Standard library only: `vroot.tm.swtpm` uses this for its readiness probe without tpm2-pytss.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time

from vroot.errors import SwtpmError

__all__ = [
    "CMD_SET_DATAFD",
    "TPM_HEADER_SIZE",
    "attach_data_channel",
    "ctrl_connections",
    "peer_pid",
    "read_response",
    "recv_exact",
    "wait_not_held",
]

CMD_SET_DATAFD = 0x10
TPM_HEADER_SIZE = 10  # tag (2), size (4), response code (4)

# /proc/net/unix socket states: 02 SS_CONNECTING (queued, not accepted yet), 03 SS_CONNECTED.
_HELD_STATES = frozenset({"02", "03"})


def recv_exact(s: socket.socket, n: int) -> bytes:
    """Exactly `n` bytes from `s`; ConnectionError if the peer closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(errno.ECONNRESET, f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_response(s: socket.socket, *, max_size: int, deadline: float) -> bytes:
    """One TPM response frame from `s`: the 10-byte header, then exactly the size it announces.

    Reads are bounded by the header's size field, which must lie in [10, max_size]; the frame
    must be complete by `deadline` (time.monotonic()). Raises TimeoutError, ConnectionError or
    `SwtpmError` (a malformed size).
    """
    s.settimeout(max(0.0, deadline - time.monotonic()) or 0.001)
    head = recv_exact(s, TPM_HEADER_SIZE)
    size = struct.unpack_from(">I", head, 2)[0]
    if not TPM_HEADER_SIZE <= size <= max_size:
        raise SwtpmError(f"TPM response announces {size} bytes (allowed {TPM_HEADER_SIZE}..{max_size})")
    s.settimeout(max(0.0, deadline - time.monotonic()) or 0.001)
    return head + recv_exact(s, size - TPM_HEADER_SIZE)


def peer_pid(s: socket.socket) -> int:
    """PID of the process that listens on (or is connected to) the unix socket `s` (SO_PEERCRED)."""
    creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[0])


def ctrl_connections(path: str) -> int:
    """How many connections, accepted or still queued, the unix socket bound at `path` has.

    From /proc/net/unix: an accepted connection is listed under the listener's path with state
    03, a queued one with state 02. Our own client ends are unbound and not listed.
    """
    want = os.fsdecode(path)
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="surrogateescape") as f:
            table = f.read()
    except OSError:
        return 0  # no procfs: the reply timeout still catches a held channel
    if want not in table:  # the common case, without splitting a table of many sockets
        return 0
    n = 0
    for line in table.splitlines()[1:]:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7] == want and fields[5] in _HELD_STATES:
            n += 1
    return n


def wait_not_held(path: str, *, pid: int, deadline: float, what: str = "control channel") -> None:
    """Wait until nobody holds a connection on the unix socket `path`; SwtpmError at `deadline`.

    A connection closed just before may still be listed until swtpm has seen the close: hence a
    short wait rather than an immediate refusal.
    """
    while ctrl_connections(path):
        if time.monotonic() >= deadline:
            hint = (
                "a running QEMU holds it as long as the VM runs; swtpm serves one control client at a time"
                if what == "control channel"
                else "swtpm serves one data connection at a time: close the other data channel first"
            )
            raise SwtpmError(f"swtpm pid {pid}: its {what} {path} is held by another client ({hint})")
        time.sleep(0.005)


def attach_data_channel(ctrl_path: str, *, pid: int, timeout: float = 2.0) -> socket.socket:
    """A new data channel to the swtpm `pid` serving the control socket `ctrl_path`.

    Sends CMD_SET_DATAFD with one end of a socket pair and returns the other end, connected to the
    TPM: write a command frame, read a response frame. Close it to detach. Refuses with
    `SwtpmError` when the socket is served by another process, when another client holds the
    control channel (QEMU), when a data channel is already attached, or when no answer comes
    within `timeout` seconds. OSError for a socket that is not there.
    """
    deadline = time.monotonic() + timeout
    wait_not_held(ctrl_path, pid=pid, deadline=deadline)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as ctrl:
            ctrl.settimeout(max(0.05, deadline - time.monotonic()))
            ctrl.connect(ctrl_path)
            owner = peer_pid(ctrl)
            if owner != pid:
                raise SwtpmError(f"{ctrl_path} is served by pid {owner}, not by swtpm pid {pid}")
            ctrl.sendmsg(
                [struct.pack(">I", CMD_SET_DATAFD)],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", theirs.fileno()))],
            )
            ctrl.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                (res,) = struct.unpack(">I", recv_exact(ctrl, 4))
            except TimeoutError:
                raise SwtpmError(
                    f"swtpm pid {pid}: no answer to CMD_SET_DATAFD on {ctrl_path} within {timeout:g} s "
                    "(is another client, such as QEMU, holding the control channel?)"
                ) from None
        if res != 0:
            raise SwtpmError(
                f"swtpm pid {pid}: CMD_SET_DATAFD refused with result 0x{res:x} "
                "(a data channel is already attached: another data_channel() still open, or QEMU)"
            )
    except BaseException:
        mine.close()
        raise
    finally:
        theirs.close()
    return mine
