"""The agent side of the server protocol (DESIGN.md section 5): agents only connect out.

    from vroot.agent import ServerClient, TaskLoop, enroll_host, load_credentials

    creds = enroll_host(host_dir, "https://ra.example:8443", "ops-ca.pem")   # before `vroot host run`
    with creds.client() as client:                     # mutual TLS with the enrolled certificate
        loop = TaskLoop(client, creds.agent_id, {"attest": handle_attest})
        loop.run(stop_event)                           # long-poll, dispatch by kind, post results

`ServerClient` raises the server's problem details as `vroot.errors` classes and `Unavailable`
when the server cannot be reached (or refuses the TLS handshake).
"""

from vroot.agent._client import ServerClient, error_from_problem
from vroot.agent._enroll import SERVER_DIR, AgentCredentials, enroll_host, load_credentials
from vroot.agent._loop import Task, TaskHandler, TaskLoop

__all__ = [
    "SERVER_DIR",
    "AgentCredentials",
    "ServerClient",
    "Task",
    "TaskHandler",
    "TaskLoop",
    "enroll_host",
    "error_from_problem",
    "load_credentials",
]
