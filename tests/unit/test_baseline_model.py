"""Baseline values check themselves when built (InvalidInput), and IMA excludes are bounded."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vroot.baseline import Baseline, ImaPolicy, ImaReference, Policy, ReferenceValue
from vroot.baseline._excludes import MAX_EXCLUDED_PATH, compile_excludes, validate_excludes
from vroot.errors import InvalidInput
from vroot.eventlog import EventType
from vroot.tpm2 import HashAlg

D256 = {HashAlg.SHA256: bytes(32)}


def _ref(**kw) -> ReferenceValue:  # noqa: ANN003
    return ReferenceValue(**{"component": "shim", "pcr": 4, "event_type": EventType.EV_IPL, "digests": D256, **kw})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"component": ""}, "empty"),
        ({"component": "x" * 300}, "at most"),
        ({"pcr": 32}, "PCR"),
        ({"pcr": True}, "PCR"),
        ({"event_type": -1}, "out of range"),
        ({"event_type": 2**32}, "out of range"),
        ({"digests": {}}, "at least one"),
        ({"digests": {HashAlg.SHA256: bytes(20)}}, "32 bytes"),
        ({"digests": {"sha256": bytes(32)}}, "HashAlg"),
        ({"required": 1}, "true or false"),
        ({"description": "a\x00b"}, "NUL"),
    ],
)
def test_reference_values_refuse_bad_fields(change, match):
    with pytest.raises(InvalidInput, match=match):
        _ref(**change)


def test_reference_value_digests_are_read_only_and_ordered():
    ref = _ref(digests={HashAlg.SHA256: bytes(32), HashAlg.SHA1: bytes(20)})
    assert list(ref.digests) == [HashAlg.SHA1, HashAlg.SHA256]
    with pytest.raises(TypeError):
        ref.digests[HashAlg.SHA1] = bytes(20)  # type: ignore[index]
    assert ref.event_type == int(EventType.EV_IPL) and type(ref.event_type) is int


@pytest.mark.parametrize("name", ["", " x", "x y", "-x", "x" * 129, "a\nb", 7])
def test_baseline_names_and_versions_are_bounded(name):
    with pytest.raises(InvalidInput, match="baseline"):
        Baseline(name=name, version="1")
    with pytest.raises(InvalidInput, match="baseline version"):
        Baseline(name="ok", version=name)


def test_baseline_index_finds_candidates_by_pcr_type_and_digest():
    a, b = _ref(), _ref(component="grub", digests={HashAlg.SHA256: b"\x01" * 32})
    baseline = Baseline(name="b", version="1", reference_values=(a, b))
    assert baseline.candidates(4, int(EventType.EV_IPL), HashAlg.SHA256, b"\x01" * 32) == (1,)
    assert baseline.candidates(5, int(EventType.EV_IPL), HashAlg.SHA256, b"\x01" * 32) == ()
    with pytest.raises(InvalidInput, match="ReferenceValues"):
        Baseline(name="b", version="1", reference_values=("shim",))


def test_ima_reference_merge_and_bounds():
    one = ImaReference(digests={"/a": {b"\x01" * 32}}, excludes=("/tmp/.*",))
    two = ImaReference(digests={"/a": [b"\x02" * 32], "/b": {b"\x03" * 20}}, excludes=("/tmp/.*", "/run/.*"))
    merged = one.merge(two)
    assert merged.digests == {"/a": {b"\x01" * 32, b"\x02" * 32}, "/b": {b"\x03" * 20}}
    assert merged.excludes == ("/tmp/.*", "/run/.*")
    for bad, match in [({"": {bytes(32)}}, "path"), ({"/a\n": {bytes(32)}}, "path"), ({"/a": set()}, "1-1024"),
                       ({"/a": {bytes(7)}}, "bytes"), ({"/a": b"\x00" * 32}, "set")]:  # fmt: skip
        with pytest.raises(InvalidInput, match=match):
            ImaReference(digests=bad)


@pytest.mark.parametrize(
    "pattern",
    ["/tmp/.*", r"/usr/lib/python3\.[0-9]+/.*", "boot_aggregate", "(/var/log|/run)/.*", "/proc/[0-9]+/fd/[^/]*",
     r"/opt/\(x+\)", "[(+*]+/x", "/a{2}"],
)
def test_reasonable_excludes_are_accepted(pattern):
    assert validate_excludes([pattern]) == (pattern,)


@pytest.mark.parametrize(
    ("pattern", "match"),
    [
        ("(a+)+", "catastrophic"),
        ("(a*)*b", "catastrophic"),
        ("((ab)+)+", "catastrophic"),
        ("(a|aa)+", "catastrophic"),
        ("(.*/)*x", "catastrophic"),
        (".*.*.*z", "repetitions"),
        ("(x)\\1", "backreference"),
        ("(?P<n>x)(?P=n)", "backreference"),
        ("(", "compile"),
        ("[[a]/x", "compile"),
        ("", "non-empty"),
        ("a" * 600, "longer"),
        ("a\nb", "newline"),
    ],
)
def test_dangerous_excludes_are_refused(pattern, match):
    with pytest.raises(InvalidInput, match=match):
        validate_excludes([pattern])


def test_excludes_are_capped_in_number_and_must_be_a_list():
    with pytest.raises(InvalidInput, match="more than"):
        validate_excludes([f"/x{i}" for i in range(300)])
    with pytest.raises(InvalidInput, match="list"):
        validate_excludes("/tmp/.*")


@settings(max_examples=200, deadline=1000)
@given(st.text(alphabet="a()|*+?{}[]^$.\\/0123456789,", max_size=24))
def test_any_accepted_exclude_matches_a_long_hostile_path_quickly(pattern):
    """Patterns that pass validation cannot take long on an attacker's path of the excludable length."""
    try:
        accepted = validate_excludes([pattern])
    except InvalidInput:
        return
    compiled = compile_excludes(accepted)
    for path in ("a" * MAX_EXCLUDED_PATH, "/" * MAX_EXCLUDED_PATH, "a/" * (MAX_EXCLUDED_PATH // 2)):
        start = time.perf_counter()
        compiled.fullmatch(path)
        assert time.perf_counter() - start < 0.25, pattern


def test_policies_check_their_fields():
    Policy(group="hosts", pcrs={HashAlg.SHA256: {0: bytes(32)}}, event_pcrs=range(10),
           max_evidence_age=timedelta(minutes=5), ima=ImaPolicy())  # fmt: skip
    for kw, match in [
        ({"group": "a b"}, "policy group"),
        ({"pcrs": {HashAlg.SHA256: {0: bytes(20)}}}, "32 bytes"),
        ({"pcrs": {HashAlg.SHA256: {40: bytes(32)}}}, "PCR index"),
        ({"event_pcrs": [99]}, "PCR index"),
        ({"event_pcrs": "0-7"}, "set of PCR"),
        ({"max_evidence_age": timedelta(0)}, "max_evidence_age"),
        ({"max_evidence_age": 300}, "max_evidence_age"),
        ({"ima": "strict"}, "ImaPolicy"),
    ]:
        with pytest.raises(InvalidInput, match=match):
            Policy(group=kw.pop("group", "hosts"), **kw)
    with pytest.raises(InvalidInput, match="true or false"):
        ImaPolicy(require_signatures="yes")
    with pytest.raises(InvalidInput, match="ImaSigningKeys"):
        ImaPolicy(signing_keys=("-----BEGIN PUBLIC KEY-----",))
