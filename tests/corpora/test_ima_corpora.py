"""keylime's IMA samples in ../shared/corpora/keylime: replay, template hashes, negative cases."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vroot.errors import EventLogError
from vroot.eventlog import encode_ima_ascii, encode_ima_binary, parse_ima_log, replay_ima_log
from vroot.tpm2 import HashAlg

# As tests/conftest.py (a bare `conftest` import would be ambiguous: tests/tpm has one too).
CORPORA = Path(
    os.environ.get("VROOT_CORPORA", Path(__file__).resolve().parents[2].parent / "shared" / "corpora")
)

pytestmark = pytest.mark.corpora

KEYLIME = CORPORA / "keylime"
RUNTIME = KEYLIME / "create-runtime-policy"
VERIFICATION = KEYLIME / "ima-verification-test"


def test_measurements_replay_to_the_expected_sha1_pcr10():
    expected = json.loads((VERIFICATION / "expected.json").read_text())["expected"]["measurements"]
    want = expected.split("PCR10 = ")[1].split(" ")[0]
    log = parse_ima_log((VERIFICATION / "measurements.ascii_runtime_measurements").read_bytes())
    assert [e.template_name for e in log.entries] == ["ima-sig"] * 3
    assert replay_ima_log(log)[HashAlg.SHA1][10].hex() == want == "dff39e2db052e00d11f45770bb127c4053e14f32"


def test_iterative_replay_line_by_line_equals_the_full_replay():
    data = (VERIFICATION / "measurements.ascii_runtime_measurements").read_bytes()
    state = None
    for line in data.splitlines(keepends=True):
        state = replay_ima_log(parse_ima_log(line), start=state)
    assert state == replay_ima_log(parse_ima_log(data))


@pytest.mark.parametrize(
    "name",
    ["measurements", "signatures", "keyrings"],
)
def test_valid_samples_round_trip_in_both_formats(name):
    data = (VERIFICATION / f"{name}.ascii_runtime_measurements").read_bytes()
    log = parse_ima_log(data, source=name)
    assert encode_ima_ascii(log) == data
    binary = encode_ima_binary(log)
    assert parse_ima_log(binary).entries == log.entries
    assert replay_ima_log(parse_ima_log(binary)) == replay_ima_log(log)


def test_signatures_and_keyring_buffers_decode():
    signatures = parse_ima_log((VERIFICATION / "signatures.ascii_runtime_measurements").read_bytes())
    assert [e.path for e in signatures.entries] == ["/usr/bin/dd", "/usr/bin/zmore"]
    assert all(e.signature[:3] == b"\x03\x02\x04" for e in signatures.entries)  # IMA digsig v2, sha256
    (keyring,) = parse_ima_log((VERIFICATION / "keyrings.ascii_runtime_measurements").read_bytes()).entries
    assert keyring.template_name == "ima-buf" and keyring.path == ".ima" and keyring.buf[:2] == b"\x30\x82"
    assert HashAlg.SHA256.digest(keyring.buf) == keyring.file_digest


def test_bad_signature_sample_is_rejected_by_its_template_hash():
    with pytest.raises(EventLogError, match="line 1: template hash 5d4d5141.* is not the sha1") as info:
        parse_ima_log((VERIFICATION / "bad_signatures.ascii_runtime_measurements").read_bytes(), source="bad")
    assert info.value.offset == 0


@pytest.mark.parametrize("alg", ["sha1", "sha256", "sha384", "sha512", "sm3_256"])
def test_runtime_policy_logs_parse_with_every_digest_algorithm(alg):
    data = (RUNTIME / f"ima-log-{alg}").read_bytes()
    log = parse_ima_log(data)
    assert [e.digest_alg for e in log.entries] == [alg, alg]
    assert [e.path for e in log.entries] == ["boot_aggregate", "/data"]
    assert encode_ima_ascii(log) == data
    expected = json.loads((RUNTIME / "expected.json").read_text())["template_hash_check_by_independent check"]
    assert [e.violation for e in log.entries] == [s.startswith("zero") for s in expected[f"ima-log-{alg}"]]
    pcrs = replay_ima_log(log)
    assert set(pcrs[HashAlg.SHA1]) == set(pcrs[HashAlg.SHA256]) == {10}


def test_sm3_list_template_hashes_are_sm3():
    (_, data_entry) = parse_ima_log((RUNTIME / "ima-log-sm3_256").read_bytes()).entries
    assert data_entry.template_hash_alg is HashAlg.SM3_256


def test_unknown_digest_algorithm_log_is_rejected():
    with pytest.raises(EventLogError, match="line 1: .*unknown file digest algorithm 'unknown'"):
        parse_ima_log((RUNTIME / "ima-log-unknown").read_bytes(), source="ima-log-unknown")
