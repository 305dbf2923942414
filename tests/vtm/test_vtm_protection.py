"""vTM state protection (VMM-F3, VMM-S1, VMM-S2, DP-3; DESIGN.md section 4)."""

from __future__ import annotations

import itertools
import os
import stat
import subprocess
import uuid

import pytest

from vroot.errors import HostStateChanged, InvalidInput, SwtpmError, TmError

pytestmark = pytest.mark.tpm

SECRET = b"VROOT-NV-PLAINTEXT-0123456789abcdef"


class CountingRng:
    """Deterministic 'randomness' the test can see: every state key handed out is remembered."""

    def __init__(self) -> None:
        self.counter = itertools.count(1)
        self.issued: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        value = bytes([0xA5, next(self.counter)]) * (n // 2) + b"\x5a" * (n % 2)
        self.issued.append(value)
        return value


def _all_file_bytes(root) -> bytes:  # noqa: ANN001
    out = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            out.append(path.read_bytes())
    return b"\n".join(out)


def test_nothing_in_the_clear_on_disk(host_dir, agent_factory):
    """DP-3: neither the state key nor data written into the vTM's NV appear in any file."""
    rng = CountingRng()
    agent = agent_factory(host_dir, rng=rng)
    vm = str(uuid.uuid4())
    agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    state_key = rng.issued[-1]
    with agent.agent.manager.open_vtm(vm) as vtm:
        handle = 0x01500042
        _nv_write(vtm, handle, SECRET)
        assert _nv_read(vtm, handle, len(SECRET)) == SECRET
    agent.client.call("POST", f"/v1/vtms/{vm}/stop")  # swtpm writes its state out
    blob = _all_file_bytes(host_dir)
    assert state_key not in blob
    assert SECRET not in blob
    assert b"VROOT-NV" not in blob
    agent.client.call("POST", f"/v1/vtms/{vm}/start")
    with agent.agent.manager.open_vtm(vm) as vtm:
        assert _nv_read(vtm, handle, len(SECRET)) == SECRET  # and it is all still there


def test_changed_boot_file_keeps_the_vtm_from_starting(agent):
    """VMM-S2: after a change to the host's measured boot the state key stays sealed; the error names
    the PCR that differs."""
    vm = str(uuid.uuid4())
    agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    loader = agent.paths.images / "bootloader.efi"
    data = bytearray(loader.read_bytes())
    data[0] ^= 1
    loader.write_bytes(bytes(data))
    out = agent.client.call("POST", "/v1/reboot", {})
    assert any("not started" in m and "PCRs 4" in m for m in out["messages"]), out
    with pytest.raises(HostStateChanged, match=r"host PCRs 4 \(sha256\) differ") as info:
        agent.client.call("POST", f"/v1/vtms/{vm}/start")
    assert info.value.pcrs == (4,)
    assert not agent.client.call("GET", f"/v1/vtms/{vm}")["running"]
    data[0] ^= 1  # the operator restores the good boot loader: the vTM is back
    loader.write_bytes(bytes(data))
    out = agent.client.call("POST", "/v1/reboot", {})
    assert agent.client.call("GET", f"/v1/vtms/{vm}")["running"], out


PROBE = r"""
import os, socket, sys
target = sys.argv[1]
results = []
for what, action in (
    ("list", lambda: os.listdir(os.path.join(target, "state"))),
    ("read-state", lambda: open(os.path.join(target, "state", "tpm2-00.permall"), "rb").read()),
    ("read-sealed-key", lambda: open(os.path.join(target, "state-key.sealed"), "rb").read()),
    ("connect", lambda: socket.socket(socket.AF_UNIX).connect(os.path.join(target, "state", "tpm.sock"))),
):
    try:
        action()
        results.append(what + ":allowed")
    except PermissionError:
        results.append(what + ":denied")
print(" ".join(results))
"""


def _probe_as(uid: int, target) -> str:  # noqa: ANN001
    """What a process running as `uid` (another vTM's swtpm) can do with `target`'s files."""

    def drop() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    out = subprocess.run(["/usr/bin/python3", "-c", PROBE, str(target)], capture_output=True, text=True,
                         preexec_fn=drop, timeout=30, check=True)  # fmt: skip
    return out.stdout.strip()


def test_vtms_are_isolated(agent):
    """VMM-S1: each vTM's swtpm runs as its own uid in its own directory with its own key: vTM A's
    uid can neither list, read nor connect to vTM B's state, socket or sealed key."""
    assert os.geteuid() == 0, "the isolation test runs as root, as CI does"
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    pids = {vm: agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})["pid"] for vm in (a, b)}
    uid = {vm: agent.agent.manager.record(vm).uid for vm in (a, b)}
    assert None not in uid.values() and uid[a] != uid[b]
    for vm in (a, b):
        assert os.stat(f"/proc/{pids[vm]}").st_uid == uid[vm]  # the swtpm process runs as it
        state = agent.paths.vtm(vm) / "state"
        assert state.stat().st_uid == uid[vm] and stat.S_IMODE(state.stat().st_mode) == 0o700
        assert stat.S_IMODE((agent.paths.vtm(vm) / "state-key.sealed").stat().st_mode) == 0o600
    assert stat.S_IMODE(agent.paths.agent_socket.stat().st_mode) == 0o600
    assert _probe_as(uid[a], agent.paths.vtm(b)) == (
        "list:denied read-state:denied read-sealed-key:denied connect:denied"
    )
    # its own state is its own; the sealed key stays the host's (root's)
    assert _probe_as(uid[a], agent.paths.vtm(a)) == (
        "list:allowed read-state:allowed read-sealed-key:denied connect:allowed"
    )
    # Swap the sealed keys: B's state key unseals fine, but swtpm cannot decrypt A's state with it.
    sealed_a = (agent.paths.vtm(a) / "state-key.sealed").read_bytes()
    sealed_b = (agent.paths.vtm(b) / "state-key.sealed").read_bytes()
    agent.client.call("POST", f"/v1/vtms/{a}/stop")
    (agent.paths.vtm(a) / "state-key.sealed").write_bytes(sealed_b)
    with pytest.raises(SwtpmError, match="state key"):
        agent.client.call("POST", f"/v1/vtms/{a}/start")
    (agent.paths.vtm(a) / "state-key.sealed").write_bytes(sealed_a)
    assert agent.client.call("POST", f"/v1/vtms/{a}/start")["running"]


