"""Helpers shared by the vTM tests (importable as `vtm_helpers`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from vroot.host import HostConfig, init_host


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
