"""Checks shared by quote and certify verification: inputs, hash policy, signature, key, magic.

Each check raises one specific `QuoteError` subclass; none returns a bool.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from vroot.errors import (
    AttestMagicInvalid,
    AttestTypeInvalid,
    HashAlgorithmNotAllowed,
    InvalidInput,
    KeyAttributesInvalid,
    SignatureInvalid,
)
from vroot.tpm2 import HashAlg
from vroot.tpm2._attest import UnverifiedAttest, split_attest
from vroot.tpm2._constants import TPM_GENERATED_VALUE, AttestType, SigAlg
from vroot.tpm2._public import PublicArea
from vroot.tpm2._signature import Signature, parse_signature

DEFAULT_ALLOWED_HASHES: frozenset[HashAlg] = frozenset({HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512})

_HASHES: dict[HashAlg, hashes.HashAlgorithm] = {
    HashAlg.SHA1: hashes.SHA1(),
    HashAlg.SHA256: hashes.SHA256(),
    HashAlg.SHA384: hashes.SHA384(),
    HashAlg.SHA512: hashes.SHA512(),
    HashAlg.SHA3_256: hashes.SHA3_256(),
    HashAlg.SHA3_384: hashes.SHA3_384(),
    HashAlg.SHA3_512: hashes.SHA3_512(),
    HashAlg.SM3_256: hashes.SM3(),
}
_ECDSA = {alg: ec.ECDSA(h) for alg, h in _HASHES.items()}
_PSS = {alg: padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.AUTO) for alg, h in _HASHES.items()}
_PKCS1 = padding.PKCS1v15()
_BYTES = (bytes, bytearray, memoryview)
_MAGIC = TPM_GENERATED_VALUE


def read_inputs(attest: Any, signature: Any) -> tuple[bytes, UnverifiedAttest, Signature]:
    """(signed bytes, decoded attest, signature). A parsed attest is re-encoded, so that every field
    the caller later reads is one the signature covers."""
    if type(attest) is bytes or isinstance(attest, _BYTES):
        msg, a = split_attest(attest)
    elif isinstance(attest, UnverifiedAttest):
        a, msg = attest, attest.encode()
    else:
        raise InvalidInput(f"attest must be bytes or UnverifiedAttest, not {type(attest).__name__}")
    if type(signature) is bytes or isinstance(signature, _BYTES):
        sig = parse_signature(signature)
    elif isinstance(signature, Signature):
        sig = signature
    else:
        raise InvalidInput(f"signature must be bytes or Signature, not {type(signature).__name__}")
    return msg, a, sig


_KIND: dict[type, str] = {}  # key class -> "rsa" / "ecc" / "": isinstance on these ABCs is slow


def _kind(key: Any) -> str:
    t = type(key)
    kind = _KIND.get(t)
    if kind is None:
        if isinstance(key, rsa.RSAPublicKey):
            kind = "rsa"
        elif isinstance(key, ec.EllipticCurvePublicKey):
            kind = "ecc"
        else:
            kind = ""
        _KIND[t] = kind
    return kind


def signing_key(key: Any) -> tuple[Any, PublicArea | None]:
    """(cryptography key, PublicArea or None) for a PublicArea or a cryptography public key."""
    if type(key) is PublicArea:
        return key.public_key(), key
    if _kind(key):
        return key, None
    raise InvalidInput(f"signing key must be a PublicArea or an RSA/ECC public key, not {type(key).__name__}")


def hash_new(alg: HashAlg) -> Any:
    """A hashlib object for `alg` (the direct constructors: faster than hashlib.new)."""
    new = _HASHLIB.get(alg)
    return new() if new is not None else alg.new()


_HASHLIB = {
    HashAlg.SHA1: hashlib.sha1,
    HashAlg.SHA256: hashlib.sha256,
    HashAlg.SHA384: hashlib.sha384,
    HashAlg.SHA512: hashlib.sha512,
}


def check_hash(alg: HashAlg, allowed: frozenset[HashAlg], what: str) -> None:
    if alg not in allowed:
        names = ", ".join(sorted(a.bank for a in allowed)) or "none"
        raise HashAlgorithmNotAllowed(f"{what} {alg.bank} is not allowed (allowed: {names})")


def check_signature(key: Any, sig: Signature, message: bytes) -> None:
    """The signature verifies over `message` under `key` with the signature's own scheme and hash."""
    h = _HASHES.get(sig.hash_alg)
    if h is None:  # pragma: no cover - every HashAlg is mapped
        raise SignatureInvalid(f"signature hash {sig.hash_alg.bank} cannot be checked")
    alg = sig.sig_alg
    try:
        if alg is SigAlg.RSASSA or alg is SigAlg.RSAPSS:
            if _kind(key) != "rsa":
                raise SignatureInvalid(f"an {alg.name} signature cannot be made by an ECC key")
            pad = _PKCS1 if alg is SigAlg.RSASSA else _PSS[sig.hash_alg]
            key.verify(sig.sig, message, pad, h)
        elif alg is SigAlg.ECDSA:
            if _kind(key) != "ecc":
                raise SignatureInvalid("an ECDSA signature cannot be made by an RSA key")
            der = encode_dss_signature(int.from_bytes(sig.r, "big"), int.from_bytes(sig.s, "big"))
            key.verify(der, message, _ECDSA[sig.hash_alg])
        else:
            raise SignatureInvalid(f"{alg.name} signatures are not supported")
    except InvalidSignature:
        raise SignatureInvalid(
            f"{alg.name}/{sig.hash_alg.bank} signature does not verify under the signing key"
        ) from None


def check_restricted(area: PublicArea | None, what: str) -> None:
    """A key given as a PublicArea must be a restricted signing key: only then does the TPM refuse to
    sign data that starts with TPM_GENERATED_VALUE, so only then does the magic mean anything."""
    if area is not None and not area.is_restricted_signing:
        raise KeyAttributesInvalid(
            f"{what} is not a restricted signing key (attributes {area.object_attributes!s}); "
            "it could have signed a forged TPMS_ATTEST"
        )


def astuple_shallow(a: UnverifiedAttest) -> tuple:
    """The fields of `a` in order, not copied (dataclasses.astuple would deep-copy them)."""
    return (
        a.magic,
        a.type,
        a.qualified_signer,
        a.extra_data,
        a.clock,
        a.reset_count,
        a.restart_count,
        a.safe,
        a.firmware_version,
        a.attested,
    )


def check_magic_and_type(magic: int, st: int, want: AttestType) -> None:
    if magic != _MAGIC:
        raise AttestMagicInvalid(f"TPMS_ATTEST.magic is 0x{magic:08x}, want TPM_GENERATED 0x{_MAGIC:08x}")
    if st != want:
        try:
            got = f"{AttestType(st).name} (0x{st:04x})"
        except ValueError:
            got = f"0x{st:04x}"
        raise AttestTypeInvalid(f"TPMS_ATTEST.type is {got}, want {want.name} (0x{want:04x})")
