"""The ASCII IMA reader's fast path (`vroot.eventlog._ima_fast`) gives exactly the entries and
errors of the careful reader, on well-formed and malformed lines; records built positionally are
the records built by keyword."""

from __future__ import annotations

import hashlib
import struct
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vroot.errors import EventLogError
from vroot.eventlog import ImaEntry, UnverifiedImaLog, encode_ima_ascii, ima_ng_entry, parse_ima_log
from vroot.eventlog import _ima as ima_module
from vroot.eventlog._ima import MAX_TEMPLATE_DATA, _parse_line
from vroot.eventlog._ima_fast import fast_entry
from vroot.eventlog._ima_fields import IMA_HASH_SIZES
from vroot.tpm2 import HashAlg

MAKE = ImaEntry._maker()


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def values(entry: ImaEntry) -> tuple:
    """Every field, offset and line included, with its type (== leaves offset and line out)."""
    return tuple((name, type(getattr(entry, name)), getattr(entry, name)) for name in ImaEntry._fields)


def careful(line: bytes, offset: int, line_no: int) -> ImaEntry | EventLogError:
    try:
        return _parse_line(line, offset, line_no, None)
    except EventLogError as exc:
        return exc


def assert_agree(line: bytes, offset: int = 17, line_no: int = 3) -> ImaEntry | None:
    """The fast path's entry (or None); when it takes a line, the careful reader makes the same entry."""
    fast = fast_entry(line, offset, line_no, MAKE, MAX_TEMPLATE_DATA)
    if fast is not None:
        slow = careful(line, offset, line_no)
        assert isinstance(slow, ImaEntry), f"the fast path took a line the careful reader refuses: {slow}"
        assert type(fast) is ImaEntry and values(fast) == values(slow)
    return fast


def kernel_line(pcr: int, name: str, alg: str, digest: bytes, path: bytes, sig: bytes | None,
                template_hash: str = "sha1") -> bytes:  # fmt: skip
    """One line as the kernel prints it, template hash computed (`template_hash`: sha1, sha256, zero, wrong)."""
    fields = [alg.encode() + b":\x00" + digest, path + b"\x00"] + ([sig] if sig is not None else [])
    data = b"".join(u32(len(f)) + f for f in fields)
    th = {"sha1": lambda: hashlib.sha1(data).digest(), "sha256": lambda: hashlib.sha256(data).digest(),
          "zero": lambda: bytes(20), "wrong": lambda: hashlib.sha1(data + b"x").digest()}[template_hash]()  # fmt: skip
    text = b"%2d %s %s %s:%s %s" % (pcr, th.hex().encode(), name.encode(), alg.encode(), digest.hex().encode(), path)
    return text + (b" " + sig.hex().encode() if sig is not None else b"")


PATH_BYTES = st.binary(min_size=1, max_size=30).filter(lambda p: b" " not in p and b"\n" not in p)
# hex of these has a letter (Python's `islower`, which the fast path uses, needs one)
LETTERED = st.binary(max_size=64).map(lambda b: b"\xab" + b)


@st.composite
def lines(draw) -> bytes:
    """Kernel-style ima-ng / ima-sig lines, mostly well-formed, with every defect the fast path must refuse."""
    name = draw(st.sampled_from(["ima-ng", "ima-sig"]))
    alg = draw(st.sampled_from(sorted(IMA_HASH_SIZES)))
    size = IMA_HASH_SIZES[alg] + draw(st.sampled_from([0, 0, 0, 0, 0, -1, 1]))
    digest = draw(st.one_of(LETTERED, LETTERED, st.binary(max_size=64)))
    digest = (digest * (size // max(len(digest), 1) + 1))[: max(size, 0)]
    path = draw(st.one_of(PATH_BYTES, st.sampled_from([b"/usr/bin/bash", b"boot_aggregate", b"/a\x00b", b"/\xc3("])))
    sig = draw(st.one_of(st.just(b""), LETTERED, st.binary(max_size=12))) if name == "ima-sig" else None
    pcr = draw(st.sampled_from([10, 10, 10, 9, 0, 31, 32, 99, 4294967295]))
    template_hash = draw(st.sampled_from(["sha1", "sha1", "sha1", "sha1", "sha256", "zero", "wrong"]))
    return kernel_line(pcr, name, alg, digest, path, sig, template_hash)


EDITS = st.sampled_from([b" ", b"  ", b"\t", b"\x0b", b"\x00", b":", b"A", b"F", b"g", b"0", b"\xff", b"\xc3\xa9", b""])
WHITESPACE = st.sampled_from([b" ", b"\t", b"\x0b", b"\x0c", b"\r"])


@st.composite
def mutated_lines(draw) -> bytes:
    """Lines changed at random (mostly breaking the template hash) or only in how they are written
    (upper case, whitespace inside hex, a padded PCR, other separators), which keeps the hash."""
    line = draw(lines())
    for _ in range(draw(st.integers(1, 3))):
        line = draw(st.one_of(_random_edit(line), _cosmetic_edit(line)))
    return line


@st.composite
def _random_edit(draw, line: bytes) -> bytes:
    at = draw(st.integers(0, len(line)))
    kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "name"]))
    if kind == "replace":
        return line[:at] + draw(EDITS) + line[at + 1 :]
    if kind == "insert":
        return line[:at] + draw(EDITS) + line[at:]
    if kind == "delete":
        return line[:at] + line[at + draw(st.integers(1, 3)) :]
    if kind == "truncate":
        return line[:at]
    return line.replace(b" ima-ng ", b" ima-sig ", 1) if b" ima-ng " in line else line.replace(b" ima-sig ", b" ima-ng ", 1)


