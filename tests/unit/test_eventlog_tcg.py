"""TCG PC Client logs: decoding, encoding, the builder and event descriptions (issue 2, point 6)."""

from __future__ import annotations

import struct

import pytest

from vroot.errors import EventLogError, InvalidInput
from vroot.eventlog import (
    EventType,
    TcgLogBuilder,
    describe_event,
    efi_action,
    efi_image_load_event,
    efi_variable_data,
    encode_tcg_log,
    hcrtm_event,
    ipl_string,
    parse_tcg_log,
    platform_firmware_blob,
    platform_firmware_blob2,
    scrtm_version,
    separator,
    startup_locality,
)
from vroot.eventlog._tcg import MAX_EVENT_DATA_SIZE, MAX_TCG_LOG_SIZE
from vroot.tpm2 import HashAlg

EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"


def sample_log(banks=(HashAlg.SHA1, HashAlg.SHA256)):
    builder = TcgLogBuilder(banks=banks)
    builder.add(0, EventType.EV_NO_ACTION, startup_locality(3))
    builder.add(0, EventType.EV_S_CRTM_VERSION, scrtm_version("vroot vCRTM 1.0"))
    builder.add(
        0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB, platform_firmware_blob(0x820000, 0xE0000), measured=b"fw"
    )
    builder.add(
        7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, efi_variable_data(EFI_GLOBAL, "SecureBoot", b"\x01")
    )
    for pcr in range(8):
        builder.add(pcr, EventType.EV_SEPARATOR, separator())
    builder.add(
        4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, efi_image_load_event(length=5), measured=b"shim!"
    )
    builder.add(5, EventType.EV_EFI_ACTION, efi_action("Exit Boot Services Invocation"))
    return builder.build()


def spec_id_bytes(algs, vendor=b"", declared=None):
    body = struct.pack("<16sIBBBBI", b"Spec ID Event03\x00", 0, 0, 2, 0, 2, len(algs))
    body += b"".join(struct.pack("<HH", a, s) for a, s in algs) + bytes([len(vendor)]) + vendor
    size = len(body) if declared is None else declared
    return struct.pack("<II20sI", 0, 3, bytes(20), size) + body


def ev2(pcr, etype, digests, data):
    out = struct.pack("<III", pcr, etype, len(digests))
    out += b"".join(struct.pack("<H", a) + d for a, d in digests)
    return out + struct.pack("<I", len(data)) + data


# --- decoding --------------------------------------------------------------------------------


def test_builder_log_round_trips_byte_exact():
    log = sample_log()
    wire = encode_tcg_log(log)
    again = parse_tcg_log(wire)
    assert again == log
    assert encode_tcg_log(again) == wire
    assert [e.offset for e in again.events] == [e.offset for e in log.events]


def test_crypto_agile_spec_id_is_decoded():
    log = parse_tcg_log(encode_tcg_log(sample_log((HashAlg.SHA256, HashAlg.SHA384))))
    assert log.crypto_agile
    assert log.spec_id.digest_sizes == {HashAlg.SHA256: 32, HashAlg.SHA384: 48}
    assert log.events[0].event_type is EventType.EV_NO_ACTION
    assert list(log.events[5].digests) == [HashAlg.SHA256, HashAlg.SHA384]


def test_legacy_sha1_log_has_no_spec_id():
    builder = TcgLogBuilder(banks=(HashAlg.SHA1,), legacy=True)
    builder.add(0, EventType.EV_S_CRTM_VERSION, scrtm_version("v"))
    wire = encode_tcg_log(builder.build())
    log = parse_tcg_log(wire)
    assert log.spec_id is None and log.algorithms == (HashAlg.SHA1,)
    assert log.events[0].digests[HashAlg.SHA1] == HashAlg.SHA1.digest(scrtm_version("v"))


def test_sm3_and_sha512_banks_parse():
    log = sample_log((HashAlg.SHA512, HashAlg.SM3_256))
    assert parse_tcg_log(encode_tcg_log(log)) == log


def test_unknown_algorithm_with_declared_size_is_skipped_correctly():
    wire = spec_id_bytes([(0x0004, 20), (0x1234, 7)])
    wire += ev2(4, 0x80000007, [(0x0004, b"\x11" * 20), (0x1234, b"\x22" * 7)], b"abc")
    log = parse_tcg_log(wire)
    assert log.events[1].digests == {HashAlg.SHA1: b"\x11" * 20, 0x1234: b"\x22" * 7}
    assert log.events[1].data == b"abc"
    assert encode_tcg_log(log) == wire