def _nv_write(vtm, handle: int, data: bytes) -> None:  # noqa: ANN001
    from tpm2_pytss import ESYS_TR, TPM2_ALG, TPM2B_NV_PUBLIC, TPMA_NV, TPMS_NV_PUBLIC

    attrs = TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE
    public = TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(nvIndex=handle, nameAlg=TPM2_ALG.SHA256, attributes=attrs, dataSize=len(data))
    )
    e = vtm.esapi
    nv = e.nv_define_space(None, public, ESYS_TR.OWNER)
    e.nv_write(nv, data, 0, ESYS_TR.OWNER)
    e.tr_close(nv)


def _nv_read(vtm, handle: int, size: int) -> bytes:  # noqa: ANN001
    from tpm2_pytss import ESYS_TR

    e = vtm.esapi
    nv = e.tr_from_tpmpublic(handle)
    try:
        return bytes(e.nv_read(nv, size, 0, ESYS_TR.OWNER))
    finally:
        e.tr_close(nv)


def test_each_vtm_gets_its_own_state_key(host_dir, agent_factory):
    """No key shared across vTMs: each create draws a fresh 256-bit key."""
    rng = CountingRng()
    agent = agent_factory(host_dir, rng=rng)
    for _ in range(3):
        agent.client.call("POST", "/v1/vtms", {"vm_uuid": str(uuid.uuid4())})
    keys = [k for k in rng.issued if len(k) == 32]
    assert len(keys) == 3 and len(set(keys)) == 3


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupted_sealed_key_is_refused_and_nothing_is_lost(agent, damage):
    """A corrupted sealed state key: a clear error, the vTM stays stopped, its state is untouched."""
    vm = str(uuid.uuid4())
    agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    agent.client.call("POST", f"/v1/vtms/{vm}/stop")
    sealed_path = agent.paths.vtm(vm) / "state-key.sealed"
    good = sealed_path.read_bytes()
    state_before = {p.name: p.read_bytes() for p in (agent.paths.vtm(vm) / "state").iterdir() if p.is_file()}
    bad = good[:40] if damage == "truncate" else good[:30] + bytes([good[30] ^ 0x01]) + good[31:]
    sealed_path.write_bytes(bad)
    with pytest.raises((InvalidInput, TmError), match="sealed state key|Load"):
        agent.client.call("POST", f"/v1/vtms/{vm}/start")
    assert not agent.client.call("GET", f"/v1/vtms/{vm}")["running"]
    state_after = {p.name: p.read_bytes() for p in (agent.paths.vtm(vm) / "state").iterdir() if p.is_file()}
    assert state_after == state_before
    sealed_path.write_bytes(good)
    assert agent.client.call("POST", f"/v1/vtms/{vm}/start")["running"]
