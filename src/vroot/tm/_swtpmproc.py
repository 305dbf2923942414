"""A running swtpm that is not our child: identify it from /proc, follow and stop it through a pidfd.

`SwtpmProcess.adopt` re-attaches to a swtpm that this process or an earlier one started (detached).
The PID alone proves nothing: it may have exited and been reused. So the PID is pinned first with
a pidfd (`pidfd_open`, Linux >= 5.3): from then on the fd names that one process, signals go
through it (`pidfd_send_signal`, no reuse race) and it becomes readable when the process exits
(also while it is an unreaped zombie, whoever its parent). Only then is /proc/PID/cmdline read and
checked: `swtpm socket --tpm2` on the expected state directory and sockets.

The command line is what swtpm was started with; it does not prove the sockets are still its own
(a socket file can be replaced): `SwtpmProcess.adopt` also checks SO_PEERCRED on a unix socket.
"""

from __future__ import annotations

import os
import select
import signal
from dataclasses import dataclass
from pathlib import Path

from vroot.errors import SwtpmError

__all__ = [
    "Pidfd",
    "SwtpmCmdline",
    "check_tcp_sockets",
    "check_unix_sockets",
    "parse_swtpm_cmdline",
    "read_cmdline",
    "same_path",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SwtpmCmdline:
    """What a `swtpm socket` command line says about where it serves."""

    state_dir: str | None
    server: dict[str, str] | None  # --server options (type=, path=, port=, bindaddr=), None if absent
    ctrl: dict[str, str] | None  # --ctrl options
    log_file: str | None


def _options(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in value.split(","):
        key, sep, val = part.partition("=")
        out[key] = val if sep else ""
    return out


def parse_swtpm_cmdline(argv: list[str]) -> SwtpmCmdline:
    """Parse `swtpm socket --tpm2 ...` (both `--opt value` and `--opt=value`); SwtpmError otherwise."""
    if len(argv) < 2 or os.path.basename(argv[0]) != "swtpm" or argv[1] != "socket" or "--tpm2" not in argv:
        shown = " ".join(argv[:4])[:200]
        raise SwtpmError(f"not a `swtpm socket --tpm2` process (command line: {shown!r})")
    opts: dict[str, str] = {}
    i = 2
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" in arg:
            name, _, val = arg.partition("=")
            opts[name] = val
        elif arg in ("--tpmstate", "--server", "--ctrl", "--log") and i + 1 < len(argv):
            opts[arg] = argv[i + 1]
            i += 1
        i += 1
    state = _options(opts["--tpmstate"]).get("dir") if "--tpmstate" in opts else None
    log = _options(opts["--log"]).get("file") if "--log" in opts else None
    return SwtpmCmdline(
        state_dir=state,
        server=_options(opts["--server"]) if "--server" in opts else None,
        ctrl=_options(opts["--ctrl"]) if "--ctrl" in opts else None,
        log_file=log,
    )


def read_cmdline(pid: int) -> list[str]:
    """argv of process `pid`; SwtpmError if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        raise SwtpmError(f"pid {pid} is not running") from None
    except OSError as exc:
        raise SwtpmError(f"pid {pid}: cannot read /proc: {exc}") from exc
    if state == b"Z" or not raw:
        raise SwtpmError(f"pid {pid} is not running (it exited)")
    return [os.fsdecode(a) for a in raw.rstrip(b"\0").split(b"\0")]


def same_path(a: str | Path | None, b: str | Path) -> bool:
    return a is not None and os.path.realpath(a) == os.path.realpath(b)


def check_unix_sockets(pid: int, cmd: SwtpmCmdline, unix_path: Path, *, ctrl_only: bool) -> None:
    """swtpm `pid` was started the way `start_swtpm` starts one on `unix_path` in that mode."""
    want_ctrl = unix_path if ctrl_only else Path(f"{unix_path}.ctrl")
    server, ctrl = cmd.server, cmd.ctrl
    if ctrl_only and server is not None:
        raise SwtpmError(f"swtpm pid {pid} has a data server: it is not in ctrl-only (QEMU) mode")
    if not ctrl_only and (
        server is None or server.get("type") != "unixio" or not same_path(server.get("path"), unix_path)
    ):
        raise SwtpmError(f"swtpm pid {pid} does not serve its data channel on {unix_path}")
    if ctrl is None or ctrl.get("type") != "unixio" or not same_path(ctrl.get("path"), want_ctrl):
        raise SwtpmError(f"swtpm pid {pid} does not serve its control channel on {want_ctrl}")


def check_tcp_sockets(pid: int, cmd: SwtpmCmdline, host: str, tcp_port: int) -> None:
    """swtpm `pid` serves data on host:tcp_port and control on host:tcp_port+1."""
    for what, opts, port in (("data", cmd.server, tcp_port), ("control", cmd.ctrl, tcp_port + 1)):
        if (
            opts is None
            or opts.get("type") != "tcp"
            or opts.get("port") != str(port)
            or opts.get("bindaddr", "127.0.0.1") != host
        ):
            raise SwtpmError(f"swtpm pid {pid} does not serve its {what} channel on {host}:{port}")


class Pidfd:
    """A pidfd on a process that is not (necessarily) our child."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self._fd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            raise SwtpmError(f"pid {pid} is not running") from None
        except OSError as exc:
            raise SwtpmError(f"pid {pid}: pidfd_open failed: {exc} (needs Linux >= 5.3)") from exc
        try:
            signal.pidfd_send_signal(self._fd, 0)  # may we signal it at all (same user, or root)?
        except PermissionError:
            self.close()
            raise SwtpmError(f"pid {pid} belongs to another user: cannot manage it") from None
        except ProcessLookupError:
            pass  # exited already: `alive` says so

    @property
    def alive(self) -> bool:
        if self._fd is None:
            return False
        readable, _, _ = select.select([self._fd], [], [], 0)
        return not readable

    def wait(self, timeout: float) -> bool:
        """True once the process has exited, False if it still runs after `timeout` seconds."""
        if self._fd is None:
            return True
        readable, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        return bool(readable)

    def send_signal(self, sig: int) -> None:
        if self._fd is None:
            return
        try:
            signal.pidfd_send_signal(self._fd, sig)
        except ProcessLookupError:
            pass

    def terminate(self, timeout: float) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL and wait again."""
        if not self.alive:
            return
        self.send_signal(signal.SIGTERM)
        if self.wait(timeout):
            return
        self.send_signal(signal.SIGKILL)
        if not self.wait(timeout):
            raise SwtpmError(f"pid {self.pid} still runs {timeout:g} s after SIGKILL")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
