"""Baseline and policy manifests (YAML, JSON) and IMA digest lists: exact round trips, and hostile
documents that raise only InvalidInput, quickly (hypothesis)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_baseline_fakes import ec_key, public_pem, rsa_key

from vroot.baseline import (
    Baseline,
    ImaPolicy,
    ImaReference,
    ImaSigningKey,
    Policy,
    ReferenceValue,
    dump_manifest,
    dump_policy,
    ima_reference_from_lines,
    load_manifest,
    load_policy,
)
from vroot.baseline._documents import MAX_DOCUMENT_SIZE
from vroot.errors import InvalidInput
from vroot.eventlog import EventType
from vroot.tpm2 import HashAlg

FORMATS = ("yaml", "json")
NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@/+~-]{0,20}", fullmatch=True)
TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
PATHS = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\x00\n"), min_size=1, max_size=40),
    st.sampled_from(["/usr/bin/\udcff-latin1-name", "boot_aggregate", ".ima", "/opt/a b/c"]),
)
SAFE_EXCLUDES = st.lists(st.sampled_from(["/tmp/.*", "/var/log/.*", r"/usr/lib/python3\.[0-9]+/.*", "boot_aggregate",
                                          "/proc/[0-9]+/.*"]), unique=True, max_size=3)  # fmt: skip
ALGS = [HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512, HashAlg.SM3_256, HashAlg.SHA3_256]
KEYS = [ImaSigningKey(pem=public_pem(ec_key(seed=s))) for s in (1, 2)] + [ImaSigningKey(pem=public_pem(rsa_key()))]


@st.composite
def digests(draw):
    algs = draw(st.lists(st.sampled_from(ALGS), min_size=1, max_size=3, unique=True))
    return {alg: draw(st.binary(min_size=alg.digest_size, max_size=alg.digest_size)) for alg in algs}


@st.composite
def reference_values(draw):
    event_type = draw(st.one_of(st.sampled_from(list(EventType)).map(int), st.integers(0, 2**32 - 1)))
    return ReferenceValue(component=draw(TEXT.filter(bool)), version=draw(TEXT), pcr=draw(st.integers(0, 31)),
                          event_type=event_type, digests=draw(digests()), description=draw(TEXT),
                          required=draw(st.booleans()))  # fmt: skip


@st.composite
def ima_references(draw):
    sizes = st.sampled_from([20, 32, 48, 64])
    paths = draw(st.dictionaries(PATHS, st.frozensets(sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n)),
                                                      min_size=1, max_size=3), max_size=5))  # fmt: skip
    return ImaReference(digests=paths, excludes=tuple(draw(SAFE_EXCLUDES)))


@st.composite
def baselines(draw):
    return Baseline(name=draw(NAMES), version=draw(NAMES), description=draw(TEXT),
                    reference_values=tuple(draw(st.lists(reference_values(), max_size=6))),
                    ima=draw(st.none() | ima_references()))  # fmt: skip


@st.composite
def policies(draw):
    golden = {}
    for alg in draw(st.lists(st.sampled_from(ALGS), unique=True, max_size=2)):
        golden[alg] = draw(st.dictionaries(st.integers(0, 31), st.binary(min_size=alg.digest_size,
                                                                           max_size=alg.digest_size), max_size=3))  # fmt: skip
    age = draw(st.none() | st.integers(1, 86400).map(lambda s: timedelta(seconds=s))
               | st.floats(0.001, 86400).map(lambda s: timedelta(seconds=s)))  # fmt: skip
    ima = draw(st.none() | st.builds(ImaPolicy, require_allowlist=st.booleans(), excludes=SAFE_EXCLUDES.map(tuple),
                                     signing_keys=st.lists(st.sampled_from(KEYS), max_size=2).map(tuple),
                                     require_signatures=st.booleans(), tolerate_violations=st.booleans()))  # fmt: skip
    return Policy(group=draw(NAMES), baseline=draw(st.none() | NAMES), description=draw(TEXT), pcrs=golden,
                  event_pcrs=draw(st.frozensets(st.integers(0, 31), max_size=10)), ima=ima,
                  max_evidence_age=age)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(baselines(), st.sampled_from(FORMATS))
def test_baseline_manifest_round_trip_is_exact(baseline, fmt):
    dumped = dump_manifest(baseline, format=fmt)
    loaded = load_manifest(dumped)
    assert loaded == baseline
    assert dump_manifest(loaded, format=fmt) == dumped


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.sampled_from(FORMATS))
def test_policy_manifest_round_trip_is_exact(policy, fmt):
    dumped = dump_policy(policy, format=fmt)
    loaded = load_policy(dumped)
    assert loaded == policy
    assert dump_policy(loaded, format=fmt) == dumped


def test_hand_written_manifests_read_as_documented():
    baseline = load_manifest(b"""
