"""Helpers for the migration tests (importable as `migration_helpers`): a simulated host opened in this
process, and a controller stand-in that drives the engines' steps through their JSON interface."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from vroot.host.agent import HostAgent
from vroot.migration.protocol import MigrationTicket
from vroot.tm.swtpm import free_tcp_port


@dataclass
class Host:
    directory: Path
    agent: HostAgent

    @classmethod
    def open(cls, directory: Path) -> Host:
        return cls(directory, HostAgent.start(directory))

    @property
    def engine(self):  # noqa: ANN201
        return self.agent.migrations

    @property
    def manager(self):  # noqa: ANN201
        return self.agent.manager

    @property
    def host_id(self) -> str:
        return self.agent.config.host_id

    @property
    def ak_public(self) -> bytes:
        return self.manager.keys.ak_public

    def crash(self) -> None:
        """Drop the agent and engine objects as a killed process would: nothing stopped, nothing
        saved; the host TM and vTM swtpms (detached) keep running. Then start a new agent (restore, recover)."""
        self.agent.close()
        self.agent = HostAgent.start(self.directory)

    def close(self) -> None:
        self.agent.stop(stop_vtms=True, stop_tm=True)
        self.agent.close()

    def create_vtm(self, *, tcp: bool = True) -> str:
        vm = str(uuid.uuid4())
        self.manager.create(vm, tcp_port=free_tcp_port() if tcp else None)
        return vm


def ticket(src: Host, dst: Host, vm: str, *, ttl: int = 120, now: float | None = None) -> MigrationTicket:
    """What the controller decides: a fresh migration id and nonce, the recorded vEK, an expiry."""
    return MigrationTicket(
        migration_id=str(uuid.uuid4()),
        vm_uuid=vm,
        vek_name=bytes.fromhex(src.manager.record(vm).vek_name),
        nonce=os.urandom(32),
        expires_at=int((time.time() if now is None else now) + ttl),
        source_host=src.host_id,
        destination_host=dst.host_id,
    )


def step(host: Host, name: str, body: dict) -> dict:
    """One step through the engine's JSON interface, with the JSON round trip a task would make."""
    return json.loads(json.dumps(host.engine.handle(name, json.loads(json.dumps(body)))))


def prepare(src: Host, dst: Host, t: MigrationTicket) -> dict:
    return step(dst, "prepare-in", {"ticket": t.to_json()})


def export(src: Host, dst: Host, t: MigrationTicket, target: dict | None = None) -> dict:
    target = target or prepare(src, dst, t)
    return step(src, "export-out", {
        "ticket": t.to_json(),
        "target_public": target["target_public"],
        "certify_attest": target["certify_attest"],
        "certify_signature": target["certify_signature"],
        "destination_ak_public": base64.b64encode(dst.ak_public).decode(),
    })  # fmt: skip


def import_(dst: Host, t: MigrationTicket, exported: dict, *, tcp: bool = True) -> dict:
    body = {"migration_id": t.migration_id, "blob": exported["blob"]}
    if tcp:
        body["tcp_port"] = free_tcp_port()
    return step(dst, "import-in", body)


def migrate(src: Host, dst: Host, vm: str, *, tcp: bool = True) -> dict:
    """A whole migration as the controller would drive it; returns each step's result and wall times."""
    t = ticket(src, dst, vm)
    out = {"ticket": t}
    t0 = time.perf_counter()
    out["prepare"] = prepare(src, dst, t)
    out["export"] = export(src, dst, t, out["prepare"])
    t_lock = (
        time.perf_counter()
        - (out["export"]["timings"]["export_ms"] - out["export"]["timings"]["verify_target_ms"]) / 1000
    )
    out["import"] = import_(dst, t, out["export"], tcp=tcp)
    # the controller commits here
    out["finalize_in"] = step(dst, "finalize-in", {"migration_id": t.migration_id})
    unlocked = time.perf_counter()
    out["finalize_out"] = step(src, "finalize-out", {"migration_id": t.migration_id})
    out["wall_ms"] = (time.perf_counter() - t0) * 1000
    out["lock_ms"] = (unlocked - t_lock) * 1000
    return out


NV_INDEX = 0x01500016
NV_MARKER = b"VROOT-MIGRATION-NV-PLAINTEXT-42!"  # 32 bytes a blob must never show
PERSISTENT_HANDLE = 0x81000010


def tools(host: Host, vm: str, *args: str, stdin: bytes | None = None) -> bytes:
    """Run one tpm2-tools command against the vTM of `vm` on `host` (its TCP endpoint), as guest
    software would; returns stdout, fails the test with stderr on a non-zero exit."""
    import shutil
    import subprocess

    record = host.manager.record(vm)
    env = {
        **os.environ,
        "TPM2TOOLS_TCTI": f"swtpm:host=127.0.0.1,port={record.tcp_port}",
        "TSS2_LOG": "all+NONE",
    }
    done = subprocess.run(
        [shutil.which(args[0]), *args[1:]], env=env, input=stdin, capture_output=True, timeout=30
    )
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr.decode(errors='replace')}"
    return done.stdout


def guest_setup(host: Host, vm: str, tmp: Path) -> None:
    """Give the vTM what a guest leaves in it: an NV index with known plaintext and a persistent key
    (with tpm2-tools), and an extended vPCR 16."""
    marker = tmp / "marker.bin"
    marker.write_bytes(NV_MARKER)
    tools(host, vm, "tpm2_nvdefine", hex(NV_INDEX), "-C", "o", "-s", str(len(NV_MARKER)),
          "-a", "ownerread|ownerwrite|authread|authwrite")  # fmt: skip
    tools(host, vm, "tpm2_nvwrite", hex(NV_INDEX), "-C", "o", "-i", str(marker))
    ctx = tmp / "primary.ctx"
    tools(host, vm, "tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", str(ctx))
    tools(host, vm, "tpm2_evictcontrol", "-C", "o", "-c", str(ctx), hex(PERSISTENT_HANDLE))
    tools(host, vm, "tpm2_flushcontext", "-t")  # no resource manager: the transient copy stays loaded
    tools(host, vm, "tpm2_pcrextend", "16:sha256=" + "ab" * 32)


def guest_view(host: Host, vm: str) -> dict:
    """What guest software sees of its vTM through tpm2-tools: vPCR 16, the NV index, persistent handles."""
    return {
        "pcr16": tools(host, vm, "tpm2_pcrread", "sha256:16").decode().split(":")[-1].strip(),
        "nv": tools(host, vm, "tpm2_nvread", hex(NV_INDEX), "-C", "o"),
        "persistent": tools(host, vm, "tpm2_getcap", "handles-persistent").decode(),
    }
