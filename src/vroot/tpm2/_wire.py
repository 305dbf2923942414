"""A bounded big-endian reader for TPM 2.0 wire structures, and the few writer helpers.

Every read checks the bytes are there; every TPM2B checks its size against the structure's maximum
before slicing; `done()` rejects trailing bytes. Errors are `TpmStructureError(what, offset=...)`
with the absolute offset of the field that failed and the name of the structure and field.
"""

from __future__ import annotations

import struct

from vroot.errors import TpmStructureError
from vroot.tpm2._alg import HashAlg

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

# TPM_ALG_NULL
ALG_NULL = 0x0010


class Reader:
    """Reads `buf` from `pos`; every method raises TpmStructureError instead of running off the end."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def fail(self, what: str, offset: int | None = None) -> TpmStructureError:
        return TpmStructureError(what, offset=self.pos if offset is None else offset)

    def need(self, n: int, field: str) -> int:
        pos = self.pos
        if pos + n > self.end:
            raise TpmStructureError(f"{field}: truncated, needs {n} bytes, {self.end - pos} left", offset=pos)
        self.pos = pos + n
        return pos

    def u8(self, field: str) -> int:
        return self.buf[self.need(1, field)]

    def u16(self, field: str) -> int:
        return _U16.unpack_from(self.buf, self.need(2, field))[0]

    def u32(self, field: str) -> int:
        return _U32.unpack_from(self.buf, self.need(4, field))[0]

    def u64(self, field: str) -> int:
        return _U64.unpack_from(self.buf, self.need(8, field))[0]

    def raw(self, n: int, field: str) -> bytes:
        pos = self.need(n, field)
        return self.buf[pos : pos + n]

    def tpm2b(self, field: str, maximum: int) -> bytes:
        """A TPM2B: u16 size then that many bytes; the size may not exceed `maximum` (part 2)."""
        pos = self.pos
        size = self.u16(field)
        if size > maximum:
            raise TpmStructureError(f"{field}: size {size} exceeds the maximum {maximum}", offset=pos)
        if self.pos + size > self.end:
            raise TpmStructureError(
                f"{field}: truncated, size {size} but {self.end - self.pos} bytes left", offset=pos
            )
        start = self.pos
        self.pos = start + size
        return self.buf[start : start + size]

    def hash_alg(self, field: str) -> HashAlg:
        pos = self.pos
        alg = self.u16(field)
        try:
            return HashAlg(alg)
        except ValueError:
            raise TpmStructureError(f"{field}: unknown hash algorithm 0x{alg:04x}", offset=pos) from None

    def hash_alg_or_null(self, field: str) -> HashAlg | None:
        pos = self.pos
        alg = self.u16(field)
        if alg == ALG_NULL:
            return None
        try:
            return HashAlg(alg)
        except ValueError:
            raise TpmStructureError(f"{field}: unknown hash algorithm 0x{alg:04x}", offset=pos) from None

    def done(self, what: str) -> None:
        if self.pos != self.end:
            raise TpmStructureError(f"{what}: {self.end - self.pos} trailing bytes", offset=self.pos)


def as_bytes(data: bytes | bytearray | memoryview, what: str) -> bytes:
    """The input as `bytes` (a copy only when it is not bytes already)."""
    if type(data) is bytes:
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TpmStructureError(f"{what}: expected bytes, got {type(data).__name__}")


def unwrap_sized(data: bytes) -> bytes | None:
    """The payload if `data` is a TPM2B whose u16 size equals the rest of `data`, else None."""
    if len(data) >= 2 and _U16.unpack_from(data)[0] == len(data) - 2:
        return data[2:]
    return None


def b2(data: bytes) -> bytes:
    """Marshal a TPM2B."""
    return _U16.pack(len(data)) + data


def check_2b(value: bytes, maximum: int, field: str) -> None:
    """Writer-side bound check, so that encode() never produces what parse() would refuse."""
    if not isinstance(value, bytes):
        raise TpmStructureError(f"{field}: expected bytes, got {type(value).__name__}")
    if len(value) > maximum:
        raise TpmStructureError(f"{field}: size {len(value)} exceeds the maximum {maximum}")


def check_uint(value: int, bits: int, field: str) -> None:
    if not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise TpmStructureError(f"{field}: {value!r} is not a {bits}-bit unsigned integer")


def slot_setters(cls: type) -> tuple:
    """The slot descriptors' setters of a frozen slots dataclass, in field order.

    Parsers whose output is valid by construction fill objects with these instead of the generated
    frozen `__init__` (which calls `object.__setattr__` and `__post_init__` per object: several times
    slower, and quote verification is measured against a bare signature check).
    """
    import dataclasses

    return tuple(cls.__dict__[f.name].__set__ for f in dataclasses.fields(cls))


u16 = _U16.pack
u32 = _U32.pack
u64 = _U64.pack
u8 = _U8.pack
