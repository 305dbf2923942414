"""IMA measurement lists: ASCII and binary decoding, writers, replay to PCR 10 (issue 2, point 6)."""

from __future__ import annotations

import struct

import pytest

from vroot.errors import EventLogError
from vroot.eventlog import (
    ImaEntry,
    UnverifiedImaLog,
    encode_ima_ascii,
    encode_ima_binary,
    ima_ng_entry,
    parse_ima_log,
    replay_ima_log,
    verify_template_hash,
)
from vroot.eventlog._ima import MAX_ASCII_LINE
from vroot.tpm2 import HashAlg

SHA1, SHA256 = HashAlg.SHA1, HashAlg.SHA256


def u32(n):
    return struct.pack("<I", n)


def ng_data(alg: bytes, digest: bytes, path: bytes, *extra: bytes) -> bytes:
    fields = [alg + b":\x00" + digest, path + b"\x00", *extra]
    return b"".join(u32(len(f)) + f for f in fields)


def binary_entry(name: bytes, data: bytes, *, pcr=10, template_hash=None) -> bytes:
    th = SHA1.digest(data) if template_hash is None else template_hash
    return u32(pcr) + th + u32(len(name)) + name + u32(len(data)) + data


def ascii_line(name: str, data: bytes, fields: str, pcr=10) -> bytes:
    return f"{pcr:2d} {SHA1.digest(data).hex()} {name} {fields}\n".encode()


def test_ima_ng_entry_builder_computes_the_template_hash():
    entry = ima_ng_entry("/usr/bin/my tool", b"\x01" * 32, alg=SHA256)
    assert entry.path == "/usr/bin/my_tool"  # the kernel replaces spaces in names
    assert entry.template_data == ng_data(b"sha256", b"\x01" * 32, b"/usr/bin/my_tool")
    assert entry.template_hash == SHA1.digest(entry.template_data)
    verify_template_hash(entry)


def test_ascii_and_binary_forms_of_the_same_entries_agree():
    entries = (
        ima_ng_entry("boot_aggregate", b"\x02" * 20, alg=SHA1),
        ima_ng_entry("/etc/vroot.conf", b"\x03" * 32, alg=SHA256),
        ima_ng_entry("/opt/x", b"\x04" * 32, alg=HashAlg.SM3_256),
    )
    log = UnverifiedImaLog(entries=entries, format="binary")
    binary, text = encode_ima_binary(log), encode_ima_ascii(log)
    assert text.startswith(b"10 ") and text.count(b"\n") == 3 and b" sm3:" in text
    from_binary, from_ascii = parse_ima_log(binary), parse_ima_log(text)
    assert from_binary.format == "binary" and from_ascii.format == "ascii"
    assert from_binary.entries == entries == from_ascii.entries
    assert encode_ima_binary(from_ascii) == binary and encode_ima_ascii(from_binary) == text


def test_ima_sig_and_ima_buf_fields_decode():
    sig_data = ng_data(b"sha256", b"\x05" * 32, b"/usr/bin/dd", b"\x03\x02\x04sig")
    buf_data = ng_data(b"sha256", b"\x06" * 32, b".ima", b"0\x82cert")
    text = ascii_line("ima-sig", sig_data, f"sha256:{'05' * 32} /usr/bin/dd 030204736967")
    cert_hex = b"0\x82cert".hex()
    text += ascii_line("ima-buf", buf_data, f"sha256:{'06' * 32} .ima {cert_hex}")
    log = parse_ima_log(text)
    sig, buf = log.entries
    assert sig.signature == b"\x03\x02\x04sig" and sig.path == "/usr/bin/dd" and sig.digest_alg == "sha256"
    assert buf.buf == b"0\x82cert" and buf.path == ".ima"
    assert encode_ima_ascii(log) == text
    assert parse_ima_log(encode_ima_binary(log)).entries == log.entries


def test_ima_sig_without_signature_ends_with_a_space_as_the_kernel_prints_it():
    data = ng_data(b"sha256", b"\x07" * 32, b"boot_aggregate", b"")
    text = ascii_line("ima-sig", data, f"sha256:{'07' * 32} boot_aggregate ")
    assert text.endswith(b"boot_aggregate \n")
    log = parse_ima_log(text)
    assert log.entries[0].signature == b"" and encode_ima_ascii(log) == text