@st.composite
def _cosmetic_edit(draw, line: bytes) -> bytes:
    parts = line.split(b" ")
    hexes = [i for i, p in enumerate(parts) if p and all(c in b"0123456789abcdefABCDEF:" for c in p.partition(b":")[2] or p)]
    kind = draw(st.sampled_from(["upper", "space-in-hex", "pcr-zero", "separator", "leading", "trailing"]))
    if kind in ("upper", "space-in-hex") and hexes:
        i = draw(st.sampled_from(hexes))
        if kind == "upper":
            parts[i] = parts[i].upper()
        else:
            cut = 2 * draw(st.integers(0, len(parts[i]) // 2))
            parts[i] = parts[i][:cut] + draw(WHITESPACE) + parts[i][cut:]
        return b" ".join(parts)
    if kind == "pcr-zero":
        return b"0" + line.lstrip(b" ")
    if kind == "separator":
        at = draw(st.integers(0, len(parts) - 2)) if len(parts) > 1 else 0
        return b" ".join(parts[: at + 1]) + draw(st.sampled_from([b"  ", b"\t"])) + b" ".join(parts[at + 1 :])
    if kind == "leading":
        return b" " + line
    return line + b" "


@settings(deadline=None, max_examples=400)
@given(lines())
def test_fast_path_agrees_with_the_careful_reader_on_kernel_lines(line):
    """Well-formed lines are taken (when their hex has a letter: `islower` needs one) and decode
    as the careful reader decodes them; defective ones are left to it."""
    fast = assert_agree(line)
    slow = careful(line, 17, 3)
    pcr_text, hash_text, _, digest_text, path, *sig = line.lstrip(b" ").split(b" ")
    hexes = [hash_text, digest_text.partition(b":")[2], *(s for s in sig if s)]
    typical = int(pcr_text) < 32 and all(any(c in b"abcdef" for c in h) for h in hexes) and b"\x00" not in path
    if isinstance(slow, ImaEntry) and typical and not slow.violation and len(hash_text) in (40, 64):
        assert fast is not None


@settings(deadline=None, max_examples=600)
@given(mutated_lines())
def test_fast_path_agrees_with_the_careful_reader_on_mutated_lines(line):
    assert_agree(line)


def _careful_only(data: bytes) -> tuple | str:
    with mock.patch.object(ima_module, "fast_entry", lambda *args: None):
        return _outcome(data)


def _outcome(data: bytes) -> tuple | str:
    try:
        return tuple(values(e) for e in parse_ima_log(data, source="x").entries)
    except EventLogError as exc:
        return f"{type(exc).__name__}: {exc} @ {exc.offset}"


@settings(deadline=None)
@given(st.lists(st.one_of(lines(), mutated_lines()), min_size=1, max_size=6), st.booleans())
def test_whole_lists_decode_the_same_with_and_without_the_fast_path(items, final_newline):
    """Same entries, or the same error with the same line, offset and message."""
    data = b"\n".join(items) + (b"\n" if final_newline else b"")
    if data[:1] not in b" 0123456789" or not data:
        data = b"1" + data
    assert _outcome(data) == _careful_only(data)


def test_a_kernel_list_goes_entirely_through_the_fast_path():
    entries = [ima_ng_entry("boot_aggregate", bytes(range(32)), alg=HashAlg.SHA256)]
    entries += [ima_ng_entry(f"/usr/lib64/lib{i}.so", hashlib.sha256(b"%d" % i).digest(), alg=HashAlg.SHA256,
                             pcr=10 if i % 7 else 9) for i in range(200)]  # fmt: skip
    signed = kernel_line(10, "ima-sig", "sha256", bytes(range(1, 33)), b"/usr/bin/signed", b"\x03\x02" + bytes(range(0xA0, 0xC8)))
    text = encode_ima_ascii(UnverifiedImaLog(entries=tuple(entries), format="ascii")) + signed + b"\n"
    with mock.patch.object(ima_module, "_parse_line", side_effect=AssertionError("careful reader called")):
        log = parse_ima_log(text)
    assert log.entries[:-1] == tuple(entries) and log.entries[-1].signature == b"\x03\x02" + bytes(range(0xA0, 0xC8))
    assert [e.line for e in log.entries] == list(range(1, 203)) and log.entries[1].offset == text.index(b"\n") + 1
    assert _outcome(text) == _careful_only(text)


@pytest.mark.parametrize(
    "line",
    [
        kernel_line(10, "ima-ng", "sha256", bytes(32), b"/x", None, "zero"),  # a violation
        kernel_line(10, "ima-ng", "sha256", b"\x01" * 32, b"/x", None, "wrong"),
        kernel_line(10, "ima-ng", "sha256", b"\x01" * 32, b"/x", None).replace(b"/x", b"/x extra"),
        kernel_line(10, "ima-ng", "sha256", b"\xab" * 32, b"/x", None).upper(),
        kernel_line(10, "ima-ng", "sha256", b"\xab" * 32, b"/x", None).replace(b"sha256:ab", b"sha256:\tab"),
        kernel_line(10, "ima-ng", "sha256", b"\xab" * 32, b"/x", None).replace(b"/x", b"/x\x00"),
        kernel_line(10, "ima-ng", "sha384", b"\xab" * 48, b"/x", None, "sha256").replace(b"ima-ng", b"ima-buf"),
        b"010 " + kernel_line(10, "ima-ng", "sha256", b"\xab" * 32, b"/x", None)[3:],
        b"  " + kernel_line(9, "ima-ng", "sha256", b"\xab" * 32, b"/x", None),
    ],
    ids=["violation", "wrong-hash", "extra-field", "upper-case", "tab-in-hex", "nul-in-path", "ima-buf",
         "pcr-010", "two-spaces"],  # fmt: skip
)
def test_lines_left_to_the_careful_reader(line):
    assert fast_entry(line, 0, 1, MAKE, MAX_TEMPLATE_DATA) is None
    assert _outcome(line) == _careful_only(line)


def test_template_data_over_the_cap_is_left_to_the_careful_reader():
    line = kernel_line(10, "ima-sig", "sha256", b"\xab" * 32, b"/x", b"\xcd" * 64)
    assert assert_agree(line) is not None
    assert fast_entry(line, 0, 1, MAKE, 100) is None


def test_positional_records_are_the_keyword_records():
    entry = ima_ng_entry("/etc/x", b"\x07" * 32, alg=HashAlg.SHA256)
    made = ImaEntry._make(*(getattr(entry, f) for f in ImaEntry._fields))
    assert type(made) is ImaEntry and made == entry and repr(made) == repr(entry) and hash(made) == hash(entry)
    with pytest.raises(AttributeError, match="frozen"):
        made.path = "/other"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="frozen"):
        del made.path


def test_a_private_slot_is_no_field():
    log = UnverifiedImaLog(entries=(), format="ascii")
    assert "_replays" not in UnverifiedImaLog._fields and "_replays" not in repr(log)
    assert log == UnverifiedImaLog(entries=(), format="ascii") and log.replace(source="s").source == "s"


@pytest.mark.parametrize(
    ("pick", "want"),
    [
        (lambda ls: b"\n".join(ls[:3]), [1, 2, 3]),
        (lambda ls: b"\n".join(ls[:3]) + b"\n", [1, 2, 3]),
        (lambda ls: b"\n".join(ls[:4]), "offset 381: line 4: more than 3 entries"),
        (lambda ls: b"\n".join(ls[:3]) + b"\n\n", "offset 381: line 4: more than 3 entries"),
        (lambda ls: b"\n".join(ls[:3]) + b"\nx", "offset 381: line 4: more than 3 entries"),
        (lambda ls: b"\n".join([ls[0], b"bad", *ls[2:5]]), "offset 127: line 2: not '<pcr>"),
    ],
)
def test_the_entry_cap_counts_lines_after_the_earlier_errors(pick, want):
    """With the cap at 3: a fourth line (even empty, unless it is the final newline) is refused at
    its own offset, after any defect in the lines before it."""
    entries = tuple(ima_ng_entry(f"/f{i}", bytes([i]) * 32, alg=HashAlg.SHA256) for i in range(5))
    lines = encode_ima_ascii(UnverifiedImaLog(entries=entries, format="ascii")).split(b"\n")
    data = pick(lines)
    with mock.patch.object(ima_module, "MAX_IMA_ENTRIES", 3):
        got = _outcome(data)
        assert got == _careful_only(data)
    if isinstance(want, list):
        assert [dict((name, value) for name, _, value in e)["line"] for e in got] == want
    else:
        assert got.startswith(f"EventLogError: x, {want}")
