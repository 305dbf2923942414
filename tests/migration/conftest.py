"""Fixtures for the migration tests: several simulated hosts in one process, each with its agent object
(host TM, vTM manager) and a `MigrationEngine`, and a controller stand-in that drives the steps.

Host directories live under a short /tmp path (unix sockets); teardown stops every vTM and host TM
by PID (also those a test left locked or half-made), as tests/vtm's fixtures do.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "vtm"))

from migration_helpers import Host  # noqa: E402
from vtm_helpers import kill_recorded_swtpms, make_host, scratch_dir  # noqa: E402

os.environ.setdefault("TSS2_LOG", "all+NONE")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    with scratch_dir("vm") as path:
        yield path


@pytest.fixture
def hosts(short_tmp: Path) -> Iterator[Callable[[str], Host]]:
    """hosts(name) -> a provisioned simulated host with an open agent object and engine."""
    made: list[Host] = []

    def get(name: str) -> Host:
        host = Host.open(make_host(short_tmp, name))
        made.append(host)
        return host

    try:
        yield get
    finally:
        for host in made:
            try:
                host.close()
            except Exception:
                pass
        kill_recorded_swtpms(short_tmp)
