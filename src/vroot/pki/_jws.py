"""JWS compact serialization with ES256 (RFC 7515, RFC 7518 section 3.4): the one signing format
of vroot's signed JSON documents (attestation results, the migration controller's tasks).

    token = sign_es256({"sub": "x"}, key=p256_private_key, typ="JWT")
    claims = verify_es256(token, public_key=p256_public_key, what="EAR token")

`verify_es256` proves only that the holder of the key signed these claims: the caller must check
what the claims say (audience, expiry, subject). Fails closed: `SignatureInvalid` for a wrong
algorithm, key id, length or signature; `InvalidInput` for text that is not a JWS of JSON objects.
Pure: keys come in.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from vroot.errors import InvalidInput, SignatureInvalid

__all__ = ["MAX_TOKEN", "b64url", "jws_key_id", "sign_es256", "unb64url", "verify_es256"]

MAX_TOKEN = 64 * 1024


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str, what: str) -> bytes:
    """The bytes of unpadded base64url `text`; `InvalidInput` naming `what` otherwise."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise InvalidInput(f"{what} is not base64url") from None


def jws_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """A stable key id: SHA-256 of the SubjectPublicKeyInfo, base64url."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return b64url(hashlib.sha256(spki).digest())


def _check_key(key: object, what: str) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InvalidInput(f"{what} must be an ECDSA P-256 key")


def sign_es256(claims: Mapping[str, Any], *, key: ec.EllipticCurvePrivateKey, typ: str = "JWT") -> str:
    """`claims` (sorted keys, no spaces) signed with `key`; the header names the key by `jws_key_id`."""
    _check_key(key, "the signing key")
    header = {"alg": "ES256", "typ": typ, "kid": jws_key_id(key.public_key())}
    signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + b64url(
        json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    )
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def verify_es256(
    token: object, *, public_key: ec.EllipticCurvePublicKey, what: str, typ: str | None = None
) -> dict[str, Any]:
    """The claims of `token` after its ES256 signature verified under `public_key` (and, when
    given, its header's `typ` is `typ`). A header naming another key id is refused before the
    signature is checked."""
    _check_key(public_key, "the verification key")
    if not isinstance(token, str) or len(token) > MAX_TOKEN or token.count(".") != 2:
        raise InvalidInput(f"{what}: not a JWS compact serialization")
    head_b64, body_b64, sig_b64 = token.split(".")
    try:
        header = json.loads(unb64url(head_b64, f"{what}: the header"))
        claims = json.loads(unb64url(body_b64, f"{what}: the payload"))
    except (ValueError, RecursionError):
        raise InvalidInput(f"{what}: header or payload is not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidInput(f"{what}: header and payload must be JSON objects")
    if header.get("alg") != "ES256":
        raise SignatureInvalid(f"{what}: algorithm {header.get('alg')!r}, want ES256")
    if header.get("kid") not in (None, jws_key_id(public_key)):
        raise SignatureInvalid(f"{what}: signed by another key (kid)")
    if typ is not None and header.get("typ") != typ:
        raise SignatureInvalid(f"{what}: type {header.get('typ')!r}, want {typ!r}")
    raw = unb64url(sig_b64, f"{what}: the signature")
    if len(raw) != 64:
        raise SignatureInvalid(f"{what}: an ES256 signature is 64 bytes")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public_key.verify(der, f"{head_b64}.{body_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureInvalid(f"{what}: the signature does not verify") from None
    return claims
