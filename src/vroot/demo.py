"""The guided demo: what `make demo` and `vroot demo` show. Each part of vroot extends it.

The story so far (issues 2 and 3): a simulated host whose TM is a swtpm is provisioned (EK
certificate, AK, vTM-manager key) and its agent boots it (measured boot); a verifier checks the
host's deep quote and its logs; three VMs get vTMs rooted in the host TM, their vEK certificate
chain is shown and checked, each VM boots (measured into its vTM) and seals a secret; then the
host's boot loader is tampered with: the verifier names the stage that changed and the vTMs
refuse to start; with the good boot loader back they start and unseal their secrets again.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.tree import Tree

from vroot.errors import VrootError
from vroot.tpm2 import HashAlg

BANK = HashAlg.SHA256
VMS = ("web", "db", "batch")


@dataclass
class _Narrator:
    console: Console
    fast: bool
    step_no: int = 0
    results: list[tuple[str, str, str]] = field(default_factory=list)

    def step(self, title: str, clause: str, text: str) -> None:
        self.step_no += 1
        self.console.print()
        self.console.rule(f"[bold]{self.step_no}. {title}[/bold]  [dim]{clause}[/dim]", align="left")
        self.console.print(text)
        if not self.fast:
            time.sleep(0.6)

    def ok(self, text: str) -> None:
        self.console.print(f"  [green]✓[/green] {text}")

    def bad(self, text: str) -> None:
        self.console.print(f"  [red]✗[/red] {text}")

    def record(self, what: str, clause: str, outcome: str) -> None:
        self.results.append((what, clause, outcome))


def run_demo(*, fast: bool = False, workdir: Path | None = None, console: Console | None = None) -> int:
    """Run the demo; return 0 when every step behaved as the story says (1 otherwise)."""
    console = console or Console()
    say = _Narrator(console, fast=fast)
    console.print(
        Panel.fit(
            "[bold]vroot[/bold] — virtualized roots of trust (ISO/IEC 27070)\n"
            "A host proves its boot; its VMs get virtual TPMs rooted in the host's TPM.",
            border_style="cyan",
        )
    )
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="vroot-demo-", dir="/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o711)  # each vTM's swtpm runs as its own uid (when root) and must pass through
    try:
        return _story(say, base)
    except VrootError as exc:
        say.bad(f"the demo stopped: {exc.diagnostics()}")
        return 1
    finally:
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)


class _Host:
    """A simulated host and its agent, run in a thread of this process for the demo."""

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

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        return self.api.call(method, path, body)

    def close(self) -> None:
        if self.thread.is_alive():
            self.call("POST", "/v1/shutdown", {"stop_vtms": True, "stop_tm": True})
            self.thread.join(30)


def _deep_quote(host: _Host):  # noqa: ANN202
    """A verifier's view: a fresh nonce, the host's deep quote, every check of the evidence."""
    from vroot.attestation import UnverifiedHostEvidence, verify_host_evidence
    from vroot.measure import HOST_CHAIN, verify_chain

    nonce = os.urandom(32)
    evidence = UnverifiedHostEvidence.from_json(
        host.call("POST", "/v1/deep-quote", {"qualifying_data": nonce.hex()})
    )
    verified = verify_host_evidence(evidence, qualifying_data=nonce)
    chain = verify_chain(HOST_CHAIN, verified.boot_log, verified.ima_log)
    return verified, chain


def _chain_table(chain) -> Table:  # noqa: ANN001
    table = Table(title="host boot chain, as the verifier replayed it")
    for column in ("stage", "measured by", "PCR", f"{BANK.bank} digest"):
        table.add_column(column)
    for stage in chain.stages:
        if stage.name.startswith("separator-") and stage.pcr != 0:
            continue
        name = "separators (PCR 0-7)" if stage.name.startswith("separator-") else stage.name
        digest = next(iter(chain.digests[stage.name].values())) if stage.kind.value == "ima" else (
            chain.digests[stage.name][BANK])  # fmt: skip
        table.add_row(name, stage.measured_by, str(stage.pcr), digest.hex()[:16] + "…")
    return table


def _vek_tree(host: _Host, vm_uuid: str, manufacturer_ca: Path) -> Tree:
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


def _story(say: _Narrator, base: Path) -> int:
    from vroot.host import HostConfig, init_host
    from vroot.measure import HOST_CHAIN, VM_CHAIN, ImageDir, diff_stages, plan_boot, write_images

    console = say.console
    host_dir = base / "host-a"
    ca_dir = base / "manufacturer-ca"

    say.step("Provision a host's TM", "clause 5.2, HW-F1..F3, RA-1",
             "A simulated host: its TM is a swtpm process (a real TPM 2.0). vroot creates the EK (certified by a "
             "test manufacturer CA), an AK, and the vTM-manager key, usable only in the host's trusted state.")  # fmt: skip
    keys = init_host(host_dir, config=HostConfig(host_id="host-a", mode="simulate"), now=datetime.now(UTC),
                     serial=int.from_bytes(os.urandom(8), "big") >> 1, manufacturer_ca_dir=ca_dir)  # fmt: skip
    say.ok(f"trusted state: {BANK.bank} PCRs {', '.join(map(str, sorted(keys.trusted.pcrs)))}")
    say.record("host provisioned", "HW-F1..F3", "EK certificate, AK, vTM-manager key")

    host = _Host(host_dir)
    try:
        say.step("The host boots, measuring each stage before it runs", "clause 6.2, TT-1, TT-2, IM-1",
                 "CRTM → firmware → boot loader → kernel → VMM → vTM manager: digests into PCRs, descriptions "
                 "into a TCG log and an IMA log.")  # fmt: skip
        verified, chain = _deep_quote(host)
        console.print(_chain_table(chain))

        say.step("A verifier checks the host", "clause 6.4, RA-2, RA-4, VMM-F5",
                 "Deep quote over a fresh nonce: the quote's signature and nonce, the boot, IMA and vTM-launch logs "
                 "replayed to the quoted PCRs, a fresh certification of the vTM-manager key.")  # fmt: skip
        say.ok(f"quote by the host AK verified; {len(verified.pcrs[BANK])} PCRs match the replayed logs")
        say.ok("every link of the chain was measured before it ran")
        say.record("host evidence verified", "RA-4", "quote, logs, manager key")

        say.step("Three VMs get their vTMs", "clause 5.3, VMM-F1..F4, VMM-F6, DP-3",
                 "Each vTM is a swtpm whose state is encrypted with its own key, sealed in the host TM to the "
                 "host's trusted state; its vEK is certified inside the host TM; its launch is measured into PCR 14.")  # fmt: skip
        vms = {name: str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.demo.vroot")) for name in VMS}
        table = Table(title="vTMs on host-a")
        for column in ("VM", "UUID", "vEK name", "QEMU -chardev socket"):
            table.add_column(column, overflow="fold")
        for name, vm in vms.items():
            status = host.call("POST", "/v1/vtms", {"vm_uuid": vm})
            table.add_row(name, vm, status["vek_name"][:16] + "…", str(Path(status["endpoint"]).relative_to(base)))
        console.print(table)
        say.record("vTMs created", "VMM-F1, VMM-F2", f"{len(vms)} vTMs, one per VM")

        say.step("The vEK certificate chain of VM 'web'", "VMM-F4, VMM-S3",
                 "From the manufacturer CA to the vEK: every link checked.")  # fmt: skip
        console.print(_vek_tree(host, vms["web"], ca_dir))
        say.record("vEK chain verified", "VMM-F4, VMM-S3", "CA → EK → AK → vTM-manager key → vEK")

        say.step("Each VM boots and seals a secret to its vPCRs", "clause 6.2-6.5, TT-3, VM-F3, DP-2",
                 "The VM chain (virtual firmware → boot loader → kernel → applications) is measured into the "
                 "vTM; each VM seals a secret to vPCRs 0-9.")  # fmt: skip
        vm_images = write_images(base / "vm-images", VM_CHAIN)
        sealed = {}
        for name, vm in vms.items():
            host.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(vm_images.path)})
            secret = f"disk key of {name}".encode()
            body = {"data": base64.b64encode(secret).decode(), "pcrs": list(range(10))}
            sealed[name] = (host.call("POST", f"/v1/vtms/{vm}/seal", body)["blob"], secret)
            say.ok(f"VM {name}: booted, secret sealed to its vPCRs 0-9")
        say.record("guest secrets sealed", "DP-2", f"{len(sealed)} secrets")

        say.step("Someone changes the host's boot loader", "clause 6.3, VMM-S2",
                 "One byte of bootloader.efi is flipped and the host reboots.")  # fmt: skip
        images = ImageDir(host_dir / "images")
        golden = plan_boot(HOST_CHAIN, images.read, banks=(BANK,))
        loader = images.path / "bootloader.efi"
        original = loader.read_bytes()
        loader.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])
        reboot = host.call("POST", "/v1/reboot", {})
        refused = [m for m in reboot["messages"] if "not started" in m]
        _, chain2 = _deep_quote(host)
        changed = [d.stage for d in diff_stages(golden, chain2, bank=BANK)]
        say.ok("the host's quote is still genuine and its logs replay: the TM reports what booted")
        for name in changed:
            say.bad(f"stage {name} differs from the known-good boot")
        for name, vm in vms.items():
            reason = next((m for m in refused if vm in m), "")
            match = re.search(r"host PCRs [0-9, ]+ \(\w+\) differ", reason)
            say.bad(f"VM {name}: vTM refused to start ({match.group(0) if match else reason} from the trusted state)")
        story = (
            changed == ["boot-loader"] and len(refused) == len(VMS) and all("PCRs 4" in m for m in refused)
        )
        say.record(
            "tampered host detected",
            "RA-5, VMM-S2",
            f"stage {', '.join(changed)}; {len(refused)} vTMs refused",
        )

        say.step("The good boot loader is restored", "DP-3",
                 "The host reboots into its trusted state: the vTMs start, and each VM unseals its secret.")  # fmt: skip
        loader.write_bytes(original)
        host.call("POST", "/v1/reboot", {})
        for name, vm in vms.items():
            host.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(vm_images.path)})
            blob, secret = sealed[name]
            got = base64.b64decode(host.call("POST", f"/v1/vtms/{vm}/unseal", {"blob": blob})["data"])
            story &= got == secret
            say.ok(f"VM {name}: vTM running, secret unsealed")
        say.record("secrets back", "DP-3", "after the host returned to its trusted state")
    finally:
        host.close()

    summary = Table(title="summary")
    for column in ("what", "requirement", "result"):
        summary.add_column(column)
    for row in say.results:
        summary.add_row(*row)
    console.print()
    console.print(summary)
    if story:
        console.print("[bold green]Demo complete.[/bold green]")
        return 0
    console.print("[bold red]Demo did not behave as expected.[/bold red]")
    return 1
