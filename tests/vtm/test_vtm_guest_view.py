"""What a guest sees: an unchanged TPM 2.0 (VM-F1), its vEK certificate where guest software
looks for it, a measured VM boot in its vPCRs (TT-3, VM-F3); and what the host vouches for with a
deep quote (VMM-F5)."""

from __future__ import annotations

import base64
import os
import subprocess
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vroot.eventlog import parse_ima_log, parse_tcg_log, replay_ima_log, replay_tcg_log
from vroot.measure import VM_CHAIN, verify_chain, write_images
from vroot.tm.swtpm import free_tcp_port
from vroot.tpm2 import HashAlg

pytestmark = pytest.mark.tpm


def _tools(port: int, tmp_path, *argv: str, input_bytes: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TPM2TOOLS_TCTI": f"swtpm:host=127.0.0.1,port={port}", "TSS2_LOG": "all+NONE"}
    out = subprocess.run(
        list(argv), cwd=tmp_path, env=env, capture_output=True, timeout=60, input=input_bytes
    )
    assert out.returncode == 0, f"{argv[0]} failed: {out.stderr.decode()[-500:]}"
    # No resource manager on a bare vTM (a guest kernel has /dev/tpmrm0): free the transient slots.
    subprocess.run(
        ["tpm2_flushcontext", "-t"], cwd=tmp_path, env=env, capture_output=True, timeout=60, check=True
    )
    return out


def test_tpm2_tools_work_against_a_vtm_as_a_guest_would(agent, tmp_path):
    """VM-F1: tpm2-tools, unmodified, read the vEK certificate from NV, quote and seal on a vTM."""
    vm = str(uuid.uuid4())
    port = free_tcp_port()
    agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm, "tcp_port": port})
    cert_der = base64.b64decode(agent.client.call("POST", f"/v1/vtms/{vm}/certificate")["der"])

    _tools(port, tmp_path, "tpm2_nvread", "-C", "o", "0x01c0000a", "-o", "nv-ek.der")
    assert (tmp_path / "nv-ek.der").read_bytes() == cert_der

    _tools(port, tmp_path, "tpm2_createek", "-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub", "-f", "pem")
    ek_pem = (tmp_path / "ek.pub").read_bytes()
    cert_key = x509.load_der_x509_certificate(cert_der).public_key()
    assert serialization.load_pem_public_key(ek_pem).public_numbers() == cert_key.public_numbers()

    _tools(port, tmp_path, "tpm2_createek", "-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub", "-f", "pem")
    _tools(port, tmp_path, "tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256",
           "-s", "ecdsa", "-u", "ak.pem", "-f", "pem")  # fmt: skip
    _tools(port, tmp_path, "tpm2_evictcontrol", "-C", "o", "-c", "ak.ctx", "0x81010010")
    _tools(port, tmp_path, "tpm2_quote", "-c", "0x81010010", "-l", "sha256:0,1,2,3,4,7", "-q", "c0ffee",
           "-m", "q.msg", "-s", "q.sig", "-o", "q.pcrs", "-g", "sha256")  # fmt: skip
    _tools(port, tmp_path, "tpm2_checkquote", "-u", "ak.pem", "-m", "q.msg", "-s", "q.sig", "-f", "q.pcrs",
           "-g", "sha256", "-q", "c0ffee")  # fmt: skip

    (tmp_path / "secret.txt").write_bytes(b"guest disk key 42")
    _tools(port, tmp_path, "tpm2_createprimary", "-C", "o", "-c", "prim.ctx")
    _tools(port, tmp_path, "tpm2_pcrread", "-o", "pcr.bin", "sha256:0,1,2,3")
    _tools(port, tmp_path, "tpm2_createpolicy", "--policy-pcr", "-l", "sha256:0,1,2,3", "-f", "pcr.bin",
           "-L", "pol.dat")  # fmt: skip
    _tools(port, tmp_path, "tpm2_createprimary", "-C", "o", "-c", "prim.ctx")
    _tools(port, tmp_path, "tpm2_create", "-C", "prim.ctx", "-L", "pol.dat", "-i", "secret.txt",
           "-u", "s.pub", "-r", "s.priv")  # fmt: skip
    _tools(port, tmp_path, "tpm2_createprimary", "-C", "o", "-c", "prim.ctx")
    _tools(port, tmp_path, "tpm2_load", "-C", "prim.ctx", "-u", "s.pub", "-r", "s.priv", "-c", "s.ctx")
    out = _tools(port, tmp_path, "tpm2_unseal", "-c", "s.ctx", "-p", "pcr:sha256:0,1,2,3")
    assert out.stdout == b"guest disk key 42"


def test_simulated_vm_boot_lands_in_the_vpcrs(agent, short_tmp):
    """TT-3, VM-F3: the VM chain measured into the vTM; the guest's logs replay to its vPCRs."""
    vm = str(uuid.uuid4())
    agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    images = write_images(short_tmp / "vm-images", VM_CHAIN)
    out = agent.client.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(images.path)})
    guest = agent.paths.vtm(vm) / "guest"
    tcg = parse_tcg_log((guest / "boot.tcg").read_bytes())
    ima = parse_ima_log((guest / "ima.bin").read_bytes())
    replayed = dict(replay_tcg_log(tcg)[HashAlg.SHA256])
    replayed.update(replay_ima_log(ima, banks=(HashAlg.SHA256,))[HashAlg.SHA256])
    for index, value in out["pcrs"]["sha256"].items():
        assert replayed[int(index)].hex() == value, index
    verify_chain(VM_CHAIN, tcg, ima)
    # booting again (a VM reboot) starts from reset vPCRs and gives the same values
    again = agent.client.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(images.path)})
    assert again["pcrs"] == out["pcrs"]
