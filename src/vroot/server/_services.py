"""What the server runs on, assembled once at start-up and handed to `create_app`.

    settings = load_settings(dir, environ=os.environ)
    services = Services.open(settings)            # store, PCA keys, manufacturer CAs, clock, rng
    app = create_app(settings, services)

Nothing here is global: a test builds its own `Services` (another clock, another rng, another
database) and its own app.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from vroot.errors import InvalidInput, NotFound
from vroot.pca import PcaKeys, load_pca
from vroot.server._settings import Settings
from vroot.store import Store

__all__ = ["Clock", "ManufacturerTrust", "Rng", "Services", "load_certificates", "system_clock"]

Clock = Callable[[], datetime]
Rng = Callable[[int], bytes]
MAX_PEM_BYTES = 1 << 20
# Database connections kept open (as many again may be opened for a while): about the worker
# threads that use the store at once (the HTTP thread pool's 40, the scheduler, the webhooks), so
# that a busy server does not open and close a connection for most transactions.
POOL_SIZE = 24


def system_clock() -> datetime:
    return datetime.now(UTC)


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM file (or of `ca-cert.pem` in a vroot CA directory)."""
    p = Path(path)
    if p.is_dir():
        p = p / "ca-cert.pem"
    try:
        data = p.read_bytes()[: MAX_PEM_BYTES + 1]
    except FileNotFoundError:
        raise NotFound(f"certificate file {p} does not exist") from None
    except IsADirectoryError:
        raise InvalidInput(f"{p} is a directory") from None
    if len(data) > MAX_PEM_BYTES:
        raise InvalidInput(f"{p}: more than {MAX_PEM_BYTES} bytes")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise InvalidInput(f"{p}: not a PEM file of X.509 certificates") from None
    return certs


@dataclass(frozen=True, slots=True, kw_only=True)
class ManufacturerTrust:
    """The TM manufacturer CAs EK certificates must chain to (HW-F2): self-signed ones are trust
    anchors, the others intermediates that may complete a chain (never anchors themselves)."""

    anchors: tuple[x509.Certificate, ...] = ()
    intermediates: tuple[x509.Certificate, ...] = ()

    @classmethod
    def from_files(cls, paths: tuple[Path, ...]) -> ManufacturerTrust:
        anchors: list[x509.Certificate] = []
        intermediates: list[x509.Certificate] = []
        for path in paths:
            for cert in load_certificates(path):
                (anchors if cert.issuer == cert.subject else intermediates).append(cert)
        return cls(anchors=tuple(anchors), intermediates=tuple(intermediates))


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """The server's dependencies. Holds private keys (`keys`): never log it."""

    store: Store
    keys: PcaKeys = field(repr=False)
    trust: ManufacturerTrust
    clock: Clock = system_clock
    rng: Rng = os.urandom

    @classmethod
    def open(cls, settings: Settings, *, clock: Clock = system_clock, rng: Rng = os.urandom,
             migrate: bool = True) -> Services:  # fmt: skip
        """Open the database (migrating it to the newest schema unless `migrate=False`), load the PCA
        keys from `settings.keys_dir` and the manufacturer CAs. Close with `close()`."""
        keys = load_pca(settings.keys_dir)
        trust = ManufacturerTrust.from_files(settings.manufacturer_cas)
        store = Store.open(settings.database_url, pool_size=POOL_SIZE)
        try:
            if migrate:
                store.migrate()
        except BaseException:
            store.close()
            raise
        return cls(store=store, keys=keys, trust=trust, clock=clock, rng=rng)

    def serial(self) -> int:
        """A fresh positive certificate serial of at most 159 bits (RFC 5280: 20 octets), from `rng`."""
        raw = self.rng(20)
        if not isinstance(raw, bytes) or len(raw) != 20:
            raise InvalidInput("rng(20) must return 20 bytes")
        return (int.from_bytes(raw, "big") >> 1) | 1

    def close(self) -> None:
        self.store.close()
