"""Fixtures for the real-firmware tests (QEMU + OVMF against a vroot vTM).

`vtm_factory(name)` creates a fresh vTM through vroot's vTM manager on a simulated host (its
state key sealed in the host TM, its vEK certified, its launch measured) and returns the vTM's
swtpm process: `.ctrl_path` is the socket QEMU's `-chardev` connects to, `.data_channel()` lets
vroot talk to it when no guest does. Teardown stops every vTM and the host TM by PID.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vroot.host import HostConfig, init_host
from vroot.host.agent import HostAgent
from vroot.qemu import DEFAULT_FIRMWARE
from vroot.tm.swtpm import SwtpmProcess


def _require() -> None:
    for binary in ("swtpm", "qemu-system-x86_64"):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} not found: run `make setup` (Debian packages swtpm, qemu-system-x86)")
    if not DEFAULT_FIRMWARE.is_file():
        pytest.fail(f"{DEFAULT_FIRMWARE} not found: run `make setup` (Debian package ovmf)")


@pytest.fixture(scope="module")
def vtm_factory() -> Iterator[Callable[[str], SwtpmProcess]]:
    _require()
    root = Path(tempfile.mkdtemp(prefix="vrq-", dir="/tmp"))  # AF_UNIX paths: 107 bytes at most
    root.chmod(0o711)  # vTMs run as their own uids and must pass through
    host = root / "host"
    init_host(host, config=HostConfig(host_id="qemu-host", mode="simulate"), now=datetime.now(UTC), serial=7,
              manufacturer_ca_dir=root / "ca")  # fmt: skip
    agent = HostAgent.start(host)

    def start(name: str) -> SwtpmProcess:
        vm = str(uuid.uuid5(uuid.NAMESPACE_URL, f"vroot-qemu-test/{name}"))
        agent.manager.create(vm)
        return agent.manager.processes[vm]

    try:
        yield start
    finally:
        agent.stop(stop_vtms=True, stop_tm=True)
        agent.close()
        shutil.rmtree(root, ignore_errors=True)