def test_unknown_event_type_is_kept_as_int():
    wire = spec_id_bytes([(4, 20)]) + ev2(4, 0x7777, [(4, bytes(20))], b"x")
    event = parse_tcg_log(wire).events[1]
    assert event.event_type == 0x7777 and not isinstance(event.event_type, EventType)
    assert describe_event(event).type_name == "0x00007777"


def test_every_pc_client_event_type_is_named():
    for name in ("EV_NO_ACTION", "EV_S_CRTM_VERSION", "EV_POST_CODE", "EV_IPL", "EV_SEPARATOR", "EV_COMPACT_HASH",
                 "EV_EVENT_TAG", "EV_OMIT_BOOT_DEVICE_EVENTS", "EV_EFI_HCRTM_EVENT", "EV_EFI_SPDM_FIRMWARE_BLOB",
                 "EV_EFI_SPDM_DEVICE_AUTHORITY", "EV_EFI_PLATFORM_FIRMWARE_BLOB2", "EV_EFI_VARIABLE_BOOT2"):  # fmt: skip
        assert EventType[name]
    assert EventType.EV_EFI_SPDM_DEVICE_AUTHORITY == 0x800000E4


def test_spec_id_event_size_smaller_than_structure_is_accepted_like_tpm2_eventlog():
    # tpm2-tools' specid-vendordata.bin: EventSize 37, structure 41 bytes (4 vendor bytes).
    wire = spec_id_bytes([(4, 20), (11, 32)], vendor=b"\xde\xad\xbe\xef", declared=37)
    log = parse_tcg_log(wire)
    assert log.spec_id.vendor_info == b"\xde\xad\xbe\xef" and log.spec_id.event_size == 37
    assert encode_tcg_log(log) == wire


# --- hostile input: EventLogError only, with the offset -------------------------------------


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"", "empty log"),
        (b"\x00" * 10, "truncated first event header"),
        (struct.pack("<II20sI", 0, 1, bytes(20), 100) + b"x", "truncated event data"),
        (struct.pack("<II20sI", 99, 1, bytes(20), 0), "PCR index 99"),
    ],
)
def test_malformed_legacy_logs(wire, match):
    with pytest.raises(EventLogError, match=match) as info:
        parse_tcg_log(wire, source="x.bin")
    assert info.value.offset is not None and "x.bin" in str(info.value)


def test_malicious_number_of_algs():
    """go-attestation attest/eventlog_test.go: a Spec ID event claiming a huge algorithm count."""
    wire = struct.pack("<II20sI", 0, 3, bytes(20), 33) + struct.pack(
        "<16sIBBBBI", b"Spec ID Event03\x00", 0, 0, 2, 0, 2, 0xFFFFFFFF
    )
    wire += struct.pack("<HH", 4, 20) + b"\x00"
    with pytest.raises(EventLogError, match="numberOfAlgorithms 4294967295 exceeds the cap") as info:
        parse_tcg_log(wire)
    assert info.value.offset == 56


def test_four_gib_event_size():
    wire = spec_id_bytes([(4, 20)]) + struct.pack("<III", 0, 1, 1) + struct.pack("<H", 4) + bytes(20)
    wire += struct.pack("<I", 0xFFFFFFFF)
    with pytest.raises(EventLogError, match="event data size 4294967295 exceeds the cap"):
        parse_tcg_log(wire)


def test_event_size_just_above_the_cap_and_just_past_the_end():
    head = spec_id_bytes([(4, 20)]) + struct.pack("<III", 0, 1, 1) + struct.pack("<H", 4) + bytes(20)
    with pytest.raises(EventLogError, match="exceeds the cap"):
        parse_tcg_log(head + struct.pack("<I", MAX_EVENT_DATA_SIZE + 1))
    with pytest.raises(EventLogError, match=r"truncated event data \(2 of 3 bytes\)"):
        parse_tcg_log(head + struct.pack("<I", 3) + b"ab")


def test_digest_count_of_2_to_the_32_minus_1():
    wire = spec_id_bytes([(4, 20), (11, 32)]) + struct.pack("<III", 0, 1, 0xFFFFFFFF)
    with pytest.raises(EventLogError, match="digest count 4294967295 exceeds the 2 algorithms"):
        parse_tcg_log(wire)


