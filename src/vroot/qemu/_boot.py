"""Boot firmware under QEMU (TCG) with a vTM attached, until a serial-console marker, by watchdog.

QEMU facts this module relies on (see ../shared/QEMU-NOTES.md):
- `-accel tcg` always: this sandbox's KVM (kvm-pvm) cannot run firmware, and on that failure QEMU
  does not exit but stays up, paused. Hence the deadline on every boot.
- `-tpmdev emulator` talks to a swtpm that has only a control socket; QEMU passes the data channel
  itself. QEMU holds the control channel for as long as it runs.
- A clean QEMU stop (SIGTERM, `quit`) sends CMD_SHUTDOWN: swtpm exits and the PCRs are lost. So
  QEMU is stopped with SIGKILL, by PID (never by name), and swtpm keeps running with the PCRs.
- QEMU is started with a parent-death SIGKILL: a test process that dies leaves no TCG guest
  burning CPU behind it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from vroot.errors import InvalidInput, Unavailable

__all__ = ["DEFAULT_FIRMWARE", "QemuBoot", "boot_firmware"]

DEFAULT_FIRMWARE = Path("/usr/share/ovmf/OVMF.fd")  # Debian `ovmf`: one image, boots fastest (-bios)
TPM_DEVICES = ("tpm-crb", "tpm-tis")
_PR_SET_PDEATHSIG = 1


class QemuBoot:
    """A QEMU started by `boot_firmware`, whose serial console showed the marker.

    `stop()` (also on `with` exit) SIGKILLs it by PID and reaps it; the vTM keeps its PCRs.
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        *,
        argv: list[str],
        serial_log: Path,
        output_log: Path,
        output_file: IO[bytes],
    ) -> None:
        self._popen = popen
        self.pid: int = popen.pid
        self.argv = argv
        self.serial_log = serial_log
        self.output_log = output_log
        self._out = output_file
        self.boot_seconds: float | None = None  # from exec to the marker

    def __repr__(self) -> str:
        state = "running" if self.alive else f"exited {self._popen.returncode}"
        return f"QemuBoot(pid={self.pid}, {state}, boot_seconds={self.boot_seconds})"

    @property
    def alive(self) -> bool:
        return self._popen.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGKILL QEMU by its PID and reap it; returns its exit status. Idempotent."""
        try:
            if self._popen.poll() is None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    self._popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    return None  # uninterruptible sleep; the kernel will finish it
            return self._popen.returncode
        finally:
            if not self._out.closed:
                self._out.close()

    def __enter__(self) -> QemuBoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serial(self) -> bytes:
        """Everything the guest wrote to its serial console so far."""
        try:
            return self.serial_log.read_bytes()
        except FileNotFoundError:
            return b""

    def output_tail(self, limit: int = 1500) -> str:
        """The last `limit` characters of QEMU's own output and of the serial console, for errors."""
        parts = []
        try:
            out = self.output_log.read_bytes()[-limit:].decode(errors="replace").strip()
        except OSError:
            out = ""
        parts.append(f"QEMU output: {out}" if out else "QEMU output: (none)")
        console = self.serial()[-limit:].decode(errors="replace").strip()
        parts.append(f"serial console tail: {console}" if console else "serial console: (empty)")
        return "\n".join(parts)

    def _wait_for(self, marker: bytes, *, timeout: float, started: float) -> None:
        deadline = started + timeout
        offset = 0
        carry = b""
        while True:
            try:
                with open(self.serial_log, "rb") as f:
                    f.seek(offset)
                    new = f.read()
            except FileNotFoundError:
                new = b""
            offset += len(new)
            if marker in carry + new:
                self.boot_seconds = time.monotonic() - started
                return
            carry = (carry + new)[-(len(marker) - 1) :] if len(marker) > 1 else b""
            rc = self._popen.poll()
            if rc is not None:
                raise Unavailable(
                    f"QEMU pid {self.pid} exited with status {rc} before its serial console showed "
                    f"{marker!r}\n{self.output_tail()}"
                )
            if time.monotonic() >= deadline:
                self.stop()
                raise Unavailable(
                    f"QEMU pid {self.pid}: no {marker!r} on the serial console within {timeout:g} s; "
                    f"QEMU killed (hung firmware, a paused VM, or a vTM whose control channel another "
                    f"client holds?)\n{self.output_tail()}"
                )
            time.sleep(0.05)