def test_legacy_ima_template_binary_layout_and_hash():
    digest, path = b"\x08" * 20, b"/sbin/init"
    hashed = digest + path.ljust(256, b"\x00")
    binary = u32(10) + SHA1.digest(hashed) + u32(3) + b"ima" + digest + u32(len(path)) + path
    log = parse_ima_log(binary)
    (entry,) = log.entries
    assert entry.template_data == hashed and entry.path == "/sbin/init" and entry.file_digest == digest
    assert encode_ima_binary(log) == binary
    text = encode_ima_ascii(log)
    assert text == f"10 {SHA1.digest(hashed).hex()} ima {'08' * 20} /sbin/init\n".encode()
    assert parse_ima_log(text).entries == log.entries


def test_single_digit_pcr_is_space_padded_like_the_kernel():
    entry = ima_ng_entry("/x", b"\x09" * 20, alg=SHA1, pcr=9)
    text = encode_ima_ascii(UnverifiedImaLog(entries=(entry,), format="ascii"))
    assert text.startswith(b" 9 ")
    assert parse_ima_log(text).entries[0].pcr == 9


def test_unknown_template_is_kept_raw():
    data = b"opaque template data"
    binary = binary_entry(b"my-tmpl", data)
    (entry,) = parse_ima_log(binary).entries
    assert entry.template_data == data and entry.path is None
    assert encode_ima_binary(parse_ima_log(binary)) == binary
    text = f"10 {'ab' * 20} my-tmpl field1 field2\n".encode()
    (raw,) = parse_ima_log(text).entries
    assert raw.template_data is None and raw.raw_fields == "field1 field2"
    assert encode_ima_ascii(parse_ima_log(text)) == text
    assert set(replay_ima_log(parse_ima_log(text), banks=(SHA1,))[SHA1]) == {10}
    with pytest.raises(EventLogError, match="line 1: template 'my-tmpl' is unknown"):
        replay_ima_log(parse_ima_log(text))


def test_custom_template_format_names_are_decoded():
    data = ng_data(b"sha256", b"\x0a" * 32, b"/x", b"\x01\x02")
    (entry,) = parse_ima_log(binary_entry(b"d-ng|n-ng|sig", data)).entries
    assert entry.signature == b"\x01\x02" and entry.path == "/x"


# --- replay ----------------------------------------------------------------------------------


def test_replay_extends_template_hash_on_sha1_and_sha256_of_template_data():
    entry = ima_ng_entry("/x", b"\x0b" * 32, alg=SHA256)
    pcrs = replay_ima_log(UnverifiedImaLog(entries=(entry,), format="binary"))
    assert pcrs[SHA1] == {10: SHA1.digest(bytes(20) + entry.template_hash)}
    assert pcrs[SHA256] == {10: SHA256.digest(bytes(32) + SHA256.digest(entry.template_data))}


def test_violation_is_extended_as_all_ones_on_every_bank():
    data = ng_data(b"sha256", bytes(32), b"/tmp/raced")
    log = parse_ima_log(binary_entry(b"ima-ng", data, template_hash=bytes(20)))
    assert log.entries[0].violation
    pcrs = replay_ima_log(log, banks=(SHA1, SHA256, HashAlg.SHA384))
    assert pcrs[SHA1][10] == SHA1.digest(bytes(20) + b"\xff" * 20)
    assert pcrs[SHA256][10] == SHA256.digest(bytes(32) + b"\xff" * 32)
    assert pcrs[HashAlg.SHA384][10] == HashAlg.SHA384.digest(bytes(48) + b"\xff" * 48)


def test_incremental_replay_from_a_saved_state_equals_a_full_replay():
    entries = tuple(ima_ng_entry(f"/f{i}", bytes([i]) * 32, alg=SHA256) for i in range(5))
    full = replay_ima_log(UnverifiedImaLog(entries=entries, format="binary"))
    first = replay_ima_log(UnverifiedImaLog(entries=entries[:2], format="binary"))
    rest = replay_ima_log(UnverifiedImaLog(entries=entries[2:], format="binary"), start=first)
    assert rest == full


