"""X.509 path validation for TM certificates (EK, AK, vTM-manager chains): RFC 5280 section 6, the
parts a TPM PKI uses, nothing more.

Path building: from the leaf, an issuer is any given certificate whose subject equals the issuer
name (and whose subjectKeyIdentifier equals the authorityKeyIdentifier, when both are there) and
whose key verifies the signature; anchors are tried before intermediates; depth and work are bounded.
Each complete path is then checked, and the first that passes is returned:

- every certificate (anchor included) is valid at `now`; no unknown critical extension;
- signatures use SHA-256/384/512 (RSA PKCS#1 v1.5, RSA-PSS or ECDSA);
- every issuer has basicConstraints CA:TRUE, keyUsage (if present) with keyCertSign, and its
  pathLenConstraint (if any) covers the intermediates below it;
- the leaf is not a CA;
- with `required_eku`, the leaf's extendedKeyUsage contains it, and every CA that has an
  extendedKeyUsage lists it too (or anyExtendedKeyUsage): "EKU nesting", as TPM vendor CAs expect.

Does not check: revocation (CRLs, OCSP), name constraints, policy constraints. Caller must: choose
the trust anchors, and check what the leaf certifies (see `verify_ek_certificate`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from vroot.errors import CertificateInvalid, InvalidInput
from vroot.pki._x509 import (
    check_critical,
    check_now,
    check_signature_hash,
    check_validity,
    describe,
    extension,
    load_certificate,
)

MAX_DEPTH = 8  # certificates in a path, leaf and anchor included
MAX_CANDIDATES = 64  # anchors + intermediates
MAX_SIGNATURE_CHECKS = 256


def _key_id(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    ext = extension(cert, oid, f"certificate {describe(cert)}")
    if ext is None:
        return None
    return ext.value.key_identifier if oid == ExtensionOID.AUTHORITY_KEY_IDENTIFIER else ext.value.digest


class _Builder:
    def __init__(self, anchors: list[x509.Certificate], intermediates: list[x509.Certificate]) -> None:
        self.anchors = anchors
        self.intermediates = intermediates
        self.checks = 0
        self.first_error: str | None = None

    def _note(self, reason: str) -> None:
        if self.first_error is None:
            self.first_error = reason

    def _issuers(self, cert: x509.Certificate) -> Iterator[tuple[x509.Certificate, bool]]:
        aki = _key_id(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
        found = False
        for candidate, is_anchor in [(a, True) for a in self.anchors] + [
            (i, False) for i in self.intermediates
        ]:
            if candidate.subject != cert.issuer:
                continue
            ski = _key_id(candidate, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
            if aki is not None and ski is not None and aki != ski:
                continue
            found = True
            if self.checks >= MAX_SIGNATURE_CHECKS:
                self._note("path building gave up: too many candidate issuers")
                return
            self.checks += 1
            what = f"certificate {describe(cert)}"
            try:
                check_signature_hash(cert, what)
                cert.verify_directly_issued_by(candidate)
            except CertificateInvalid as exc:
                self._note(str(exc))
                continue
            except (InvalidSignature, ValueError, TypeError):
                self._note(f"{what}: signature does not verify under issuer {describe(candidate)}")
                continue
            yield candidate, is_anchor
        if not found:
            self._note(
                f"certificate {describe(cert)}: no issuer '{cert.issuer.rfc4514_string()}' among the given certificates"
            )

    def paths(self, path: list[x509.Certificate]) -> Iterator[list[x509.Certificate]]:
        if len(path) >= MAX_DEPTH:
            self._note(f"no path of at most {MAX_DEPTH} certificates to a trust anchor")
            return
        for issuer, is_anchor in self._issuers(path[-1]):
            if issuer in path and not is_anchor:
                continue  # a loop among intermediates
            if is_anchor:
                yield [*path, issuer]
            else:
                yield from self.paths([*path, issuer])


def _check_path(
    path: list[x509.Certificate], now: datetime, required_eku: x509.ObjectIdentifier | None
) -> None:
    leaf = path[0]
    for cert in path:
        what = f"certificate {describe(cert)}"
        check_validity(cert, now, what)
        check_critical(cert, what)
    leaf_bc = extension(leaf, ExtensionOID.BASIC_CONSTRAINTS, "leaf certificate")
    if leaf_bc is not None and leaf_bc.value.ca:
        raise CertificateInvalid(f"leaf certificate {describe(leaf)} is a CA (basicConstraints CA:TRUE)")
    if required_eku is not None:
        eku = extension(leaf, ExtensionOID.EXTENDED_KEY_USAGE, "leaf certificate")
        if eku is None or required_eku not in eku.value:
            raise CertificateInvalid(
                f"leaf certificate {describe(leaf)} lacks extendedKeyUsage {required_eku.dotted_string}"
            )
    below = 0  # non-self-issued intermediates between this issuer and the leaf
    for depth, cert in enumerate(path[1:], start=1):
        what = f"issuer {describe(cert)}"
        bc = extension(cert, ExtensionOID.BASIC_CONSTRAINTS, what)
        if bc is None or not bc.value.ca:
            raise CertificateInvalid(f"{what} is not a CA (no basicConstraints CA:TRUE)")
        if bc.value.path_length is not None and below > bc.value.path_length:
            raise CertificateInvalid(
                f"{what}: pathLenConstraint {bc.value.path_length} allows fewer than the {below} CAs below it"
            )
        ku = extension(cert, ExtensionOID.KEY_USAGE, what)
        if ku is not None and not ku.value.key_cert_sign:
            raise CertificateInvalid(f"{what}: keyUsage lacks keyCertSign")
        if required_eku is not None:
            eku = extension(cert, ExtensionOID.EXTENDED_KEY_USAGE, what)
            if eku is not None and not (
                required_eku in eku.value or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku.value
            ):
                raise CertificateInvalid(f"{what}: extendedKeyUsage excludes {required_eku.dotted_string}")
        if depth < len(path) - 1 and cert.subject != cert.issuer:
            below += 1


def verify_certificate_chain(
    cert: x509.Certificate | bytes,
    *,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    now: datetime,
    required_eku: x509.ObjectIdentifier | None,
) -> tuple[x509.Certificate, ...]:
    """The validated path (leaf first, trust anchor last) from `cert` to one of `trust_anchors`.

    Proves: each certificate of the path was signed by the next, all are valid at `now`, the CA
    and EKU constraints above hold. Does not prove: that the certificates are not revoked.
    Raises `CertificateInvalid` with the reason of the first path that failed (or why none was
    found); `InvalidInput` for bytes that are not a certificate or a bad argument.
    """
    leaf = load_certificate(cert, "certificate")
    check_now(now)
    anchors = [load_certificate(a, "trust anchor") for a in trust_anchors]
    inter = [load_certificate(i, "intermediate") for i in intermediates]
    if not anchors:
        raise InvalidInput("no trust anchors given")
    if len(anchors) + len(inter) > MAX_CANDIDATES:
        raise InvalidInput(f"more than {MAX_CANDIDATES} anchors and intermediates")
    if leaf in anchors:
        raise CertificateInvalid(f"certificate {describe(leaf)} is itself a trust anchor, not a leaf")
    builder = _Builder(anchors, inter)
    error: CertificateInvalid | None = None
    for path in builder.paths([leaf]):
        try:
            _check_path(path, now, required_eku)
        except CertificateInvalid as exc:
            error = error or exc
            continue
        return tuple(path)
    if error is not None:
        raise error
    raise CertificateInvalid(
        builder.first_error or f"certificate {describe(leaf)}: no path to a trust anchor"
    )
