"""Mutual TLS under uvicorn: the server's SSL context, and the client certificate in the ASGI scope.

The context requests a client certificate but does not require one (`CERT_OPTIONAL`): operators
(bearer token) and hosts that are not enrolled yet (enrollment endpoints only) connect without
one. A certificate that is presented must verify against the operations CA, or the handshake
fails: a certificate of another CA, or an expired one, never reaches the application.

uvicorn does not put the peer certificate into the ASGI scope. `ClientCertProtocol` (an
`H11Protocol`, passed as `uvicorn.Config(http=ClientCertProtocol)`) reads it once per connection,
after the handshake, and exposes it the way the ASGI TLS extension does:
`scope["extensions"]["tls"]["client_cert_chain"]`, a list of PEM strings, leaf first (empty when
the client sent none). Only the leaf is available from Python's ssl module.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from vroot.server._settings import Settings

__all__ = ["ClientCertProtocol", "server_ssl_context"]


def server_ssl_context(settings: Settings, *, ops_ca_pem: bytes) -> ssl.SSLContext:
    """TLS 1.2+ server context: the server's certificate and key, client certificates optional and
    verified against the operations CA (`ops_ca_pem`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.tls_certificate, settings.tls_key)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cadata=ops_ca_pem.decode("ascii"))
    return ctx


class ClientCertProtocol(H11Protocol):
    """uvicorn's h11 protocol, with the peer's certificate in each request's scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        chain: list[str] = []
        tls: dict[str, Any] | None = None
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            if der:
                chain.append(ssl.DER_cert_to_PEM_cert(der))
            cipher = ssl_object.cipher()
            tls = {
                "server_cert": None,
                "client_cert_chain": chain,
                "client_cert_name": None,
                "client_cert_error": None,
                "tls_version": None,
                "cipher_suite": None,
                "version_name": ssl_object.version(),
                "cipher_name": cipher[0] if cipher else None,
            }
        app = self.app

        async def with_tls(scope: Any, receive: Any, send: Any) -> None:
            if tls is not None and scope["type"] in ("http", "websocket"):
                scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": tls}}
            await app(scope, receive, send)

        self.app = with_tls
