"""`vroot server init DIR`: a server directory with its keys, TLS identity, settings and database.

    DIR/                       0700
    DIR/server.toml            settings (`_settings`); holds the operator token's SHA-256 only
    DIR/keys/                  PCA, operations CA, result-signing key (`vroot.pca.init_pca`)
    DIR/tls/server-cert.pem    the server's TLS certificate from the operations CA
    DIR/tls/server-key.pem     its key (ECC P-256, 0600)
    DIR/tls/ca.pem             the operations CA certificate, for agents and operators to trust
    DIR/trust/manufacturer-N.pem   copies of the manufacturer CA certificates given
    DIR/vroot.db               the SQLite database (unless --db names another), migrated

The operator token is returned once by `init_server` and stored nowhere.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vroot._fs import atomic_write, make_private_dir
from vroot.errors import Conflict, InvalidInput
from vroot.pca import init_pca, issue_server_certificate
from vroot.server._auth import new_operator_token, token_digest
from vroot.server._services import load_certificates
from vroot.server._settings import (
    CONFIG_NAME,
    DEFAULT_LISTEN,
    Settings,
    load_settings,
    parse_listen,
    render_settings,
)
from vroot.store import Store

__all__ = ["InitResult", "init_server", "server_names"]


@dataclass(frozen=True, slots=True, kw_only=True)
class InitResult:
    settings: Settings
    operator_token: str = field(repr=False)  # show once, then forget


def server_names(listen_host: str, *, hostname: str | None = None) -> list[str]:
    """The names the server certificate carries: localhost, 127.0.0.1, ::1, the host name, and the
    listen address when it is a specific one."""
    names = ["localhost", "127.0.0.1", "::1"]
    host = hostname if hostname is not None else socket.gethostname()
    for name in (host, listen_host):
        if name and name not in names and name not in ("0.0.0.0", "::"):
            names.append(name)
    return names


def init_server(
    directory: str | Path,
    *,
    now: datetime,
    rng: Callable[[int], bytes],
    database: str | None = None,
    manufacturer_cas: Sequence[Path] = (),
    listen: str = DEFAULT_LISTEN,
    hostname: str | None = None,
    options: dict[str, object] | None = None,
) -> InitResult:
    """Create the server directory (Conflict if DIR already holds a server.toml or keys). Draws new
    keys. `options` sets further [server] options (e.g. `enrollment_ttl_seconds`)."""
    d = Path(directory).absolute()
    if (d / CONFIG_NAME).exists() or (d / "keys").exists():
        raise Conflict(f"{d} is already a vroot server directory")
    host, _ = parse_listen(listen)
    cas = [load_certificates(Path(p)) for p in manufacturer_cas]  # read before anything is written
    if any(not certs for certs in cas):
        raise InvalidInput("a manufacturer CA file holds no certificate")
    make_private_dir(d)
    keys = init_pca(d / "keys", now=now)
    tls = d / "tls"
    make_private_dir(tls)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_server_certificate(
        ops_ca=keys.ops, names=server_names(host, hostname=hostname), public_key=key.public_key(), now=now,
        serial=(int.from_bytes(rng(20), "big") >> 1) | 1,
    )  # fmt: skip
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(tls / "server-key.pem", key_pem, mode=0o600)
    atomic_write(tls / "server-cert.pem", cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    atomic_write(tls / "ca.pem", keys.ops.certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    trust = d / "trust"
    make_private_dir(trust)
    ca_files = []
    for i, certs in enumerate(cas):
        name = f"trust/manufacturer-{i}.pem"
        atomic_write(d / name, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs), mode=0o644)
        ca_files.append(name)
    token = new_operator_token(rng)
    text = render_settings(
        listen=listen,
        database=database or f"sqlite:///{d / 'vroot.db'}",
        manufacturer_cas=ca_files,
        operator_token_sha256=token_digest(token).hex(),
        **(options or {}),
    )
    atomic_write(d / CONFIG_NAME, text.encode(), mode=0o600)
    settings = load_settings(d, environ={})
    with Store.open(settings.database_url) as store:
        store.migrate()
    return InitResult(settings=settings, operator_token=token)
