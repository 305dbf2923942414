"""Linux IMA measurement lists, ASCII and binary: decode, check, encode.

Binary entry (binary_runtime_measurements, little-endian as on x86 or with ima_canonical_fmt):
pcr u32, template hash [20] (SHA-1), template name length u32 + name, then the template data
length u32 + template data, each field of it `u32 length || bytes`. The legacy `ima` template has
no template data length: digest [20], then name length u32 + name (no NUL).

ASCII entry (ascii_runtime_measurements): `"%2d <template hash hex> <template name>"`, then one
space and the shown form of each field, then a newline (see `_ima_fields`). Per-bank lists
(`ascii_runtime_measurements_sha256`, ...) show a longer template hash; vroot reads those too.

`ImaEntry.template_data` is the exact data the template hash covers: for `ima`, the 20-byte digest
followed by the name NUL-padded to 256 bytes (what the kernel hashes), for every other template
the length-prefixed fields. For ASCII it is rebuilt from the fields; for an ASCII entry of a
template vroot does not know it is None (`raw_fields` keeps the text), and only the bank of its
template hash can be replayed.

Proves: nothing; the list is unverified until PCR 10 is replayed against a quote. Parsing checks
that each non-violation template hash equals the hash of the template data (a structural check:
a list where they differ is corrupt or forged).
"""

from __future__ import annotations

import struct

from vroot.errors import EventLogError
from vroot.eventlog import _ima_fields as F
from vroot.eventlog._ima_fast import fast_entry
from vroot.eventlog._pcrs import hasher
from vroot.eventlog._record import Record
from vroot.tpm2 import HashAlg

MAX_IMA_LOG_SIZE = 128 * 1024 * 1024
MAX_IMA_ENTRIES = 1_000_000
MAX_TEMPLATE_NAME = 255
MAX_TEMPLATE_DATA = 1024 * 1024
MAX_ASCII_LINE = 2 * MAX_TEMPLATE_DATA + 1024

_U32 = struct.Struct("<I")
_PRINTABLE = bytes(range(0x21, 0x7F))
_ENTRY_HEAD = struct.Struct("<I20sI")
_TEMPLATE_HASH_ALGS = {20: (HashAlg.SHA1,), 32: (HashAlg.SHA256, HashAlg.SM3_256), 48: (HashAlg.SHA384,),
                       64: (HashAlg.SHA512,)}  # fmt: skip


class ImaEntry(Record):
    """One measurement. `template_hash` is as logged (`template_hash_alg` says which hash: SHA-1
    in the standard lists). Decoded fields are None when the template has no such field or is
    unknown: `digest_alg` (kernel name, e.g. "sha256"), `file_digest`, `path` (the n/n-ng name,
    for ima-buf the buffer's name), `signature` (ima-sig), `buf` (ima-buf)."""

    __slots__ = (
        "pcr",
        "template_hash",
        "template_name",
        "template_data",
        "template_hash_alg",
        "digest_alg",
        "file_digest",
        "path",
        "signature",
        "buf",
        "raw_fields",
        "offset",
        "line",
    )
    _defaults = {
        "template_hash_alg": HashAlg.SHA1,
        "digest_alg": None,
        "file_digest": None,
        "path": None,
        "signature": None,
        "buf": None,
        "raw_fields": None,
        "offset": 0,
        "line": None,
    }
    _nocompare = frozenset({"offset", "line"})

    @property
    def violation(self) -> bool:
        """A violation (ToMToU, open-writers) is logged with an all-zero template hash."""
        return not any(self.template_hash)

    @property
    def file_digest_hash_alg(self) -> HashAlg | None:
        return None if self.digest_alg is None else F.IMA_HASH_ALGS.get(self.digest_alg)


class UnverifiedImaLog(Record):
    """A decoded IMA list (`format` "ascii" or "binary"). Unverified until replayed against a quote."""

    __slots__ = ("entries", "format", "source", "_replays")  # _replays: `replay_ima_log`'s, from zero
    _defaults = {"source": None}
    _nocompare = frozenset({"source"})


