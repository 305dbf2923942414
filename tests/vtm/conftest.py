"""Fixtures for the host agent and vTM tests: a simulated host, and its agent in a thread.

Host directories live under a short /tmp path (unix socket paths are limited to 107 bytes).
Teardown stops the agent, every vTM and the host TM; as a last resort it stops, by PID, every
swtpm whose PID file is under the host directory.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from vtm_helpers import kill_recorded_swtpms, make_host, scratch_dir

from vroot.host import AgentClient, HostPaths
from vroot.host.agent import HostAgent

os.environ.setdefault("TSS2_LOG", "all+NONE")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    with scratch_dir("vr") as path:
        yield path


@dataclass
class RunningAgent:
    directory: Path
    agent: HostAgent
    thread: threading.Thread
    client: AgentClient

    @property
    def paths(self) -> HostPaths:
        return HostPaths(self.directory)

    def stop(self, *, stop_vtms: bool = True, stop_tm: bool = True) -> None:
        if self.thread.is_alive():
            self.client.call("POST", "/v1/shutdown", {"stop_vtms": stop_vtms, "stop_tm": stop_tm})
            self.thread.join(30)
        assert not self.thread.is_alive(), "host agent did not stop"


def start_agent(directory: Path, **kwargs) -> RunningAgent:  # noqa: ANN003
    agent = HostAgent.start(directory, **kwargs)
    ready = threading.Event()
    thread = threading.Thread(
        target=agent.serve, kwargs={"on_ready": ready.set, "check_interval": 0.2}, daemon=True
    )
    thread.start()
    assert ready.wait(10), "host agent did not become ready"
    return RunningAgent(directory, agent, thread, AgentClient(HostPaths(directory).agent_socket))


@pytest.fixture
def host_dir(short_tmp: Path) -> Path:
    return make_host(short_tmp)


@pytest.fixture
def agent_factory(short_tmp: Path) -> Iterator[Callable[..., RunningAgent]]:
    started: list[RunningAgent] = []

    def start(directory: Path, **kwargs) -> RunningAgent:  # noqa: ANN003
        running = start_agent(directory, **kwargs)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            try:
                running.stop()
            except Exception:
                pass
        kill_recorded_swtpms(short_tmp)


@pytest.fixture
def agent(host_dir: Path, agent_factory: Callable[..., RunningAgent]) -> RunningAgent:
    return agent_factory(host_dir)
