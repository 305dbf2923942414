"""Who is calling: operators by bearer token, agents by their TLS client certificate.

Operators present `Authorization: Bearer <token>`; the server keeps only SHA-256 of the token
(`operator_token_sha256`) and compares digests in constant time. Agents present the client
certificate the operations CA issued at enrollment; the TLS layer has already checked its chain
(`CERT_OPTIONAL` against the operations CA), and `AgentAuthenticator` checks, on every request,
against the store (so a revocation takes effect at the next request, on every replica):

    the certificate verifies under the operations CA for clientAuth, with one agent id as its CN;
    its serial is not in `store.revocations`;
    its serial is the client serial of an agent, that agent is active, and it is the agent named
    in the request path (and in the certificate).

The certificate's verification (decoding, chain, clientAuth, CN) is done once per certificate and
reused while it and the operations CA are valid (`_certcache`); the store checks run every time.

Proves: the peer holds the key of a certificate the operations CA issued to that active agent.
Does not prove: anything about the agent's platform (attest it).

Two narrow subclasses of `VerificationError` live here because the error tree has no class for
"who are you" (401) versus "not you" (403) yet: `Unauthenticated` and `Forbidden`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from datetime import datetime

from cryptography import x509

from vroot.errors import CertificateInvalid, InvalidInput, Revoked, VerificationError
from vroot.pca import VerifiedClientCertificate, verify_client_certificate
from vroot.server._certcache import VerifiedCache, validity_window
from vroot.store import AgentRecord, AgentState, Store

__all__ = [
    "TOKEN_BYTES",
    "AgentAuthenticator",
    "Forbidden",
    "Unauthenticated",
    "check_operator_token",
    "new_operator_token",
    "token_digest",
]

TOKEN_BYTES = 32
MAX_TOKEN_LENGTH = 256


class Unauthenticated(VerificationError):
    """No credentials, or credentials that do not check out (HTTP 401)."""


class Forbidden(VerificationError):
    """Known credentials that may not do this (HTTP 403): another agent's path, an inactive agent."""


def new_operator_token(rng: Callable[[int], bytes]) -> str:
    """A fresh operator token: 32 bytes from `rng`, as 64 hex digits. Show it once; store its digest."""
    raw = rng(TOKEN_BYTES)
    if not isinstance(raw, bytes) or len(raw) != TOKEN_BYTES:
        raise InvalidInput(f"rng({TOKEN_BYTES}) must return {TOKEN_BYTES} bytes")
    return raw.hex()


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def check_operator_token(authorization: str | None, *, expected_sha256: bytes) -> None:
    """Raise `Unauthenticated` unless `authorization` is `Bearer <token>` with SHA-256(token) equal
    to `expected_sha256` (compared in constant time). Messages never repeat what was sent."""
    if not authorization:
        raise Unauthenticated("this endpoint needs the operator token (Authorization: Bearer <token>)")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
        raise Unauthenticated("Authorization must be 'Bearer <operator token>'")
    if not hmac.compare_digest(token_digest(token), expected_sha256):
        raise Unauthenticated("the operator token is not valid")


class AgentAuthenticator:
    """Checks an agent's TLS client certificate against the operations CA and the store."""

    def __init__(self, store: Store, *, ops_certificate: x509.Certificate, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._ops = ops_certificate
        self._clock = clock
        self._verified: VerifiedCache[VerifiedClientCertificate] = VerifiedCache()

    def _verify(self, pem: str, now: datetime) -> tuple[VerifiedClientCertificate, tuple[datetime, datetime]]:
        try:
            cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise Unauthenticated("the client certificate does not decode") from None
        try:
            verified = verify_client_certificate(cert, ops_certificate=self._ops, now=now)
        except (CertificateInvalid, InvalidInput) as exc:
            raise Unauthenticated(f"client certificate refused: {exc}") from exc
        return verified, validity_window(cert, self._ops)

    def authenticate(self, chain: Sequence[str], *, agent_id: str) -> AgentRecord:
        """The active agent `agent_id`, if `chain` (PEM, leaf first, as in the ASGI TLS extension)
        is its current client certificate. Raises Unauthenticated (no or unusable certificate),
        Revoked, Forbidden (not this agent's, or the agent is not active)."""
        if not chain:
            raise Unauthenticated("agent endpoints need the client certificate issued at enrollment")
        now = self._clock()
        verified = self._verified.get(chain[0], now, lambda: self._verify(chain[0], now))
        agent, revoked = self._store.agents.by_client_certificate(verified.serial)
        if revoked:
            raise Revoked(f"client certificate serial 0x{verified.serial:x} of {verified.agent_id} is revoked")
        if agent is None or agent.id != verified.agent_id:
            raise Forbidden(f"client certificate serial 0x{verified.serial:x} is not any agent's current one")
        if agent.state is not AgentState.ACTIVE:
            raise Forbidden(f"agent {agent.id} is {agent.state.value}, not active")
        if agent.id != agent_id:
            raise Forbidden(f"the client certificate is {agent.id}'s, not {agent_id}'s")
        return agent
