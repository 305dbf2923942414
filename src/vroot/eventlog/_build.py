"""Write TCG logs: `TcgLogBuilder`, and helpers that build typed event data.

Logs built here are genuine PC Client logs: crypto-agile (Spec ID Event03 header, then
TCG_PCR_EVENT2) by default, or SHA-1 legacy with `legacy=True`; tpm2_eventlog reads them.

    builder = TcgLogBuilder(banks=(HashAlg.SHA1, HashAlg.SHA256))
    builder.add(0, EventType.EV_NO_ACTION, startup_locality(3))
    builder.add(0, EventType.EV_S_CRTM_VERSION, scrtm_version("vroot vCRTM 1.0"))
    builder.add(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, efi_image_load_event(length=n), measured=image)
    log = builder.build()          # an UnverifiedTcgLog; encode_tcg_log(log) gives the bytes
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from vroot.errors import InvalidInput
from vroot.eventlog._event_types import EVENT_TYPES, EventType
from vroot.eventlog._tcg import SpecId, TcgEvent, UnverifiedTcgLog, wire_size
from vroot.tpm2 import HashAlg

_NO_ACTION = EventType.EV_NO_ACTION


class TcgLogBuilder:
    """Accumulates events and builds an `UnverifiedTcgLog`.

    `banks` are the PCR banks (Spec ID algorithms, in order). `add()` digests `measured` (or, when
    it is None, the event data itself) with every bank, or takes explicit `digests`; EV_NO_ACTION
    events get all-zero digests, as the spec requires.
    """

    def __init__(
        self,
        banks: Iterable[HashAlg] = (HashAlg.SHA1, HashAlg.SHA256),
        *,
        legacy: bool = False,
        vendor_info: bytes = b"",
        platform_class: int = 0,
    ) -> None:
        banks = tuple(HashAlg(b) for b in banks)
        if not banks or len(set(banks)) != len(banks):
            raise InvalidInput("TcgLogBuilder: banks must be distinct and not empty")
        if legacy and banks != (HashAlg.SHA1,):
            raise InvalidInput("TcgLogBuilder: a legacy (TCG_PCR_EVENT) log has only the SHA-1 bank")
        if len(vendor_info) > 255:
            raise InvalidInput("TcgLogBuilder: vendor_info is at most 255 bytes")
        self._banks = banks
        self._legacy = legacy
        self._spec_id: SpecId | None = None
        self._events: list[TcgEvent] = []
        self._offset = 0
        if not legacy:
            spec = SpecId(
                platform_class=platform_class,
                spec_version_minor=0,
                spec_version_major=2,
                spec_errata=0,
                uintn_size=2,
                digest_sizes=MappingProxyType({alg: alg.digest_size for alg in banks}),
                vendor_info=bytes(vendor_info),
                event_size=0,
            )
            data = spec.structure()
            self._spec_id = spec.replace(event_size=len(data))
            self._append(0, _NO_ACTION, data, {HashAlg.SHA1: bytes(20)})

    @property
    def banks(self) -> tuple[HashAlg, ...]:
        return self._banks

    def spec_id_event(self) -> TcgEvent | None:
        """The Spec ID event made for a crypto-agile log (None for a legacy log)."""
        return None if self._legacy else self._events[0]

    def add(
        self,
        pcr: int,
        event_type: EventType | int,
        data: bytes,
        *,
        measured: bytes | None = None,
        digests: Mapping[HashAlg, bytes] | None = None,
    ) -> TcgEvent:
        """Append one event and return it (with its index and byte offset in the built log)."""
        if not 0 <= pcr <= 31:
            raise InvalidInput(f"PCR index {pcr} out of range (0-31)")
        if measured is not None and digests is not None:
            raise InvalidInput("give measured= or digests=, not both")
        event_type = EVENT_TYPES.get(int(event_type), int(event_type))
        if not 0 <= event_type <= 0xFFFFFFFF:
            raise InvalidInput(f"event type {event_type} out of range")
        data = bytes(data)
        if digests is not None:
            given = {HashAlg(alg): bytes(d) for alg, d in digests.items()}
            if set(given) != set(self._banks):
                raise InvalidInput(f"digests must cover exactly the banks {[b.bank for b in self._banks]}")
            for alg, digest in given.items():
                if len(digest) != alg.digest_size:
                    raise InvalidInput(f"{alg.bank} digest must be {alg.digest_size} bytes")
            values = {alg: given[alg] for alg in self._banks}
        elif event_type == _NO_ACTION:
            values = {alg: bytes(alg.digest_size) for alg in self._banks}
        else:
            content = data if measured is None else bytes(measured)
            values = {alg: alg.digest(content) for alg in self._banks}
        return self._append(pcr, event_type, data, values)

    def _append(
        self, pcr: int, event_type: EventType | int, data: bytes, digests: Mapping[HashAlg, bytes]
    ) -> TcgEvent:
        event = TcgEvent(
            index=len(self._events),
            offset=self._offset,
            pcr=pcr,
            event_type=event_type,
            digests=MappingProxyType(dict(digests)),
            data=data,
        )
        self._events.append(event)
        self._offset += wire_size(event, agile=not self._legacy)
        return event

    def build(self) -> UnverifiedTcgLog:
        """The log so far (the builder can keep adding; each build is a new value).

        A legacy log needs one event at least: an empty file is not a log.
        """
        if not self._events:
            raise InvalidInput("a SHA-1 legacy log needs at least one event")
        return UnverifiedTcgLog(spec_id=self._spec_id, events=tuple(self._events))


def _guid_bytes(guid: str | bytes) -> bytes:
    """An EFI_GUID in its wire form (first three fields little-endian) from text or 16 bytes."""
    if isinstance(guid, bytes | bytearray):
        if len(guid) != 16:
            raise InvalidInput("a GUID is 16 bytes")
        return bytes(guid)
    text = guid.strip().strip("{}")
    parts = text.split("-")
    if [len(p) for p in parts] != [8, 4, 4, 4, 12]:
        raise InvalidInput(f"not a GUID: {guid!r}")
    try:
        return struct.pack("<IHH", int(parts[0], 16), int(parts[1], 16), int(parts[2], 16)) + bytes.fromhex(
            parts[3] + parts[4]
        )
    except ValueError:
        raise InvalidInput(f"not a GUID: {guid!r}") from None


def efi_variable_data(guid: str | bytes, name: str, data: bytes) -> bytes:
    """UEFI_VARIABLE_DATA (PFP 10.4.6.1): VariableName GUID, name length (chars), data length,
    UnicodeName (UTF-16LE, no terminator), VariableData. Event data of EV_EFI_VARIABLE_*."""
    encoded = name.encode("utf-16-le")
    return _guid_bytes(guid) + struct.pack("<QQ", len(encoded) // 2, len(data)) + encoded + bytes(data)


def scrtm_version(version: str) -> bytes:
    """EV_S_CRTM_VERSION data: the version as a NUL-terminated UTF-16LE string (as edk2 logs it)."""
    return (version + "\x00").encode("utf-16-le")


def startup_locality(locality: int) -> bytes:
    """EV_NO_ACTION data of the StartupLocality event (PFP 10.4.5.3); log it in PCR 0."""
    if locality not in (0, 3, 4):
        raise InvalidInput(f"startup locality {locality} (must be 0, 3 or 4)")
    return b"StartupLocality\x00" + bytes((locality,))


def efi_image_load_event(
    *, location: int = 0, length: int = 0, link_time_address: int = 0, device_path: bytes = b""
) -> bytes:
    """UEFI_IMAGE_LOAD_EVENT (PFP 10.4.6.3): event data of EV_EFI_BOOT_SERVICES_APPLICATION and
    driver events; its digest is the image's (Authenticode) hash, so pass the image as `measured=`."""
    return struct.pack("<QQQQ", location, length, link_time_address, len(device_path)) + bytes(device_path)


