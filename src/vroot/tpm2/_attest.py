"""TPMS_ATTEST (part 2, 10.12.12) as `UnverifiedAttest`: what a TPM says it signed, not yet checked.

    magic u32 | type u16 | qualifiedSigner TPM2B_NAME | extraData TPM2B_DATA
    | clockInfo { clock u64, resetCount u32, restartCount u32, safe u8 } | firmwareVersion u64
    | attested (TPMU_ATTEST, by type)

Any magic and any type parse, so that a verifier can report a wrong magic or type as a verification
failure rather than a decoding one. `attested` is a `QuoteInfo` for TPM_ST_ATTEST_QUOTE, a
`CertifyInfo` for TPM_ST_ATTEST_CERTIFY, and the raw remaining bytes for every other type.

Caps (part 2): TPM2B_NAME and TPM2B_DATA at most sizeof(TPMT_HA) = 66 bytes (SHA-512 or SHA3-512
digests and their alg id), TPM2B_DIGEST at most 64 bytes, `safe` is TPMI_YES_NO (0 or 1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vroot.errors import InvalidInput, TpmStructureError
from vroot.tpm2._alg import HashAlg
from vroot.tpm2._constants import AttestType
from vroot.tpm2._pcr_selection import _BITS, MAX_BANKS, MAX_SELECT_BYTES, PcrSelection, read_pcr_selection
from vroot.tpm2._pcr_selection import _make as _make_selection
from vroot.tpm2._wire import Reader, as_bytes, b2, check_2b, check_uint, slot_setters, u8, u16, u32, u64

MAX_NAME = 66  # sizeof(TPMU_NAME) = sizeof(TPMT_HA)
MAX_DATA = 66  # TPM2B_DATA: sizeof(TPMT_HA)
MAX_DIGEST = 64  # TPM2B_DIGEST: sizeof(TPMU_HA)


@dataclass(frozen=True, slots=True)
class QuoteInfo:
    """TPMS_QUOTE_INFO: the PCRs a quote covers and the digest of their values."""

    pcr_select: PcrSelection
    pcr_digest: bytes


@dataclass(frozen=True, slots=True)
class CertifyInfo:
    """TPMS_CERTIFY_INFO: the certified object's name and qualified name."""

    name: bytes
    qualified_name: bytes


@dataclass(frozen=True, slots=True)
class UnverifiedAttest:
    """A decoded TPMS_ATTEST. Nothing in it is proven until a verify_* function checks the signature.

    Does not prove: anything. Caller must: pass the original bytes to `verify_quote` /
    `verify_certify`, never trust these fields directly.
    """

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    attested: QuoteInfo | CertifyInfo | bytes

    def __post_init__(self) -> None:
        check_uint(self.magic, 32, "TPMS_ATTEST.magic")
        check_uint(self.type, 16, "TPMS_ATTEST.type")
        check_2b(self.qualified_signer, MAX_NAME, "TPMS_ATTEST.qualifiedSigner")
        check_2b(self.extra_data, MAX_DATA, "TPMS_ATTEST.extraData")
        check_uint(self.clock, 64, "TPMS_ATTEST.clockInfo.clock")
        check_uint(self.reset_count, 32, "TPMS_ATTEST.clockInfo.resetCount")
        check_uint(self.restart_count, 32, "TPMS_ATTEST.clockInfo.restartCount")
        check_uint(self.firmware_version, 64, "TPMS_ATTEST.firmwareVersion")
        if not isinstance(self.safe, bool):
            raise InvalidInput("TPMS_ATTEST.clockInfo.safe must be a bool")
        want = {AttestType.QUOTE: QuoteInfo, AttestType.CERTIFY: CertifyInfo}.get(self.type, bytes)
        if type(self.attested) is not want:
            raise InvalidInput(f"TPMS_ATTEST type 0x{self.type:04x} needs attested as {want.__name__}")
        if want is QuoteInfo:
            check_2b(self.attested.pcr_digest, MAX_DIGEST, "TPMS_QUOTE_INFO.pcrDigest")
        elif want is CertifyInfo:
            check_2b(self.attested.name, MAX_NAME, "TPMS_CERTIFY_INFO.name")
            check_2b(self.attested.qualified_name, MAX_NAME, "TPMS_CERTIFY_INFO.qualifiedName")

    @property
    def quote(self) -> QuoteInfo | None:
        return self.attested if type(self.attested) is QuoteInfo else None

    def encode(self, *, sized: bool = False) -> bytes:
        """Marshal as TPMS_ATTEST, or TPM2B_ATTEST with `sized=True`."""
        a = self.attested
        if type(a) is QuoteInfo:
            body = a.pcr_select.encode() + b2(a.pcr_digest)
        elif type(a) is CertifyInfo:
            body = b2(a.name) + b2(a.qualified_name)
        else:
            body = a
        out = b"".join(
            (
                u32(self.magic),
                u16(self.type),
                b2(self.qualified_signer),
                b2(self.extra_data),
                u64(self.clock),
                u32(self.reset_count),
                u32(self.restart_count),
                u8(1 if self.safe else 0),
                u64(self.firmware_version),
                body,
            )
        )
        return b2(out) if sized else out


