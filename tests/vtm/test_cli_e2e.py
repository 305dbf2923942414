"""As a new user would: the `vroot` commands in separate processes, the agent as a daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from vtm_helpers import wait_for

pytestmark = pytest.mark.tpm

VROOT = str(Path(sys.executable).parent / "vroot")


def _vroot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VROOT, *args], capture_output=True, text=True, timeout=60)


def _start_agent(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen([VROOT, "host", "run", str(directory)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    line = proc.stdout.readline()
    assert line.startswith("ready:"), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


def test_host_and_vtm_commands_end_to_end(short_tmp):
    directory = short_tmp / "host-cli"
    out = _vroot("host", "init", "--simulate", str(directory))
    assert out.returncode == 0, out.stderr
    agents: list[subprocess.Popen] = []
    try:
        agents.append(_start_agent(directory))
        vm = str(uuid.uuid4())
        out = _vroot("vtm", "create", vm, "--host", str(directory))
        assert out.returncode == 0 and f"vTM {vm}: running" in out.stdout, out.stderr
        pid = json.loads(_vroot("vtm", "list", "--json", "--host", str(directory)).stdout)[0]["pid"]
        status = json.loads(_vroot("host", "status", str(directory), "--json").stdout)
        assert status["host_id"] == "host-cli" and status["vtms"] == 1

        agents[0].send_signal(signal.SIGTERM)  # the agent stops; the VM's vTM does not
        assert agents[0].wait(30) == 0
        assert os.path.exists(f"/proc/{pid}")
        out = _vroot("vtm", "list", "--host", str(directory))
        assert out.returncode == 1 and "no host agent answers" in out.stderr

        agents.append(_start_agent(directory))
        listed = json.loads(_vroot("vtm", "list", "--json", "--host", str(directory)).stdout)
        assert listed[0]["pid"] == pid and listed[0]["running"]  # adopted, not restarted

        out = _vroot("host", "stop", str(directory), "--stop-vtms", "--stop-tm")
        assert out.returncode == 0, out.stderr
        assert agents[1].wait(30) == 0
        assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"))
        assert not list(directory.rglob("swtpm.pid"))
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