def parse_ima_log(data: bytes, *, source: str | None = None) -> UnverifiedImaLog:
    """Decode an IMA list, ASCII or binary (told apart by the first byte: ASCII starts with the
    PCR number, a binary list with a little-endian u32 below 0x20). An empty input is an empty list
    (an incremental read with nothing new). Raises `EventLogError` with the byte offset (and line
    number for ASCII) of the first defect, including a template hash that does not match."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EventLogError(f"an IMA log must be bytes, not {type(data).__name__}", offset=0, source=source)
    data = bytes(data)
    if len(data) > MAX_IMA_LOG_SIZE:
        raise EventLogError(
            f"log of {len(data)} bytes exceeds the cap of {MAX_IMA_LOG_SIZE} bytes", offset=0, source=source
        )
    if not data:
        return UnverifiedImaLog(entries=(), format="binary", source=source)
    if data[0] in b" 0123456789":
        return UnverifiedImaLog(entries=_parse_ascii(data, source), format="ascii", source=source)
    return UnverifiedImaLog(entries=_parse_binary(data, source), format="binary", source=source)


def _decode(name: str, template_hash: bytes, fields: list[bytes] | None) -> dict[str, object]:
    """The decoded-field keywords of an entry (raises FieldError)."""
    out: dict[str, object] = {}
    ids = F.template_fields(name)
    if ids is None or fields is None:
        return out
    violation = not any(template_hash)
    for field_id, value in zip(ids, fields, strict=True):
        F.check_field(field_id, value)
        if field_id in ("d", "d-ng"):
            out["digest_alg"], out["file_digest"] = F.decode_digest(field_id, value, violation=violation)
        elif field_id in ("n", "n-ng"):
            out["path"] = value[:-1].decode("utf-8", "surrogateescape")
        elif field_id == "sig":
            out["signature"] = value
        elif field_id == "buf":
            out["buf"] = value
        elif field_id == "d-modsig" and value:
            F.decode_digest(field_id, value, violation=violation)
    return out


def _template_data(name: str, fields: list[bytes]) -> bytes:
    if name == "ima":
        digest, path = fields
        return digest + path[:-1].ljust(F.IMA_NAME_FIELD_SIZE, b"\x00")
    return b"".join(_U32.pack(len(f)) + f for f in fields)


def _split_fields(name: str, data: bytes) -> list[bytes] | None:
    """The fields of a known template's data, or None for an unknown template (raises FieldError)."""
    ids = F.template_fields(name)
    if ids is None:
        return None
    fields, pos = [], 0
    for field_id in ids:
        if pos + 4 > len(data):
            raise F.FieldError(f"template data ends before field {field_id!r}")
        (size,) = _U32.unpack_from(data, pos)
        pos += 4
        if pos + size > len(data):
            raise F.FieldError(f"field {field_id!r} of {size} bytes runs past the template data")
        fields.append(data[pos : pos + size])
        pos += size
    if pos != len(data):
        raise F.FieldError(f"{len(data) - pos} bytes after the last field of template {name!r}")
    return fields


def _entry(
    pcr: int,
    template_hash: bytes,
    name: str,
    data: bytes | None,
    fields: list[bytes] | None,
    raw_fields: str | None,
    offset: int,
    line: int | None,
    source: str | None,
) -> ImaEntry:
    try:
        decoded = _decode(name, template_hash, fields)
    except F.FieldError as exc:
        raise F.fail(f"entry of template {name!r}: {exc}", offset=offset, line=line, source=source) from None
    get = decoded.get
    path = get("path")
    alg = _template_hash_alg(template_hash, data, path, offset, line, source)
    return ImaEntry._make(pcr, template_hash, name, data, alg, get("digest_alg"), get("file_digest"), path,
                          get("signature"), get("buf"), raw_fields, offset, line)  # fmt: skip


def _check_template_hash(entry: ImaEntry, source: str | None) -> HashAlg:
    """The hash algorithm of the entry's template hash; EventLogError if it does not match."""
    return _template_hash_alg(entry.template_hash, entry.template_data, entry.path, entry.offset, entry.line, source)


