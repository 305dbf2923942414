"""The host's TM as the host agent holds it (HW-F1..F3).

A simulated host's TM is a swtpm on `DIR/tm`; it stands for hardware, so it outlives the agent
(started detached, adopted by the next agent) and its PCRs reset only when the host "reboots":
then the measured host boot (`vroot.measure.HOST_CHAIN` over `DIR/images`) is played again and
the boot and IMA logs are rewritten. A real host's TM is `tcti` (normally `device:/dev/tpmrm0`);
its logs are the kernel's.

swtpm serves one client at a time: the agent keeps the only connection for its lifetime.
"""

from __future__ import annotations

import os
from pathlib import Path

from vroot._fs import atomic_write, make_private_dir
from vroot.errors import NotFound, SwtpmError
from vroot.host._config import HostConfig, HostPaths
from vroot.host._launchlog import LaunchLog

__all__ = ["HostTm", "REAL_IMA_LOG", "REAL_TCG_LOG"]

REAL_TCG_LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
REAL_IMA_LOG = Path("/sys/kernel/security/ima/binary_runtime_measurements")


class HostTm:
    """An open connection to the host TM (and, for a simulated host, its swtpm process)."""

    def __init__(self, config: HostConfig, paths: HostPaths, client, process=None) -> None:  # noqa: ANN001
        self.config = config
        self.paths = paths
        self.client = client
        self.process = process
        self.banks = tuple(client.pcr_banks())
        self.launch_log = LaunchLog(paths.logs, self.banks)

    # -- life cycle ---------------------------------------------------------------------------

    @classmethod
    def open(cls, config: HostConfig, paths: HostPaths, *, detached: bool = True) -> HostTm:
        """Connect to the host TM; for a simulated host adopt its running swtpm or start (boot) it."""
        from vroot.tm import TmClient

        if config.mode == "device":
            host = cls(config, paths, TmClient.open(config.tcti))
            host._check_launch_log()
            return host
        process, fresh = _start_or_adopt(paths, detached=detached)
        try:
            client = TmClient.open(process.tcti)
        except BaseException:
            if fresh:
                process.stop()
            raise
        host = cls(config, paths, client, process)
        if fresh:
            host._boot()
        else:
            host._check_launch_log()
        return host

    def close(self, *, stop_tm: bool = False) -> None:
        """Close the connection; with `stop_tm` also stop a simulated host's swtpm (a power-off,
        after an orderly TPM2_Shutdown so the power-cycle does not count as a DA failure)."""
        power_off = stop_tm and self.process is not None
        try:
            if power_off:
                self.client.shutdown()
        finally:
            try:
                self.client.close()
            finally:
                if power_off:
                    self.process.stop()
                    _forget_pid(self.paths)

    def reboot(self) -> None:
        """Simulated hosts only: power-cycle the TM (PCRs reset) and play the measured boot again."""
        if self.process is None:
            raise SwtpmError("only a simulated host can be rebooted by vroot")
        from vroot.tm import TmClient

        detached = self.process.detached
        self.close(stop_tm=True)
        process, _ = _start_or_adopt(self.paths, detached=detached)

        self.process = process
        self.client = TmClient.open(process.tcti)
        self._boot()

    def _boot(self) -> None:
        from vroot.measure import HOST_CHAIN, ImageDir, measured_boot

        record = measured_boot(self.client, HOST_CHAIN, ImageDir(self.paths.images))
        make_private_dir(self.paths.logs)
        atomic_write(self.paths.log("boot.tcg"), record.tcg_log, mode=0o644)
        atomic_write(self.paths.log("ima.bin"), record.ima_log, mode=0o644)
        atomic_write(self.paths.log("ima.ascii"), record.ima_log_ascii, mode=0o644)
        self.launch_log.reset()

    def _check_launch_log(self) -> None:
        """A TM that restarted since the launch log was written (a host reboot) has PCR 14 at its
        reset value: the log of launches before it no longer describes the PCR, so start it anew."""
        from vroot.measure import LAUNCH_PCR

        bank = self.banks[0]
        if self.client.pcr_read({bank: [LAUNCH_PCR]})[bank][LAUNCH_PCR] == bytes(bank.digest_size):
            self.launch_log.reset()

    # -- logs -----------------------------------------------------------------------------------

    def boot_log(self) -> bytes:
        """The firmware's TCG log: the kernel's on a device host, the simulated boot's otherwise."""
        if self.config.mode == "device":
            path = Path(self.config.boot_log) if self.config.boot_log else REAL_TCG_LOG
        else:
            path = self.paths.log("boot.tcg")
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no firmware event log at {path} (set boot_log in host.toml)") from None

    def ima_log(self) -> bytes:
        """The IMA measurement list (binary), empty when the kernel runs without IMA."""
        if self.config.mode == "device":
            path = Path(self.config.ima_log) if self.config.ima_log else REAL_IMA_LOG
        else:
            path = self.paths.log("ima.bin")
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return b""


def _read_pid(paths: HostPaths) -> int | None:
    try:
        return int(paths.tm_pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _forget_pid(paths: HostPaths) -> None:
    try:
        os.unlink(paths.tm_pid)
    except FileNotFoundError:
        pass


def _start_or_adopt(paths: HostPaths, *, detached: bool):  # noqa: ANN202
    """(process, fresh): the running host swtpm if its PID file names one, else a new one."""
    from vroot.tm.swtpm import SwtpmProcess, start_swtpm

    pid = _read_pid(paths)
    if pid is not None:
        try:
            return SwtpmProcess.adopt(pid, state_dir=paths.tm_state, unix_path=paths.tm_socket), False
        except SwtpmError:
            _forget_pid(paths)  # stale: the process is gone or is not our swtpm
    make_private_dir(paths.tm_state)
    log = paths.tm_state / "swtpm.log"  # a detached swtpm's stderr would go to an unnamed file
    process = start_swtpm(paths.tm_state, unix_path=paths.tm_socket, detached=detached, log_path=log)
    if detached:
        atomic_write(paths.tm_pid, f"{process.pid}\n".encode())
    return process, True
