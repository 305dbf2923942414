"""Serving the app over HTTPS with uvicorn: in the foreground (`vroot server run`) or in a thread
(tests, the demo). The listening socket is bound before uvicorn starts, so a port of 0 gets a
free port whose number is known at once."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import uvicorn
from cryptography.hazmat.primitives.serialization import Encoding

from vroot.errors import Unavailable
from vroot.server._services import Services
from vroot.server._settings import Settings
from vroot.server._tls import ClientCertProtocol, server_ssl_context
from vroot.server.api import create_app

__all__ = ["RunningServer", "bind", "serve", "start_server"]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); Unavailable if it cannot be bound.

    Made with proto IPPROTO_TCP (not 0) so that asyncio sets TCP_NODELAY on every accepted
    connection: it skips sockets whose proto is not TCP, and without it each response waits about
    40 ms for the client's delayed ACK (Nagle's algorithm holds the body back behind the headers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
    except OSError as exc:
        sock.close()
        raise Unavailable(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _config(settings: Settings, services: Services, *, log_level: str) -> uvicorn.Config:
    app = create_app(settings, services)
    ops_pem = services.keys.ops.certificate.public_bytes(Encoding.PEM)
    return uvicorn.Config(
        app,
        http=ClientCertProtocol,
        ssl_certfile=str(settings.tls_certificate),  # uvicorn's "is TLS" switch; the context is ours
        ssl_context_factory=lambda _config, _default: server_ssl_context(settings, ops_ca_pem=ops_pem),
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
        proxy_headers=False,
        server_header=False,
    )


def serve(settings: Settings, services: Services, *, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM (foreground)."""
    sock = bind(settings.listen_host, settings.listen_port)
    try:
        uvicorn.Server(_config(settings, services, log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()


@dataclass
class RunningServer:
    """A server running in a thread of this process; `stop()` ends it."""

    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()
        if self.thread.is_alive():
            raise Unavailable("the server thread did not stop")


def start_server(settings: Settings, services: Services, *, log_level: str = "warning",
                 timeout: float = 15.0) -> RunningServer:  # fmt: skip
    """Start serving in a thread on `settings.listen_host:listen_port` (0: a free port)."""
    sock = bind(settings.listen_host, settings.listen_port)
    server = uvicorn.Server(_config(settings, services, log_level=log_level))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="vroot-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            sock.close()
            raise Unavailable("the server did not start")
        time.sleep(0.02)
    host, port = sock.getsockname()[:2]
    return RunningServer(server=server, thread=thread, sock=sock, host=host, port=port)
