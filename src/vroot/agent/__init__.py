"""The agent side of the server protocol (DESIGN.md section 5): agents only connect out.

    from vroot.agent import ServerClient, TaskLoop, enroll_host, load_credentials

    creds = enroll_host(host_dir, "https://ra.example:8443", "ops-ca.pem")   # before `vroot host run`
    with creds.client() as client:                     # mutual TLS with the enrolled certificate
        loop = TaskLoop(client, creds.agent_id, {"attest": attest_handler(host_dir)})
        loop.run(stop_event)                           # long-poll, dispatch by kind, post results

    running = start_host_loop(host_dir)                # the same in a thread, beside the host agent
    running.stop()

`attest_handler` answers the server's `attest` and `deep-quote` tasks with a deep quote from the
local host agent over the task's nonce or Merkle root (RA-2, RA-4); `vroot host run DIR --server URL
--ca PEM` runs that loop, and with `--simulate-guests` the guest attesters of the host's VMs too.

Guests (RA-1, RA-3): a VM's attester `vm:<uuid>` over its vTM, in the VM or simulated by its host:

    attester = GuestAttester(DeviceGuestTm("device:/dev/tpmrm0"), state_dir)   # `vroot guest run`
    attester.enroll(url, ca)                           # vEK certificate, vAK, activation in the vTM
    client, loop = attester.task_loop()                # quotes the vTM with its vAK for `attest` tasks
    guests = GuestSimulator(host_dir, server_url=url, ca_certificate=ca)   # one per simulated VM

`ServerClient` raises the server's problem details as `vroot.errors` classes and `Unavailable`
when the server cannot be reached (or refuses the TLS handshake).
"""

from vroot.agent._attest import RunningTaskLoop, attest_handler, host_task_loop, start_host_loop
from vroot.agent._client import ServerClient, error_from_problem
from vroot.agent._enroll import SERVER_DIR, AgentCredentials, enroll_host, load_credentials, read_credentials
from vroot.agent._guest import GuestAttester
from vroot.agent._guest_tm import (
    VAK_HANDLE,
    DeviceGuestTm,
    GuestIdentity,
    GuestTm,
    SimulatedGuestTm,
    guest_activate,
    guest_evidence,
    guest_identity,
)
from vroot.agent._loop import Task, TaskHandler, TaskLoop
from vroot.agent._simulate import GuestSimulator

__all__ = [
    "SERVER_DIR",
    "VAK_HANDLE",
    "AgentCredentials",
    "DeviceGuestTm",
    "GuestAttester",
    "GuestIdentity",
    "GuestSimulator",
    "GuestTm",
    "RunningTaskLoop",
    "ServerClient",
    "SimulatedGuestTm",
    "Task",
    "TaskHandler",
    "TaskLoop",
    "attest_handler",
    "enroll_host",
    "error_from_problem",
    "guest_activate",
    "guest_evidence",
    "guest_identity",
    "host_task_loop",
    "load_credentials",
    "read_credentials",
    "start_host_loop",
]
