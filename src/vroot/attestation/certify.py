"""Verify a TPM2_Certify: one TPM object vouching, with its signing key, for another object's name.

vc = verify_certify(attest, sig, ak, qualifying_data=nonce, certified_name=key_area.name())
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from vroot.attestation._checks import (
    DEFAULT_ALLOWED_HASHES,
    check_hash,
    check_magic_and_type,
    check_restricted,
    check_signature,
    read_inputs,
    signing_key,
)
from vroot.errors import CertifiedNameMismatch, InvalidInput, NonceMismatch
from vroot.tpm2 import HashAlg
from vroot.tpm2._attest import CertifyInfo
from vroot.tpm2._constants import AttestType


@dataclass(frozen=True, slots=True)
class VerifiedCertify:
    """A certification whose checks all passed.

    Proves: a holder of the signing key signed that an object named `name` (qualified name
    `qualified_name`) was loaded in its TPM; with a PublicArea signer, that the signer is a restricted
    signing key, so the TPM made this statement. If `certified_name` was given, `name` equals it,
    so the object's public area (and attributes) are those whose name was expected.
    Does not prove: that the signer belongs to a genuine TPM; freshness beyond `extra_data`.
    """

    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    name: bytes
    qualified_name: bytes
    hash_alg: HashAlg


def verify_certify(
    attest: bytes | Any,
    signature: bytes | Any,
    signer: Any,
    *,
    qualifying_data: bytes,
    certified_name: bytes | None,
    allowed_hashes: frozenset[HashAlg] = DEFAULT_ALLOWED_HASHES,
) -> VerifiedCertify:
    """Verify a TPM2_Certify (part 3, 18.2) made by `signer` (a PublicArea or a cryptography key).

    Checks, in order: signature hash allowed (HashAlgorithmNotAllowed); signature (SignatureInvalid);
    a PublicArea signer is a restricted signing key (KeyAttributesInvalid); magic (AttestMagicInvalid);
    type TPM_ST_ATTEST_CERTIFY 0x8017 (AttestTypeInvalid); extraData equals `qualifying_data`
    (NonceMismatch); and, when `certified_name` is not None, the certified name equals it
    (CertifiedNameMismatch). Caller must: pass `certified_name=None` only when it reads and checks
    `name` itself.
    """
    msg, a, sig = read_inputs(attest, signature)
    check_hash(sig.hash_alg, allowed_hashes, "signature hash")
    key, area = signing_key(signer)
    check_signature(key, sig, msg)
    check_restricted(area, "the signing key")
    check_magic_and_type(a.magic, a.type, AttestType.CERTIFY)
    info = a.attested
    assert isinstance(info, CertifyInfo)
    if not isinstance(qualifying_data, bytes | bytearray | memoryview):
        raise InvalidInput(f"qualifying_data must be bytes, not {type(qualifying_data).__name__}")
    if not hmac.compare_digest(a.extra_data, bytes(qualifying_data)):
        raise NonceMismatch(
            f"extraData is {a.extra_data.hex() or '(empty)'}, not the {len(qualifying_data)}-byte qualifying data"
        )
    if certified_name is not None and not hmac.compare_digest(info.name, bytes(certified_name)):
        raise CertifiedNameMismatch(
            f"certified name is {info.name.hex()}, want {bytes(certified_name).hex()}"
        )
    return VerifiedCertify(
        qualified_signer=a.qualified_signer,
        extra_data=a.extra_data,
        clock=a.clock,
        reset_count=a.reset_count,
        restart_count=a.restart_count,
        safe=a.safe,
        firmware_version=a.firmware_version,
        name=info.name,
        qualified_name=info.qualified_name,
        hash_alg=sig.hash_alg,
    )
