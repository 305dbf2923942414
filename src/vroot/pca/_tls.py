"""TLS certificates from the operations CA (DESIGN.md section 3): every agent gets a client
certificate at enrollment, after credential activation, for mutual TLS; the server gets its own.

Client: a leaf of `_issue`'s shape, subject CN=<agent id>, extendedKeyUsage clientAuth, for a
software key the agent generated (not a TM key: TLS needs no TM, and the AK cannot sign TLS).
Server: CN=<first DNS name>, subjectAltName DNS names and IP addresses, extendedKeyUsage serverAuth.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from vroot.errors import InvalidInput
from vroot.pca._crl import VerifiedCrl, check_not_revoked
from vroot.pca._issue import check_agent_id, check_digital_signature, leaf_builder, sign, subject_agent_id
from vroot.pki import CertificateAuthority, verify_certificate_chain
from vroot.pki._x509 import describe, load_certificate

__all__ = [
    "VerifiedClientCertificate",
    "issue_client_certificate",
    "issue_server_certificate",
    "verify_client_certificate",
]

MAX_SERVER_NAMES = 32


def issue_client_certificate(
    *,
    ops_ca: CertificateAuthority,
    agent_id: str,
    public_key: Any,
    now: datetime,
    serial: int,
    validity_days: int = 365,
) -> x509.Certificate:
    """A mutual-TLS client certificate for agent `agent_id`'s key `public_key` (RSA ≥ 2048 or ECC
    P-256/384/521, a `cryptography` public key). Caller must: issue it only to an agent whose
    enrollment completed (`complete_enrollment`), and revoke it with the agent."""
    builder = leaf_builder(
        ops_ca,
        common_name=check_agent_id(agent_id),
        public_key=public_key,
        now=now,
        serial=serial,
        validity_days=validity_days,
        what="client key",
    )
    builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return sign(builder, ops_ca)


def _server_names(names: Sequence[str]) -> list[x509.GeneralName]:
    if isinstance(names, str) or not 0 < len(names) <= MAX_SERVER_NAMES:
        raise InvalidInput(f"give 1-{MAX_SERVER_NAMES} server names (DNS names or IP addresses)")
    out: list[x509.GeneralName] = []
    for name in names:
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"server name {name!r} is not a non-empty string")
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if len(name) > 253 or not all(0 < len(p) <= 63 for p in name.split(".")):
                raise InvalidInput(f"server name {name!r} is not a DNS name") from None
            try:
                out.append(x509.DNSName(name.encode("idna").decode("ascii")))
            except UnicodeError:
                raise InvalidInput(f"server name {name!r} is not a DNS name") from None
    return out


def issue_server_certificate(
    *,
    ops_ca: CertificateAuthority,
    names: Sequence[str],
    public_key: Any,
    now: datetime,
    serial: int,
    validity_days: int = 365,
) -> x509.Certificate:
    """The server's TLS certificate: subjectAltName with `names` (DNS names and IP addresses, e.g.
    `["ra.example", "127.0.0.1"]`), extendedKeyUsage serverAuth, signed by the operations CA."""
    sans = _server_names(names)
    builder = leaf_builder(
        ops_ca,
        common_name=names[0][:64],
        public_key=public_key,
        now=now,
        serial=serial,
        validity_days=validity_days,
        what="server key",
    )
    builder = builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
    ).add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return sign(builder, ops_ca)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedClientCertificate:
    """A client certificate that verified under the operations CA.

    Proves: the operations CA issued it to agent `agent_id` for TLS client authentication, valid at
    the time checked, and not on the CRL when one was given (`revocation_checked`). Does not prove:
    that the peer holds the key (the TLS handshake does), or anything about its platform.
    """

    agent_id: str
    serial: int
    not_after: datetime
    revocation_checked: bool
    certificate: x509.Certificate


def verify_client_certificate(
    cert: x509.Certificate | bytes,
    *,
    ops_certificate: x509.Certificate,
    now: datetime,
    crl: VerifiedCrl | x509.CertificateRevocationList | bytes | None = None,
) -> VerifiedClientCertificate:
    """Verify an agent's TLS client certificate: chain to `ops_certificate` with extendedKeyUsage
    clientAuth, keyUsage digitalSignature, one well-formed agent id as subject CN (`CertificateInvalid`
    for each); with `crl`, not revoked (`Revoked`)."""
    c = load_certificate(cert, "client certificate")
    what = f"client certificate {describe(c)}"
    verify_certificate_chain(
        c, trust_anchors=[ops_certificate], now=now, required_eku=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    check_digital_signature(c, what)
    agent_id = subject_agent_id(c, what)
    if crl is not None:
        check_not_revoked(c, crl=crl, issuer=ops_certificate, now=now)
    return VerifiedClientCertificate(
        agent_id=agent_id,
        serial=c.serial_number,
        not_after=c.not_valid_after_utc,
        revocation_checked=crl is not None,
        certificate=c,
    )