def _template_hash_alg(
    template_hash: bytes, data: bytes | None, path: str | None, offset: int, line: int | None, source: str | None
) -> HashAlg:
    candidates = _TEMPLATE_HASH_ALGS.get(len(template_hash))
    if candidates is None:
        raise F.fail(f"template hash of {len(template_hash)} bytes", offset=offset, line=line, source=source)
    if data is None or not any(template_hash):  # unknown template, or a violation
        return candidates[0]
    for alg in candidates:
        new = hasher(alg)
        if new is not None and new(data).digest() == template_hash:  # None: SM3 missing from this OpenSSL
            return alg
    raise F.fail(
        f"template hash {template_hash.hex()} is not the {candidates[0].bank} of the template data (path {path!r})",
        offset=offset,
        line=line,
        source=source,
    )


def verify_template_hash(entry: ImaEntry, *, source: str | None = None) -> None:
    """Raise `EventLogError` (with the entry's offset and line) unless a non-violation entry's
    template hash is the hash of its template data. `parse_ima_log` already does this for every
    entry; call it for entries made or changed elsewhere. An ASCII entry of a template vroot does
    not know has no template data and cannot be checked (its replay is limited accordingly)."""
    _check_template_hash(entry, source)


def _parse_binary(data: bytes, source: str | None) -> tuple[ImaEntry, ...]:
    entries: list[ImaEntry] = []
    size = len(data)
    offset = 0
    while offset < size:
        if len(entries) >= MAX_IMA_ENTRIES:
            raise F.fail(f"more than {MAX_IMA_ENTRIES} entries", offset=offset, line=None, source=source)
        if size - offset < 28:
            raise F.fail(
                f"truncated entry header ({size - offset} of 28 bytes)",
                offset=offset,
                line=None,
                source=source,
            )
        pcr, template_hash, name_len = _ENTRY_HEAD.unpack_from(data, offset)
        if name_len == 0 or name_len > MAX_TEMPLATE_NAME:
            raise F.fail(
                f"template name length {name_len} (1-{MAX_TEMPLATE_NAME})",
                offset=offset + 24,
                line=None,
                source=source,
            )
        pos = offset + 28
        if pos + name_len > size:
            raise F.fail("truncated template name", offset=pos, line=None, source=source)
        raw_name = data[pos : pos + name_len]
        if not _printable(raw_name):
            raise F.fail(
                f"template name {raw_name[:40]!r} is not printable ASCII",
                offset=pos,
                line=None,
                source=source,
            )
        name = raw_name.decode("ascii")
        pos += name_len
        try:
            if name == "ima":
                if pos + 24 > size:
                    raise F.FieldError("truncated ima template digest or name length")
                digest = data[pos : pos + 20]
                (path_len,) = _U32.unpack_from(data, pos + 20)
                pos += 24
                if path_len >= F.IMA_NAME_FIELD_SIZE or pos + path_len > size:
                    raise F.FieldError(f"ima template name of {path_len} bytes (at most 255, within the log)")
                fields = [digest, data[pos : pos + path_len] + b"\x00"]
                pos += path_len
                template_data = _template_data(name, fields)
            else:
                if pos + 4 > size:
                    raise F.FieldError("truncated template data length")
                (data_len,) = _U32.unpack_from(data, pos)
                if data_len > MAX_TEMPLATE_DATA:
                    raise F.FieldError(
                        f"template data length {data_len} exceeds the cap of {MAX_TEMPLATE_DATA}"
                    )
                pos += 4
                if pos + data_len > size:
                    raise F.FieldError(f"truncated template data ({size - pos} of {data_len} bytes)")
                template_data = data[pos : pos + data_len]
                pos += data_len
                fields = _split_fields(name, template_data)
        except F.FieldError as exc:
            raise F.fail(str(exc), offset=offset, line=None, source=source) from None
        entries.append(_entry(pcr, template_hash, name, template_data, fields, None, offset, None, source))
        offset = pos
    return tuple(entries)


