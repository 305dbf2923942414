"""The host agent outlives restarts, owns every vTM, and restarts a vTM whose swtpm died (VMM-F1)."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid

import pytest
from vtm_helpers import wait_for

from vroot.errors import Conflict, Unavailable
from vroot.host.agent import HostAgent
from vroot.tm.swtpm import SwtpmProcess

pytestmark = pytest.mark.tpm


def test_agent_restart_adopts_running_vtms(host_dir, agent_factory):
    """vTMs keep running while the agent restarts (a guest keeps its TPM); the next agent adopts them."""
    first = agent_factory(host_dir)
    vm = str(uuid.uuid4())
    pid = first.client.call("POST", "/v1/vtms", {"vm_uuid": vm})["pid"]
    host_tm_pid = first.agent.host.process.pid
    first.stop(stop_vtms=False, stop_tm=False)
    assert os.path.exists(f"/proc/{pid}") and os.path.exists(f"/proc/{host_tm_pid}")
    second = agent_factory(host_dir)
    status = second.client.call("GET", f"/v1/vtms/{vm}")
    assert status["running"] and status["pid"] == pid
    assert second.agent.host.process.pid == host_tm_pid  # the host TM was adopted, not rebooted
    with second.agent.manager.open_vtm(vm) as vtm:
        assert len(vtm.get_random(8)) == 8


def test_agent_restarts_vtms_that_should_run(host_dir, agent_factory):
    first = agent_factory(host_dir)
    running, stopped = str(uuid.uuid4()), str(uuid.uuid4())
    pid = first.client.call("POST", "/v1/vtms", {"vm_uuid": running})["pid"]
    first.client.call("POST", "/v1/vtms", {"vm_uuid": stopped})
    first.client.call("POST", f"/v1/vtms/{stopped}/stop")
    first.stop(stop_vtms=False, stop_tm=False)
    SwtpmProcess.adopt(pid, state_dir=host_dir / "vtms" / running / "state",
                       unix_path=host_dir / "vtms" / running / "state" / "tpm.sock", ctrl_only=True).stop()  # fmt: skip
    second = agent_factory(host_dir)
    assert second.client.call("GET", f"/v1/vtms/{running}")["running"]
    assert not second.client.call("GET", f"/v1/vtms/{stopped}")["running"]


def test_dead_swtpm_is_restarted(agent):
    vm = str(uuid.uuid4())
    pid = agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: (s := agent.client.call("GET", f"/v1/vtms/{vm}"))["running"] and s["pid"] != pid)


def test_one_agent_per_host(agent):
    with pytest.raises(Conflict, match="another host agent"):
        HostAgent.start(agent.directory)


def test_interrupted_create_leaves_no_vtm(host_dir, agent_factory, monkeypatch):
    """A create that fails part-way leaves nothing that looks like a vTM, and no process."""
    agent = agent_factory(host_dir)
    vm = str(uuid.uuid4())

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("vroot.vtm.manager.write_record", fail)
    with pytest.raises(Unavailable, match="No space left on device; nothing was kept"):
        agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    monkeypatch.undo()
    assert agent.client.call("GET", "/v1/vtms")["vtms"] == []
    assert not (host_dir / "vtms" / vm).exists()
    assert agent.agent.manager.processes == {}
    # and the VM can have its vTM once the fault is gone
    assert agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})["running"]


def test_half_made_directory_is_cleaned_at_agent_start(host_dir, agent_factory):
    leftover = host_dir / "vtms" / str(uuid.uuid4())
    (leftover / "state").mkdir(parents=True)
    (leftover / "state-key.sealed").write_bytes(b"partial")
    agent = agent_factory(host_dir)
    assert not leftover.exists()
    assert agent.client.call("GET", "/v1/vtms")["vtms"] == []


@pytest.fixture
def small_vtm_disk(host_dir):
    """DIR/vtms on a 160 KiB tmpfs: a real full disk (the tests run as root, as CI does)."""
    vtms = host_dir / "vtms"
    vtms.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k,mode=0700", "tmpfs", str(vtms)], check=True)
    try:
        yield vtms
    finally:
        subprocess.run(["umount", "-l", str(vtms)], check=False)


def test_full_disk_loses_nothing(host_dir, small_vtm_disk, agent_factory):
    """A full disk: a clear error, no half-made vTM, and every vTM made before still works."""
    agent = agent_factory(host_dir)
    made = []
    with pytest.raises(Unavailable, match="not created: .*(No space left|Disk quota)|swtpm") as info:
        for _ in range(200):
            vm = str(uuid.uuid4())
            agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
            made.append(vm)
    assert made, "the tmpfs should hold at least one vTM"
    listed = [v["vm_uuid"] for v in agent.client.call("GET", "/v1/vtms")["vtms"]]
    assert listed == sorted(made)
    assert sorted(p.name for p in small_vtm_disk.iterdir()) == sorted(made)
    for vm in made:
        assert agent.client.call("GET", f"/v1/vtms/{vm}")["running"]
    with agent.agent.manager.open_vtm(made[0]) as vtm:
        assert len(vtm.get_random(4)) == 4
    assert "\n" not in str(info.value), str(info.value)  # one line
