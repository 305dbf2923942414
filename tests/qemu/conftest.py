"""Fixtures for the real-firmware tests (QEMU + OVMF against a vTM).

`vtm_factory(name)` starts a fresh vTM that QEMU can use, with its state under a temporary
directory, and stops every one it started by PID at teardown. Today a vTM is a ctrl-only swtpm
(QEMU mode); to point these tests at a vroot vTM from the vTM manager, change `_start_vtm` only:
the tests use nothing but `.ctrl_path` (the socket for QEMU's `-chardev`), `.data_channel()` and
`.stop()`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vroot.qemu import DEFAULT_FIRMWARE
from vroot.tm.swtpm import SwtpmProcess, start_swtpm


def _start_vtm(state_dir: Path, socket: Path) -> SwtpmProcess:
    return start_swtpm(state_dir, unix_path=socket, ctrl_only=True)  # the one line to swap


def _require() -> None:
    for binary in ("swtpm", "qemu-system-x86_64"):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} not found: run `make setup` (Debian packages swtpm, qemu-system-x86)")
    if not DEFAULT_FIRMWARE.is_file():
        pytest.fail(f"{DEFAULT_FIRMWARE} not found: run `make setup` (Debian package ovmf)")


@pytest.fixture(scope="module")
def vtm_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], SwtpmProcess]]:
    _require()
    state_root = tmp_path_factory.mktemp("vtm")
    sock_dir = Path(tempfile.mkdtemp(prefix="vrq-", dir="/tmp"))  # AF_UNIX paths: 107 bytes at most
    started: list[SwtpmProcess] = []

    def start(name: str) -> SwtpmProcess:
        vtm = _start_vtm(state_root / name, sock_dir / f"{name}.sock")
        started.append(vtm)
        return vtm

    try:
        yield start
    finally:
        for vtm in started:
            vtm.stop(timeout=2.0)
        shutil.rmtree(sock_dir, ignore_errors=True)