def test_entries_on_another_pcr_extend_that_pcr():
    entry = ima_ng_entry("/x", b"\x0c" * 20, alg=SHA1, pcr=11)
    assert set(replay_ima_log(UnverifiedImaLog(entries=(entry,), format="binary"))[SHA1]) == {11}


def test_empty_input_is_an_empty_list():
    log = parse_ima_log(b"")
    assert log.entries == () and replay_ima_log(log)[SHA1] == {}


# --- structural checks and hostile input ----------------------------------------------------


def test_template_hash_mismatch_is_a_structural_error_with_line_and_offset():
    good = ascii_line("ima-ng", ng_data(b"sha1", b"\x01" * 20, b"/a"), f"sha1:{'01' * 20} /a")
    bad = ascii_line("ima-ng", ng_data(b"sha1", b"\x01" * 20, b"/a"), f"sha1:{'02' * 20} /a")
    with pytest.raises(EventLogError, match=r"offset \d+: line 2: template hash") as info:
        parse_ima_log(good + bad, source="ima.log")
    assert info.value.offset == len(good)


def test_verify_template_hash_on_a_changed_entry():
    entry = ima_ng_entry("/x", b"\x0d" * 20, alg=SHA1)
    forged = entry.replace(template_data=entry.template_data[:-2] + b"y\x00")
    assert isinstance(forged, ImaEntry)
    with pytest.raises(EventLogError, match="is not the sha1 of the template data"):
        verify_template_hash(forged)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (b"10 zz ima-ng sha1:00 /a\n", "template hash"),
        (b"1x " + b"00" * 20 + b" ima-ng sha1:00 /a\n", "PCR"),
        (b"10 " + b"00" * 20 + b" ima-ng sha1:" + b"00" * 20 + b"\n", "has 2 fields, the line 1"),
        (b"10 " + b"11" * 20 + b" ima-ng unknown:" + b"00" * 20 + b" /a\n", "unknown file digest algorithm"),
        (b"10 " + b"11" * 20 + b" ima-ng sha256:" + b"00" * 20 + b" /a\n", "sha256 file digest of 20 bytes"),
        (b"10 " + b"11" * 20 + b" ima-ng sha1:XYZ /a\n", "not lowercase hex"),
        (b"10\n", "not '<pcr>"),
    ],
)
def test_malformed_ascii_lines(line, match):
    with pytest.raises(EventLogError, match=match):
        parse_ima_log(line)


def test_ascii_line_with_a_10_mb_name():
    line = b"10 " + b"11" * 20 + b" ima-ng sha1:" + b"00" * 20 + b" /" + b"a" * 10_000_000 + b"\n"
    with pytest.raises(EventLogError, match=f"line longer than {MAX_ASCII_LINE} bytes"):
        parse_ima_log(line)


def test_binary_entry_with_a_10_mb_template_name_length():
    with pytest.raises(EventLogError, match="template name length 10000000") as info:
        parse_ima_log(u32(10) + bytes(20) + u32(10_000_000) + b"ima-ng")
    assert info.value.offset == 24


@pytest.mark.parametrize(
    ("binary", "match"),
    [
        (u32(10) + bytes(10), "truncated entry header"),
        (u32(10) + bytes(20) + u32(6) + b"ima-ng" + u32(0xFFFFFFFF), "exceeds the cap"),
        (u32(10) + bytes(20) + u32(6) + b"ima-ng" + u32(100) + b"x", "truncated template data"),
        (u32(10) + bytes(20) + u32(3) + b"\x01\x02\x03", "not printable ASCII"),
        (binary_entry(b"ima-ng", u32(3) + b"abc"), "ends before field 'n-ng'"),
        (binary_entry(b"ima-ng", ng_data(b"sha1", bytes(20), b"/a") + b"zz"), "bytes after the last field"),
    ],
)
def test_malformed_binary_entries(binary, match):
    with pytest.raises(EventLogError, match=match):
        parse_ima_log(binary)


def test_non_bytes_input():
    with pytest.raises(EventLogError):
        parse_ima_log(["10 ..."])  # type: ignore[arg-type]
