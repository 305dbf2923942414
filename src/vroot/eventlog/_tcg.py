"""TCG PC Client event logs: decode and encode (PC Client Platform Firmware Profile 1.06, section 10).

Two wire formats:

- SHA-1 legacy: every event is a TCG_PCR_EVENT (pcrIndex u32, eventType u32, digest[20],
  eventSize u32, event[eventSize]), all little-endian.
- crypto-agile: the first event is a TCG_PCR_EVENT whose data is a TCG_EfiSpecIdEvent
  ("Spec ID Event03"), every later one a TCG_PCR_EVENT2 (pcrIndex, eventType, a TPML_DIGEST_VALUES
  count u32 and that many (algId u16, digest) pairs, eventSize u32, event). Digest sizes come from
  the Spec ID event, so an algorithm vroot does not know is still skipped correctly.

Proves: nothing. `parse_tcg_log` returns an `UnverifiedTcgLog`; only `verify_replay` against
quoted PCR values makes events trustworthy. Decoding is bounded (caps in the package docstring)
and every defect raises `EventLogError` naming the event and byte offset.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType

from vroot.errors import EventLogError
from vroot.eventlog._event_types import EVENT_TYPES, EventType
from vroot.eventlog._record import Record
from vroot.tpm2 import HashAlg

MAX_TCG_LOG_SIZE = 16 * 1024 * 1024
MAX_TCG_EVENTS = 100_000
MAX_EVENT_DATA_SIZE = 1024 * 1024
MAX_SPEC_ID_ALGORITHMS = 16
MAX_DIGEST_SIZE = 128
MAX_PCR_INDEX = 31  # TPM2_MAX_PCRS - 1, as tpm2_eventlog; EV_NO_ACTION may use any (Windows logs PCR -1)

SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"

_HDR1 = struct.Struct("<II20sI")  # TCG_PCR_EVENT header: 32 bytes
_HDR2 = struct.Struct("<III")  # TCG_PCR_EVENT2 up to the digests: 12 bytes
_SPEC = struct.Struct("<16sIBBBBI")  # TCG_EfiSpecIdEvent up to digestSizes: 28 bytes
_ALG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_ZERO20 = bytes(20)
_NO_ACTION = int(EventType.EV_NO_ACTION)
_KNOWN_ALGS: dict[int, HashAlg] = {int(a): a for a in HashAlg}


class SpecId(Record):
    """The TCG_EfiSpecIdEvent of a crypto-agile log.

    `digest_sizes` maps each algorithm (a `HashAlg`, or the raw TPM_ALG_ID int when vroot does not
    know it) to its digest size, in log order. `event_size` is the EventSize field as logged (it
    may be smaller than the structure: see `parse_tcg_log`).
    """

    __slots__ = (
        "platform_class",
        "spec_version_minor",
        "spec_version_major",
        "spec_errata",
        "uintn_size",
        "digest_sizes",
        "vendor_info",
        "event_size",
    )

    @property
    def algorithms(self) -> tuple[HashAlg | int, ...]:
        return tuple(self.digest_sizes)

    def structure(self) -> bytes:
        """The TCG_EfiSpecIdEvent bytes this record describes."""
        parts = [
            _SPEC.pack(
                SPEC_ID_SIGNATURE,
                self.platform_class,
                self.spec_version_minor,
                self.spec_version_major,
                self.spec_errata,
                self.uintn_size,
                len(self.digest_sizes),
            )
        ]
        parts += [_ALG.pack(int(alg), size) for alg, size in self.digest_sizes.items()]
        parts.append(bytes((len(self.vendor_info),)) + self.vendor_info)
        return b"".join(parts)


class TcgEvent(Record):
    """One event. `event_type` is an `EventType`, or the raw int for a value outside the spec.

    `digests` maps algorithm (`HashAlg`, or raw int if unknown) to digest, in log order. `offset`
    is the byte offset of the event in the log; `index` its position (0 = the first event, the
    Spec ID event of a crypto-agile log).
    """

    __slots__ = ("index", "offset", "pcr", "event_type", "digests", "data")


class UnverifiedTcgLog(Record):
    """A decoded TCG log. Unverified: its events prove nothing until `verify_replay` succeeds.

    `spec_id` is None for a SHA-1 legacy log. `events` holds every event, the Spec ID event
    included, so `encode_tcg_log` reproduces the input byte for byte.
    """

    __slots__ = ("spec_id", "events", "source")
    _defaults = {"source": None}
    _nocompare = frozenset({"source"})

    @property
    def crypto_agile(self) -> bool:
        return self.spec_id is not None

    @property
    def algorithms(self) -> tuple[HashAlg | int, ...]:
        """The digest algorithms the log declares (SHA-1 alone for a legacy log)."""
        return (HashAlg.SHA1,) if self.spec_id is None else self.spec_id.algorithms

    @property
    def measurements(self) -> tuple[TcgEvent, ...]:
        """The events after the Spec ID event (all events of a legacy log)."""
        return self.events if self.spec_id is None else self.events[1:]


def parse_tcg_log(data: bytes, *, source: str | None = None) -> UnverifiedTcgLog:
    """Decode a TCG PC Client log, SHA-1 legacy or crypto-agile (told apart by the first event).

    Raises `EventLogError` (offset, what) for an empty, truncated, oversized or malformed log.

    One leniency, as tpm2_eventlog: a Spec ID event whose EventSize is smaller than its own
    structure (vendorInfo running past EventSize, as in tpm2-tools' `specid-vendordata.bin`) spans
    the whole structure, because the structure's own lengths are unambiguous and the bytes after it
    are where the next event starts; strict parsers would fail on such a log, never read it another
    way. The declared EventSize is kept so the log re-encodes byte for byte.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EventLogError(f"a TCG log must be bytes, not {type(data).__name__}", offset=0, source=source)
    data = bytes(data)
    size = len(data)
    if size == 0:
        raise EventLogError("empty log: no events", offset=0, source=source)
    if size > MAX_TCG_LOG_SIZE:
        raise EventLogError(
            f"log of {size} bytes exceeds the cap of {MAX_TCG_LOG_SIZE} bytes", offset=0, source=source
        )
    if size < _HDR1.size:
        raise EventLogError(
            f"truncated first event header: {_HDR1.size} bytes needed, {size} present",
            offset=0,
            source=source,
        )
    _, event_type, _, _ = _HDR1.unpack_from(data, 0)
    if event_type == EventType.EV_NO_ACTION and data[32:48] == SPEC_ID_SIGNATURE:
        return _parse_agile(data, source)
    return UnverifiedTcgLog(spec_id=None, events=_parse_legacy(data, source), source=source)


def _fail(what: str, offset: int, source: str | None) -> EventLogError:
    return EventLogError(what, offset=offset, source=source)


def _parse_legacy(data: bytes, source: str | None) -> tuple[TcgEvent, ...]:
    events: list[TcgEvent] = []
    append = events.append
    unpack = _HDR1.unpack_from
    size = len(data)
    offset = 0
    index = 0
    sha1 = HashAlg.SHA1
    types = EVENT_TYPES
    make = TcgEvent._make  # positional: index, offset, pcr, event_type, digests, data
    while offset < size:
        if index >= MAX_TCG_EVENTS:
            raise _fail(f"more than {MAX_TCG_EVENTS} events", offset, source)
        if size - offset < 32:
            raise _fail(
                f"event {index}: truncated event header ({size - offset} of 32 bytes)", offset, source
            )
        pcr, event_type, digest, data_size = unpack(data, offset)
        if pcr > MAX_PCR_INDEX and event_type != _NO_ACTION:
            raise _fail(f"event {index}: PCR index {pcr} out of range (0-{MAX_PCR_INDEX})", offset, source)
        if data_size > MAX_EVENT_DATA_SIZE:
            raise _fail(
                f"event {index}: event data size {data_size} exceeds the cap of {MAX_EVENT_DATA_SIZE} bytes",
                offset + 28,
                source,
            )
        end = offset + 32 + data_size
        if end > size:
            raise _fail(
                f"event {index}: truncated event data ({size - offset - 32} of {data_size} bytes)",
                offset + 32,
                source,
            )
        append(
            make(
                index,
                offset,
                pcr,
                types.get(event_type, event_type),
                MappingProxyType({sha1: digest}),
                data[offset + 32 : end],
            )
        )
        offset = end
        index += 1
    return tuple(events)


def _parse_spec_id(data: bytes, source: str | None) -> tuple[SpecId, int]:
    """Decode the Spec ID event at offset 0; return it and the offset of the next event."""
    pcr, _, digest, declared = _HDR1.unpack_from(data, 0)
    if pcr != 0:
        raise _fail(f"Spec ID event: PCR index {pcr}, must be 0", 0, source)
    if digest != _ZERO20:
        raise _fail("Spec ID event: digest must be 20 zero bytes", 8, source)
    if declared > MAX_EVENT_DATA_SIZE:
        raise _fail(f"Spec ID event: event size {declared} exceeds the cap", 28, source)
    base = 32
    size = len(data)
    if size < base + _SPEC.size:
        raise _fail("Spec ID event: truncated TCG_EfiSpecIdEvent", base, source)
    _, platform_class, minor, major, errata, uintn, count = _SPEC.unpack_from(data, base)
    if count == 0:
        raise _fail("Spec ID event: numberOfAlgorithms is 0", base + 24, source)
    if count > MAX_SPEC_ID_ALGORITHMS:
        raise _fail(
            f"Spec ID event: numberOfAlgorithms {count} exceeds the cap of {MAX_SPEC_ID_ALGORITHMS}",
            base + 24,
            source,
        )
    pos = base + _SPEC.size
    if size < pos + 4 * count + 1:
        raise _fail("Spec ID event: truncated digestSizes", pos, source)
    sizes: dict[HashAlg | int, int] = {}
    for _ in range(count):
        alg_id, digest_size = _ALG.unpack_from(data, pos)
        alg = _KNOWN_ALGS.get(alg_id, alg_id)
        if alg in sizes:
            raise _fail(f"Spec ID event: algorithm 0x{alg_id:04x} listed twice", pos, source)
        if isinstance(alg, HashAlg) and digest_size != alg.digest_size:
            raise _fail(
                f"Spec ID event: {alg.bank} digest size {digest_size}, must be {alg.digest_size}", pos, source
            )
        if not 0 < digest_size <= MAX_DIGEST_SIZE:
            raise _fail(f"Spec ID event: digest size {digest_size} of algorithm 0x{alg_id:04x}", pos, source)
        sizes[alg] = digest_size
        pos += 4
    vendor_size = data[pos]
    pos += 1
    if size < pos + vendor_size:
        raise _fail("Spec ID event: truncated vendorInfo", pos, source)
    vendor = data[pos : pos + vendor_size]
    end = max(pos + vendor_size, base + declared)
    if end > size:
        raise _fail(f"Spec ID event: truncated event data ({size - base} of {declared} bytes)", base, source)
    spec = SpecId(
        platform_class=platform_class,
        spec_version_minor=minor,
        spec_version_major=major,
        spec_errata=errata,
        uintn_size=uintn,
        digest_sizes=MappingProxyType(sizes),
        vendor_info=vendor,
        event_size=declared,
    )
    return spec, end


def _parse_agile(data: bytes, source: str | None) -> UnverifiedTcgLog:
    spec, offset = _parse_spec_id(data, source)
    header = TcgEvent(
        index=0,
        offset=0,
        pcr=0,
        event_type=EventType.EV_NO_ACTION,
        digests=MappingProxyType({HashAlg.SHA1: _ZERO20}),
        data=data[32:offset],
    )
    events: list[TcgEvent] = [header]
    append = events.append
    by_id = {int(alg): (alg, n) for alg, n in spec.digest_sizes.items()}
    n_algs = len(by_id)
    unpack_hdr = _HDR2.unpack_from
    unpack_u16 = _U16.unpack_from
    unpack_u32 = _U32.unpack_from
    types = EVENT_TYPES
    make = TcgEvent._make  # positional: index, offset, pcr, event_type, digests, data
    size = len(data)
    index = 1
    while offset < size:
        if index >= MAX_TCG_EVENTS:
            raise _fail(f"more than {MAX_TCG_EVENTS} events", offset, source)
        if size - offset < 12:
            raise _fail(
                f"event {index}: truncated event header ({size - offset} of 12 bytes)", offset, source
            )
        pcr, event_type, count = unpack_hdr(data, offset)
        if pcr > MAX_PCR_INDEX and event_type != _NO_ACTION:
            raise _fail(f"event {index}: PCR index {pcr} out of range (0-{MAX_PCR_INDEX})", offset, source)
        if count > n_algs:
            raise _fail(
                f"event {index}: digest count {count} exceeds the {n_algs} algorithms of the Spec ID event",
                offset + 8,
                source,
            )
        pos = offset + 12
        digests: dict[HashAlg | int, bytes] = {}
        for _ in range(count):
            if pos + 2 > size:
                raise _fail(f"event {index}: truncated digest list", pos, source)
            (alg_id,) = unpack_u16(data, pos)
            known = by_id.get(alg_id)
            if known is None:
                raise _fail(
                    f"event {index}: digest algorithm 0x{alg_id:04x} is not declared in the Spec ID event",
                    pos,
                    source,
                )
            alg, digest_size = known
            if alg in digests:
                raise _fail(f"event {index}: digest algorithm 0x{alg_id:04x} listed twice", pos, source)
            pos += 2
            if pos + digest_size > size:
                raise _fail(f"event {index}: truncated digest", pos, source)
            digests[alg] = data[pos : pos + digest_size]
            pos += digest_size
        if pos + 4 > size:
            raise _fail(f"event {index}: truncated event size", pos, source)
        (data_size,) = unpack_u32(data, pos)
        if data_size > MAX_EVENT_DATA_SIZE:
            raise _fail(
                f"event {index}: event data size {data_size} exceeds the cap of {MAX_EVENT_DATA_SIZE} bytes",
                pos,
                source,
            )
        pos += 4
        end = pos + data_size
        if end > size:
            raise _fail(
                f"event {index}: truncated event data ({size - pos} of {data_size} bytes)", pos, source
            )
        append(
            make(
                index,
                offset,
                pcr,
                types.get(event_type, event_type),
                MappingProxyType(digests),
                data[pos:end],
            )
        )
        offset = end
        index += 1
    return UnverifiedTcgLog(spec_id=spec, events=tuple(events), source=source)


def encode_tcg_log(log: UnverifiedTcgLog) -> bytes:
    """The wire bytes of `log`; `encode_tcg_log(parse_tcg_log(b)) == b` for every log vroot reads.

    Raises `EventLogError` when an event cannot be written in the log's format (a legacy event
    without exactly one 20-byte SHA-1 digest, an agile digest of the wrong size or algorithm).
    """
    parts: list[bytes] = []
    if log.spec_id is None:
        for event in log.events:
            digest = event.digests.get(HashAlg.SHA1) if len(event.digests) == 1 else None
            if digest is None or len(digest) != 20:
                raise _fail(
                    f"event {event.index}: a SHA-1 log event needs exactly one SHA-1 digest",
                    event.offset,
                    log.source,
                )
            parts.append(_HDR1.pack(event.pcr, int(event.event_type), digest, len(event.data)))
            parts.append(event.data)
        return b"".join(parts)
    spec = log.spec_id
    events = log.events
    if not events or events[0].event_type != EventType.EV_NO_ACTION:
        raise _fail("a crypto-agile log starts with its Spec ID event", 0, log.source)
    parts.append(_HDR1.pack(0, EventType.EV_NO_ACTION, _ZERO20, spec.event_size))
    parts.append(events[0].data)
    sizes = spec.digest_sizes
    for event in events[1:]:
        parts.append(_HDR2.pack(event.pcr, int(event.event_type), len(event.digests)))
        for alg, digest in event.digests.items():
            if sizes.get(alg) != len(digest):
                raise _fail(
                    f"event {event.index}: {len(digest)}-byte digest for algorithm {alg!r} "
                    "does not match the Spec ID event",
                    event.offset,
                    log.source,
                )
            parts.append(_U16.pack(int(alg)))
            parts.append(digest)
        parts.append(_U32.pack(len(event.data)))
        parts.append(event.data)
    return b"".join(parts)


def wire_size(event: TcgEvent, *, agile: bool) -> int:
    """The number of bytes `event` takes in a log of the given format (the first event of a
    crypto-agile log, its Spec ID event, is a TCG_PCR_EVENT too)."""
    if not agile or event.index == 0:
        return 32 + len(event.data)
    return 16 + sum(2 + len(d) for d in event.digests.values()) + len(event.data)


def append_events(
    log: UnverifiedTcgLog, additions: list[tuple[int, EventType | int, bytes, Mapping[HashAlg | int, bytes]]]
) -> UnverifiedTcgLog:
    """A copy of `log` with events (pcr, type, data, digests) appended, indices and offsets set."""
    events = list(log.events)
    agile = log.spec_id is not None
    last = events[-1] if events else None
    offset = 0 if last is None else last.offset + wire_size(last, agile=agile)
    for pcr, event_type, data, digests in additions:
        event = TcgEvent(
            index=len(events),
            offset=offset,
            pcr=pcr,
            event_type=event_type,
            digests=MappingProxyType(dict(digests)),
            data=data,
        )
        events.append(event)
        offset += wire_size(event, agile=agile)
    return UnverifiedTcgLog(spec_id=log.spec_id, events=tuple(events), source=log.source)