name: host-firmware
version: "2024.06.1"
reference_values:
  - component: shim
    version: "15.8"
    pcr: 4
    event_type: EV_EFI_BOOT_SERVICES_APPLICATION
    digests: {sha256: "%s", SHA1: "%s"}
  - {component: grub, pcr: 4, event_type: 0x80000003, digests: {sha256: "%s"}, required: true}
ima:
  digests: {"/usr/bin/qemu-system-x86_64": ["%s", "%s"]}
  excludes: ["/tmp/.*"]
""" % (b"AB" * 32, b"cd" * 20, b"01" * 32, b"02" * 32, b"03" * 32))
    shim, grub = baseline.reference_values
    assert shim.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION == grub.event_type
    assert shim.digests == {HashAlg.SHA1: b"\xcd" * 20, HashAlg.SHA256: b"\xab" * 32} and grub.required
    assert baseline.ima.digests["/usr/bin/qemu-system-x86_64"] == {b"\x02" * 32, b"\x03" * 32}
    policy = load_policy(json.dumps({"group": "hosts", "pcrs": {"sha256": {"7": "00" * 32}}, "event_pcrs": [0, 4],
                                     "max_evidence_age": 300,
                                     "ima": {"signing_keys": [{"pem": KEYS[0].pem}]}}).encode())  # fmt: skip
    assert policy.pcrs == {HashAlg.SHA256: {7: bytes(32)}} and policy.max_evidence_age == timedelta(minutes=5)
    assert policy.ima.signing_keys == (KEYS[0],) and policy.ima.require_allowlist


HOSTILE = [
    (b"name: a\nversion: '1'\nsurprise: 1\n", "surprise"),  # extra="forbid"
    (b"name: a\nversion: 1.0\n", "version"),  # a YAML float
    (b"name: a\nversion: 2024-06-01\n", "quote dates"),
    (b"name: a\nversion: '1'\nreference_values: [{component: x, pcr: 4, event_type: EV_NOPE, digests: {sha256: '00'}}]",
     "EV_NOPE"),
    (b"name: a\nversion: '1'\nreference_values: [{component: x, pcr: 4, event_type: 13, digests: {sha256: '00'}}]",
     "32 bytes"),
    (b"name: a\nversion: '1'\nreference_values: [{component: x, pcr: 99, event_type: 13, digests: {}}]", "pcr"),
    (b"name: a\nversion: '1'\nreference_values: [{component: x, pcr: 4, event_type: 13, digests: {md5: '00'}}]",
     "unknown bank"),
    (b"name: a\nversion: '1'\nreference_values: [{component: x, pcr: 4, event_type: 13, digests: {sha1: '%s', SHA-1: '%s'}}]"
     % (b"00" * 20, b"00" * 20), "given twice"),
    (b"name: a\nversion: '1'\nreference_values: [{component: x, pcr: 4, event_type: 13, digests: {sha1: '0 0'}}]",
     "hex"),
    (b"name: a\nversion: '1'\nima: {digests: {}, excludes: ['(a+)+$']}", "catastrophic"),
    (b"name: a\nversion: '1'\nima: {digests: {}, excludes: ['(a|aa)*']}", "catastrophic"),
    (b"name: a\nversion: '1'\nima: {digests: {}, excludes: ['.*a.*b.*c']}", "repetitions"),
    (b"name: a\nversion: '1'\nima: {digests: {}, excludes: ['(x)\\1']}", "backreference"),
    (b"name: a\nversion: '1'\nima: {digests: {}, excludes: ['[']}", "compile"),
    (b"name: a\nversion: '1'\nima: {digests: {'/x': ['zz']}}", "hex"),
    (b"name: 'has space'\nversion: '1'\n", "baseline name"),
    (b"!!python/object/apply:os.system ['true']\n", "neither JSON nor YAML"),
    (b"kind: vroot.policy\nname: a\nversion: '1'\n", "kind"),
    (b"\xff\xfe", "UTF-8"),
    (b"", "valid dictionary"),
    (b"[1, 2", "neither JSON nor YAML"),
]


@pytest.mark.parametrize(("document", "match"), HOSTILE)
def test_hostile_baseline_manifests_raise_invalid_input(document, match):
    with pytest.raises(InvalidInput, match=match):
        load_manifest(document)


@pytest.mark.parametrize(
    ("document", "match"),
    [
        (b"group: g\nmax_evidence_age: 0\n", "max_evidence_age"),
        (b"group: g\nmax_evidence_age: 99999999999\n", "max_evidence_age"),
        (b"group: g\nmax_evidence_age: .nan\n", "max_evidence_age"),
        (b"group: g\nevent_pcrs: [32]\n", "event_pcrs"),
        (b"group: g\npcrs: {sha256: {x: '00'}}\n", "pcrs"),
        (b"group: g\nima: {require_signatures: 'yes'}\n", "require_signatures"),
        (b"group: g\nima: {signing_keys: [{pem: 'not a key'}]}\n", "PEM"),
        (b"group: g\nima: {signing_keys: [{pem: 'x', key_id: 'abcdef'}]}\n", "4 bytes|PEM"),
        (b"group: g\nima: {excludes: '/tmp/.*'}\n", "excludes"),
    ],
)
def test_hostile_policy_manifests_raise_invalid_input(document, match):
    with pytest.raises(InvalidInput, match=match):
        load_policy(document)


def test_yaml_alias_bombs_are_refused_quickly():
    """Named adversarial cases: billion laughs and a self-referencing alias."""
    laughs = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n"
    for i in range(1, 12):
        laughs += f"{chr(97 + i)}: &{chr(97 + i)} [*{chr(96 + i)},*{chr(96 + i)},*{chr(96 + i)},*{chr(96 + i)}," \
                  f"*{chr(96 + i)},*{chr(96 + i)},*{chr(96 + i)},*{chr(96 + i)},*{chr(96 + i)}]\n"
    start = time.perf_counter()
    with pytest.raises(InvalidInput, match="aliases"):
        load_manifest(laughs.encode())
    with pytest.raises(InvalidInput, match="aliases"):
        load_policy(b"group: &g [*g]\n")
    assert time.perf_counter() - start < 1
    scalar_alias = load_manifest(b"name: &n hosts\nversion: '1'\ndescription: *n\n")
    assert scalar_alias.description == "hosts"


def test_deep_nesting_and_oversize_are_refused():
    with pytest.raises(InvalidInput, match="nested|deeper"):
        load_manifest(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(InvalidInput, match="nested|deeper"):
        load_manifest(b"a: " + b"[" * 5_000 + b"]" * 5_000)
    with pytest.raises(InvalidInput, match="exceeds the cap"):
        load_manifest(b" " * (MAX_DOCUMENT_SIZE + 1))


@settings(max_examples=300, deadline=2000)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_invalid_input(data):
    for load in (load_manifest, load_policy, ima_reference_from_lines):
        try:
            load(data)
        except InvalidInput:
            pass


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
)
FIELDS = ["kind", "name", "version", "group", "reference_values", "ima", "pcrs", "event_pcrs", "digests",
          "excludes", "component", "pcr", "event_type", "max_evidence_age", "signing_keys", "keyrings"]  # fmt: skip


@settings(max_examples=300, deadline=2000)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6), st.sampled_from(FORMATS))
def test_random_documents_raise_only_invalid_input(doc, fmt):
    text = json.dumps(doc) if fmt == "json" else yaml.safe_dump(doc)
    for load in (load_manifest, load_policy, ima_reference_from_lines):
        try:
            load(text.encode())
        except InvalidInput:
            pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(baselines(), st.data())
def test_mutated_manifests_raise_only_invalid_input(baseline, data):
    doc = json.loads(dump_manifest(baseline, format="json"))
    node, parent, key = doc, None, None
    for _ in range(data.draw(st.integers(1, 4))):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        parent, key = node, data.draw(st.sampled_from(keys))
        if not isinstance(node[key], dict | list) or data.draw(st.booleans()):
            break
        node = node[key]
    if parent is not None:
        parent[key] = data.draw(JSON)
    try:
        load_manifest(json.dumps(doc).encode())
    except InvalidInput:
        pass


# --- IMA digest lists ---------------------------------------------------------------------------

def test_sha256sum_lines_with_modes_escapes_tags_and_comments():
    text = "\n".join([
        "# made with: sha256sum -b",
        f"{'aa' * 32}  /usr/bin/qemu-system-x86_64",
        f"{'BB' * 32} */usr/bin/qemu-system-x86_64",
        f"\\{'cc' * 32}  /opt/back\\\\slash",
        f"SHA256 (/etc/vroot/vmm.conf) = {'dd' * 32}",
        f"{'ee' * 20}  /usr/bin/with space",
        "",
    ])  # fmt: skip
    reference = ima_reference_from_lines(text)
    assert reference.digests == {
        "/usr/bin/qemu-system-x86_64": {b"\xaa" * 32, b"\xbb" * 32},
        "/opt/back\\slash": {b"\xcc" * 32},
        "/etc/vroot/vmm.conf": {b"\xdd" * 32},
        "/usr/bin/with space": {b"\xee" * 20},
    }
    assert ima_reference_from_lines(text.encode()) == reference


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("xyz  /a\n", "line 1"),
        (f"{'aa' * 7}  /a\n", "not a file digest"),
        (f"\\{'aa' * 32}  /a\\nb\n", "newline"),
        (f"\\{'aa' * 32}  /a\\qb\n", "escape"),
        (f"{'aa' * 32}\n", "line 1"),
    ],
)
def test_bad_digest_lines_raise_invalid_input(text, match):
    with pytest.raises(InvalidInput, match=match):
        ima_reference_from_lines(text)


def test_keylime_runtime_policy_merges_into_a_baseline():
    policy = {
        "meta": {"version": 1, "generator": 3},
        "release": 0,
        "digests": {"/usr/bin/dd": ["d33d5d13792292e202dbf69a6f1b07bc8a02f01424db8489ba7bb7d43c0290ef"], "/x": []},
        "excludes": ["/tmp/.*"],
        "keyrings": {".ima": ["a7d52aaa18c23d2d9bb2abb4308c0eeee67387a42259f4a6b1a42257065f3d5a"]},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": None},
        "ima-buf": {"kexec-cmdline": ["11" * 32]},
        "verification-keys": "",
    }
    reference = ima_reference_from_lines(json.dumps(policy))
    assert set(reference.digests) == {"/usr/bin/dd", ".ima", "kexec-cmdline"}
    assert reference.excludes == ("/tmp/.*",)
    base = Baseline(name="b", version="1", ima=ImaReference(digests={"/usr/bin/dd": {b"\x00" * 32}}))
    merged = base.with_ima(reference, version="2")
    assert merged.version == "2" and len(merged.ima.digests["/usr/bin/dd"]) == 2
    assert merged.ima.excludes == ("/tmp/.*",)
    with pytest.raises(InvalidInput, match="unexpected|Extra"):
        ima_reference_from_lines(json.dumps({**policy, "allowlist": {}}))
    with pytest.raises(InvalidInput, match="not a file digest"):
        ima_reference_from_lines(json.dumps({"digests": {"/a": ["xyz"]}}))
