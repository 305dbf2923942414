"""DP-1, DP-2 with tpm2-tools, as an unmodified guest would use its (v)TM: the keys vroot persists
are where the tools look (0x81000001 is the SRK `tpm2_createprimary -C o -G ecc` makes), vroot's
sealed objects load and unseal with `tpm2_load`/`tpm2_unseal -p pcr:...`, and the binding key's PEM
read with `tpm2_readpublic` is the one vroot hands out.

swtpm serves one connection at a time and has no resource manager: the client is closed before
each tool runs, and every tool run that loads something is followed by `tpm2_flushcontext -t`.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from vroot.guest import BINDING_KEY_HANDLE, SRK_HANDLE, bind, binding_public_key, seal, unbind
from vroot.tm.client import TmClient
from vroot.tpm2 import HashAlg

pytestmark = pytest.mark.tpm

SECRET = b"sealed by vroot, unsealed by tpm2-tools"


def tools(env: dict[str, str], cwd: Path, *argv: str) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode().strip()}")
    return done.stdout.decode(errors="replace")


def test_persistent_keys_are_visible_to_tpm2_getcap(swtpm, tools_env, tmp_path):
    with TmClient.open(swtpm.tcti) as tm:
        seal(tm, b"x", pcrs={HashAlg.SHA256: [16]})
        binding_public_key(tm)
    out = tools(tools_env(swtpm), tmp_path, "tpm2_getcap", "handles-persistent")
    handles = {int(h, 16) for h in re.findall(r"0x[0-9a-fA-F]+", out)}
    assert handles == {SRK_HANDLE, BINDING_KEY_HANDLE}


def test_srk_is_the_one_tpm2_createprimary_makes(swtpm, tools_env, tmp_path):
    with TmClient.open(swtpm.tcti) as tm:
        srk_name = seal(tm, b"x", pcrs={HashAlg.SHA256: [16]}).srk_name
    env = tools_env(swtpm)
    tools(env, tmp_path, "tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", "primary.ctx")
    try:
        out = tools(env, tmp_path, "tpm2_readpublic", "-c", "primary.ctx")
    finally:
        tools(env, tmp_path, "tpm2_flushcontext", "-t")
    assert re.search(r"^name: ([0-9a-f]+)$", out, re.M).group(1) == srk_name.hex()
    out = tools(env, tmp_path, "tpm2_readpublic", "-c", f"0x{SRK_HANDLE:08x}")
    assert re.search(r"^name: ([0-9a-f]+)$", out, re.M).group(1) == srk_name.hex()


def test_tpm2_unseal_opens_a_vroot_sealed_blob(swtpm, tools_env, tmp_path):
    """DP-2 interop: the blob carries the TPM2B_PUBLIC/TPM2B_PRIVATE tpm2_load takes."""
    with TmClient.open(swtpm.tcti) as tm:
        tm.pcr_extend(16, {alg: alg.digest(b"boot") for alg in tm.pcr_banks()})
        blob = seal(tm, SECRET, pcrs={HashAlg.SHA256: [16, 23]})
    (tmp_path / "seal.pub").write_bytes(blob.public)
    (tmp_path / "seal.priv").write_bytes(blob.private)
    env = tools_env(swtpm)
    tools(
        env,
        tmp_path,
        "tpm2_load",
        "-C",
        f"0x{SRK_HANDLE:08x}",
        "-u",
        "seal.pub",
        "-r",
        "seal.priv",
        "-c",
        "seal.ctx",
    )
    try:
        out = subprocess.run(
            ["tpm2_unseal", "-c", "seal.ctx", "-p", "pcr:sha256:16,23"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout == SECRET
        refused = subprocess.run(  # the policy is mandatory: no password opens it
            ["tpm2_unseal", "-c", "seal.ctx"], cwd=tmp_path, env=env, capture_output=True, timeout=60
        )
        assert refused.returncode != 0 and SECRET not in refused.stdout
    finally:
        tools(env, tmp_path, "tpm2_flushcontext", "-t")
        tools(env, tmp_path, "tpm2_flushcontext", "-s")
    with TmClient.open(swtpm.tcti) as tm:
        assert tm.transient_handles() == []
        assert tm.session_handles() == []


def test_binding_pem_from_tpm2_readpublic(swtpm, tools_env, tmp_path):
    """DP-1: a relying party can take the PEM from tpm2-tools; what it binds, vroot unbinds."""
    with TmClient.open(swtpm.tcti) as tm:
        pem = binding_public_key(tm)
    tools(
        tools_env(swtpm),
        tmp_path,
        "tpm2_readpublic",
        "-c",
        f"0x{BINDING_KEY_HANDLE:08x}",
        "-f",
        "pem",
        "-o",
        "bind.pem",
    )
    tools_pem = (tmp_path / "bind.pem").read_bytes()
    assert tools_pem.strip() == pem.strip()
    blob = bind(tools_pem, b"bound with the tools' PEM", rng=os.urandom)
    with TmClient.open(swtpm.tcti) as tm:
        assert unbind(tm, blob) == b"bound with the tools' PEM"