def efi_file_device_path(path: str) -> bytes:
    """A device path of one MEDIA_FILEPATH_DP node (type 4, subtype 4: the path in UTF-16LE with a
    NUL) and the end node, as firmware logs the file an EFI application was loaded from."""
    text = (path + "\x00").encode("utf-16-le")
    return struct.pack("<BBH", 4, 4, 4 + len(text)) + text + b"\x7f\xff\x04\x00"


def efi_action(text: str) -> bytes:
    """EV_EFI_ACTION / EV_ACTION data: the string, no terminator (its digest is of these bytes)."""
    return text.encode("utf-8")


def ipl_string(text: str, *, nul: bool = True) -> bytes:
    """EV_IPL data as boot loaders log it (grub: 'grub_cmd: ...' with a NUL terminator)."""
    return text.encode("utf-8") + (b"\x00" if nul else b"")


def separator(*, error: bool = False) -> bytes:
    """EV_SEPARATOR data: 00000000, or FFFFFFFF for the error separator."""
    return b"\xff\xff\xff\xff" if error else b"\x00\x00\x00\x00"


def platform_firmware_blob(base: int, length: int) -> bytes:
    """UEFI_PLATFORM_FIRMWARE_BLOB: BlobBase u64, BlobLength u64."""
    return struct.pack("<QQ", base, length)


def platform_firmware_blob2(description: str, base: int, length: int) -> bytes:
    """UEFI_PLATFORM_FIRMWARE_BLOB2: description (u8 length + bytes), BlobBase, BlobLength."""
    text = description.encode("utf-8")
    if len(text) > 255:
        raise InvalidInput("blob description is at most 255 bytes")
    return bytes((len(text),)) + text + struct.pack("<QQ", base, length)


def hcrtm_event() -> bytes:
    """EV_EFI_HCRTM_EVENT data: the string "HCRTM" (PFP 10.4.5.2)."""
    return b"HCRTM"
