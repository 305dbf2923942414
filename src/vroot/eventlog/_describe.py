"""Decode TCG event data for people: `describe_event(event) -> EventDescription`.

Decoding never raises: data that does not match its type's structure gives a description whose
`error` says why (event data is not covered by most digests, so it is attacker-controlled text).
Structures: PC Client Platform Firmware Profile 1.06 section 10.4; UEFI 2.10 for load options.
"""

from __future__ import annotations

import struct
from types import MappingProxyType

from vroot.eventlog._event_types import EventType, event_type_name
from vroot.eventlog._record import Record
from vroot.eventlog._tcg import TcgEvent

E = EventType
_VARIABLE_TYPES = {
    E.EV_EFI_VARIABLE_DRIVER_CONFIG,
    E.EV_EFI_VARIABLE_BOOT,
    E.EV_EFI_VARIABLE_BOOT2,
    E.EV_EFI_VARIABLE_AUTHORITY,
    E.EV_EFI_SPDM_DEVICE_POLICY,
    E.EV_EFI_SPDM_DEVICE_AUTHORITY,
}
_IMAGE_TYPES = {
    E.EV_EFI_BOOT_SERVICES_APPLICATION,
    E.EV_EFI_BOOT_SERVICES_DRIVER,
    E.EV_EFI_RUNTIME_SERVICES_DRIVER,
}
_STRING_TYPES = {E.EV_EFI_ACTION, E.EV_ACTION, E.EV_IPL, E.EV_EFI_HCRTM_EVENT, E.EV_OMIT_BOOT_DEVICE_EVENTS,
                 E.EV_PLATFORM_CONFIG_FLAGS, E.EV_COMPACT_HASH}  # fmt: skip


class EventDescription(Record):
    """What an event's data says. `summary` is one line; `fields` the decoded values; `error`
    is None, or why the data does not decode as its type says (then `summary` says so too)."""

    __slots__ = ("type_name", "summary", "fields", "error")
    _defaults = {"error": None}


class _Bad(ValueError):
    pass


def describe_event(event: TcgEvent) -> EventDescription:
    """Decode `event.data` by its type. Never raises."""
    name = event_type_name(int(event.event_type))
    try:
        summary, fields = _decode(event)
    except Exception as exc:  # noqa: BLE001 - hostile data: report, never crash
        reason = str(exc) or type(exc).__name__
        return EventDescription(
            type_name=name,
            summary=f"undecodable {name} data ({len(event.data)} bytes): {reason}",
            fields=MappingProxyType({"raw": event.data}),
            error=reason,
        )
    return EventDescription(type_name=name, summary=summary, fields=MappingProxyType(fields))


def _decode(event: TcgEvent) -> tuple[str, dict[str, object]]:
    t, data = event.event_type, event.data
    if t == E.EV_NO_ACTION:
        return _no_action(data)
    if t in _VARIABLE_TYPES:
        return _variable(data)
    if t in _IMAGE_TYPES:
        return _image_load(data)
    if t == E.EV_SEPARATOR:
        return _separator(data)
    if t == E.EV_S_CRTM_VERSION:
        text = _utf16(data) if len(data) % 2 == 0 else None
        if text is not None and text.isprintable():
            return f"S-CRTM version {text!r}", {"version": text}
        return f"S-CRTM version bytes {data.hex()}", {"version": data}
    if t in (E.EV_EFI_PLATFORM_FIRMWARE_BLOB, E.EV_S_CRTM_CONTENTS, E.EV_POST_CODE) and len(data) == 16:
        base, length = struct.unpack("<QQ", data)
        return f"firmware blob at 0x{base:x}, 0x{length:x} bytes", {"blob_base": base, "blob_length": length}
    if t in (E.EV_EFI_PLATFORM_FIRMWARE_BLOB2, E.EV_POST_CODE2) and data and len(data) == 17 + data[0]:
        desc = _ascii(data[1 : 1 + data[0]])
        base, length = struct.unpack_from("<QQ", data, 1 + data[0])
        fields = {"description": desc, "blob_base": base, "blob_length": length}
        return f"firmware blob {desc!r} at 0x{base:x}, 0x{length:x} bytes", fields
    if t == E.EV_EFI_HANDOFF_TABLES and len(data) >= 8:
        (count,) = struct.unpack_from("<Q", data)
        if 8 + 24 * count != len(data):
            raise _Bad(f"{count} tables do not fill {len(data)} bytes")
        tables = [_guid(data[8 + 24 * i : 24 + 24 * i]) for i in range(count)]
        return f"{count} handoff tables: {', '.join(tables)}", {"tables": tables}
    if t == E.EV_EFI_GPT_EVENT and len(data) >= 100:
        (count,) = struct.unpack_from("<Q", data, 92)
        return f"GPT with {count} partitions", {"partitions": count}
    if t == E.EV_EVENT_TAG and len(data) >= 8:
        tag, size = struct.unpack_from("<II", data)
        if 8 + size != len(data):
            raise _Bad(f"tagged event data size {size} does not fill {len(data) - 8} bytes")
        return f"tagged event 0x{tag:x}, {size} bytes", {"tag": tag, "tag_data": data[8:]}
    if t in _STRING_TYPES or t in (E.EV_POST_CODE, E.EV_S_CRTM_CONTENTS, E.EV_POST_CODE2):
        text = _ascii(data)
        if text is not None:
            return text, {"text": text}
    return f"{len(data)} bytes: {data[:32].hex()}{'...' if len(data) > 32 else ''}", {"raw": data}