def test_log_claiming_sha1_only_but_carrying_sha256_ev2_events():
    wire = spec_id_bytes([(4, 20)]) + ev2(0, 8, [(11, bytes(32))], b"v")
    with pytest.raises(EventLogError, match="algorithm 0x000b is not declared in the Spec ID event"):
        parse_tcg_log(wire)


def test_legacy_header_followed_by_ev2_events_is_rejected():
    first = struct.pack("<II20sI", 0, 8, bytes(20), 2) + b"v1"
    second = ev2(0, 8, [(11, b"\xff" * 32)], b"v2")  # read as TCG_PCR_EVENT: eventSize = 0xffffffff
    with pytest.raises(EventLogError, match="event 1"):
        parse_tcg_log(first + second)


def test_duplicate_digest_algorithm_in_one_event():
    wire = spec_id_bytes([(4, 20), (11, 32)]) + ev2(0, 8, [(4, bytes(20)), (4, bytes(20))], b"")
    with pytest.raises(EventLogError, match="listed twice"):
        parse_tcg_log(wire)


def test_spec_id_with_wrong_digest_size_for_a_known_algorithm():
    with pytest.raises(EventLogError, match="sha256 digest size 20, must be 32"):
        parse_tcg_log(spec_id_bytes([(11, 20)]))


def test_oversized_log_is_refused_before_decoding():
    with pytest.raises(EventLogError, match="exceeds the cap"):
        parse_tcg_log(bytes(MAX_TCG_LOG_SIZE + 1))


def test_non_bytes_input_is_an_event_log_error():
    with pytest.raises(EventLogError, match="must be bytes"):
        parse_tcg_log("not bytes")  # type: ignore[arg-type]


def test_windows_pcr_minus_one_no_action_events_are_allowed():
    wire = (
        struct.pack("<II20sI", 0, 8, bytes(20), 1)
        + b"v"
        + struct.pack("<II20sI", 0xFFFFFFFF, 3, bytes(20), 0)
    )
    assert parse_tcg_log(wire).events[1].pcr == 0xFFFFFFFF


# --- builder ---------------------------------------------------------------------------------


def test_builder_digests_measured_bytes_data_or_explicit_digests():
    builder = TcgLogBuilder(banks=(HashAlg.SHA256,))
    assert builder.spec_id_event().event_type is EventType.EV_NO_ACTION
    measured = builder.add(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, b"load event", measured=b"image")
    assert measured.digests == {HashAlg.SHA256: HashAlg.SHA256.digest(b"image")}
    data = builder.add(5, EventType.EV_EFI_ACTION, b"action")
    assert data.digests == {HashAlg.SHA256: HashAlg.SHA256.digest(b"action")}
    explicit = builder.add(8, EventType.EV_IPL, ipl_string("x"), digests={HashAlg.SHA256: b"\x07" * 32})
    assert explicit.digests[HashAlg.SHA256] == b"\x07" * 32
    no_action = builder.add(0, EventType.EV_NO_ACTION, startup_locality(0))
    assert no_action.digests[HashAlg.SHA256] == bytes(32)
    assert [e.index for e in builder.build().events] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"digests": {HashAlg.SHA1: bytes(20)}}, "cover exactly the banks"),
        ({"digests": {HashAlg.SHA256: bytes(20)}}, "must be 32 bytes"),
        ({"digests": {HashAlg.SHA256: bytes(32)}, "measured": b"x"}, "not both"),
    ],
)
def test_builder_refuses_inconsistent_digests(kwargs, match):
    with pytest.raises(InvalidInput, match=match):
        TcgLogBuilder(banks=(HashAlg.SHA256,)).add(4, EventType.EV_IPL, b"", **kwargs)


def test_builder_refuses_bad_banks_and_pcrs():
    with pytest.raises(InvalidInput):
        TcgLogBuilder(banks=())
    with pytest.raises(InvalidInput):
        TcgLogBuilder(banks=(HashAlg.SHA256,), legacy=True)
    with pytest.raises(InvalidInput):
        TcgLogBuilder().add(32, EventType.EV_IPL, b"")


