"""`vroot quote verify` end to end on files: exit 0 valid, 1 invalid, 2 unreadable, one line each."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from test_quote_verify import NONCE, ecc_key, make_quote, pcr_values

from vroot.cli.main import run
from vroot.tpm2 import HashAlg, encode_tpm2_tools_pcrs


@pytest.fixture
def files(tmp_path):
    attest, sig, area, values = make_quote()
    paths = {
        "ak": tmp_path / "ak.pub",
        "pem": tmp_path / "ak.pem",
        "attest": tmp_path / "quote.msg",
        "sig": tmp_path / "quote.sig",
        "json": tmp_path / "pcrs.json",
        "tools": tmp_path / "quote.pcrs",
    }
    paths["ak"].write_bytes(area.encode(sized=True))
    paths["pem"].write_bytes(
        ecc_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    paths["attest"].write_bytes(attest)
    paths["sig"].write_bytes(sig)
    replay = {"pcrs": {alg.bank: {str(i): v.hex() for i, v in bank.items()} for alg, bank in values.items()}}
    replay["events"] = 42  # what `vroot eventlog replay --json` prints besides the PCRs
    paths["json"].write_text(json.dumps(replay))
    paths["tools"].write_bytes(encode_tpm2_tools_pcrs(values))
    return paths


NONCE_HEX = NONCE.hex()


def args(files, *, ak="ak", pcrs="json", nonce=NONCE_HEX, extra=()):
    out = ["quote", "verify", "--ak", str(files[ak]), "--attest", str(files["attest"])]
    out += ["--signature", str(files["sig"]), "--nonce", nonce]
    if pcrs:
        out += ["--pcrs", str(files[pcrs])]
    return out + list(extra)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("vroot: error: ")
    return err[0]


@pytest.mark.parametrize("ak", ["ak", "pem"])
@pytest.mark.parametrize("pcrs", ["json", "tools"])
def test_valid_quote_exits_0_with_a_table(files, capsys, ak, pcrs):
    assert run(args(files, ak=ak, pcrs=pcrs)) == 0
    out = capsys.readouterr().out
    assert "quote verified" in out and "verified (17 values" in out


def test_json_output(files, capsys):
    assert run(args(files, extra=["--json"])) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is True and doc["pcrs_verified"] is True
    assert doc["nonce"] == NONCE.hex() and doc["selection"] == {"sha256": list(range(17))}
    assert doc["pcrs"]["sha256"]["16"] == pcr_values()[HashAlg.SHA256][16].hex()


def test_without_pcrs_the_values_are_not_checked(files, capsys):
    assert run(args(files, pcrs=None)) == 0
    assert "NOT checked" in capsys.readouterr().out


def test_wrong_nonce_exits_1_with_one_line(files, capsys):
    assert run(args(files, nonce="00")) == 1
    assert "extraData" in one_error_line(capsys)


def test_wrong_nonce_with_json_says_why_on_stdout_too(files, capsys):
    assert run(args(files, nonce="", extra=["--json"])) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc == {"valid": False, "error": "NonceMismatch", "reason": doc["reason"]}
    assert captured.err.startswith("vroot: error: extraData")


def test_changed_pcr_value_exits_1(files, capsys):
    doc = json.loads(files["json"].read_text())
    doc["pcrs"]["sha256"]["3"] = "00" * 32
    files["json"].write_text(json.dumps(doc))
    assert run(args(files)) == 1
    assert "pcrDigest" in one_error_line(capsys)


def test_truncated_attest_exits_2_naming_the_file_and_offset(files, capsys):
    files["attest"].write_bytes(files["attest"].read_bytes()[:-5])
    assert run(args(files)) == 2
    line = one_error_line(capsys)
    assert str(files["attest"]) in line and "offset" in line


def test_garbage_signature_exits_2(files, capsys):
    files["sig"].write_bytes(b"\x00\x10\x00\x0b")
    assert run(args(files)) == 2
    assert "TPM_ALG_NULL" in one_error_line(capsys)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", "not valid JSON"),
        (b'{"events": 3}', 'no "pcrs" object'),
        (b'{"pcrs": {"md5": {}}}', "unknown hash algorithm"),
        (b'{"pcrs": {"sha256": {"0": "abcd"}}}', "32-byte hex sha256 digest"),
        (b'{"pcrs": {"sha256": {"x": "00"}}}', "is not a PCR index"),
        (b"\x01\x00\x00\x00garbage", "tpm2-tools PCR file"),
    ],
)
def test_unreadable_pcr_file_exits_2(files, capsys, content, message):
    files["json"].write_bytes(content)
    assert run(args(files)) == 2
    assert message in one_error_line(capsys)


def test_missing_file_exits_2_with_one_line(files, capsys):
    files["ak"].unlink()
    assert run(args(files)) == 2
    assert "cannot read AK file" in one_error_line(capsys)


def test_bad_nonce_and_hash_names_exit_2(files, capsys):
    assert run(args(files, nonce="xyz")) == 2
    assert "not hex" in one_error_line(capsys)
    assert run(args(files, extra=["--allow-hash", "md5"])) == 2
    assert "unknown hash algorithm" in one_error_line(capsys)


def test_sha1_needs_allow_hash(tmp_path, capsys):
    attest, sig, area, values = make_quote(hash_alg=HashAlg.SHA1, values=pcr_values(banks=(HashAlg.SHA1,)))
    (tmp_path / "a").write_bytes(attest)
    (tmp_path / "s").write_bytes(sig)
    (tmp_path / "k").write_bytes(area.encode())
    (tmp_path / "p").write_bytes(encode_tpm2_tools_pcrs(values))
    base = ["quote", "verify", "--ak", str(tmp_path / "k"), "--attest", str(tmp_path / "a")]
    base += ["--signature", str(tmp_path / "s"), "--nonce", NONCE.hex(), "--pcrs", str(tmp_path / "p")]
    assert run(base) == 1
    assert "sha1 is not allowed" in one_error_line(capsys)
    assert run(base + ["--allow-hash", "sha1"]) == 0


def test_cli_start_up_does_not_load_heavy_modules():
    code = (
        "import sys, vroot.cli.main, vroot.tpm2\n"
        "heavy = [m for m in ('cryptography', 'vroot.attestation', 'vroot.tpm2._public') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
