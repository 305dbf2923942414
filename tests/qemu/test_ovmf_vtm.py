"""Real virtual firmware: OVMF under QEMU (TCG) measures into a vTM (TT-3, VM-F1, VM-F3).

One boot is shared by the module: a vroot vTM (made by the vTM manager of a simulated host), QEMU + OVMF (`-bios`, tpm-crb) run to the UEFI
Shell banner, QEMU SIGKILLed by PID, then the vTM is reached through a data channel vroot attaches
over its control socket. A second boot on a fresh vTM checks that the measurements are deterministic.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from vroot.attestation import verify_quote
from vroot.errors import PcrDigestMismatch, SwtpmError, Unavailable
from vroot.qemu import QemuBoot, boot_firmware
from vroot.tm.client import TmClient
from vroot.tm.swtpm import SwtpmProcess
from vroot.tpm2 import HashAlg, PcrSelection, load_ak

pytestmark = [pytest.mark.tpm, pytest.mark.slow]

FIRMWARE_PCRS = range(8)
SEL = {HashAlg.SHA256: FIRMWARE_PCRS, HashAlg.SHA1: FIRMWARE_PCRS}
# PCR 2, 3, 5, 6 get only EV_SEPARATOR (digest of 4 zero bytes) from OVMF in this VM (no option
# ROMs, no GPT disk): their value is known without the firmware.
SEPARATOR_ONLY = hashlib.sha256(bytes(32) + hashlib.sha256(bytes(4)).digest()).digest()


@dataclass
class Booted:
    vtm: SwtpmProcess
    boot: QemuBoot
    pcrs: dict[HashAlg, dict[int, bytes]]
    refused_while_running: SwtpmError | None


def boot_and_read(vtm: SwtpmProcess, workdir: Path) -> Booted:
    boot = boot_firmware(vtm.ctrl_path, workdir=workdir, timeout=60.0)
    refused = None
    try:
        assert boot.alive
        try:
            with vtm.data_channel(attach_timeout=0.3):
                pass
        except SwtpmError as exc:
            refused = exc
    finally:
        boot.stop()  # SIGKILL: swtpm keeps running, with the PCRs
    assert not boot.alive and vtm.alive
    with vtm.data_channel() as tcti, TmClient.open(tcti) as tm:
        pcrs = tm.pcr_read(SEL)
    return Booted(vtm=vtm, boot=boot, pcrs=pcrs, refused_while_running=refused)


@pytest.fixture(scope="module")
def first_boot(vtm_factory, tmp_path_factory) -> Booted:
    return boot_and_read(vtm_factory("first"), tmp_path_factory.mktemp("boot1"))


def test_firmware_boot_is_quick_and_shows_the_shell(first_boot):
    assert first_boot.boot.boot_seconds is not None and first_boot.boot.boot_seconds < 30
    assert b"UEFI Interactive Shell" in first_boot.boot.serial()
    assert "-accel" in first_boot.boot.argv and "tcg" in first_boot.boot.argv


def test_qemu_holds_the_vtm_while_it_runs(first_boot):
    """While QEMU runs, swtpm serves it alone: vroot's data channel is refused, clearly, not queued."""
    assert first_boot.refused_while_running is not None
    assert re.search("held by another client.*QEMU", str(first_boot.refused_while_running))


def test_vcrtm_measurements_land_in_vtm_pcrs_0_to_7(first_boot):
    """TT-3, VM-F3: the real virtual CRTM (OVMF) measured the VM's boot into the vTM."""
    sha256 = first_boot.pcrs[HashAlg.SHA256]
    assert sorted(sha256) == list(FIRMWARE_PCRS)
    for i, value in sha256.items():
        assert value != bytes(32), f"PCR {i} still has its reset value"
    for i in (0, 4, 7):  # firmware code, boot application, Secure Boot variables
        assert sha256[i] != SEPARATOR_ONLY
    for i in (2, 3, 5, 6):
        assert sha256[i] == SEPARATOR_ONLY
    assert sha256[0] != sha256[4] != sha256[7]
    assert all(v != bytes(20) for v in first_boot.pcrs[HashAlg.SHA1].values())  # every bank extended


def test_vroot_quote_of_the_firmware_pcrs_verifies(first_boot):
    """VM-F1: the vTM keeps the unchanged TPM 2.0 interface: EK, AK, quote over PCR 0-7 verify."""
    nonce = os.urandom(16)
    sel = {HashAlg.SHA256: FIRMWARE_PCRS}
    with first_boot.vtm.data_channel() as tcti, TmClient.open(tcti) as tm:
        with tm.create_primary_ek() as ek:
            blob = tm.create_ak(ek)
            with tm.load(ek, blob) as ak:
                attest, sig = tm.quote(ak, sel, nonce)
        assert tm.transient_handles() == []
    claimed = {HashAlg.SHA256: first_boot.pcrs[HashAlg.SHA256]}
    vq = verify_quote(
        attest, sig, load_ak(blob.public), nonce=nonce, pcrs=claimed, selection=PcrSelection.from_mapping(sel)
    )
    assert vq.pcrs_verified and vq.pcrs[HashAlg.SHA256] == first_boot.pcrs[HashAlg.SHA256]

    forged = {HashAlg.SHA256: {**claimed[HashAlg.SHA256], 0: hashlib.sha256(b"other firmware").digest()}}
    with pytest.raises(PcrDigestMismatch):
        verify_quote(attest, sig, load_ak(blob.public), nonce=nonce, pcrs=forged)


def test_same_firmware_on_a_fresh_vtm_measures_the_same(first_boot, vtm_factory, tmp_path):
    """The firmware measurements are deterministic: a fresh vTM state, the same image, the same PCR 0-7."""
    second = boot_and_read(vtm_factory("second"), tmp_path / "boot2")
    assert second.vtm.state_dir != first_boot.vtm.state_dir
    assert second.pcrs == first_boot.pcrs


def test_boot_timeout_kills_qemu_and_reports_its_output(vtm_factory, tmp_path):
    vtm = vtm_factory("timeout")
    with pytest.raises(Unavailable, match=r"no b'NO SUCH MARKER' .* within 1 s; QEMU killed") as info:
        boot_firmware(vtm.ctrl_path, workdir=tmp_path, timeout=1.0, until=b"NO SUCH MARKER")
    assert "QEMU output:" in str(info.value) and "serial console" in str(info.value)
    pid = int(re.search(r"QEMU pid (\d+)", str(info.value)).group(1))
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped
    with vtm.data_channel() as tcti, TmClient.open(tcti) as tm:  # the vTM is free again
        assert len(tm.get_random(8)) == 8


def test_qemu_exiting_early_is_reported_with_its_message(tmp_path):
    dead = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(dead))  # a socket file nobody listens on: QEMU's chardev cannot connect
        with pytest.raises(Unavailable, match=r"(?s)exited with status 1 before .*QEMU output: .*socket"):
            boot_firmware(dead, workdir=tmp_path / "w", timeout=20.0)


def test_missing_vtm_socket_is_refused_before_qemu_starts(tmp_path):
    with pytest.raises(Unavailable, match="no vTM control socket"):
        boot_firmware(tmp_path / "absent.sock", workdir=tmp_path)
