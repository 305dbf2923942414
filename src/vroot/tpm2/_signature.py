"""TPMT_SIGNATURE (part 2, 11.3.4) as `Signature`.

    sigAlg u16 | RSASSA, RSAPSS:               hash u16, sig TPM2B_PUBLIC_KEY_RSA
               | ECDSA, ECDAA, SM2, ECSCHNORR: hash u16, signatureR, signatureS TPM2B_ECC_PARAMETER
               | HMAC:                         TPMT_HA (hashAlg u16, digest of that size)

TPM_ALG_NULL (an empty signature) and unknown schemes are rejected. Caps: a TPM2B_PUBLIC_KEY_RSA of
at most 512 bytes (MAX_RSA_KEY_BYTES for RSA-4096), a TPM2B_ECC_PARAMETER of at most 80 bytes
(MAX_ECC_KEY_BYTES for the largest registry curve, BN P638).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vroot.errors import InvalidInput
from vroot.tpm2._alg import HashAlg
from vroot.tpm2._constants import SigAlg
from vroot.tpm2._wire import ALG_NULL, Reader, as_bytes, b2, check_2b, slot_setters, u16

MAX_RSA_KEY_BYTES = 512
MAX_ECC_KEY_BYTES = 80

_RSA = frozenset({SigAlg.RSASSA, SigAlg.RSAPSS})
_ECC = frozenset({SigAlg.ECDSA, SigAlg.ECDAA, SigAlg.SM2, SigAlg.ECSCHNORR})


@dataclass(frozen=True, slots=True)
class Signature:
    """A TPM signature: `sig` holds the RSA signature (or HMAC digest); `r` and `s` the ECC one.

    `r` and `s` are kept as the big-endian bytes on the wire (leading zeros included) so that
    `encode()` gives back the same bytes; `to_der()` gives the DER form `cryptography` verifies.
    """

    sig_alg: SigAlg
    hash_alg: HashAlg
    sig: bytes = b""
    r: bytes = b""
    s: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.sig_alg, SigAlg):
            raise InvalidInput(f"TPMT_SIGNATURE: unsupported signature algorithm {self.sig_alg!r}")
        if not isinstance(self.hash_alg, HashAlg):
            raise InvalidInput(f"TPMT_SIGNATURE: hash {self.hash_alg!r} is not a HashAlg")
        if self.sig_alg in _ECC:
            check_2b(self.r, MAX_ECC_KEY_BYTES, "TPMS_SIGNATURE_ECC.signatureR")
            check_2b(self.s, MAX_ECC_KEY_BYTES, "TPMS_SIGNATURE_ECC.signatureS")
            if self.sig:
                raise InvalidInput("TPMT_SIGNATURE: an ECC signature has r and s, not sig")
        else:
            if self.r or self.s:
                raise InvalidInput(f"TPMT_SIGNATURE: a {self.sig_alg.name} signature has sig, not r and s")
            if self.sig_alg is SigAlg.HMAC:
                if len(self.sig) != self.hash_alg.digest_size:
                    raise InvalidInput(
                        f"TPMT_HA: {self.hash_alg.bank} digest must be {self.hash_alg.digest_size} bytes"
                    )
            else:
                check_2b(self.sig, MAX_RSA_KEY_BYTES, "TPMS_SIGNATURE_RSA.sig")

    @property
    def is_ecc(self) -> bool:
        return self.sig_alg in _ECC

    def to_der(self) -> bytes:
        """The ECDSA signature as DER `SEQUENCE { r INTEGER, s INTEGER }` (what `cryptography` takes)."""
        if self.sig_alg not in _ECC:
            raise InvalidInput(f"a {self.sig_alg.name} signature has no DER (r, s) form")
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        return encode_dss_signature(int.from_bytes(self.r, "big"), int.from_bytes(self.s, "big"))

    def encode(self) -> bytes:
        """Marshal as TPMT_SIGNATURE."""
        head = u16(self.sig_alg) + u16(self.hash_alg)
        if self.sig_alg in _ECC:
            return head + b2(self.r) + b2(self.s)
        if self.sig_alg is SigAlg.HMAC:
            return head + self.sig
        return head + b2(self.sig)


def read_signature(r: Reader) -> Signature:
    pos = r.pos
    alg_id = r.u16("TPMT_SIGNATURE.sigAlg")
    if alg_id == ALG_NULL:
        raise r.fail("TPMT_SIGNATURE.sigAlg: TPM_ALG_NULL (no signature)", pos)
    try:
        alg = SigAlg(alg_id)
    except ValueError:
        raise r.fail(f"TPMT_SIGNATURE.sigAlg: unknown signature algorithm 0x{alg_id:04x}", pos) from None
    h = r.hash_alg("TPMT_SIGNATURE.hash")
    if alg in _RSA:
        return Signature(alg, h, sig=r.tpm2b("TPMS_SIGNATURE_RSA.sig", MAX_RSA_KEY_BYTES))
    if alg in _ECC:
        sr = r.tpm2b("TPMS_SIGNATURE_ECC.signatureR", MAX_ECC_KEY_BYTES)
        return Signature(alg, h, r=sr, s=r.tpm2b("TPMS_SIGNATURE_ECC.signatureS", MAX_ECC_KEY_BYTES))
    return Signature(alg, h, sig=r.raw(h.digest_size, "TPMT_HA.digest"))


def parse_signature(data: bytes) -> Signature:
    """Decode a complete TPMT_SIGNATURE; trailing bytes are an error."""
    data = as_bytes(data, "TPMT_SIGNATURE")
    sig = fast_signature(data)
    if sig is not None:
        return sig
    r = Reader(data)
    sig = read_signature(r)
    r.done("TPMT_SIGNATURE")
    return sig


_HEAD = struct.Struct(">HHH")
_HASH_BY_ID = {int(h): h for h in HashAlg}
_RSA_BY_ID = {int(a): a for a in _RSA}
_ECC_BY_ID = {int(a): a for a in _ECC}
_new = object.__new__


def fast_signature(data: bytes) -> Signature | None:
    """RSA and ECC signatures without per-field error bookkeeping; None sends the input to the
    careful reader, which accepts exactly the same inputs and says what is wrong with the others."""
    n = len(data)
    if n < 6:
        return None
    alg_id, hash_id, size = _HEAD.unpack_from(data)
    h = _HASH_BY_ID.get(hash_id)
    if h is None:
        return None
    alg = _RSA_BY_ID.get(alg_id)
    if alg is not None:
        if size > MAX_RSA_KEY_BYTES or size != n - 6:
            return None
        sig, r, s = data[6:], b"", b""
    else:
        alg = _ECC_BY_ID.get(alg_id)
        if alg is None or size > MAX_ECC_KEY_BYTES or n < 8 + size:
            return None
        s_size = data[6 + size] << 8 | data[7 + size]
        if s_size > MAX_ECC_KEY_BYTES or n != 8 + size + s_size:
            return None
        sig, r, s = b"", data[6 : 6 + size], data[8 + size :]
    out = _new(Signature)
    _s_alg(out, alg)
    _s_hash(out, h)
    _s_sig(out, sig)
    _s_r(out, r)
    _s_s(out, s)
    return out


_s_alg, _s_hash, _s_sig, _s_r, _s_s = slot_setters(Signature)
