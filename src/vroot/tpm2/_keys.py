"""Keys to and from TPMT_PUBLIC: describe a software key as a TPM AK; load an AK from a file's bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vroot.errors import InvalidInput
from vroot.tpm2._alg import HashAlg
from vroot.tpm2._constants import ObjectType, TpmAlg
from vroot.tpm2._public import (
    _CRYPTO_CURVES,
    _CURVE_SIZES,
    AK_ATTRIBUTES,
    EccPoint,
    ObjectAttributes,
    PublicArea,
    Scheme,
    SymDef,
    parse_public,
)
from vroot.tpm2._wire import as_bytes

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey


def public_area_from_key(
    key: RSAPublicKey | EllipticCurvePublicKey,
    *,
    name_alg: HashAlg = HashAlg.SHA256,
    object_attributes: ObjectAttributes = AK_ATTRIBUTES,
    scheme: Scheme | None | str = "default",
    symmetric: SymDef | None = None,
    auth_policy: bytes = b"",
) -> PublicArea:
    """A TPMT_PUBLIC for a software key; by default shaped like a TPM AK (restricted signing key,
    RSASSA-SHA256 or ECDSA-SHA256). The RSA exponent 65537 is written as 0, as a TPM does."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPublicKey):
        nums = key.public_numbers()
        size = (key.key_size + 7) // 8
        return PublicArea(
            ObjectType.RSA,
            name_alg,
            object_attributes,
            auth_policy,
            symmetric=symmetric,
            scheme=Scheme(TpmAlg.RSASSA, HashAlg.SHA256) if scheme == "default" else scheme,
            key_bits=key.key_size,
            exponent=0 if nums.e == 65537 else nums.e,
            unique=nums.n.to_bytes(size, "big"),
        )
    if isinstance(key, ec.EllipticCurvePublicKey):
        curves = {v: k for k, v in _CRYPTO_CURVES.items()}
        curve = curves.get(key.curve.name.upper())
        if curve is None:
            raise InvalidInput(f"ECC curve {key.curve.name} has no TPM_ECC_CURVE here")
        size = _CURVE_SIZES[curve]
        nums = key.public_numbers()
        return PublicArea(
            ObjectType.ECC,
            name_alg,
            object_attributes,
            auth_policy,
            symmetric=symmetric,
            scheme=Scheme(TpmAlg.ECDSA, HashAlg.SHA256) if scheme == "default" else scheme,
            curve=curve,
            unique=EccPoint(nums.x.to_bytes(size, "big"), nums.y.to_bytes(size, "big")),
        )
    raise InvalidInput(f"cannot describe a {type(key).__name__} as a TPMT_PUBLIC")


def load_ak(data: bytes) -> PublicArea | RSAPublicKey | EllipticCurvePublicKey:
    """An attestation key from a file's bytes: PEM or DER SubjectPublicKeyInfo (a `cryptography` key,
    whose attributes cannot be checked), or TPM2B_PUBLIC / TPMT_PUBLIC (a `PublicArea`)."""
    data = as_bytes(data, "AK")
    head = data.lstrip()[:11]
    if head.startswith(b"-----BEGIN"):
        return _load_spki(data, pem=True)
    if data[:1] == b"\x30":  # DER SEQUENCE; never a TPM2B_PUBLIC (size >= 0x3000) or a TPMT type
        return _load_spki(data, pem=False)
    return parse_public(data)


def _load_spki(data: bytes, *, pem: bool) -> RSAPublicKey | EllipticCurvePublicKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        key = serialization.load_pem_public_key(data) if pem else serialization.load_der_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"AK: not a readable {'PEM' if pem else 'DER'} public key ({exc})") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise InvalidInput(f"AK: a {type(key).__name__} cannot be a TPM attestation key")
    return key
