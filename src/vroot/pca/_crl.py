"""Revocation (RA-1; DESIGN.md section 5: "AK certificate chain and revocation"): X.509 CRLs
(RFC 5280 section 5) issued by the PCA or the operations CA, and the check a verifier makes.

    crl = build_crl(ca=pca, revoked=[(serial, revoked_at, x509.ReasonFlags.key_compromise)],
                    now=now, next_update=now + timedelta(hours=1))
    check_not_revoked(ak_cert, crl=crl, issuer=pca.certificate, now=now)      # or, for many checks:
    verified = verify_crl(crl, issuer=pca.certificate, now=now)
    verified.check_not_revoked(ak_cert, now=now)

Fail closed: a CRL that does not decode, is signed by another key, names another issuer, uses a
weak hash, has an unknown critical extension or critical entry extension (e.g. an indirect CRL),
is not yet valid, or whose nextUpdate has passed (stale) raises; it never reads as "nothing
revoked". The server rebuilds its CRL when the operator revokes, so the next verdict sees it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID

from vroot.errors import CertificateInvalid, InvalidInput, Revoked
from vroot.pki import CertificateAuthority
from vroot.pki._ek import check_serial
from vroot.pki._x509 import ALLOWED_SIGNATURE_HASHES, check_now, describe, extension, load_certificate

__all__ = ["MAX_CRL_BYTES", "RevokedEntry", "VerifiedCrl", "build_crl", "check_not_revoked", "verify_crl"]

MAX_CRL_BYTES = 16 * 1024 * 1024
MAX_CRL_VALIDITY_DAYS = 366


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokedEntry:
    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags | None


def _reason(value: Any) -> x509.ReasonFlags | None:
    """A reason as `x509.ReasonFlags`, its name (`key_compromise`) or its RFC 5280 value (`keyCompromise`)."""
    if value is None or isinstance(value, x509.ReasonFlags):
        return value
    if isinstance(value, str) and value in x509.ReasonFlags.__members__:
        return x509.ReasonFlags[value]
    try:
        return x509.ReasonFlags(value)
    except ValueError:
        raise InvalidInput(f"unknown revocation reason {value!r}") from None


def build_crl(
    *,
    ca: CertificateAuthority,
    revoked: Iterable[tuple[int, datetime, x509.ReasonFlags | str | None]],
    now: datetime,
    next_update: datetime,
    crl_number: int | None = None,
) -> x509.CertificateRevocationList:
    """A CRL signed by `ca` listing `revoked` (serial, revocation time, reason or None).

    thisUpdate is `now`; `crl_number` (RFC 5280 5.2.3, must grow with each CRL) defaults to the
    milliseconds of `now` since the epoch. `InvalidInput` for a duplicate serial, a revocation
    time after `now`, or `next_update` not after `now`.
    """
    if not isinstance(ca, CertificateAuthority):
        raise InvalidInput(f"ca: expected a CertificateAuthority, got {type(ca).__name__}")
    check_now(now)
    check_now(next_update)
    if next_update <= now:
        raise InvalidInput("next_update must come after now")
    if (next_update - now).days > MAX_CRL_VALIDITY_DAYS:
        raise InvalidInput(f"next_update more than {MAX_CRL_VALIDITY_DAYS} days ahead")
    number = int(now.timestamp() * 1000) if crl_number is None else crl_number
    if not isinstance(number, int) or number < 0 or number.bit_length() > 159:
        raise InvalidInput("crl_number must be a non-negative integer of at most 20 octets")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.name)
        .last_update(now)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()), critical=False
        )
    )
    seen: set[int] = set()
    for item in revoked:
        try:
            serial, revoked_at, reason = item
        except (TypeError, ValueError):
            raise InvalidInput("each revoked entry is (serial, revoked_at, reason)") from None
        check_serial(serial)
        check_now(revoked_at)
        if serial in seen:
            raise InvalidInput(f"serial 0x{serial:x} listed twice")
        if revoked_at > now:
            raise InvalidInput(f"serial 0x{serial:x}: revocation time {revoked_at.isoformat()} is after now")
        seen.add(serial)
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(revoked_at)
        reason = _reason(reason)
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    try:
        return builder.sign(ca.private_key, hashes.SHA256())
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot build the CRL: {exc}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedCrl:
    """A CRL whose signature, issuer, extensions and validity checked out.

    Proves: the holder of `issuer`'s key listed `entries` as revoked as of `this_update`, and the
    list was still current when verified. Does not prove: anything after `next_update` (then
    `check_not_revoked` refuses), nor about certificates of another issuer (refused too).
    """

    issuer: x509.Certificate
    number: int | None
    this_update: datetime
    next_update: datetime
    entries: MappingProxyType[int, RevokedEntry]

    def check_not_revoked(self, cert: x509.Certificate | bytes, *, now: datetime) -> None:
        """Raise `Revoked` if `cert`'s serial is listed; `CertificateInvalid` if this CRL cannot speak
        for `cert` (another issuer) or is no longer current at `now`."""
        c = load_certificate(cert, "certificate")
        check_now(now)
        if c.issuer != self.issuer.subject:
            raise CertificateInvalid(
                f"certificate {describe(c)} was issued by '{c.issuer.rfc4514_string()}', "
                f"not by the CRL's issuer {describe(self.issuer)}"
            )
        _check_current(self.this_update, self.next_update, now)
        entry = self.entries.get(c.serial_number)
        if entry is not None:
            why = f" ({entry.reason.value})" if entry.reason is not None else ""
            raise Revoked(
                f"certificate {describe(c)} serial 0x{c.serial_number:x} was revoked at "
                f"{entry.revoked_at.isoformat()}{why}"
            )


def _check_current(this_update: datetime, next_update: datetime, now: datetime) -> None:
    if now < this_update:
        raise CertificateInvalid(f"CRL is not yet valid at {now.isoformat()} (issued {this_update.isoformat()})")
    if now > next_update:
        raise CertificateInvalid(
            f"CRL is stale: its next update was due at {next_update.isoformat()} (checked at {now.isoformat()})"
        )


def _load_crl(crl: x509.CertificateRevocationList | bytes) -> x509.CertificateRevocationList:
    if isinstance(crl, x509.CertificateRevocationList):
        return crl
    if not isinstance(crl, bytes | bytearray | memoryview):
        raise InvalidInput(f"CRL: expected a CRL or DER bytes, got {type(crl).__name__}")
    data = bytes(crl)
    if len(data) > MAX_CRL_BYTES:
        raise InvalidInput(f"CRL: {len(data)} bytes, more than {MAX_CRL_BYTES}")
    try:
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise InvalidInput(f"CRL: not a DER X.509 CRL ({exc})") from None


def verify_crl(
    crl: x509.CertificateRevocationList | bytes, *, issuer: x509.Certificate, now: datetime
) -> VerifiedCrl:
    """Verify a CRL against its issuing CA certificate. Each failure is a `CertificateInvalid` with its
    reason; bytes that are not a CRL raise `InvalidInput`."""
    c = _load_crl(crl)
    ca = load_certificate(issuer, "CRL issuer")
    check_now(now)
    if c.issuer != ca.subject:
        raise CertificateInvalid(f"CRL issued by '{c.issuer.rfc4514_string()}', not by {describe(ca)}")
    try:
        h = c.signature_hash_algorithm
    except UnsupportedAlgorithm:  # an unknown algorithm fails closed
        raise CertificateInvalid("CRL: unsupported signature algorithm") from None
    if not isinstance(h, ALLOWED_SIGNATURE_HASHES):
        raise CertificateInvalid(f"CRL: signature hash {getattr(h, 'name', 'none')} is not allowed")
    ku = extension(ca, ExtensionOID.KEY_USAGE, "CRL issuer")
    if ku is not None and not ku.value.crl_sign:
        raise CertificateInvalid(f"CRL issuer {describe(ca)}: keyUsage lacks cRLSign")
    try:
        valid = c.is_signature_valid(ca.public_key())
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise CertificateInvalid(f"CRL signature does not verify under {describe(ca)}")
    try:
        extensions = c.extensions
        entries = list(c)
        entry_extensions = [(e, e.extensions) for e in entries]
    except ValueError as exc:
        raise CertificateInvalid(f"CRL: unreadable extensions ({exc})") from None
    for ext in extensions:
        if ext.critical:
            raise CertificateInvalid(f"CRL: unknown critical extension {ext.oid.dotted_string}")
    number_ext = next((e for e in extensions if e.oid == ExtensionOID.CRL_NUMBER), None)
    this_update, next_update = c.last_update_utc, c.next_update_utc
    if next_update is None:
        raise CertificateInvalid("CRL has no nextUpdate: its freshness cannot be judged")
    _check_current(this_update, next_update, now)
    table: dict[int, RevokedEntry] = {}
    for entry, exts in entry_extensions:
        reason = None
        for ext in exts:
            if ext.critical:
                raise CertificateInvalid(
                    f"CRL entry 0x{entry.serial_number:x}: critical extension {ext.oid.dotted_string}"
                )
            if ext.oid == x509.CRLReason.oid:
                reason = ext.value.reason
        table[entry.serial_number] = RevokedEntry(
            serial=entry.serial_number, revoked_at=entry.revocation_date_utc, reason=reason
        )
    return VerifiedCrl(
        issuer=ca,
        number=None if number_ext is None else number_ext.value.crl_number,
        this_update=this_update,
        next_update=next_update,
        entries=MappingProxyType(table),
    )


def check_not_revoked(
    cert: x509.Certificate | bytes,
    *,
    crl: VerifiedCrl | x509.CertificateRevocationList | bytes,
    issuer: x509.Certificate | None = None,
    now: datetime,
) -> None:
    """Raise `Revoked` if `crl` lists `cert`; verify `crl` under `issuer` first unless it is already a
    `VerifiedCrl` (`CertificateInvalid` for a bad or stale CRL, or one of another issuer)."""
    if isinstance(crl, VerifiedCrl):
        verified = crl
        if issuer is not None and load_certificate(issuer, "CRL issuer") != crl.issuer:
            raise CertificateInvalid("the verified CRL belongs to another issuer than the one given")
    else:
        if issuer is None:
            raise InvalidInput("an unverified CRL needs its issuer certificate to be checked")
        verified = verify_crl(crl, issuer=issuer, now=now)
    verified.check_not_revoked(cert, now=now)
