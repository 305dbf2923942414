"""TPMT_PUBLIC / TPM2B_PUBLIC (part 2, 12.2.4-12.2.5) as `PublicArea`, object names and qualified names.

    type u16 | nameAlg u16 | objectAttributes u32 | authPolicy TPM2B_DIGEST
    | parameters (by type): KEYEDHASH  scheme
                            SYMCIPHER  sym
                            RSA        symmetric, scheme, keyBits u16, exponent u32
                            ECC        symmetric, scheme, curveID u16, kdf
    | unique (by type): TPM2B_DIGEST (KEYEDHASH, SYMCIPHER), TPM2B_PUBLIC_KEY_RSA, TPMS_ECC_POINT

Caps: authPolicy and digests at most 64 bytes (sizeof(TPMU_HA)), an RSA modulus at most 512 bytes
(RSA-4096), an ECC coordinate at most 80 bytes (BN P638). Unknown types and schemes are rejected,
since their size cannot be known.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vroot.errors import InvalidInput, TpmStructureError
from vroot.tpm2._alg import HashAlg
from vroot.tpm2._constants import EccCurve, ObjectType, TpmAlg, alg_or_int
from vroot.tpm2._wire import ALG_NULL, Reader, as_bytes, b2, check_2b, check_uint, u16, u32

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

MAX_DIGEST = 64
MAX_RSA_KEY_BYTES = 512
MAX_ECC_KEY_BYTES = 80


class ObjectAttributes(enum.IntFlag):
    """TPMA_OBJECT (part 2, 8.3). Unknown bits are kept, so names stay exact."""

    FIXEDTPM = 1 << 1
    STCLEAR = 1 << 2
    FIXEDPARENT = 1 << 4
    SENSITIVEDATAORIGIN = 1 << 5
    USERWITHAUTH = 1 << 6
    ADMINWITHPOLICY = 1 << 7
    NODA = 1 << 10
    ENCRYPTEDDUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN_ENCRYPT = 1 << 18
    X509SIGN = 1 << 19


A = ObjectAttributes
# The attributes tpm2-tools and the TCG templates give an attestation key.
AK_ATTRIBUTES = (
    A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.USERWITHAUTH | A.RESTRICTED | A.SIGN_ENCRYPT
)

_SYM_OBJECT = frozenset({TpmAlg.AES, TpmAlg.SM4, TpmAlg.CAMELLIA, TpmAlg.TDES})
_RSA_SCHEMES = frozenset({TpmAlg.RSASSA, TpmAlg.RSAPSS, TpmAlg.OAEP})  # + RSAES (no details)
_ECC_SCHEMES = frozenset({TpmAlg.ECDSA, TpmAlg.ECDH, TpmAlg.SM2, TpmAlg.ECSCHNORR, TpmAlg.ECMQV})  # + ECDAA
_KDFS = frozenset({TpmAlg.MGF1, TpmAlg.KDF1_SP800_56A, TpmAlg.KDF2, TpmAlg.KDF1_SP800_108})
_CURVE_SIZES = {
    EccCurve.NIST_P192: 24,
    EccCurve.NIST_P224: 28,
    EccCurve.NIST_P256: 32,
    EccCurve.NIST_P384: 48,
    EccCurve.NIST_P521: 66,
    EccCurve.BN_P256: 32,
    EccCurve.BN_P638: 80,
    EccCurve.SM2_P256: 32,
}


@dataclass(frozen=True, slots=True)
class SymDef:
    """TPMT_SYM_DEF_OBJECT other than NULL: e.g. AES, 128, CFB (the EK and SRK templates)."""

    algorithm: int
    key_bits: int
    mode: int


@dataclass(frozen=True, slots=True)
class Scheme:
    """A non-NULL scheme: TPMT_RSA_SCHEME, TPMT_ECC_SCHEME, TPMT_KEYEDHASH_SCHEME or TPMT_KDF_SCHEME.

    `hash_alg` is None only for RSAES; `count` is used by ECDAA, `kdf` by the keyed-hash XOR scheme.
    """

    scheme: int
    hash_alg: HashAlg | None = None
    count: int = 0
    kdf: int = 0


@dataclass(frozen=True, slots=True)
class EccPoint:
    x: bytes
    y: bytes


@dataclass(frozen=True, slots=True)
class PublicArea:
    """A decoded TPMT_PUBLIC. Says what the key is and may do; proves nothing about where it lives.

    Does not prove: that a TPM holds the private part. Caller must: establish that (EK certificate and
    credential activation) before trusting signatures made with it.
    """

    type: ObjectType
    name_alg: HashAlg | None
    object_attributes: ObjectAttributes
    auth_policy: bytes = b""
    symmetric: SymDef | None = None
    scheme: Scheme | None = None
    key_bits: int = 0
    exponent: int = 0
    curve: int = 0
    kdf: Scheme | None = None
    unique: bytes | EccPoint = b""
    # The `cryptography` key, made on first use: building it (and OpenSSL's per-key RSA precomputation)
    # costs about half a signature check. Not an init field, so dataclasses.replace() starts afresh.
    _key: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        t = self.type
        if not isinstance(t, ObjectType):
            raise InvalidInput(f"TPMT_PUBLIC: unsupported type {t!r}")
        if self.name_alg is not None and not isinstance(self.name_alg, HashAlg):
            raise InvalidInput("TPMT_PUBLIC.nameAlg must be a HashAlg or None (TPM_ALG_NULL)")
        check_uint(int(self.object_attributes), 32, "TPMT_PUBLIC.objectAttributes")
        check_2b(self.auth_policy, MAX_DIGEST, "TPMT_PUBLIC.authPolicy")
        ecc = t is ObjectType.ECC
        rsa = t is ObjectType.RSA
        if (self.key_bits or self.exponent) and not rsa:
            raise InvalidInput("TPMT_PUBLIC: key_bits and exponent belong to RSA keys")
        if (self.curve or self.kdf is not None) and not ecc:
            raise InvalidInput("TPMT_PUBLIC: curve and kdf belong to ECC keys")
        if self.symmetric is not None and t is ObjectType.KEYEDHASH:
            raise InvalidInput("TPMT_PUBLIC: a KEYEDHASH object has no symmetric definition")
        if self.scheme is not None and t is ObjectType.SYMCIPHER:
            raise InvalidInput("TPMT_PUBLIC: a SYMCIPHER object has no scheme")
        if rsa:
            check_uint(self.key_bits, 16, "TPMS_RSA_PARMS.keyBits")
            check_uint(self.exponent, 32, "TPMS_RSA_PARMS.exponent")
        if ecc:
            check_uint(self.curve, 16, "TPMS_ECC_PARMS.curveID")
            if not isinstance(self.unique, EccPoint):
                raise InvalidInput("TPMT_PUBLIC: an ECC key's unique is an EccPoint")
            check_2b(self.unique.x, MAX_ECC_KEY_BYTES, "TPMS_ECC_POINT.x")
            check_2b(self.unique.y, MAX_ECC_KEY_BYTES, "TPMS_ECC_POINT.y")
        else:
            check_2b(self.unique, MAX_RSA_KEY_BYTES if rsa else MAX_DIGEST, "TPMT_PUBLIC.unique")

    # -- wire -------------------------------------------------------------------------------------

    def encode(self, *, sized: bool = False) -> bytes:
        """Marshal as TPMT_PUBLIC, or TPM2B_PUBLIC with `sized=True`."""
        t = self.type
        out = [
            u16(t),
            u16(ALG_NULL if self.name_alg is None else self.name_alg),
            u32(int(self.object_attributes)),
            b2(self.auth_policy),
        ]
        if t is ObjectType.KEYEDHASH:
            out.append(_enc_scheme(self.scheme))
            out.append(b2(self.unique))
        elif t is ObjectType.SYMCIPHER:
            out.append(_enc_sym(self.symmetric))
            out.append(b2(self.unique))
        elif t is ObjectType.RSA:
            out += [
                _enc_sym(self.symmetric),
                _enc_scheme(self.scheme),
                u16(self.key_bits),
                u32(self.exponent),
            ]
            out.append(b2(self.unique))
        else:
            out += [
                _enc_sym(self.symmetric),
                _enc_scheme(self.scheme),
                u16(self.curve),
                _enc_scheme(self.kdf),
            ]
            out.append(b2(self.unique.x) + b2(self.unique.y))
        body = b"".join(out)
        return b2(body) if sized else body

    def name(self) -> bytes:
        """TPM2B_NAME contents: nameAlg ‖ H_nameAlg(TPMT_PUBLIC) (part 1, 16 "Names")."""
        if self.name_alg is None:
            raise InvalidInput("an object with nameAlg TPM_ALG_NULL has no digest name")
        return u16(self.name_alg) + self.name_alg.digest(self.encode())

    # -- keys -------------------------------------------------------------------------------------

    def public_key(self) -> RSAPublicKey | EllipticCurvePublicKey:
        """The key as a `cryptography` public key (RSA, or ECC on P-192/224/256/384/521)."""
        key = self._key
        if key is None:
            key = self._load_key()
            object.__setattr__(self, "_key", key)
        return key

    def _load_key(self) -> RSAPublicKey | EllipticCurvePublicKey:
        if self.type is ObjectType.RSA:
            from cryptography.hazmat.primitives.asymmetric import rsa

            n = int.from_bytes(self.unique, "big")
            try:
                return rsa.RSAPublicNumbers(self.exponent or 65537, n).public_key()
            except ValueError as exc:
                raise InvalidInput(f"TPMT_PUBLIC: RSA key does not load ({exc})") from None
        if self.type is ObjectType.ECC:
            from cryptography.hazmat.primitives.asymmetric import ec

            curve = _CRYPTO_CURVES.get(self.curve)
            if curve is None:
                raise InvalidInput(f"TPMT_PUBLIC: ECC curve 0x{self.curve:04x} is not supported")
            size = _CURVE_SIZES[self.curve]
            x, y = self.unique.x, self.unique.y
            if len(x) > size or len(y) > size:
                raise InvalidInput("TPMT_PUBLIC: ECC coordinate longer than the curve")
            point = b"\x04" + x.rjust(size, b"\0") + y.rjust(size, b"\0")
            try:
                return ec.EllipticCurvePublicKey.from_encoded_point(getattr(ec, curve)(), point)
            except ValueError:
                raise InvalidInput("TPMT_PUBLIC: the ECC point is not on the curve") from None
        raise InvalidInput(f"a {self.type.name} object has no public key")

    @property
    def is_restricted_signing(self) -> bool:
        """restricted, sign and not decrypt: a key that signs only what the TPM made (an AK)."""
        # Plain int arithmetic: IntFlag operators go through the enum machinery (microseconds).
        return int(self.object_attributes) & _SIGNING_MASK == _RESTRICTED_SIGNING


_SIGNING_MASK = int(A.RESTRICTED | A.DECRYPT | A.SIGN_ENCRYPT)
_RESTRICTED_SIGNING = int(A.RESTRICTED | A.SIGN_ENCRYPT)


_CRYPTO_CURVES = {
    EccCurve.NIST_P192: "SECP192R1",
    EccCurve.NIST_P224: "SECP224R1",
    EccCurve.NIST_P256: "SECP256R1",
    EccCurve.NIST_P384: "SECP384R1",
    EccCurve.NIST_P521: "SECP521R1",
}


def curve_size(curve: int) -> int:
    """Bytes per coordinate of a TPM_ECC_CURVE."""
    try:
        return _CURVE_SIZES[curve]
    except KeyError:
        raise InvalidInput(f"unknown ECC curve 0x{curve:04x}") from None


def _enc_sym(sym: SymDef | None) -> bytes:
    if sym is None:
        return u16(ALG_NULL)
    return u16(sym.algorithm) + u16(sym.key_bits) + u16(sym.mode)


def _enc_scheme(s: Scheme | None) -> bytes:
    if s is None:
        return u16(ALG_NULL)
    out = u16(s.scheme)
    if s.hash_alg is not None:
        out += u16(s.hash_alg)
    if s.scheme == TpmAlg.ECDAA:
        out += u16(s.count)
    elif s.scheme == TpmAlg.XOR:
        out += u16(s.kdf)
    return out


def _read_sym(r: Reader, field: str) -> SymDef | None:
    pos = r.pos
    alg = r.u16(f"{field}.algorithm")
    if alg == ALG_NULL:
        return None
    if alg not in _SYM_OBJECT:
        raise r.fail(f"{field}.algorithm: 0x{alg:04x} is not a symmetric object algorithm", pos)
    return SymDef(TpmAlg(alg), r.u16(f"{field}.keyBits"), alg_or_int(r.u16(f"{field}.mode")))


def _read_scheme(r: Reader, field: str, allowed: frozenset[int]) -> Scheme | None:
    pos = r.pos
    alg = r.u16(f"{field}.scheme")
    if alg == ALG_NULL:
        return None
    if alg not in allowed:
        raise r.fail(f"{field}.scheme: 0x{alg:04x} is not allowed here", pos)
    alg = TpmAlg(alg)
    if alg is TpmAlg.RSAES:
        return Scheme(alg)
    h = r.hash_alg(f"{field}.details.hashAlg")
    if alg is TpmAlg.ECDAA:
        return Scheme(alg, h, count=r.u16(f"{field}.details.count"))
    if alg is TpmAlg.XOR:
        return Scheme(alg, h, kdf=alg_or_int(r.u16(f"{field}.details.kdf")))
    return Scheme(alg, h)


_ALLOWED_RSA = _RSA_SCHEMES | {TpmAlg.RSAES}
_ALLOWED_ECC = _ECC_SCHEMES | {TpmAlg.ECDAA}
_ALLOWED_KEYEDHASH = frozenset({TpmAlg.HMAC, TpmAlg.XOR})


def read_public(r: Reader) -> PublicArea:
    pos = r.pos
    t = r.u16("TPMT_PUBLIC.type")
    try:
        otype = ObjectType(t)
    except ValueError:
        raise r.fail(f"TPMT_PUBLIC.type: unsupported object type 0x{t:04x}", pos) from None
    name_alg = r.hash_alg_or_null("TPMT_PUBLIC.nameAlg")
    attrs = ObjectAttributes(r.u32("TPMT_PUBLIC.objectAttributes"))
    policy = r.tpm2b("TPMT_PUBLIC.authPolicy", MAX_DIGEST)
    kw: dict[str, Any] = {}
    if otype is ObjectType.KEYEDHASH:
        kw["scheme"] = _read_scheme(r, "TPMS_KEYEDHASH_PARMS.scheme", _ALLOWED_KEYEDHASH)
        kw["unique"] = r.tpm2b("TPMU_PUBLIC_ID.keyedHash", MAX_DIGEST)
    elif otype is ObjectType.SYMCIPHER:
        kw["symmetric"] = _read_sym(r, "TPMS_SYMCIPHER_PARMS.sym")
        kw["unique"] = r.tpm2b("TPMU_PUBLIC_ID.sym", MAX_DIGEST)
    elif otype is ObjectType.RSA:
        kw["symmetric"] = _read_sym(r, "TPMS_RSA_PARMS.symmetric")
        kw["scheme"] = _read_scheme(r, "TPMS_RSA_PARMS.scheme", _ALLOWED_RSA)
        kw["key_bits"] = r.u16("TPMS_RSA_PARMS.keyBits")
        kw["exponent"] = r.u32("TPMS_RSA_PARMS.exponent")
        kw["unique"] = r.tpm2b("TPMU_PUBLIC_ID.rsa", MAX_RSA_KEY_BYTES)
    else:
        kw["symmetric"] = _read_sym(r, "TPMS_ECC_PARMS.symmetric")
        kw["scheme"] = _read_scheme(r, "TPMS_ECC_PARMS.scheme", _ALLOWED_ECC)
        kw["curve"] = alg_or_curve(r.u16("TPMS_ECC_PARMS.curveID"))
        kw["kdf"] = _read_scheme(r, "TPMS_ECC_PARMS.kdf", _KDFS)
        x = r.tpm2b("TPMS_ECC_POINT.x", MAX_ECC_KEY_BYTES)
        kw["unique"] = EccPoint(x, r.tpm2b("TPMS_ECC_POINT.y", MAX_ECC_KEY_BYTES))
    return PublicArea(otype, name_alg, attrs, policy, **kw)


def alg_or_curve(value: int) -> int:
    try:
        return EccCurve(value)
    except ValueError:
        return value


def parse_public(data: bytes) -> PublicArea:
    """Decode a TPM2B_PUBLIC or a bare TPMT_PUBLIC.

    Rule: it is a TPM2B_PUBLIC when the first u16 equals the number of bytes after it AND those bytes
    decode as a complete TPMT_PUBLIC; otherwise a bare TPMT_PUBLIC. (A bare TPMT_PUBLIC starts with
    its type, 0x0001, 0x0008, 0x0023 or 0x0025: only a 37-byte ECC area could even match the size.)
    """
    data = as_bytes(data, "TPMT_PUBLIC")
    n = len(data)
    if n >= 2 and (data[0] << 8 | data[1]) == n - 2:
        r = Reader(data, 2)
        try:
            area = read_public(r)
            r.done("TPM2B_PUBLIC")
            return area
        except TpmStructureError as sized_error:
            try:
                return _parse_bare(data)
            except TpmStructureError:
                raise sized_error from None
    return _parse_bare(data)


def _parse_bare(data: bytes) -> PublicArea:
    r = Reader(data)
    area = read_public(r)
    r.done("TPMT_PUBLIC")
    return area


def qualified_name(parent_qualified_name: bytes, name: bytes) -> bytes:
    """QN(object) = nameAlg ‖ H_nameAlg(QN(parent) ‖ Name(object)) (part 1, 16.6 "Qualified Name").

    For a primary object the parent's qualified name is its hierarchy handle (4 bytes, e.g.
    0x4000000B for the endorsement hierarchy). A name that is a 4-byte handle is its own QN.
    """
    if len(name) == 4:
        return name
    if len(name) < 2:
        raise InvalidInput("a name is a 4-byte handle or nameAlg ‖ digest")
    alg = HashAlg.from_id(name[0] << 8 | name[1])
    if len(name) != 2 + alg.digest_size:
        raise InvalidInput(f"name of {len(name)} bytes does not fit its hash {alg.bank}")
    return name[:2] + alg.digest(parent_qualified_name + name)