def _ascii(data: bytes) -> str | None:
    """A printable string (a trailing NUL dropped), or None."""
    body = data[:-1] if data.endswith(b"\x00") else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if all(c.isprintable() or c in "\t\n\r" for c in text) else None


def _utf16(data: bytes) -> str | None:
    try:
        return data.decode("utf-16-le").rstrip("\x00")
    except UnicodeDecodeError:
        return None


def _guid(raw: bytes) -> str:
    if len(raw) < 16:
        raise _Bad("truncated GUID")
    a, b, c = struct.unpack_from("<IHH", raw)
    return f"{a:08x}-{b:04x}-{c:04x}-{raw[8:10].hex()}-{raw[10:16].hex()}"


def _separator(data: bytes) -> tuple[str, dict[str, object]]:
    if data == b"\x00\x00\x00\x00":
        return "separator", {"error": False}
    if data == b"\xff\xff\xff\xff":
        return "error separator", {"error": True}
    return f"separator with data {data[:32].hex()}", {"raw": data}


def _variable(data: bytes) -> tuple[str, dict[str, object]]:
    if len(data) < 32:
        raise _Bad(f"UEFI_VARIABLE_DATA needs 32 bytes, has {len(data)}")
    guid = _guid(data)
    name_len, data_len = struct.unpack_from("<QQ", data, 16)
    if 32 + 2 * name_len + data_len > len(data):
        raise _Bad(f"name of {name_len} chars and {data_len} data bytes overrun {len(data) - 32} bytes")
    name = data[32 : 32 + 2 * name_len].decode("utf-16-le")
    value = data[32 + 2 * name_len : 32 + 2 * name_len + data_len]
    fields: dict[str, object] = {"guid": guid, "name": name, "data": value}
    _trailing(fields, data, 32 + 2 * name_len + data_len)
    detail = f"{len(value)} bytes"
    if name == "BootOrder" and len(value) % 2 == 0:
        order = [f"Boot{n:04X}" for n in struct.unpack(f"<{len(value) // 2}H", value)]
        fields["boot_order"] = order
        detail = ", ".join(order)
    elif name.startswith("Boot") and len(name) == 8 and len(value) >= 8:
        end = 6  # EFI_LOAD_OPTION: Attributes u32, FilePathListLength u16, Description (UTF-16, NUL)
        while end + 1 < len(value) and value[end : end + 2] != b"\x00\x00":
            end += 2
        description = value[6:end].decode("utf-16-le")
        fields["description"] = description
        detail = repr(description)
    elif len(value) <= 4:
        detail = value.hex() or "empty"
    return f"{name} {{{guid}}} = {detail}", fields


