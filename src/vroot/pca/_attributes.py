"""What the PCA requires of the keys it is shown: an AK (or vAK) and an EK (or vEK) public area.

An AK certificate says "quotes signed by this key come from that TM". That holds only for a key
the TM made itself (sensitiveDataOrigin), that cannot leave it (fixedTPM, fixedParent), and that
signs only what the TM generated (restricted signing: TPM2_Sign refuses a digest of data that
starts with TPM_GENERATED_VALUE). TCG TPM 2.0 Library part 1, 25 ("Object Attributes") and the
TCG EK Credential Profile / tpm2-tools AK templates.
"""

from __future__ import annotations

from typing import Any

from vroot.errors import InvalidInput, KeyAttributesInvalid
from vroot.tpm2 import EccCurve, HashAlg, ObjectAttributes, ObjectType, PublicArea, TpmAlg, parse_public

__all__ = [
    "ALLOWED_AK_NAME_ALGS",
    "ALLOWED_AK_SCHEMES",
    "MIN_RSA_AK_BITS",
    "check_ak_public",
    "check_ek_area",
    "public_area",
]

A = ObjectAttributes
_AK_REQUIRED = A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.RESTRICTED | A.SIGN_ENCRYPT
_AK_HASHES = frozenset({HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512})
ALLOWED_AK_NAME_ALGS = _AK_HASHES
# Signing schemes an AK may carry, by key type; each with a SHA-2 hash of 256 bits or more.
ALLOWED_AK_SCHEMES = {
    ObjectType.RSA: frozenset({TpmAlg.RSASSA, TpmAlg.RSAPSS}),
    ObjectType.ECC: frozenset({TpmAlg.ECDSA}),
}
_AK_CURVES = frozenset({EccCurve.NIST_P256, EccCurve.NIST_P384, EccCurve.NIST_P521})
MIN_RSA_AK_BITS = 2048


def public_area(value: bytes | PublicArea, what: str) -> PublicArea:
    """`value` as a PublicArea: already one, or TPM2B_PUBLIC / TPMT_PUBLIC bytes (`InvalidInput`)."""
    if isinstance(value, PublicArea):
        return value
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidInput(f"{what}: expected TPM2B_PUBLIC bytes or a PublicArea, got {type(value).__name__}")
    try:
        return parse_public(bytes(value))
    except InvalidInput as exc:
        raise InvalidInput(f"{what}: {exc}") from None


def check_ak_public(ak: PublicArea, *, what: str = "AK") -> None:
    """Raise `KeyAttributesInvalid` unless `ak` may be certified as an attestation key (RA-1).

    Requires: an RSA (at least 2048 bits) or ECC (P-256/384/521) key; nameAlg SHA-256/384/512;
    fixedTPM, fixedParent, sensitiveDataOrigin, restricted and sign, not decrypt; a signing
    scheme of its own (RSASSA or RSAPSS for RSA, ECDSA for ECC) with a SHA-256/384/512 hash.
    Proves nothing about where the key is: only credential activation does that.
    """
    if not isinstance(ak, PublicArea):
        raise InvalidInput(f"{what}: expected a PublicArea, got {type(ak).__name__}")
    attrs = ak.object_attributes
    if ak.type not in ALLOWED_AK_SCHEMES:
        raise KeyAttributesInvalid(f"{what}: an AK is an RSA or ECC key, not {ak.type.name}")
    if ak.name_alg not in _AK_HASHES:
        got = "NULL" if ak.name_alg is None else ak.name_alg.bank
        raise KeyAttributesInvalid(f"{what}: nameAlg {got} is not allowed (sha256, sha384, sha512)")
    if not ak.is_restricted_signing:
        raise KeyAttributesInvalid(
            f"{what}: not a restricted signing key (attributes {attrs!s}): it could sign a forged TPMS_ATTEST"
        )
    for flag in (A.FIXEDTPM, A.FIXEDPARENT, A.SENSITIVEDATAORIGIN):
        if not attrs & flag:
            raise KeyAttributesInvalid(f"{what}: lacks {flag.name} (attributes {attrs!s})")
    scheme = ak.scheme
    if scheme is None or scheme.scheme not in ALLOWED_AK_SCHEMES[ak.type]:
        got = "NULL" if scheme is None else _alg_name(scheme.scheme)
        want = ", ".join(sorted(s.name for s in ALLOWED_AK_SCHEMES[ak.type]))
        raise KeyAttributesInvalid(f"{what}: signing scheme {got} is not allowed for {ak.type.name} ({want})")
    if scheme.hash_alg not in _AK_HASHES:
        got = "none" if scheme.hash_alg is None else scheme.hash_alg.bank
        raise KeyAttributesInvalid(f"{what}: scheme hash {got} is not allowed (sha256, sha384, sha512)")
    if ak.type is ObjectType.RSA and ak.key_bits < MIN_RSA_AK_BITS:
        raise KeyAttributesInvalid(f"{what}: RSA key of {ak.key_bits} bits, want at least {MIN_RSA_AK_BITS}")
    if ak.type is ObjectType.ECC and ak.curve not in _AK_CURVES:
        raise KeyAttributesInvalid(f"{what}: ECC curve 0x{int(ak.curve):04x} is not NIST P-256/384/521")
    _loadable(ak, what)


def check_ek_area(ek: PublicArea, *, what: str = "EK") -> None:
    """Raise `KeyAttributesInvalid` unless `ek` is an endorsement key MakeCredential can target: an
    RSA or ECC fixedTPM restricted decryption key with AES-CFB as its symmetric algorithm."""
    from vroot.pki._ek import check_ek_public

    try:
        check_ek_public(ek, what)
    except InvalidInput as exc:
        raise KeyAttributesInvalid(str(exc)) from None
    if ek.name_alg is None:
        raise KeyAttributesInvalid(f"{what}: nameAlg NULL")
    sym = ek.symmetric
    if sym is None or sym.algorithm != TpmAlg.AES or sym.mode != TpmAlg.CFB:
        raise KeyAttributesInvalid(f"{what}: symmetric algorithm must be AES-CFB (the TCG EK templates)")
    _loadable(ek, what)


def _loadable(area: PublicArea, what: str) -> Any:
    try:
        return area.public_key()
    except InvalidInput as exc:
        raise KeyAttributesInvalid(f"{what}: {exc}") from None


def _alg_name(alg: int) -> str:
    try:
        return TpmAlg(alg).name
    except ValueError:
        return f"0x{alg:04x}"
