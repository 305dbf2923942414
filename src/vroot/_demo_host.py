"""The demo's host: a simulated host whose agent runs in a thread of the demo's process, its task
loop and its VMs' simulated guest attesters once it has enrolled; and what the demo checks locally
(a deep quote and its chain, a vEK certificate chain) and learns (baselines from logs).

    host = DemoHost(host_dir)            # HostAgent.start + serve in a thread
    host.answer_server(server)           # after enroll_host: task loop + GuestSimulator
    host.sync_guests()                   # enroll the guests of running vTMs, start their loops
    host.close()                         # guests, loop, then the agent (vTMs and TM stopped)
"""

from __future__ import annotations

import base64
import os
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.tree import Tree

from vroot._demo_server import DemoServer

__all__ = ["LONG_POLL", "DemoHost", "deep_quote", "flip_first_byte", "learnt_baseline", "vek_tree"]

LONG_POLL = 1.0  # seconds an agent's task long-poll waits (and so the most a loop takes to stop)


class DemoHost:
    """A simulated host and its agent, run in a thread of this process for the demo; once enrolled,
    its task loop (answering the server) and its VMs' simulated guest attesters run beside it."""

    def __init__(self, directory: Path) -> None:
        from vroot.host import AgentClient, HostPaths
        from vroot.host.agent import HostAgent

        self.directory = directory
        self.agent = HostAgent.start(directory)
        ready = threading.Event()
        self.thread = threading.Thread(
            target=self.agent.serve, kwargs={"on_ready": ready.set, "check_interval": 0.5}, daemon=True
        )
        self.thread.start()
        ready.wait(10)
        self.api = AgentClient(HostPaths(directory).agent_socket)
        self.loop: Any = None
        self.guests: Any = None

    @property
    def host_id(self) -> str:
        return str(self.agent.config.host_id)

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        return self.api.call(method, path, body)

    def running_vtms(self) -> set[str]:
        """The UUIDs of the VMs whose vTMs run on this host now."""
        return {v["vm_uuid"] for v in self.call("GET", "/v1/vtms")["vtms"] if v["running"]}

    def answer_server(self, server: DemoServer) -> None:
        """Start the host's task loop (it long-polls the server: no inbound port) and prepare the
        guest attesters of its VMs (enrolled and started by `sync_guests`)."""
        from vroot.agent import GuestSimulator, start_host_loop

        self.loop = start_host_loop(self.directory, wait=LONG_POLL)
        self.guests = GuestSimulator(self.directory, server_url=server.url, ca_certificate=server.ca,
                                     wait=LONG_POLL, interval=3600)  # fmt: skip

    def sync_guests(self) -> list[str]:
        return self.guests.sync()

    def close(self) -> None:
        try:
            if self.guests is not None:
                self.guests.stop(timeout=LONG_POLL + 15)
            if self.loop is not None:
                self.loop.stop(timeout=LONG_POLL + 15)
        finally:
            if self.thread.is_alive():
                self.call("POST", "/v1/shutdown", {"stop_vtms": True, "stop_tm": True})
                self.thread.join(30)


def deep_quote(host: DemoHost):  # noqa: ANN202
    """A local verifier's view: a fresh nonce, the host's deep quote, every check of the evidence."""
    from vroot.attestation import UnverifiedHostEvidence, verify_host_evidence
    from vroot.measure import HOST_CHAIN, verify_chain

    nonce = os.urandom(32)
    evidence = UnverifiedHostEvidence.from_json(
        host.call("POST", "/v1/deep-quote", {"qualifying_data": nonce.hex()})
    )
    verified = verify_host_evidence(evidence, qualifying_data=nonce)
    chain = verify_chain(HOST_CHAIN, verified.boot_log, verified.ima_log)
    return verified, chain


def vek_tree(host: DemoHost, vm_uuid: str, manufacturer_ca: Path) -> Tree:
    """Check and show the chain from the manufacturer CA to one VM's vEK (VMM-F4, VMM-S3)."""
    from cryptography import x509

    from vroot.attestation import verify_certify
    from vroot.host import load_host_keys
    from vroot.host._provision import manager_qualifying_data
    from vroot.pki import load_ca, verify_ek_certificate, verify_vek_certificate
    from vroot.tpm2 import parse_public

    now = datetime.now(UTC)
    keys = load_host_keys(host.agent.paths)
    ca = load_ca(manufacturer_ca)
    ek = verify_ek_certificate(keys.ek_certificate, trust_anchors=[ca.certificate],
                               ek_public=parse_public(keys.ek_public), now=now)  # fmt: skip
    manager = parse_public(keys.manager_public)
    verify_certify(keys.manager_certify_attest, keys.manager_certify_signature, parse_public(keys.ak_public),
                   qualifying_data=manager_qualifying_data(host.agent.config.host_id),
                   certified_name=manager.name())  # fmt: skip
    der = base64.b64decode(host.call("POST", f"/v1/vtms/{vm_uuid}/certificate")["der"])
    vek = verify_vek_certificate(x509.load_der_x509_certificate(der), manager_public=manager, now=now,
                                 host_id=host.agent.config.host_id, vm_uuid=uuid.UUID(vm_uuid))  # fmt: skip
    tree = Tree(f"[bold]{ca.certificate.subject.rfc4514_string()}[/bold]  (test TM manufacturer CA)")
    ek_node = tree.add(f"host EK certificate ✓  (TPM model: {ek.tpm.model})")
    ak_node = ek_node.add("host AK (restricted signing key in the host TM)")
    mgr_node = ak_node.add(
        f"vTM-manager key {manager.name().hex()[:20]}…  TPM2_Certify by the AK ✓ (fixedTPM, PCR policy)"
    )
    mgr_node.add(
        f"vEK certificate of VM {vek.vm_uuid} ✓  signed inside the host TM; marked virtual; host {vek.host_id}"
    )
    return tree


def learnt_baseline(logs: Path, *, name: str) -> tuple[bytes, Any]:
    """A baseline learnt from the boot and IMA logs in `logs` (`vroot baseline learn`), as JSON."""
    from vroot.baseline import dump_manifest, learn_baseline
    from vroot.eventlog import parse_ima_log, parse_tcg_log

    baseline = learn_baseline(tcg_log=parse_tcg_log((logs / "boot.tcg").read_bytes()),
                              ima_log=parse_ima_log((logs / "ima.bin").read_bytes()), name=name, version="1")  # fmt: skip
    return dump_manifest(baseline, format="json"), baseline


def flip_first_byte(path: Path) -> bytes:
    """Flip the first byte of `path`; its original bytes."""
    original = path.read_bytes()
    path.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])
    return original