def _read_attest(r: Reader) -> UnverifiedAttest:
    magic = r.u32("TPMS_ATTEST.magic")
    st = r.u16("TPMS_ATTEST.type")
    signer = r.tpm2b("TPMS_ATTEST.qualifiedSigner", MAX_NAME)
    extra = r.tpm2b("TPMS_ATTEST.extraData", MAX_DATA)
    clock = r.u64("TPMS_ATTEST.clockInfo.clock")
    resets = r.u32("TPMS_ATTEST.clockInfo.resetCount")
    restarts = r.u32("TPMS_ATTEST.clockInfo.restartCount")
    safe = r.u8("TPMS_ATTEST.clockInfo.safe")
    if safe > 1:
        raise r.fail(f"TPMS_ATTEST.clockInfo.safe: {safe} is not TPMI_YES_NO (0 or 1)", r.pos - 1)
    fw = r.u64("TPMS_ATTEST.firmwareVersion")
    attested: QuoteInfo | CertifyInfo | bytes
    if st == AttestType.QUOTE:
        sel = read_pcr_selection(r, "TPMS_QUOTE_INFO.pcrSelect")
        attested = QuoteInfo(sel, r.tpm2b("TPMS_QUOTE_INFO.pcrDigest", MAX_DIGEST))
    elif st == AttestType.CERTIFY:
        name = r.tpm2b("TPMS_CERTIFY_INFO.name", MAX_NAME)
        attested = CertifyInfo(name, r.tpm2b("TPMS_CERTIFY_INFO.qualifiedName", MAX_NAME))
    else:
        attested = r.raw(r.end - r.pos, "TPMS_ATTEST.attested")
    r.done("TPMS_ATTEST")
    return _build((magic, st, signer, extra, clock, resets, restarts, safe == 1, fw, attested))


def _build(fields: tuple) -> UnverifiedAttest:
    """An UnverifiedAttest from decoded fields, valid by construction: no __post_init__ checks."""
    a = _new(UnverifiedAttest)
    for setter, value in zip(_SETTERS, fields, strict=True):
        setter(a, value)
    return a


def split_attest(data: bytes) -> tuple[bytes, UnverifiedAttest]:
    """Decode a TPMS_ATTEST or TPM2B_ATTEST; return the bare TPMS_ATTEST bytes (what the TPM signed)
    and their decoding.

    Rule: `data` is a TPM2B_ATTEST when its first u16 equals the number of bytes after it AND those
    bytes decode as a complete TPMS_ATTEST; otherwise it is read as a bare TPMS_ATTEST. A real bare
    TPMS_ATTEST starts with TPM_GENERATED_VALUE, whose first u16 (0xFF54) could only equal the rest
    of a 65,366-byte input, so real inputs are never ambiguous. When neither reading works, the error
    of the TPM2B reading is raised if the size matched, else that of the bare reading.
    """
    data = as_bytes(data, "TPMS_ATTEST")
    n = len(data)
    if n >= 2 and (data[0] << 8 | data[1]) == n - 2:
        a = _fast_attest(data, 2)
        if a is not None:
            return data[2:], a
        try:
            return data[2:], _read_attest(Reader(data, 2))
        except TpmStructureError as sized_error:
            try:
                return data, _read_attest(Reader(data))
            except TpmStructureError:
                raise sized_error from None
    a = _fast_attest(data, 0)
    if a is not None:
        return data, a
    return data, _read_attest(Reader(data))


