"""The agent side of the server protocol (DESIGN.md section 5): agents only connect out.

    from vroot.agent import ServerClient, TaskLoop, enroll_host, load_credentials

    creds = enroll_host(host_dir, "https://ra.example:8443", "ops-ca.pem")   # before `vroot host run`
    with creds.client() as client:                     # mutual TLS with the enrolled certificate
        loop = TaskLoop(client, creds.agent_id, {"attest": attest_handler(host_dir)})
        loop.run(stop_event)                           # long-poll, dispatch by kind, post results

    running = start_host_loop(host_dir)                # the same in a thread, beside the host agent
    running.stop()

`attest_handler` answers the server's `attest` tasks with a deep quote from the local host agent
over the task's nonce (RA-2); `vroot host run DIR --server URL --ca PEM` runs that loop.

`ServerClient` raises the server's problem details as `vroot.errors` classes and `Unavailable`
when the server cannot be reached (or refuses the TLS handshake).
"""

from vroot.agent._attest import RunningTaskLoop, attest_handler, host_task_loop, start_host_loop
from vroot.agent._client import ServerClient, error_from_problem
from vroot.agent._enroll import SERVER_DIR, AgentCredentials, enroll_host, load_credentials
from vroot.agent._loop import Task, TaskHandler, TaskLoop

__all__ = [
    "SERVER_DIR",
    "AgentCredentials",
    "RunningTaskLoop",
    "ServerClient",
    "Task",
    "TaskHandler",
    "TaskLoop",
    "attest_handler",
    "enroll_host",
    "error_from_problem",
    "host_task_loop",
    "load_credentials",
    "start_host_loop",
]
