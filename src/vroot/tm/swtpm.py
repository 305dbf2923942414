"""Supervisor for swtpm processes: the simulated TPM 2.0 of a host, and the vTM of each VM.

`start_swtpm` starts `swtpm socket --tpm2` and returns a `SwtpmProcess` only once a real
TPM2_GetRandom has answered with rc 0 on a data channel (the control channel answers before the
state is loaded, so it proves nothing). If the process exits first, `SwtpmError` carries the tail
of its stderr or log. Three ways to serve:

- `tcp_port=P`: data on loopback port P, control on P+1 (tests, tpm2-tools' `swtpm:` TCTI);
- `unix_path=P`: data on the unix socket P, control on `P.ctrl`;
- `unix_path=P, ctrl_only=True`: QEMU mode. Only the control socket P, no data server: QEMU
  (`-chardev socket,id=chrtpm,path=P -tpmdev emulator,id=tpm0,chardev=chrtpm -device
  tpm-crb,tpmdev=tpm0`) passes its own data channel over it (CMD_SET_DATAFD). A data server would
  make QEMU fail (`Failed to send CMD_SET_DATAFD`). vroot gets a data channel the same way:
  `with proc.data_channel() as tcti, TmClient.open(tcti) as tm:` (and so does the readiness probe).
  There is no TCTI string in this mode (`proc.tcti` raises). While QEMU runs it holds the control
  channel, and swtpm serves no second control client: `data_channel()` and `save_state()` then
  fail with a clear `SwtpmError` rather than queue behind it.

State:
- The state encryption key (32 bytes, aes-256-cbc) goes to swtpm through an inherited pipe fd
  (`--key fd=N`), never through a file, and never appears in a message, log or repr.
- Cold restart: stop, then start again on the same `state_dir`. NV, seeds and persistent objects
  survive; PCRs, transient objects and sessions do not.
- Live state: `SwtpmProcess.save_state()` fetches the permanent and volatile blobs over the control
  channel (PTM_GET_STATEBLOB, decrypted); `start_swtpm(..., load_state=state)` starts a new swtpm
  uninitialised, sends both blobs (PTM_SET_STATEBLOB), then initialises it (PTM_INIT), so PCR values
  survive too. The blobs hold the TPM's secrets in the clear: they stay in memory, never on disk.

Processes are stopped by PID only (SIGTERM, then SIGKILL). By default no orphan outlives its parent:
- each child asks the kernel for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`, set through
  `preexec_fn`; note the kernel sends it when the *thread* that started the child exits, so start
  long-lived swtpms from a long-lived thread);
- a module-level registry of the PIDs this process started is stopped from an `atexit` hook, for
  a normal interpreter exit.

Detached swtpms are the exception, on purpose: a VM keeps its TPM while the host agent that
started it restarts (an upgrade, a crash). `start_swtpm(..., detached=True)` starts swtpm in its
own session (no signal meant for the agent's terminal or process group reaches it), without the
parent-death signal and outside the atexit registry. Its owner records the PID (vroot keeps no
global record) and later re-attaches with `SwtpmProcess.adopt(pid, ...)`, which checks that the
PID is a live swtpm serving that state directory and those sockets, and follows it through a
pidfd (it is no longer our child): `alive`, `stop()` (SIGTERM, then SIGKILL), `save_state()`,
`data_channel()`. Stopping a detached swtpm is its owner's job.

This module needs only the standard library (it speaks the TPM and swtpm control wire formats
itself); only `data_channel()` imports tpm2-pytss, for its TCTI object.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from vroot.errors import SwtpmError
from vroot.tm._datachannel import (
    attach_data_channel,
    peer_pid,
    read_response,
    recv_exact,
    wait_not_held,
)
from vroot.tm._swtpmproc import (
    Pidfd,
    check_tcp_sockets,
    check_unix_sockets,
    parse_swtpm_cmdline,
    read_cmdline,
    same_path,
)

if TYPE_CHECKING:
    from vroot.tm._pytcti import SocketTcti

__all__ = [
    "SwtpmProcess",
    "SwtpmState",
    "free_tcp_port",
    "running_pids",
    "start_swtpm",
    "swtpm_capabilities",
]

# sun_path is 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107
STATE_KEY_SIZE = 32

_GET_RANDOM_8 = bytes.fromhex("80010000000c0000017b0008")  # TPM2_GetRandom(8), no sessions
_TPM_RC_SUCCESS = 0
_TPM_RC_INITIALIZE = 0x100  # TPM2_Startup not yet sent

# swtpm control channel (tpm_ioctl.h): big-endian u32 command, then the request body.
_CMD_GET_CAPABILITY = 1
_CMD_INIT = 2
_CMD_GET_STATEBLOB = 12
_CMD_SET_STATEBLOB = 13
_BLOB_PERMANENT = 1
_BLOB_VOLATILE = 2
_STATE_FLAG_DECRYPTED = 1
_STATE_FLAG_ENCRYPTED = 2
_MAX_BLOB = 16 * 1024 * 1024

_PR_SET_PDEATHSIG = 1

_registry: dict[int, SwtpmProcess] = {}
_registry_lock = threading.Lock()


@dataclass(frozen=True)
class SwtpmState:
    """The permanent and volatile state blobs of a running swtpm, decrypted (TPM secrets: keep safe)."""

    permanent: bytes = field(repr=False)
    volatile: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"SwtpmState(permanent=<{len(self.permanent)} bytes>, volatile=<{len(self.volatile)} bytes>)"


@functools.lru_cache(maxsize=8)
def swtpm_capabilities(swtpm_bin: str = "swtpm") -> frozenset[str]:
    """The features `swtpm socket --print-capabilities` reports (e.g. `cmdarg-key-fd`)."""
    path = _which(swtpm_bin)
    try:
        out = subprocess.run(
            [path, "socket", "--print-capabilities"], capture_output=True, timeout=10, check=True
        ).stdout
        return frozenset(json.loads(out).get("features", ()))
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise SwtpmError(f"cannot probe {path} --print-capabilities: {exc}") from exc


def free_tcp_port(host: str = "127.0.0.1", *, attempts: int = 64) -> int:
    """A port P such that P and P+1 (swtpm's control channel) are both free on `host` right now."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port < 65535 and _tcp_port_free(host, port) and _tcp_port_free(host, port + 1):
            return port
    raise SwtpmError(f"no pair of free TCP ports found on {host}")


def _tcp_port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _which(swtpm_bin: str) -> str:
    path = shutil.which(swtpm_bin)
    if path is None:
        raise SwtpmError(f"{swtpm_bin} not found (install the Debian package swtpm)")
    return path


class SwtpmProcess:
    """A running `swtpm socket --tpm2`: started by `start_swtpm`, or re-attached with `adopt`.

    `tcti` is a TCTI string for tpm2-pytss `ESAPI(tcti)` and for `TPM2TOOLS_TCTI` in the TCP and
    unix modes. In ctrl-only (QEMU) mode there is no such string: `tcti` raises `SwtpmError`, and
    `data_channel()` gives a TCTI object instead (it works in every mode). swtpm serves one client
    connection at a time: close one client before another connects.
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes] | None,
        *,
        pidfd: Pidfd | None = None,
        state_dir: Path,
        host: str | None,
        tcp_port: int | None,
        unix_path: Path | None,
        ctrl_only: bool = False,
        log_path: Path | None,
        stderr_file: IO[bytes] | None,
        had_state: bool = False,
        detached: bool = False,
    ) -> None:
        if (popen is None) == (pidfd is None):
            raise ValueError("SwtpmProcess needs exactly one of popen and pidfd")
        self._popen = popen
        self._pidfd = pidfd
        self._had_state = had_state
        self.pid: int = popen.pid if popen is not None else pidfd.pid  # type: ignore[union-attr]
        self.state_dir = state_dir
        self.host = host
        self.tcp_port = tcp_port
        self.unix_path = unix_path
        self.ctrl_only = ctrl_only
        self.detached = detached or pidfd is not None
        self.log_path = log_path
        self._stderr = stderr_file
        self.ctrl_port = None if tcp_port is None else tcp_port + 1
        if unix_path is None:
            self.ctrl_path: Path | None = None
        else:
            self.ctrl_path = unix_path if ctrl_only else Path(f"{unix_path}.ctrl")

    @property
    def tcti(self) -> str:
        """The TCTI string of the data channel (`swtpm:path=...` or `swtpm:host=...,port=...`).

        Raises `SwtpmError` in ctrl-only mode, which has no data socket: use `data_channel()`.
        """
        if self.ctrl_only:
            raise SwtpmError(
                f"swtpm pid {self.pid} serves only a control channel (QEMU mode): there is no TCTI "
                "string; use `with proc.data_channel() as tcti:` and pass that object to TmClient.open"
            )
        if self.unix_path is not None:
            return f"swtpm:path={self.unix_path}"
        return f"swtpm:host={self.host},port={self.tcp_port}"

    @property
    def adopted(self) -> bool:
        """True for a swtpm re-attached with `adopt` (not our child: followed through a pidfd)."""
        return self._popen is None

    def __repr__(self) -> str:
        if self.unix_path is None:
            where = f"{self.host}:{self.tcp_port}"
        else:
            where = f"ctrl {self.unix_path}" if self.ctrl_only else str(self.unix_path)
        extra = ", adopted" if self.adopted else (", detached" if self.detached else "")
        return f"SwtpmProcess(pid={self.pid}, {where}, state_dir={str(self.state_dir)!r}{extra})"

    # -- life cycle ---------------------------------------------------------------------------

    @classmethod
    def adopt(
        cls,
        pid: int,
        *,
        state_dir: Path,
        unix_path: Path | None = None,
        tcp_port: int | None = None,
        host: str = "127.0.0.1",
        ctrl_only: bool = False,
    ) -> SwtpmProcess:
        """Re-attach to the running swtpm `pid`, started (detached) by this or an earlier process.

        Proven before returning: `pid` is a live process of ours (signalable) whose command line is
        `swtpm socket --tpm2` on `state_dir`, serving exactly the given sockets in the given mode,
        and (unix sockets) the control socket is served by that very process (SO_PEERCRED). The
        process is pinned with a pidfd first, so a PID reused after the check cannot be hit by
        `stop()`. Not proven: that its TPM answers (a QEMU may hold it); use `data_channel()`.
        Refuses with `SwtpmError`. Nothing is recorded anywhere: the caller keeps the PID.
        """
        if (tcp_port is None) == (unix_path is None):
            raise SwtpmError("adopt needs exactly one of tcp_port and unix_path")
        if ctrl_only and unix_path is None:
            raise SwtpmError("ctrl-only mode needs a unix socket (the data channel is passed as an fd)")
        state_dir = Path(state_dir).absolute()
        pidfd = Pidfd(pid)
        try:
            argv = read_cmdline(pid)
            if not pidfd.alive:
                raise SwtpmError(f"pid {pid} is not running")
            cmd = parse_swtpm_cmdline(argv)
            if not same_path(cmd.state_dir, state_dir):
                raise SwtpmError(
                    f"swtpm pid {pid} serves the state directory {cmd.state_dir}, not {state_dir}"
                )
            if unix_path is not None:
                unix_path = Path(unix_path).absolute()
                check_unix_sockets(pid, cmd, unix_path, ctrl_only=ctrl_only)
            else:
                assert tcp_port is not None
                check_tcp_sockets(pid, cmd, host, tcp_port)
            proc = cls(
                None,
                pidfd=pidfd,
                state_dir=state_dir,
                host=host if tcp_port is not None else None,
                tcp_port=tcp_port,
                unix_path=unix_path,
                ctrl_only=ctrl_only,
                log_path=Path(cmd.log_file) if cmd.log_file else None,
                stderr_file=None,
            )
            if proc.ctrl_path is not None:
                proc._check_ctrl_owner()
        except BaseException:
            pidfd.close()
            raise
        return proc

    def _check_ctrl_owner(self) -> None:
        # connect() alone gives the listener's credentials, even while QEMU holds the channel;
        # nothing is sent, so swtpm just sees a client that closed.
        assert self.ctrl_path is not None
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(str(self.ctrl_path))
                owner = peer_pid(s)
        except OSError as exc:
            raise SwtpmError(f"swtpm pid {self.pid} does not serve {self.ctrl_path}: {exc}") from exc
        if owner != self.pid:
            raise SwtpmError(f"{self.ctrl_path} is served by pid {owner}, not by swtpm pid {self.pid}")

    @property
    def alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        assert self._pidfd is not None
        return self._pidfd.alive

    @property
    def returncode(self) -> int | None:
        """The exit status, once exited; always None for an adopted swtpm (not our child)."""
        return self._popen.poll() if self._popen is not None else None

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop this swtpm by its PID: SIGTERM, then SIGKILL after `timeout`.

        Returns the exit status, or None for an adopted swtpm (its parent collects it).
        """
        if self._pidfd is not None:
            try:
                self._pidfd.terminate(timeout)
            finally:
                self._pidfd.close()
            return None
        assert self._popen is not None
        try:
            if self._popen.poll() is None:
                try:
                    os.kill(self.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self._popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.kill(self.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self._popen.wait(timeout)
            return self._popen.returncode
        finally:
            with _registry_lock:
                _registry.pop(self.pid, None)
            if self._stderr is not None and not self._stderr.closed:
                self._stderr.close()

    def __enter__(self) -> SwtpmProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- diagnostics --------------------------------------------------------------------------

    def output_tail(self, limit: int = 2000) -> str:
        """The last `limit` characters of swtpm's stderr and log file, for error messages."""
        parts = []
        if self._stderr is not None and not self._stderr.closed:
            try:
                self._stderr.flush()
                size = self._stderr.seek(0, os.SEEK_END)
                self._stderr.seek(max(0, size - limit))
                parts.append(self._stderr.read().decode(errors="replace"))
            except (OSError, ValueError):
                pass
        if self.log_path is not None:
            try:
                with open(self.log_path, "rb") as f:
                    size = f.seek(0, os.SEEK_END)
                    f.seek(max(0, size - limit))
                    parts.append(f.read().decode(errors="replace"))
            except OSError:
                pass
        return "\n".join(p.strip() for p in parts if p.strip())[-limit:]

    # -- control channel ----------------------------------------------------------------------

    def _ctrl_connect(self, timeout: float) -> socket.socket:
        if self.ctrl_path is not None:
            # Refuse rather than queue behind a client that holds the channel (QEMU).
            wait_not_held(str(self.ctrl_path), pid=self.pid, deadline=time.monotonic() + min(timeout, 2.0))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = str(self.ctrl_path)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = (self.host, self.ctrl_port)
        s.settimeout(timeout)
        try:
            s.connect(target)
        except OSError:
            s.close()
            raise
        return s

    def _ctrl(self, cmd: int, body: bytes, *, timeout: float = 5.0) -> socket.socket:
        s = self._ctrl_connect(timeout)
        try:
            s.sendall(struct.pack(">I", cmd) + body)
        except OSError:
            s.close()
            raise
        return s

    def _ctrl_simple(self, cmd: int, body: bytes, what: str) -> None:
        try:
            with self._ctrl(cmd, body) as s:
                (res,) = struct.unpack(">I", recv_exact(s, 4))
        except OSError as exc:
            raise SwtpmError(f"swtpm pid {self.pid}: {what}: control channel: {exc}") from exc
        if res != 0:
            raise SwtpmError(f"swtpm pid {self.pid}: {what} failed with result 0x{res:x}")

    def save_state(self) -> SwtpmState:
        """The permanent and volatile state of this (running) TPM, decrypted, through PTM_GET_STATEBLOB.

        Over the control channel: in ctrl-only mode, while a QEMU holds that channel, this raises
        `SwtpmError` (stop the VM, or take the state before it starts).
        """
        return SwtpmState(
            permanent=self._get_blob(_BLOB_PERMANENT, "permanent"),
            volatile=self._get_blob(_BLOB_VOLATILE, "volatile"),
        )

    def _get_blob(self, blob_type: int, name: str) -> bytes:
        what = f"save {name} state"
        out = bytearray()
        try:
            while True:
                body = struct.pack(">III", _STATE_FLAG_DECRYPTED, blob_type, len(out))
                with self._ctrl(_CMD_GET_STATEBLOB, body) as s:
                    (res,) = struct.unpack(">I", recv_exact(s, 4))
                    if res != 0:
                        raise SwtpmError(
                            f"swtpm pid {self.pid}: {what} failed with result 0x{res:x} "
                            "(the TPM must be running)"
                        )
                    flags, total, length = struct.unpack(">III", recv_exact(s, 12))
                    if flags & _STATE_FLAG_ENCRYPTED:
                        raise SwtpmError(
                            f"swtpm pid {self.pid}: {what}: blob is encrypted (a migration key is set)"
                        )
                    if length > total or total > _MAX_BLOB:
                        raise SwtpmError(f"swtpm pid {self.pid}: {what}: bad blob length {length}/{total}")
                    out += recv_exact(s, length)
                if length == 0 or length >= total:
                    return bytes(out)
        except OSError as exc:
            raise SwtpmError(f"swtpm pid {self.pid}: {what}: control channel: {exc}") from exc

    def _set_blob(self, blob_type: int, name: str, blob: bytes) -> None:
        body = struct.pack(">III", 0, blob_type, len(blob)) + blob
        self._ctrl_simple(_CMD_SET_STATEBLOB, body, f"load {name} state")

    def _wait_ctrl(self, deadline: float) -> None:
        """Wait until the control channel answers CMD_GET_CAPABILITY."""
        while True:
            self._check_exited("before its control channel answered")
            try:
                with self._ctrl(
                    _CMD_GET_CAPABILITY, b"", timeout=max(0.05, deadline - time.monotonic())
                ) as s:
                    recv_exact(s, 8)
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SwtpmError(f"swtpm pid {self.pid}: control channel not answering")
            time.sleep(0.001)

    # -- data channel -------------------------------------------------------------------------

    def _data_socket(self, timeout: float) -> socket.socket:
        """A connected data channel: attached over the control socket (ctrl-only mode), else a
        connection to swtpm's data socket. Its peer is checked to be this swtpm (unix sockets)."""
        deadline = time.monotonic() + timeout
        if self.ctrl_only:
            assert self.ctrl_path is not None
            return attach_data_channel(str(self.ctrl_path), pid=self.pid, timeout=timeout)
        if self.unix_path is not None:
            wait_not_held(str(self.unix_path), pid=self.pid, deadline=deadline, what="data socket")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = str(self.unix_path)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = (self.host, self.tcp_port)
        try:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            s.connect(target)
            if self.unix_path is not None:
                # The peer must be this swtpm, not a leftover on a reused path.
                owner = peer_pid(s)
                if owner != self.pid:
                    raise SwtpmError(
                        f"{self.unix_path} is served by pid {owner}, not by swtpm pid {self.pid}"
                    )
        except BaseException:
            s.close()
            raise
        return s

    @contextmanager
    def data_channel(self, *, timeout: float = 60.0, attach_timeout: float = 2.0) -> Iterator[SocketTcti]:
        """A TPM data channel as a tpm2-pytss TCTI object, for `TmClient.open(tcti)`; closed on exit.

            with proc.data_channel() as tcti, TmClient.open(tcti) as tm:
                tm.pcr_read(...)

        In ctrl-only (QEMU) mode it is attached over the control socket (CMD_SET_DATAFD) and
        detached on exit: the way to reach the vTM of a VM that is not running. In the other modes
        it is a connection to the data socket, which it holds: other clients of that socket (the
        `swtpm:` TCTI, tpm2-tools) wait until it closes. Each response must arrive within
        `timeout` seconds.
        Raises `SwtpmError` when the channel cannot be had within `attach_timeout` seconds: another
        client holds the control channel (a running QEMU) or a data channel is already attached;
        the swtpm is gone. Close the `TmClient` before leaving the block.
        """
        from vroot.tm._pytcti import SocketTcti

        try:
            sock = self._data_socket(attach_timeout)
        except OSError as exc:
            raise SwtpmError(f"swtpm pid {self.pid}: cannot open a data channel: {exc}") from exc
        tcti = SocketTcti(sock, timeout=timeout, name=f"swtpm pid {self.pid}")
        try:
            yield tcti
        except BaseException as exc:
            if tcti.error is not None:
                exc.add_note(tcti.error)
            raise
        finally:
            tcti.close()

    def _probe(self, timeout: float) -> int | None:
        """Send TPM2_GetRandom(8); the response code, or None if nothing answered (yet)."""
        try:
            with self._data_socket(timeout) as s:
                s.settimeout(timeout)
                s.sendall(_GET_RANDOM_8)
                resp = read_response(s, max_size=4096, deadline=time.monotonic() + timeout)
                return int(struct.unpack_from(">I", resp, 6)[0])
        except OSError:
            return None

    def _wait_ready(self, deadline: float, *, accept: tuple[int, ...]) -> None:
        last_rc: int | None = None
        while True:
            self._check_exited("before it answered TPM2_GetRandom")
            rc = self._probe(max(0.05, deadline - time.monotonic()))
            if rc in accept:
                # A response from a stale server on the same port would race our child's exit.
                self._check_exited("right after starting")
                return
            if rc is not None:
                last_rc = rc
            if time.monotonic() > deadline:
                got = "no answer" if last_rc is None else f"rc 0x{last_rc:x}"
                raise SwtpmError(f"swtpm pid {self.pid} not ready in time: TPM2_GetRandom gave {got}")
            time.sleep(0.001)

    def _check_exited(self, when: str) -> None:
        rc = self.returncode
        if rc is None:
            return
        with _registry_lock:
            _registry.pop(self.pid, None)
        tail = self.output_tail()
        hint = ""
        if self._had_state:
            hint = " (wrong or missing state key, or corrupt state?)"
        raise SwtpmError(
            f"swtpm pid {self.pid} on {self.state_dir} exited with status {rc} {when}{hint}"
            + (f": {tail}" if tail else "")
        )


@functools.lru_cache(maxsize=1)
def _prctl() -> Any:
    # Resolved in the parent: the child between fork and exec only calls it.
    return ctypes.CDLL(None, use_errno=True).prctl


def _child_setup(prctl: Any, parent_pid: int) -> None:  # runs in the child between fork and exec
    prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _state_files(state_dir: Path) -> bool:
    return any(p.name.startswith("tpm2-") for p in state_dir.iterdir()) if state_dir.is_dir() else False


def start_swtpm(
    state_dir: Path,
    *,
    tcp_port: int | None = None,
    unix_path: Path | None = None,
    host: str = "127.0.0.1",
    state_key: bytes | None = None,
    startup_clear: bool = True,
    load_state: SwtpmState | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 5.0,
    swtpm_bin: str = "swtpm",
    ctrl_only: bool = False,
    detached: bool = False,
    runas: int | None = None,
) -> SwtpmProcess:
    """Start `swtpm socket --tpm2` on `state_dir` and wait until it answers a real command.

    - `tcp_port`: serve on `host:tcp_port`, control on `tcp_port + 1` (see `free_tcp_port`);
      otherwise on the unix socket `unix_path` (control on `unix_path + ".ctrl"`, which must fit
      in 107 bytes); one of the two is required.
    - `ctrl_only` (needs `unix_path`): QEMU mode, only the control socket `unix_path` and no data
      server; QEMU passes its data channel over it. Readiness is still proven by TPM2_GetRandom,
      on a data channel attached and detached again over the control socket.
    - `detached`: the swtpm outlives this process (own session, no parent-death signal, not
      stopped at exit): the caller records `pid` and stops it, or re-attaches with
      `SwtpmProcess.adopt`. Give a `log_path`: stderr goes to an unnamed temporary file.
    - `runas`: (root only) the uid swtpm switches to after start-up (`--runas`); the state
      directory, the socket's directory and the log must be writable by that uid.
    - `state_key`: 32 bytes, encrypts the state at rest (aes-256-cbc), passed through a pipe fd.
    - `startup_clear`: send TPM2_Startup(CLEAR) (swtpm `--flags not-need-init,startup-clear`).
      With False the TPM is initialised but not started (`--flags not-need-init`): the caller sends
      TPM2_Startup, and readiness accepts TPM_RC_INITIALIZE as an answer.
    - `load_state`: start uninitialised, load the permanent and volatile blobs of a `save_state`,
      then initialise: the TPM resumes with its PCRs (`startup_clear` is ignored).
    - `log_path`: swtpm's own log file (`--log file=`); errors are also taken from stderr.

    Raises `SwtpmError` when swtpm is missing, cannot start, exits early (for existing state, most
    often a wrong or missing state key) or does not answer within `ready_timeout` seconds.
    """
    state_dir = Path(state_dir).absolute()
    path = _which(swtpm_bin)
    if (tcp_port is None) == (unix_path is None):
        raise SwtpmError("start_swtpm needs exactly one of tcp_port and unix_path")
    if ctrl_only and unix_path is None:
        raise SwtpmError("ctrl-only mode needs a unix socket (the data channel is passed as an fd)")
    if state_key is not None:
        if len(state_key) != STATE_KEY_SIZE:
            raise SwtpmError(f"state key must be {STATE_KEY_SIZE} bytes (aes-256-cbc), got {len(state_key)}")
        if "cmdarg-key-fd" not in swtpm_capabilities(swtpm_bin):
            raise SwtpmError(f"{path} cannot take a state key through a file descriptor (no cmdarg-key-fd)")
    if unix_path is not None:
        unix_path = Path(unix_path).absolute()
        ctrl = str(unix_path) if ctrl_only else f"{unix_path}.ctrl"
        if len(os.fsencode(ctrl)) > UNIX_PATH_MAX:
            raise SwtpmError(
                f"unix socket path too long: {ctrl!r} is {len(os.fsencode(ctrl))} bytes, "
                f"AF_UNIX allows {UNIX_PATH_MAX}; use a shorter directory"
            )
        for p in {str(unix_path), ctrl}:
            if _unix_listening(p):
                raise SwtpmError(f"{p} is already served by another process")
    else:
        assert tcp_port is not None
        if not 0 < tcp_port < 65535:
            raise SwtpmError(f"TCP port {tcp_port} out of range (the control port is port + 1)")
        for p in (tcp_port, tcp_port + 1):
            if not _tcp_port_free(host, p):
                raise SwtpmError(f"TCP port {host}:{p} is in use")

    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SwtpmError(f"cannot use {state_dir} as state directory: {exc}") from exc
    had_state = _state_files(state_dir)

    args = [path, "socket", "--tpm2", "--tpmstate", f"dir={state_dir}"]
    if load_state is None:
        args += ["--flags", "not-need-init,startup-clear" if startup_clear else "not-need-init"]
    if ctrl_only:
        args += ["--ctrl", f"type=unixio,path={unix_path}"]
    elif unix_path is not None:
        args += ["--server", f"type=unixio,path={unix_path}", "--ctrl", f"type=unixio,path={unix_path}.ctrl"]
    else:
        args += [
            "--server",
            f"type=tcp,port={tcp_port},bindaddr={host}",
            "--ctrl",
            f"type=tcp,port={tcp_port + 1},bindaddr={host}",
        ]
    if log_path is not None:
        args += ["--log", f"file={Path(log_path).absolute()}"]
    if runas is not None:
        if os.geteuid() != 0:
            raise SwtpmError("only root can run a swtpm as another user (runas)")
        args += ["--runas", str(int(runas))]  # swtpm drops to this uid; its state dir must be its own

    pass_fds: tuple[int, ...] = ()
    key_r = -1
    if state_key is not None:
        key_r, key_w = os.pipe()
        try:
            os.write(key_w, state_key)  # 32 bytes fit in any pipe buffer
        finally:
            os.close(key_w)
        args += ["--key", f"fd={key_r},mode=aes-256-cbc,format=binary"]
        pass_fds = (key_r,)

    stderr_file = tempfile.TemporaryFile(prefix="vroot-swtpm-")
    # Detached: a new session and no parent-death signal, so neither the end of this process nor
    # a signal to its process group (Ctrl-C) stops a VM's TPM.
    child_setup = None if detached else functools.partial(_child_setup, _prctl(), os.getpid())
    try:
        popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=stderr_file,
            stderr=stderr_file,
            pass_fds=pass_fds,
            close_fds=True,
            preexec_fn=child_setup,
            start_new_session=detached,
        )
    except OSError as exc:
        stderr_file.close()
        raise SwtpmError(f"cannot start {path}: {exc}") from exc
    finally:
        if key_r >= 0:
            os.close(key_r)

    proc = SwtpmProcess(
        popen,
        state_dir=state_dir,
        host=host if tcp_port is not None else None,
        tcp_port=tcp_port,
        unix_path=unix_path,
        ctrl_only=ctrl_only,
        log_path=Path(log_path).absolute() if log_path is not None else None,
        stderr_file=stderr_file,
        had_state=had_state,
        detached=detached,
    )
    if not detached:  # a detached swtpm is its owner's to stop, not the atexit hook's
        with _registry_lock:
            _registry[proc.pid] = proc
    deadline = time.monotonic() + ready_timeout
    try:
        if load_state is not None:
            proc._wait_ctrl(deadline)
            proc._set_blob(_BLOB_PERMANENT, "permanent", load_state.permanent)
            proc._set_blob(_BLOB_VOLATILE, "volatile", load_state.volatile)
            proc._ctrl_simple(_CMD_INIT, struct.pack(">I", 0), "initialise after loading state")
            proc._wait_ready(deadline, accept=(_TPM_RC_SUCCESS,))
        else:
            accept = (_TPM_RC_SUCCESS,) if startup_clear else (_TPM_RC_SUCCESS, _TPM_RC_INITIALIZE)
            proc._wait_ready(deadline, accept=accept)
    except BaseException:
        proc.stop(timeout=1.0)
        raise
    return proc


def _unix_listening(path: str) -> bool:
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def running_pids() -> tuple[int, ...]:
    """PIDs of the swtpm processes this process started and has not stopped yet."""
    with _registry_lock:
        return tuple(_registry)


@atexit.register
def _stop_all() -> None:
    with _registry_lock:
        procs = list(_registry.values())
    for proc in procs:
        try:
            proc.stop(timeout=2.0)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
