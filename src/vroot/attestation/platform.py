"""Attesting the attestation server's own platform (MC-S2): the server runs on a host with its own
TM and publishes that host's evidence, bound to the TLS certificate it serves, so hosts and
operators can check the controller's platform the way the server checks theirs.

    qd = platform_qualifying_data(nonce, tls_certificate_der)     # what the platform's AK quotes over
    verified = verify_platform_evidence(evidence, ek_public=..., nonce=n, tls_certificate_der=der,
                                        manufacturer_cas=[ca], now=now)

`verify_platform_evidence` proves: the EK certificate chains to one of the caller's manufacturer
CAs and certifies `ek_public`; the quote and logs verify (`verify_host_evidence`) over this nonce
AND this TLS certificate. It does not prove the AK shares a TM with that EK: the caller must also
run a credential activation against `ek_public` for the AK's name (`vroot attest server` does),
and then appraise the verified logs against a baseline it trusts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509

from vroot.attestation.host import UnverifiedHostEvidence, VerifiedHostEvidence, verify_host_evidence
from vroot.errors import InvalidInput
from vroot.pki import verify_ek_certificate
from vroot.tpm2 import PublicArea

__all__ = ["PLATFORM_CONTEXT", "platform_qualifying_data", "verify_platform_evidence"]

PLATFORM_CONTEXT = b"vroot server platform evidence v1\x00"


def platform_qualifying_data(nonce: bytes, tls_certificate_der: bytes) -> bytes:
    """SHA-256(context ‖ nonce ‖ SHA-256(TLS certificate)): a quote over this was asked for this
    challenge by the holder of that TLS identity."""
    if not 16 <= len(nonce) <= 64:
        raise InvalidInput(f"the nonce must be 16-64 bytes, got {len(nonce)}")
    return hashlib.sha256(PLATFORM_CONTEXT + nonce + hashlib.sha256(tls_certificate_der).digest()).digest()


def verify_platform_evidence(
    evidence: UnverifiedHostEvidence,
    *,
    ek_public: PublicArea,
    nonce: bytes,
    tls_certificate_der: bytes,
    manufacturer_cas: Sequence[x509.Certificate],
    now: datetime,
) -> VerifiedHostEvidence:
    """The server platform's evidence, verified as the module docstring says (fails closed)."""
    verify_ek_certificate(evidence.ek_certificate, trust_anchors=list(manufacturer_cas), ek_public=ek_public, now=now)
    return verify_host_evidence(evidence, qualifying_data=platform_qualifying_data(nonce, tls_certificate_der))
