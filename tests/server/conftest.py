"""Fixtures for the server tests: a real uvicorn HTTPS server (mutual TLS) in a thread, on a free
loopback port, over SQLite or PostgreSQL; agents with real client certificates; simulated hosts.

PostgreSQL comes from the store tests' fixtures (`tests/store/conftest.py`: started when needed,
one throwaway database per server here), loaded by path rather than copied. Simulated hosts come
from `tests/vtm/vtm_helpers.make_host`. Every server, swtpm and thread started here is stopped in
teardown (swtpms by the PID files under the test's directory).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from server_helpers import Server, launch_server, stop_server

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS / "vtm"))  # vtm_helpers


def _load_store_conftest():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("vroot_tests_store_conftest", TESTS / "store" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_store_conftest = _load_store_conftest()
pg_admin = _store_conftest.pg_admin  # session fixtures, reused as they are
pg_database = _store_conftest.pg_database

os.environ.setdefault("TSS2_LOG", "all+NONE")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short /tmp directory (unix socket paths are limited); swtpms recorded under it are killed."""
    path = Path(tempfile.mkdtemp(prefix="vs", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        for pid_file in list(path.rglob("swtpm.pid")):
            try:
                pid = int(pid_file.read_text().strip())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if b"swtpm" in cmdline and str(path).encode() in cmdline:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(path, ignore_errors=True)


ServerFactory = Callable[..., Server]


@pytest.fixture
def server_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerFactory]:
    """Starts servers: `make(backend="sqlite"|"postgresql", manufacturer_cas=(...), **options)`."""
    started: list[Server] = []

    def make(*, backend: str = "sqlite", **kw: object) -> Server:
        database = request.getfixturevalue("pg_database")() if backend == "postgresql" else None
        started.append(launch_server(tmp_path / f"server{len(started)}", database=database, **kw))  # type: ignore[arg-type]
        return started[-1]

    try:
        yield make
    finally:
        for server in started:
            stop_server(server)


@pytest.fixture
def server(server_factory: ServerFactory) -> Server:
    return server_factory()
