"""Quotes made by tpm2-tools on a swtpm verify with vroot (library and CLI), with ECC and RSA AKs.

tpm2-tools writes the files a real attester would send: `tpm2_quote -m` (TPMS_ATTEST), `-s`
(TPMT_SIGNATURE), `-o` (its serialized PCR file), the AK as TPM2B_PUBLIC (`tpm2_createak -u`) and PEM
(`tpm2_readpublic -f pem`). libtpms has three transient slots and swtpm no resource manager, so every
step flushes what tpm2-tools leaves loaded.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vroot.attestation import DEFAULT_ALLOWED_HASHES, verify_quote
from vroot.errors import NonceMismatch, PcrDigestMismatch
from vroot.tpm2 import HashAlg, PcrSelection, load_ak, parse_public, parse_tpm2_tools_pcrs

pytestmark = pytest.mark.tpm

PCRS_0_16 = ",".join(map(str, range(17)))


@pytest.fixture(scope="module")
def env(module_swtpm, tools_env):
    """The environment of the tpm2-tools runs: all on one swtpm, shared by the module's tests."""
    return tools_env(module_swtpm)


def _tools(env: dict[str, str], cwd: Path, *argv: str) -> None:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


AKS = {
    # kind: (tpm2_createek -G, tpm2_createak -G, -s, persistent handle)
    "ecc": ("ecc", "ecc", "ecdsa", "0x81010002"),
    "rsa": ("rsa", "rsa", "rsassa", "0x81010003"),
}


@pytest.fixture(scope="module")
def aks(env, tmp_path_factory):
    """For each kind: a directory holding ak.pub (TPM2B_PUBLIC), ak.pem, ak.name; the AK persisted."""
    out = {}
    for kind, (ek_alg, ak_alg, scheme, handle) in AKS.items():
        d = tmp_path_factory.mktemp(f"ak-{kind}")
        _tools(env, d, "tpm2_flushcontext", "-t")
        _tools(env, d, "tpm2_createek", "-c", "ek.ctx", "-G", ek_alg, "-u", "ek.pub")
        _tools(
            env,
            d,
            "tpm2_createak",
            "-C",
            "ek.ctx",
            "-c",
            "ak.ctx",
            "-G",
            ak_alg,
            "-g",
            "sha256",
            "-s",
            scheme,
            "-u",
            "ak.pub",
            "-n",
            "ak.name",
        )
        _tools(env, d, "tpm2_flushcontext", "-t")
        _tools(env, d, "tpm2_readpublic", "-c", "ak.ctx", "-f", "pem", "-o", "ak.pem")
        _tools(env, d, "tpm2_flushcontext", "-t")
        _tools(env, d, "tpm2_evictcontrol", "-C", "o", "-c", "ak.ctx", handle)
        _tools(env, d, "tpm2_flushcontext", "-t")
        out[kind] = (d, handle)
    # Something in PCR 16, so the quoted values are not all reset values.
    _tools(env, d, "tpm2_pcrextend", "16:sha256=" + hashlib.sha256(b"vroot").hexdigest())
    return out


def _quote(env: dict[str, str], d: Path, handle: str, nonce: bytes, selection: str) -> dict[str, Path]:
    files = {"attest": d / "q.msg", "sig": d / "q.sig", "pcrs": d / "q.pcrs"}
    _tools(
        env,
        d,
        "tpm2_quote",
        "-c",
        handle,
        "-l",
        selection,
        "-q",
        nonce.hex(),
        "-m",
        "q.msg",
        "-s",
        "q.sig",
        "-o",
        "q.pcrs",
        "-g",
        "sha256",
    )
    return files


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_tpm2_tools_quote_verifies_with_vroot(env, aks, kind):
    d, handle = aks[kind]
    nonce = os.urandom(20)
    q = _quote(env, d, handle, nonce, f"sha256:{PCRS_0_16}")
    ak = parse_public((d / "ak.pub").read_bytes())
    assert ak.name() == (d / "ak.name").read_bytes()  # tpm2_createak -n writes the raw name
    assert ak.is_restricted_signing
    pcrs = parse_tpm2_tools_pcrs(q["pcrs"].read_bytes())
    assert sorted(pcrs[HashAlg.SHA256]) == list(range(17))
    attest, sig = q["attest"].read_bytes(), q["sig"].read_bytes()
    selection = PcrSelection.from_mapping({HashAlg.SHA256: range(17)})
    vq = verify_quote(attest, sig, ak, nonce=nonce, pcrs=pcrs, selection=selection)
    assert vq.pcrs_verified and vq.pcrs == pcrs and vq.nonce == nonce
    assert vq.pcrs[HashAlg.SHA256][16] != bytes(32)
    pem_key = load_ak((d / "ak.pem").read_bytes())
    assert verify_quote(attest, sig, pem_key, nonce=nonce, pcrs=pcrs).pcrs_verified
    with pytest.raises(NonceMismatch):
        verify_quote(attest, sig, ak, nonce=os.urandom(20), pcrs=pcrs)
    pcrs[HashAlg.SHA256][16] = bytes(32)
    with pytest.raises(PcrDigestMismatch):
        verify_quote(attest, sig, ak, nonce=nonce, pcrs=pcrs)


def test_multi_bank_quote_and_pcr_file(env, aks):
    d, handle = aks["ecc"]
    nonce = b"\x90\x09"
    q = _quote(env, d, handle, nonce, "sha1:0,1,2,3,16+sha256:0,7,16,23+sha384:16")
    pcrs = parse_tpm2_tools_pcrs(q["pcrs"].read_bytes())
    assert list(pcrs) == [HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384]
    assert sorted(pcrs[HashAlg.SHA256]) == [0, 7, 16, 23]
    ak = parse_public((d / "ak.pub").read_bytes())
    vq = verify_quote(
        q["attest"].read_bytes(),
        q["sig"].read_bytes(),
        ak,
        nonce=nonce,
        pcrs=pcrs,
        allowed_hashes=DEFAULT_ALLOWED_HASHES | {HashAlg.SHA1},
    )
    assert str(vq.selection) == "sha1:0,1,2,3,16+sha256:0,7,16,23+sha384:16"
    assert vq.pcrs == pcrs


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vroot.cli.entry", *argv], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_cli_end_to_end_on_tpm2_tools_files(env, aks, kind, tmp_path):
    d, handle = aks[kind]
    nonce = os.urandom(16)
    q = _quote(env, d, handle, nonce, f"sha256:{PCRS_0_16}")
    base = ["quote", "verify", "--attest", str(q["attest"]), "--signature", str(q["sig"])]
    base += ["--pcrs", str(q["pcrs"])]
    for ak_file in ("ak.pub", "ak.pem"):
        ok = _cli(*base, "--ak", str(d / ak_file), "--nonce", nonce.hex())
        assert ok.returncode == 0, ok.stderr
        assert "quote verified" in ok.stdout
    wrong = _cli(*base, "--ak", str(d / "ak.pub"), "--nonce", os.urandom(16).hex())
    assert wrong.returncode == 1
    assert wrong.stderr.count("\n") == 1 and wrong.stderr.startswith("vroot: error: extraData")
    truncated = tmp_path / "truncated.msg"
    truncated.write_bytes(q["attest"].read_bytes()[:-3])
    bad = _cli(
        "quote",
        "verify",
        "--ak",
        str(d / "ak.pub"),
        "--attest",
        str(truncated),
        "--signature",
        str(q["sig"]),
        "--nonce",
        nonce.hex(),
        "--pcrs",
        str(q["pcrs"]),
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "truncated" in bad.stderr and str(truncated) in bad.stderr