_HEAD = struct.Struct(">IHH")
_CLOCK = struct.Struct(">QIIBQH")  # clockInfo, firmwareVersion, and the next u16
_U32 = struct.Struct(">I")
_HASH_BY_ID = {int(h): h for h in HashAlg}
_QUOTE = int(AttestType.QUOTE)
_CERTIFY = int(AttestType.CERTIFY)


def _fast_attest(data: bytes, off: int) -> UnverifiedAttest | None:
    """The common case without per-field error bookkeeping: None whenever anything is off, and the
    careful `_read_attest` then says what. Accepts only what `_read_attest` accepts, and decodes it
    the same way (the tests check both on random input)."""
    fields = attest_fields(data, off)
    return None if fields is None else _build(fields)


def attest_fields(data: bytes, off: int = 0) -> tuple | None:
    """`_fast_attest` as a plain tuple in field order (magic, type, ..., attested), or None.

    For `verify_quote`, which reads each field once and is measured against a bare signature check.
    """
    n = len(data)
    try:
        magic, st, size = _HEAD.unpack_from(data, off)
        if size > MAX_NAME:
            return None
        p = off + 8 + size
        signer = data[off + 8 : p]
        size = data[p] << 8 | data[p + 1]
        if size > MAX_DATA:
            return None
        p += 2
        extra = data[p : p + size]
        p += size
        clock, resets, restarts, safe, fw, first = _CLOCK.unpack_from(data, p)
        if safe > 1:
            return None
        p += 25
        if st == _QUOTE:
            (count,) = _U32.unpack_from(data, p)
            p += 4
            if count > MAX_BANKS:
                return None
            banks = []
            sizes = []
            for _ in range(count):
                alg = _HASH_BY_ID.get(data[p] << 8 | data[p + 1])
                size = data[p + 2]
                p += 3
                if alg is None or size > MAX_SELECT_BYTES or p + size > n:
                    return None
                for other, _indices in banks:
                    if other is alg:
                        return None
                if size == 3:
                    indices = _B0[data[p]] + _B1[data[p + 1]] + _B2[data[p + 2]]
                else:
                    indices = ()
                    for k in range(size):
                        indices += _BITS_AT[k][data[p + k]]
                p += size
                banks.append((alg, indices))
                sizes.append(size)
            size = data[p] << 8 | data[p + 1]
            p += 2
            if size > MAX_DIGEST or p + size != n:
                return None
            attested: QuoteInfo | CertifyInfo | bytes = _quote_info(
                _make_selection(tuple(banks), tuple(sizes)), data[p:]
            )
        elif st == _CERTIFY:
            if first > MAX_NAME:
                return None
            p += 2
            name = data[p : p + first]
            p += first
            size = data[p] << 8 | data[p + 1]
            p += 2
            if size > MAX_NAME or p + size != n:
                return None
            attested = CertifyInfo(name, data[p:])
        else:
            attested = data[p:]
    except (struct.error, IndexError):
        return None
    return magic, st, signer, extra, clock, resets, restarts, safe == 1, fw, attested


def _quote_info(sel: PcrSelection, digest: bytes) -> QuoteInfo:
    q = _new(QuoteInfo)
    _s_pcr_select(q, sel)
    _s_pcr_digest(q, digest)
    return q


_SETTERS = slot_setters(UnverifiedAttest)
_s_pcr_select, _s_pcr_digest = slot_setters(QuoteInfo)


_BITS_AT = tuple(tuple(tuple(8 * k + b for b in bits) for bits in _BITS) for k in range(MAX_SELECT_BYTES))
_B0, _B1, _B2 = _BITS_AT[:3]
_new = object.__new__


def parse_attest(data: bytes) -> UnverifiedAttest:
    """Decode a TPMS_ATTEST or TPM2B_ATTEST (told apart as `split_attest` says).

    Raises TpmStructureError on truncation, trailing bytes or an impossible size.
    """
    return split_attest(data)[1]