def test_typed_event_data_helpers():
    assert startup_locality(3) == b"StartupLocality\x00\x03"
    with pytest.raises(InvalidInput):
        startup_locality(2)
    assert scrtm_version("v1") == "v1\x00".encode("utf-16-le")
    assert efi_variable_data(EFI_GLOBAL, "Boot", b"\x01")[:16].hex() == "61dfe48bca93d211aa0d00e098032b8c"
    assert len(efi_image_load_event(device_path=b"\x7f\xff\x04\x00")) == 36
    assert hcrtm_event() == b"HCRTM" and separator(error=True) == b"\xff" * 4
    assert platform_firmware_blob2("ucode", 1, 2)[:6] == b"\x05ucode"
    with pytest.raises(InvalidInput):
        efi_variable_data("not-a-guid", "x", b"")


# --- descriptions ----------------------------------------------------------------------------


def _describe(event_type, data):
    builder = TcgLogBuilder(banks=(HashAlg.SHA256,))
    return describe_event(builder.add(0, event_type, data))


def test_descriptions_of_common_events():
    assert _describe(EventType.EV_S_CRTM_VERSION, scrtm_version("GCE Virtual Firmware v1")).fields[
        "version"
    ] == ("GCE Virtual Firmware v1")
    var = _describe(
        EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, efi_variable_data(EFI_GLOBAL, "SecureBoot", b"\x01")
    )
    assert (
        var.fields["name"] == "SecureBoot"
        and var.fields["guid"] == EFI_GLOBAL
        and var.fields["data"] == b"\x01"
    )
    order = _describe(
        EventType.EV_EFI_VARIABLE_BOOT, efi_variable_data(EFI_GLOBAL, "BootOrder", b"\x02\x00\x00\x00")
    )
    assert order.fields["boot_order"] == ["Boot0002", "Boot0000"]
    path = (
        b"\x04\x04"
        + struct.pack("<H", 4 + 10)
        + "\\a.e".encode("utf-16-le")
        + b"\x00\x00"
        + b"\x7f\xff\x04\x00"
    )
    image = _describe(
        EventType.EV_EFI_BOOT_SERVICES_APPLICATION, efi_image_load_event(length=9, device_path=path)
    )
    assert image.fields["file_paths"] == ["\\a.e"] and image.fields["length"] == 9
    assert _describe(EventType.EV_NO_ACTION, startup_locality(3)).fields["locality"] == 3
    assert (
        _describe(EventType.EV_EFI_ACTION, efi_action("Calling EFI Application")).summary
        == "Calling EFI Application"
    )
    assert (
        _describe(EventType.EV_IPL, ipl_string("grub_cmd: linux /vmlinuz")).fields["text"]
        == "grub_cmd: linux /vmlinuz"
    )
    assert _describe(EventType.EV_SEPARATOR, separator()).summary == "separator"
    assert _describe(EventType.EV_EFI_HCRTM_EVENT, hcrtm_event()).summary == "HCRTM"
    blob2 = _describe(EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2, platform_firmware_blob2("PEI", 0x1000, 0x20))
    assert blob2.fields == {"description": "PEI", "blob_base": 0x1000, "blob_length": 0x20}


@pytest.mark.parametrize(
    "event_type",
    [
        EventType.EV_EFI_VARIABLE_AUTHORITY,
        EventType.EV_EFI_BOOT_SERVICES_DRIVER,
        EventType.EV_EFI_HANDOFF_TABLES,
    ],
)
def test_undecodable_event_data_is_reported_not_raised(event_type):
    description = _describe(event_type, b"\xff" * 40)
    assert description.error and "undecodable" in description.summary


def test_an_empty_legacy_log_cannot_be_built_or_parsed():
    with pytest.raises(InvalidInput, match="at least one event"):
        TcgLogBuilder(banks=(HashAlg.SHA1,), legacy=True).build()
    assert len(TcgLogBuilder().build().events) == 1  # a crypto-agile log always has its Spec ID event


def test_encoder_refuses_digests_the_format_cannot_carry():
    log = sample_log()
    event = log.events[3]
    bad = log.replace(events=(*log.events[:3], event.replace(digests={HashAlg.SHA256: bytes(20)})))
    with pytest.raises(EventLogError, match="does not match the Spec ID event") as info:
        encode_tcg_log(bad)
    assert info.value.offset == event.offset


def test_records_are_frozen():
    event = sample_log().events[1]
    with pytest.raises(AttributeError):
        event.pcr = 5  # type: ignore[misc]
    assert hash(event) == hash(event.replace())
