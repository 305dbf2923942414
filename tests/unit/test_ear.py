"""Signed attestation results (EAR in a JWT, AR4SI vector): RA-6, and every check failing."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from vroot.attestation.ear import Tier, ear_claims, sign_ear, status_of, verify_ear
from vroot.errors import InvalidInput, SignatureInvalid, VerificationError

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KEY = ec.derive_private_key(0x5EED, ec.SECP256R1())
OTHER = ec.derive_private_key(0xBAD, ec.SECP256R1())
GOOD = {"hardware": Tier.AFFIRMING, "executables": Tier.AFFIRMING, "configuration": Tier.AFFIRMING}


def _token(vector=GOOD, now=NOW, key=KEY) -> str:  # noqa: ANN001
    claims = ear_claims(subject="vm:1", vector=vector, nonce=b"n" * 16, policy_id="default/1", now=now,
                        verifier_build="vroot test")  # fmt: skip
    return sign_ear(claims, key=key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_round_trip_and_status():
    verified = verify_ear(_token(), public_key=KEY.public_key(), now=NOW, max_age=60)
    assert verified.subject == "vm:1" and verified.status == "affirming"
    assert verified.vector == GOOD
    assert verified.claims["eat_nonce"] == _b64(b"n" * 16)
    bad = verify_ear(
        _token({**GOOD, "executables": Tier.CONTRAINDICATED}), public_key=KEY.public_key(), now=NOW
    )
    assert bad.status == "contraindicated"
    assert status_of({}) == "none" and status_of({"hardware": 32}) == "warning"


def test_tampered_payload_fails():
    head, body, sig = _token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["submods"]["vm:1"]["ear.status"] = "affirming"
    claims["submods"]["vm:1"]["ear.trustworthiness-vector"]["executables"] = 2
    forged = f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify_ear(forged, public_key=KEY.public_key(), now=NOW)


def test_other_key_fails():
    with pytest.raises(SignatureInvalid, match="another key"):
        verify_ear(_token(key=OTHER), public_key=KEY.public_key(), now=NOW)


def test_alg_none_is_refused():
    _, body, _ = _token().split(".")
    none = f"{_b64(json.dumps({'alg': 'none'}).encode())}.{body}."
    with pytest.raises(SignatureInvalid, match="ES256"):
        verify_ear(none, public_key=KEY.public_key(), now=NOW)


def test_too_old_and_future_results_fail():
    with pytest.raises(VerificationError, match="old"):
        verify_ear(_token(), public_key=KEY.public_key(), now=NOW + timedelta(seconds=301), max_age=300)
    with pytest.raises(VerificationError, match="future"):
        verify_ear(_token(now=NOW + timedelta(hours=1)), public_key=KEY.public_key(), now=NOW)


def test_status_must_follow_the_vector():
    claims = ear_claims(subject="vm:1", vector=GOOD, nonce=b"", policy_id="p", now=NOW, verifier_build="t")
    claims["submods"]["vm:1"]["ear.status"] = "affirming"
    claims["submods"]["vm:1"]["ear.trustworthiness-vector"]["executables"] = Tier.CONTRAINDICATED
    with pytest.raises(VerificationError, match="status does not follow"):
        verify_ear(sign_ear(claims, key=KEY), public_key=KEY.public_key(), now=NOW)


def test_bad_vectors_are_refused():
    with pytest.raises(InvalidInput, match="unknown AR4SI"):
        ear_claims(subject="x", vector={"mood": 2}, nonce=b"", policy_id="p", now=NOW, verifier_build="t")
    with pytest.raises(InvalidInput, match="tiers"):
        ear_claims(subject="x", vector={"hardware": 3}, nonce=b"", policy_id="p", now=NOW, verifier_build="t")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_tokens_never_verify(text):
    with pytest.raises((InvalidInput, VerificationError)):
        verify_ear(text, public_key=KEY.public_key(), now=NOW)