def _printable(raw: bytes) -> bool:
    return not raw.translate(None, _PRINTABLE)  # nothing left once every 0x21-0x7E byte is deleted


def _parse_ascii(data: bytes, source: str | None) -> tuple[ImaEntry, ...]:
    # Each line goes to the fast path first (`_ima_fast`), which takes only lines this reader
    # would decode to the same entry; the careful `_parse_line` decides the others and raises for a
    # malformed one. At most MAX_IMA_ENTRIES + 1 pieces: the last one, when there are that many, is
    # the rest of the data, which is an error unless empty.
    lines = data.split(b"\n", MAX_IMA_ENTRIES)
    if not lines[-1]:  # the final newline
        lines.pop()
    rest = lines.pop() if len(lines) > MAX_IMA_ENTRIES else None
    entries: list[ImaEntry] = []
    append = entries.append
    make = ImaEntry._maker()
    offset = 0
    for line_no, line in enumerate(lines, 1):
        if len(line) > MAX_ASCII_LINE:
            raise F.fail(f"line longer than {MAX_ASCII_LINE} bytes", offset=offset, line=line_no, source=source)
        entry = fast_entry(line, offset, line_no, make, MAX_TEMPLATE_DATA)
        append(_parse_line(line, offset, line_no, source) if entry is None else entry)
        offset += len(line) + 1
    if rest is not None:
        raise F.fail(f"more than {MAX_IMA_ENTRIES} entries", offset=offset, line=len(lines) + 1, source=source)
    return tuple(entries)


