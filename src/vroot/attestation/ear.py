"""Signed attestation results: EAR (IETF draft-fv-rats-ear) claims in a JWT, with an AR4SI vector.

    claims = ear_claims(subject="vm:6f1c…", status=..., vector=vector, nonce=n, policy_id="group/v3",
                        now=now, verifier_build="vroot 0.1.0")
    token = sign_ear(claims, key=result_signing_key)             # JWS compact, ES256
    verified = verify_ear(token, public_key=pub, now=now, max_age=300)

A relying party checks a token offline with the server's result-signing public key. The
trustworthiness vector follows AR4SI (draft-ietf-rats-ar4si): each claim holds a tier value,
0 (no claim), 2 (affirming), 32 (warning) or 96 (contraindicated); the submodule's `ear.status`
is the worst tier present. Pure: time, keys and nonces are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from vroot.errors import InvalidInput, VerificationError
from vroot.pki._jws import b64url, jws_key_id, sign_es256, verify_es256

__all__ = [
    "AR4SI_CLAIMS",
    "EAR_PROFILE",
    "Tier",
    "VerifiedEar",
    "ear_claims",
    "key_id",
    "sign_ear",
    "status_of",
    "verify_ear",
]

EAR_PROFILE = "tag:github.com,2023:veraison/ear"
AR4SI_CLAIMS = (
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
)


class Tier:
    """AR4SI tier values (the numeric claim values; the names are EAR statuses)."""

    NONE = 0
    AFFIRMING = 2
    WARNING = 32
    CONTRAINDICATED = 96
    NAMES = {0: "none", 2: "affirming", 32: "warning", 96: "contraindicated"}


def status_of(vector: Mapping[str, int]) -> str:
    """The EAR status of a vector: the worst tier present ("none" if every claim is 0)."""
    worst = max((v for v in vector.values()), default=Tier.NONE)
    return Tier.NAMES[worst if worst in Tier.NAMES else Tier.CONTRAINDICATED]


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """A stable id for the result-signing key: SHA-256 of its SubjectPublicKeyInfo, base64url."""
    return jws_key_id(public_key)


def ear_claims(
    *,
    subject: str,
    vector: Mapping[str, int],
    nonce: bytes,
    policy_id: str,
    now: datetime,
    verifier_build: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The EAR claims set for one attested `subject` (one submodule named after it)."""
    unknown = set(vector) - set(AR4SI_CLAIMS)
    if unknown:
        raise InvalidInput(f"unknown AR4SI claims {sorted(unknown)}")
    bad = {k: v for k, v in vector.items() if v not in Tier.NAMES}
    if bad:
        raise InvalidInput(f"AR4SI claim values must be tiers {sorted(Tier.NAMES)}: {bad}")
    submodule: dict[str, Any] = {
        "ear.status": status_of(vector),
        "ear.trustworthiness-vector": {k: vector[k] for k in AR4SI_CLAIMS if vector.get(k)},
        "ear.appraisal-policy-id": policy_id,
    }
    if extra:
        submodule.update({f"vroot.{k}": v for k, v in extra.items()})
    return {
        "eat_profile": EAR_PROFILE,
        "iat": int(now.timestamp()),
        "eat_nonce": b64url(nonce),
        "ear.verifier-id": {"developer": "vroot", "build": verifier_build},
        "submods": {subject: submodule},
    }


def sign_ear(claims: Mapping[str, Any], *, key: ec.EllipticCurvePrivateKey) -> str:
    """JWS compact serialization of `claims`, ES256 over P-256 (RFC 7515, RFC 7518 3.4)."""
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidInput("the result-signing key must be an ECDSA P-256 private key")
    return sign_es256(claims, key=key, typ="JWT")


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedEar:
    """An EAR whose signature verified under the expected key and whose time is acceptable.

    Proves: the holder of the result-signing key issued `claims` at `issued_at`. Does not prove
    anything about the attester beyond what the claims say; the relying party must check that the
    subject and nonce are the ones it asked about.
    """

    claims: Mapping[str, Any]
    issued_at: int
    subject: str
    status: str
    vector: Mapping[str, int]


def verify_ear(
    token: str, *, public_key: ec.EllipticCurvePublicKey, now: datetime, max_age: int | None = None
) -> VerifiedEar:
    """Verify a signed EAR; fails closed (`SignatureInvalid`, `VerificationError`, `InvalidInput`)."""
    claims = verify_es256(token, public_key=public_key, what="EAR token")
    if not isinstance(claims, dict) or claims.get("eat_profile") != EAR_PROFILE:
        raise VerificationError("EAR token: not an EAR (eat_profile)")
    iat = claims.get("iat")
    if not isinstance(iat, int):
        raise VerificationError("EAR token: no issue time")
    current = int(now.timestamp())
    if iat > current + 60:
        raise VerificationError(f"EAR token issued in the future ({iat - current} s ahead)")
    if max_age is not None and current - iat > max_age:
        raise VerificationError(f"EAR token is {current - iat} s old (at most {max_age})")
    submods = claims.get("submods")
    if not isinstance(submods, dict) or len(submods) != 1:
        raise VerificationError("EAR token: expected exactly one submodule")
    ((subject, submodule),) = submods.items()
    vector = submodule.get("ear.trustworthiness-vector", {}) if isinstance(submodule, dict) else None
    if not isinstance(vector, dict) or submodule.get("ear.status") != status_of(vector):
        raise VerificationError("EAR token: status does not follow from the trustworthiness vector")
    return VerifiedEar(
        claims=claims, issued_at=iat, subject=subject, status=submodule["ear.status"], vector=vector
    )
