"""The host runtime (VMM layer): a host's TM, its keys, and the agent that owns its vTMs.

    vroot host init --simulate DIR        # or --tcti device:/dev/tpmrm0 on a real host
    vroot host run DIR                    # the long-running agent (local API on DIR/agent.sock)

Library use: `init_host(...)` provisions; `HostAgent.start(dir).serve()` runs the agent;
`AgentClient(dir / "agent.sock").call(...)` talks to a running one.
"""

from vroot.attestation.host import UnverifiedHostEvidence
from vroot.host._config import HostConfig, HostPaths, load_config
from vroot.host._init import default_host_id, init_host
from vroot.host._localapi import AgentClient
from vroot.host._provision import HostKeys, TrustedState, load_host_keys

__all__ = [
    "AgentClient",
    "HostConfig",
    "HostKeys",
    "HostPaths",
    "TrustedState",
    "UnverifiedHostEvidence",
    "default_host_id",
    "init_host",
    "load_config",
    "load_host_keys",
]