def _parse_line(line: bytes, offset: int, line_no: int, source: str | None) -> ImaEntry:
    where = {"offset": offset, "line": line_no, "source": source}
    start = 1 if line[:1] == b" " else 0
    tokens = line[start:].split(b" ", 3)
    if len(tokens) < 3:
        raise F.fail("not '<pcr> <template hash> <template name> <fields>'", **where)
    pcr_text, hash_text, raw_name = tokens[0], tokens[1], tokens[2]
    if not pcr_text.isdigit() or len(pcr_text) > 10 or int(pcr_text) > 0xFFFFFFFF:
        raise F.fail(f"PCR {pcr_text[:20]!r} is not a number", **where)
    if not (len(hash_text) in (40, 64, 96, 128) and hash_text == hash_text.lower()):
        raise F.fail(f"template hash {hash_text[:40]!r} is not 20-64 bytes of lowercase hex", **where)
    try:
        template_hash = bytes.fromhex(hash_text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise F.fail(f"template hash {hash_text[:40]!r} is not hex", **where) from None
    if not raw_name or len(raw_name) > MAX_TEMPLATE_NAME or not _printable(raw_name):
        raise F.fail(f"template name {raw_name[:40]!r} is not printable ASCII", **where)
    name = raw_name.decode("ascii")
    rest = tokens[3] if len(tokens) == 4 else None
    ids = F.template_fields(name)
    if ids is None:
        if rest is None:
            raise F.fail(f"no fields after template name {name!r}", **where)
        raw = rest.decode("utf-8", "surrogateescape")
        return _entry(int(pcr_text), template_hash, name, None, None, raw, offset, line_no, source)
    values = [] if rest is None else rest.split(b" ")
    if len(values) != len(ids):
        raise F.fail(f"template {name!r} has {len(ids)} fields, the line {len(values)}", **where)
    try:
        if name == "ima":
            fields = [F.field_from_ascii("d", values[0]), F.field_from_ascii("n", values[1])]
            if len(fields[0]) != 20 or len(fields[1]) > F.IMA_NAME_FIELD_SIZE:
                raise F.FieldError("ima template needs a 20-byte digest and a name of at most 255 bytes")
        else:
            fields = [F.field_from_ascii(i, v) for i, v in zip(ids, values, strict=True)]
            if sum(len(f) + 4 for f in fields) > MAX_TEMPLATE_DATA:
                raise F.FieldError(f"template data exceeds the cap of {MAX_TEMPLATE_DATA} bytes")
    except F.FieldError as exc:
        raise F.fail(str(exc), **where) from None
    template_data = _template_data(name, fields)
    return _entry(int(pcr_text), template_hash, name, template_data, fields, None, offset, line_no, source)


def _entry_fields(entry: ImaEntry) -> list[bytes] | None:
    if entry.template_data is None:
        return None
    if entry.template_name == "ima":
        digest, padded = entry.template_data[:20], entry.template_data[20:]
        return [digest, padded.rstrip(b"\x00") + b"\x00"]
    return _split_fields(entry.template_name, entry.template_data)


def encode_ima_binary(log: UnverifiedImaLog) -> bytes:
    """The binary list of `log` (what binary_runtime_measurements shows, little-endian).
    `encode_ima_binary(parse_ima_log(b)) == b` for every binary list vroot reads."""
    parts: list[bytes] = []
    for entry in log.entries:
        where = {"offset": entry.offset, "line": entry.line, "source": log.source}
        if len(entry.template_hash) != 20 or entry.template_data is None:
            raise F.fail(
                "only entries with a SHA-1 template hash and known template data encode as binary", **where
            )
        name = entry.template_name.encode("ascii")
        parts.append(_ENTRY_HEAD.pack(entry.pcr, entry.template_hash, len(name)) + name)
        if entry.template_name == "ima":
            digest, path = _entry_fields(entry)  # type: ignore[misc]
            parts.append(digest + _U32.pack(len(path) - 1) + path[:-1])
        else:
            parts.append(_U32.pack(len(entry.template_data)) + entry.template_data)
    return b"".join(parts)


def encode_ima_ascii(log: UnverifiedImaLog) -> bytes:
    """The ASCII list of `log`, as the kernel prints it. `encode_ima_ascii(parse_ima_log(b)) == b`
    for every ASCII list in the kernel's own format (PCR as `%2d`, lowercase hex, final newline)."""
    lines: list[bytes] = []
    for entry in log.entries:
        where = {"offset": entry.offset, "line": entry.line, "source": log.source}
        head = b"%2d %s %s" % (
            entry.pcr,
            entry.template_hash.hex().encode(),
            entry.template_name.encode("ascii"),
        )
        if entry.template_data is None:
            lines.append(head + b" " + entry.raw_fields.encode("utf-8", "surrogateescape") + b"\n")
            continue
        ids = F.template_fields(entry.template_name)
        fields = None if ids is None else _entry_fields(entry)
        if ids is None or fields is None:
            raise F.fail(f"template {entry.template_name!r} has no known ASCII form", **where)
        tokens = [F.field_to_ascii(i, f) for i, f in zip(ids, fields, strict=True)]
        if any(b" " in t or b"\n" in t for t in tokens):
            raise F.fail("a field holds a space or newline, which the ASCII list cannot show", **where)
        lines.append(head + b"".join(b" " + t for t in tokens) + b"\n")
    return b"".join(lines)


def ima_ng_entry(path: str, file_digest: bytes, *, alg: HashAlg, pcr: int = 10) -> ImaEntry:
    """A new `ima-ng` entry for `path` with its file digest; the template hash is computed."""
    name = F.KERNEL_HASH_NAMES.get(alg)
    if name is None or len(file_digest) != alg.digest_size:
        raise EventLogError(f"ima_ng_entry: a {alg.bank} file digest is {alg.digest_size} bytes", offset=None)
    encoded = path.encode("utf-8", "surrogateescape").replace(b" ", b"_")
    if b"\x00" in encoded or b"\n" in encoded or not encoded:
        raise EventLogError(f"ima_ng_entry: path {path!r} cannot be measured", offset=None)
    fields = [name.encode() + b":\x00" + bytes(file_digest), encoded + b"\x00"]
    data = _template_data("ima-ng", fields)
    return ImaEntry(
        pcr=pcr,
        template_hash=HashAlg.SHA1.digest(data),
        template_name="ima-ng",
        template_data=data,
        digest_alg=name,
        file_digest=bytes(file_digest),
        path=encoded.decode("utf-8", "surrogateescape"),
    )