@functools.lru_cache(maxsize=1)
def _prctl() -> Any:
    return ctypes.CDLL(None, use_errno=True).prctl


def _child_setup(prctl: Any, parent_pid: int) -> None:  # in the child, between fork and exec
    prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def _chardev_path(path: Path) -> str:
    return str(path).replace(",", ",,")  # QEMU option syntax: a comma in a value is doubled


def boot_firmware(
    ctrl_socket: Path,
    *,
    workdir: Path,
    firmware: Path = DEFAULT_FIRMWARE,
    memory_mb: int = 256,
    timeout: float = 60.0,
    until: bytes = b"UEFI Interactive Shell",
    tpm_device: str = "tpm-crb",
    qemu_bin: str = "qemu-system-x86_64",
) -> QemuBoot:
    """Boot `firmware` (`-bios`) on a q35 VM whose TPM is the vTM behind `ctrl_socket`.

    `ctrl_socket` is the control socket of a ctrl-only swtpm (`start_swtpm(..., ctrl_only=True)`).
    Waits until the serial console (`workdir/serial.log`) shows `until`, then returns the running
    QEMU; its own output goes to `workdir/qemu.out`. Raises `Unavailable` (QEMU or the firmware
    missing, no vTM socket, QEMU exited early, `until` not seen within `timeout` seconds) after
    killing QEMU, with the tail of its output; `InvalidInput` for a bad argument.
    Proves only that the firmware ran to the marker; the PCRs are for the caller to read, after
    `stop()`. The same firmware, machine and `memory_mb` give the same PCR 0-7 on a fresh vTM;
    OVMF's PCR 0 changes with the memory size (256 MiB and 512 MiB differ).
    """
    qemu = shutil.which(qemu_bin)
    if qemu is None:
        raise Unavailable(f"{qemu_bin} not found (install the Debian package qemu-system-x86: make setup)")
    firmware = Path(firmware)
    if not firmware.is_file():
        raise Unavailable(f"firmware {firmware} not found (install the Debian package ovmf: make setup)")
    if tpm_device not in TPM_DEVICES:
        raise InvalidInput(f"TPM device {tpm_device!r}: one of {', '.join(TPM_DEVICES)}")
    if memory_mb < 64:
        raise InvalidInput(f"memory {memory_mb} MiB: OVMF needs at least 64")
    ctrl_socket = Path(ctrl_socket).absolute()
    try:
        is_socket = stat.S_ISSOCK(ctrl_socket.stat().st_mode)
    except OSError:
        is_socket = False
    if not is_socket:
        raise Unavailable(f"no vTM control socket at {ctrl_socket} (is the vTM running?)")

    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    serial_log = workdir / "serial.log"
    output_log = workdir / "qemu.out"
    serial_log.unlink(missing_ok=True)
    argv = [
        qemu,
        "-machine", "q35",
        "-accel", "tcg",
        "-m", str(memory_mb),
        "-nographic",
        "-display", "none",
        "-monitor", "none",
        "-net", "none",
        "-bios", str(firmware),
        "-chardev", f"socket,id=chrtpm,path={_chardev_path(ctrl_socket)}",
        "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
        "-device", f"{tpm_device},tpmdev=tpm0",
        "-serial", f"file:{_chardev_path(serial_log)}",
    ]  # fmt: skip
    out = open(output_log, "wb")  # noqa: SIM115 - owned by the QemuBoot
    started = time.monotonic()
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            close_fds=True,
            preexec_fn=functools.partial(_child_setup, _prctl(), os.getpid()),
        )
    except OSError as exc:
        out.close()
        raise Unavailable(f"cannot start {qemu}: {exc}") from exc
    boot = QemuBoot(popen, argv=argv, serial_log=serial_log, output_log=output_log, output_file=out)
    try:
        boot._wait_for(until, timeout=timeout, started=started)
    except BaseException:
        boot.stop()
        raise
    return boot
