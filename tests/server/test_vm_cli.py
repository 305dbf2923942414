"""The guest attester as a process (RA-1, RA-3, RA-4): `vroot guest run --tcti ...` against a vTM
served over TCP (as a VM's TPM device would be), and `vroot host run --simulate-guests`, where the
host agent plays the guest attester of its own VMs. Each enrolls its VM and answers the server,
and `vroot attest` then gives the joint verdict naming the host. Processes are stopped by PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from attest_helpers import enrolled_host, learnt_manifest, start_agent, upload_library, wait_for
from deep_helpers import guest_logs
from server_helpers import terminate
from vtm_helpers import make_host

from vroot.cli.main import run
from vroot.host import HostPaths
from vroot.measure import VM_CHAIN, write_images
from vroot.tm import free_tcp_port
from vroot.vtm import VtmPaths

pytestmark = pytest.mark.tpm
VROOT = str(Path(sys.executable).parent / "vroot")
ENV = {**os.environ, "TSS2_LOG": "all+NONE"}


def _libraries(server, host_dir: Path, vm_logs: Path) -> None:  # noqa: ANN001
    op = server.operator()
    upload_library(op, learnt_manifest(host_dir))
    upload_library(op, learnt_manifest(host_dir, name="vms", logs=vm_logs), group="vms", baseline="vms")


def _attest_json(server, vm: str, capsys) -> dict:  # noqa: ANN001
    capsys.readouterr()  # what earlier commands printed
    args = ["attest", f"vm:{vm}", "--server", server.url, "--token", server.token, "--ca", str(server.ca)]
    code = run([*args, "--json", "--wait", "60"])
    out, err = capsys.readouterr()
    assert code == 0, (out, err)
    return json.loads(out)


def test_ra1_ra3_guest_run_cli_enrolls_its_vtm_and_answers(server_factory, short_tmp, capsys):
    directory = make_host(short_tmp, "host-g")  # and the manufacturer CA
    server = server_factory(manufacturer_cas=(short_tmp / "manufacturer-ca",), scheduler_interval_seconds=0,
                            max_wait_seconds=1)  # fmt: skip
    host = enrolled_host(server, directory)
    proc = None
    try:
        vm, port = str(uuid.uuid4()), free_tcp_port()
        host.local.call("POST", "/v1/vtms", {"vm_uuid": vm, "tcp_port": port})
        host.local.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(write_images(short_tmp / "img", VM_CHAIN).path)})
        logs = guest_logs(host, vm)
        _libraries(server, host.directory, logs)
        proc = subprocess.Popen(
            [sys.executable, "-m", "vroot.cli.guest", "run", "--tcti", f"swtpm:host=127.0.0.1,port={port}",
             "--server", server.url, "--ca", str(server.ca), "--dir", str(short_tmp / "guest-state"),
             "--boot-log", str(logs / "boot.tcg"), "--ima-log", str(logs / "ima.bin"), "--wait", "0.5"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip
        enrolled, ready = proc.stdout.readline(), proc.stdout.readline()
        assert enrolled.startswith(f"enrolled vm:{vm}") and ready.startswith(f"ready: vm:{vm}"), (
            enrolled, ready, proc.stderr.read() if proc.poll() is not None else "")  # fmt: skip
        assert (short_tmp / "guest-state" / "enrollment.json").exists()
        result = _attest_json(server, vm, capsys)
        assert (result["verdict"], result["host_id"], result["findings"]) == ("trusted", "host:host-g", [])
    finally:
        if proc is not None:
            assert terminate(proc, timeout=30) == 0, proc.stderr.read()
        host.close()


def test_ra4_host_run_simulate_guests_attests_its_vms(server_factory, short_tmp, capsys):
    directory = make_host(short_tmp, "host-s")
    server = server_factory(manufacturer_cas=(short_tmp / "manufacturer-ca",), scheduler_interval_seconds=0,
                            max_wait_seconds=1)  # fmt: skip
    assert run(["server", "enroll-host", str(directory), "--server", server.url, "--ca", str(server.ca)]) == 0
    agent = start_agent(directory)  # make and boot a VM first; the vTM outlives this agent
    vm = str(uuid.uuid4())
    agent.client.call("POST", "/v1/vtms", {"vm_uuid": vm})
    agent.client.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(write_images(short_tmp / "img", VM_CHAIN).path)})
    agent.stop(stop_vtms=False, stop_tm=False)
    _libraries(server, directory, VtmPaths(HostPaths(directory).vtm(vm)).guest)
    proc = subprocess.Popen([VROOT, "host", "run", str(directory), "--server", server.url, "--ca", str(server.ca),
                             "--simulate-guests"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready:") and "guest attesters" in line, (line, proc.stderr.read() if proc.poll() else "")
        store = server.services.store
        wait_for(lambda: (g := store.agents.find(f"vm:{vm}")) is not None and g.state.value == "active",
                 timeout=30, what="the simulated guest's enrollment")  # fmt: skip
        result = _attest_json(server, vm, capsys)
        assert (result["verdict"], result["host_id"], result["host_verdict"]) == ("trusted", "host:host-s", "trusted")
        guest = server.services.store.agents.get(f"vm:{vm}")
        assert (guest.host_id, guest.group) == ("host:host-s", "vms")
    finally:
        assert terminate(proc, timeout=60) == 0, proc.stderr.read()


def test_simulate_guests_needs_a_server(short_tmp, capsys):
    assert run(["host", "run", str(short_tmp), "--simulate-guests"]) == 2
    assert "--simulate-guests needs --server" in capsys.readouterr().err