def _image_load(data: bytes) -> tuple[str, dict[str, object]]:
    if len(data) < 32:
        raise _Bad(f"UEFI_IMAGE_LOAD_EVENT needs 32 bytes, has {len(data)}")
    location, length, link, path_len = struct.unpack_from("<QQQQ", data)
    if 32 + path_len > len(data):
        raise _Bad(f"device path of {path_len} bytes overruns {len(data) - 32} bytes")
    path = data[32 : 32 + path_len]
    fields = {"location": location, "length": length, "link_time_address": link, "device_path": path}
    _trailing(fields, data, 32 + path_len)
    files = _file_paths(path)
    where = files[-1] if files else f"device path {path[:16].hex()}{'...' if len(path) > 16 else ''}"
    return f"image {where} at 0x{location:x}, 0x{length:x} bytes", {**fields, "file_paths": files}


def _file_paths(path: bytes) -> list[str]:
    """The MEDIA_FILEPATH_DP nodes (type 4, subtype 4) of a device path, best effort."""
    found, pos = [], 0
    while pos + 4 <= len(path):
        node_type, subtype, size = path[pos], path[pos + 1], struct.unpack_from("<H", path, pos + 2)[0]
        if size < 4 or node_type == 0x7F:
            break
        if node_type == 4 and subtype == 4:
            text = _utf16(path[pos + 4 : pos + size])
            if text:
                found.append(text)
        pos += size
    return found


def _no_action(data: bytes) -> tuple[str, dict[str, object]]:
    signature = data[:16].rstrip(b"\x00").decode("ascii", "replace")
    fields: dict[str, object] = {"signature": signature}
    if signature == "Spec ID Event03":
        return "Spec ID Event03 (crypto-agile log header)", fields
    if signature == "StartupLocality":
        if len(data) != 17:
            raise _Bad(f"StartupLocality event of {len(data)} bytes (want 17)")
        fields["locality"] = data[16]
        return f"StartupLocality {data[16]}", fields
    if signature == "SP800-155 Event":
        vendor = struct.unpack_from("<I", data, 16)[0]
        fields.update(vendor_id=vendor, reference_manifest_guid=_guid(data[20:36]))
        return f"SP800-155 platform id: vendor {vendor}", fields
    if signature in ("SP800-155 Event2", "SP800-155 Event3"):
        fields.update(_sp800_155(data))
        return (
            f"{signature}: {fields['platform_manufacturer']} {fields['platform_model']}, "
            f"firmware {fields['firmware_manufacturer']} {fields['firmware_version']}"
        ), fields
    if signature.isprintable() and signature:
        return f"{signature} ({len(data)} bytes)", fields
    return f"{len(data)} bytes: {data[:32].hex()}", {"raw": data}


def _sp800_155(data: bytes) -> dict[str, object]:
    """TCG_Sp800_155_PlatformId_Event2/3 (PFP 1.06 section 10.4.5.2)."""
    pos = 16
    out: dict[str, object] = {}

    def u32() -> int:
        nonlocal pos
        if pos + 4 > len(data):
            raise _Bad("truncated SP800-155 event")
        (value,) = struct.unpack_from("<I", data, pos)
        pos += 4
        return value

    def string() -> str:
        nonlocal pos
        if pos >= len(data) or pos + 1 + data[pos] > len(data):
            raise _Bad("truncated SP800-155 string")
        raw = data[pos + 1 : pos + 1 + data[pos]]
        pos += 1 + data[pos]
        return raw.rstrip(b"\x00").decode("utf-8", "replace")

    out["platform_manufacturer_id"] = u32()
    out["reference_manifest_guid"] = _guid(data[pos : pos + 16])
    pos += 16
    for key in ("platform_manufacturer", "platform_model", "platform_version", "firmware_manufacturer"):
        out[key] = string()
    out["firmware_manufacturer_id"] = u32()
    out["firmware_version"] = string()
    for key in ("rim_locator", "platform_cert_locator"):
        out[f"{key}_type"] = u32()
        size = u32()
        if pos + size > len(data):
            raise _Bad(f"truncated SP800-155 {key}")
        out[key] = data[pos : pos + size]
        pos += size
    _trailing(out, data, pos)
    return out


def _trailing(fields: dict[str, object], data: bytes, end: int) -> None:
    """Firmware often pads event data past the structure: keep the extra bytes, do not fail."""
    if end < len(data):
        fields["trailing"] = data[end:]
