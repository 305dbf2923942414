"""Helpers shared by the vTM tests (importable as `vtm_helpers`)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from vroot.host import HostConfig, init_host
from vroot.measure import HOST_CHAIN, measured_boot, write_images
from vroot.pki import create_ca, issue_ek_certificate
from vroot.tm import TmClient
from vroot.tm.swtpm import SwtpmProcess, start_swtpm
from vroot.tpm2 import parse_public


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def make_host(root: Path, name: str = "host-a", **config) -> Path:  # noqa: ANN003
    directory = root / name
    init_host(
        directory,
        config=HostConfig(host_id=name, mode="simulate", **config),
        now=datetime.now(UTC),
        serial=0x5EED,
        manufacturer_ca_dir=root / "manufacturer-ca",
    )
    return directory


def kill_recorded_swtpms(root: Path) -> None:
    """SIGKILL every swtpm whose PID file is under `root` and whose command line names `root` (the
    last resort of a teardown: only processes this test's directory started)."""
    for pid_file in list(root.rglob("swtpm.pid")):
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if b"swtpm" in cmdline and str(root).encode() in cmdline:
            os.kill(pid, signal.SIGKILL)


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A short directory under /tmp (unix socket paths are limited to 107 bytes), searchable by the
    vTMs' own uids; afterwards every swtpm recorded under it is stopped and it is removed."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o711)  # each vTM's swtpm runs as its own uid and must pass through
    try:
        yield path
    finally:
        kill_recorded_swtpms(path)
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def oem_tm(root: Path, kind: str = "ecc") -> Iterator[SwtpmProcess]:
    """A "hardware" TM as a server would have it: a swtpm whose manufacturer wrote a `kind` EK
    certificate (from its own CA) into NV, and firmware that measured a boot into it and left its
    logs where host.toml can name them (root/binary_bios_measurements, binary_runtime_measurements)."""
    proc = start_swtpm(root / "hw", unix_path=root / "hw.sock")
    try:
        now = datetime.now(UTC)
        with TmClient.open(proc.tcti) as tm:
            with tm.create_primary_ek(kind) as ek:
                cert = issue_ek_certificate(create_ca(common_name="OEM CA", now=now), parse_public(ek.public),
                                            now=now, serial=99)  # fmt: skip
            tm.write_ek_certificate(cert.public_bytes(Encoding.DER), kind)
            record = measured_boot(tm, HOST_CHAIN, write_images(root / "firmware", HOST_CHAIN))
        (root / "binary_bios_measurements").write_bytes(record.tcg_log)
        (root / "binary_runtime_measurements").write_bytes(record.ima_log)
        yield proc
    finally:
        proc.stop()
