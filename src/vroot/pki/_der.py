"""A tiny, strict DER reader and writer: only what vroot's certificates need (X.690 section 10).

Writer: `tlv(tag, content)` with minimal definite lengths, and the few types used (SEQUENCE, SET,
INTEGER, OCTET STRING, UTF8String, OBJECT IDENTIFIER, BIT STRING). Reader: `read_tlv` for one
element, `elements` for the contents of a constructed one. The reader accepts only low tag numbers
(one identifier byte), definite lengths in minimal form of at most `MAX_LENGTH_BYTES` bytes, and
contents inside the bounds it was given; anything else raises `InvalidInput` naming the offset.
No recursion, no indefinite lengths: its cost is linear in the input.
"""

from __future__ import annotations

from vroot.errors import InvalidInput

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
OBJECT_IDENTIFIER = 0x06
UTF8_STRING = 0x0C

MAX_LENGTH_BYTES = 3  # contents up to 16 MiB: more than any certificate vroot reads or writes


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if len(body) > MAX_LENGTH_BYTES:
        raise InvalidInput(f"DER: content of {n} bytes is too long")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    """One element: identifier byte, minimal definite length, contents."""
    if not 0 <= tag <= 0xFF or tag & 0x1F == 0x1F:
        raise InvalidInput(f"DER: tag 0x{tag:x} is not a one-byte low tag")
    return bytes([tag]) + _length(len(content)) + content


def sequence(*items: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(items))


def set_of(*items: bytes) -> bytes:
    """A SET OF: DER sorts the encoded elements (X.690 11.6)."""
    return tlv(SET, b"".join(sorted(items)))


def octet_string(data: bytes) -> bytes:
    return tlv(OCTET_STRING, bytes(data))


def utf8_string(text: str) -> bytes:
    return tlv(UTF8_STRING, text.encode("utf-8"))


def bit_string(data: bytes) -> bytes:
    """A BIT STRING of whole bytes (no unused bits), as a signatureValue is."""
    return tlv(BIT_STRING, b"\0" + bytes(data))


def integer(n: int) -> bytes:
    """A non-negative INTEGER in the fewest bytes (a leading zero only to keep it positive)."""
    if n < 0:
        raise InvalidInput("DER: only non-negative INTEGERs are written here")
    return tlv(INTEGER, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def object_identifier(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER from its dotted form (`2.23.133.2.16`)."""
    try:
        arcs = [int(a) for a in dotted.split(".")]
    except ValueError:
        raise InvalidInput(f"DER: {dotted!r} is not a dotted OID") from None
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39) or min(arcs) < 0:
        raise InvalidInput(f"DER: {dotted!r} is not a valid OID")
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(OBJECT_IDENTIFIER, bytes(out))


def read_tlv(data: bytes, pos: int = 0, end: int | None = None) -> tuple[int, int, int]:
    """The element at `pos`: (tag, start of contents, end of contents), all inside `[pos, end)`."""
    end = len(data) if end is None else end
    if pos >= end:
        raise InvalidInput(f"DER: truncated, no element at offset {pos}")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise InvalidInput(f"DER: high tag number at offset {pos}")
    if pos + 1 >= end:
        raise InvalidInput(f"DER: truncated length at offset {pos + 1}")
    first = data[pos + 1]
    start = pos + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0:
            raise InvalidInput(f"DER: indefinite length at offset {pos + 1}")
        if count > MAX_LENGTH_BYTES:
            raise InvalidInput(f"DER: {count}-byte length at offset {pos + 1}")
        if start + count > end:
            raise InvalidInput(f"DER: truncated length at offset {pos + 1}")
        length = int.from_bytes(data[start : start + count], "big")
        if length < 0x80 or data[start] == 0:
            raise InvalidInput(f"DER: length not in minimal form at offset {pos + 1}")
        start += count
    if start + length > end:
        raise InvalidInput(f"DER: element at offset {pos} runs {start + length - end} bytes past its end")
    return tag, start, start + length


def elements(data: bytes, start: int, end: int, *, limit: int) -> list[tuple[int, bytes]]:
    """The (tag, contents) of the elements laid one after another in `data[start:end]`; at most `limit`."""
    out: list[tuple[int, bytes]] = []
    pos = start
    while pos < end:
        if len(out) == limit:
            raise InvalidInput(f"DER: more than {limit} elements at offset {pos}")
        tag, c_start, c_end = read_tlv(data, pos, end)
        out.append((tag, data[c_start:c_end]))
        pos = c_end
    return out


def read_single(data: bytes, tag: int, what: str) -> tuple[int, int]:
    """The contents bounds of `data`, which must be exactly one element with `tag`."""
    got, start, end = read_tlv(data)
    if got != tag:
        raise InvalidInput(f"{what}: tag 0x{got:02x}, want 0x{tag:02x}")
    if end != len(data):
        raise InvalidInput(f"{what}: {len(data) - end} trailing bytes")
    return start, end
