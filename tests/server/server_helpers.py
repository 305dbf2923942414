"""Helpers shared by the server tests (importable as `server_helpers`)."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vroot.agent import ServerClient
from vroot.server import RunningServer, Services, Settings, init_server, load_settings, start_server
from vroot.store import AgentKind, AgentRecord


def write_identity(directory: Path, name: str, cert_pem: bytes, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    """Write a client certificate and its key (0600) as PEM files; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    safe = name.replace(":", "_")
    cert_path, key_path = directory / f"{safe}.crt", directory / f"{safe}.key"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    key_path.chmod(0o600)
    return cert_path, key_path


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


def launch_server(directory: Path, *, database: str | None = None, manufacturer_cas: tuple[Path, ...] = (),
                  **options: object) -> Server:  # fmt: skip
    """A fresh server directory (`init_server`) served in a thread on a free loopback port."""
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
    return Server(running=running, settings=settings, services=services, token=result.operator_token,
                  clock=clock, directory=directory)  # fmt: skip


def stop_server(server: Server) -> None:
    for c in server.clients:
        c.close()
    try:
        server.running.stop()
    finally:
        server.services.close()


def serve_again(server: Server, *, port: int = 0) -> Server:
    """Another server process on `server`'s directory and database (a replica, or with the port
    of a stopped one, its restart): only the directory and the database carry over."""
    settings = load_settings(server.directory, environ={"VROOT_SERVER_LISTEN": f"127.0.0.1:{port}"})
    services = Services.open(settings, clock=server.clock)
    try:
        running = start_server(settings, services)
    except BaseException:
        services.close()
        raise
    return Server(running=running, settings=settings, services=services, token=server.token, clock=server.clock,
                  directory=server.directory)  # fmt: skip


def restart_server(server: Server) -> Server:
    """Stop `server` and start it again on the same port."""
    port = server.running.port
    stop_server(server)
    return serve_again(server, port=port)


def terminate(proc: subprocess.Popen, *, timeout: float = 30.0) -> int:
    """SIGTERM a process this test started (by its PID), SIGKILL it if it does not stop; its code."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)
