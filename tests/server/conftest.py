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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from server_helpers import write_identity

from vroot.agent import ServerClient
from vroot.server import RunningServer, Services, Settings, init_server, load_settings, start_server
from vroot.store import AgentKind, AgentRecord

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


class Clock:
    """The real time plus an offset a test can move forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Server:
    running: RunningServer
    settings: Settings
    services: Services
    token: str
    clock: Clock
    directory: Path
    clients: list[ServerClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def ca(self) -> Path:
        return self.directory / "tls" / "ca.pem"

    def client(self, *, token: str | None = None, cert: tuple[Path, Path] | None = None) -> ServerClient:
        c = ServerClient(self.url, ca_certificate=self.ca, token=token,
                         client_cert=cert[0] if cert else None, client_key=cert[1] if cert else None)  # fmt: skip
        self.clients.append(c)
        return c

    def operator(self) -> ServerClient:
        return self.client(token=self.token)

    def add_agent(self, agent_id: str, directory: Path) -> tuple[Path, Path]:
        """An active agent with a client certificate from this server's operations CA (no TM: for
        tests of the protocol, not of enrollment). Returns (cert PEM path, key PEM path)."""
        store, keys, now = self.services.store, self.services.keys, self.clock()
        from vroot.pca import issue_client_certificate

        store.agents.add(AgentRecord(id=agent_id, kind=AgentKind.HOST, ek_public=b"ek-" + agent_id.encode(),
                                     created_at=now))  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue_client_certificate(ops_ca=keys.ops, agent_id=agent_id, public_key=key.public_key(),
                                        now=now - timedelta(minutes=1), serial=self.services.serial())  # fmt: skip
        store.agents.activate(agent_id, ak_public=b"ak", ak_certificate=b"", client_serial=cert.serial_number, now=now)
        return write_identity(directory, agent_id, cert.public_bytes(serialization.Encoding.PEM), key)


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
    """Starts servers: `make(backend="sqlite"|"postgresql", manufacturer_cas=[...], **options)`."""
    started: list[Server] = []

    def make(*, backend: str = "sqlite", manufacturer_cas: tuple[Path, ...] = (), **options: object) -> Server:
        directory = tmp_path / f"server{len(started)}"
        database = None
        if backend == "postgresql":
            database = request.getfixturevalue("pg_database")()
        options.setdefault("poll_interval_seconds", 0.2)
        result = init_server(directory, now=datetime.now(UTC) - timedelta(minutes=5), rng=os.urandom,
                             database=database, manufacturer_cas=manufacturer_cas, listen="127.0.0.1:0",
                             options=options)  # fmt: skip
        settings = load_settings(directory, environ={})
        clock = Clock()
        services = Services.open(settings, clock=clock)
        try:
            running = start_server(settings, services)
        except BaseException:
            services.close()
            raise
        server = Server(running=running, settings=settings, services=services, token=result.operator_token,
                        clock=clock, directory=directory)  # fmt: skip
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            for c in server.clients:
                c.close()
            try:
                server.running.stop()
            finally:
                server.services.close()


@pytest.fixture
def server(server_factory: ServerFactory) -> Server:
    return server_factory()
