"""The guided demo: what `make demo` and `vroot demo` show. Each part of vroot extends it.

The story (issues 2 to 5): three simulated hosts whose TMs are swtpm processes are provisioned (EK
certificate, AK, vTM-manager key); an attestation server (`vroot server run`, a real process on
loopback) is started; the hosts enroll with it by credential activation and boot (measured boot);
the operator learns one baseline from that known-good boot (the hosts boot the same files) and puts
them in a policy group. Three VMs on host-a and one on host-c get vTMs rooted in their host's TM
(one vEK certificate chain is shown and checked), boot (measured into their vTMs), seal secrets, and
their guest attesters enroll. The server attests hosts and VMs: joint verdicts, one deep quote of a
host for all its VMs. The second half (`vroot._demo_incident`): host-c's boot loader is tampered
with, so host-c and its VM turn untrusted; the operator drains host-a, and the migration controller
refuses host-c and moves every vTM of host-a to host-b; each moved VM unseals its secret there (DP-4)
and its joint verdict names host-b. A firmware change on host-c (inside the state the vTM keys are
sealed to) stops its vTM from starting at all; with the good files back host-c is trusted again.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from vroot._demo_host import DemoHost, deep_quote, learnt_baseline, vek_tree
from vroot._demo_incident import IncidentSteps
from vroot._demo_server import DemoServer, attest_all, publish_library
from vroot._demo_views import chain_table, verdict_table
from vroot.errors import VrootError
from vroot.tpm2 import HashAlg

T = TypeVar("T")

__all__ = ["run_demo"]

BANK = HashAlg.SHA256
HOSTS = ("host-a", "host-b", "host-c")
VMS = {"web": "host-a", "db": "host-a", "batch": "host-a", "cache": "host-c"}  # VM -> its first host
# The vTM state keys are sealed to the firmware, its configuration and the Secure Boot policy
# (PCRs 0, 1, 7): a boot loader change (PCR 4) is for the RA server to catch, a firmware change
# stops the vTMs from starting.
TRUSTED_PCRS = (0, 1, 7)
# What must hold for the story to be told (each step's `expect`).
EXPECTED = (
    "hosts enrolled",
    "guests enrolled",
    "trusted before tampering",
    "untrusted after tampering",
    "untrusted host refused as a destination",
    "host-a evacuated to host-b only",
    "secrets unsealed after the move",
    "joint verdicts name the new host",
    "vTMs refused on changed firmware",
    "trusted after restore",
)


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
            time.sleep(1.2)

    def ok(self, text: str) -> None:
        self.console.print(f"  [green]✓[/green] {text}")

    def bad(self, text: str) -> None:
        self.console.print(f"  [red]✗[/red] {text}")

    def record(self, what: str, clause: str, outcome: str) -> None:
        self.results.append((what, clause, outcome))

    def progress(self, items: Iterable[T], what: str, *, total: int | None = None) -> Iterator[T]:
        """`items`, with a transient progress bar while they take their time (a second or more
        each: provisioning TMs, booting hosts). No bar with --fast or when not on a terminal."""
        items = list(items)
        if self.fast or not self.console.is_terminal:
            yield from items
            return
        with Progress(SpinnerColumn(), TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.console, transient=True) as bar:  # fmt: skip
            task = bar.add_task(what, total=total or len(items))
            for item in items:
                yield item
                bar.advance(task)


def run_demo(*, fast: bool = False, workdir: Path | None = None, console: Console | None = None,
             keep: bool = False) -> int:
    """Run the demo; return 0 when every step behaved as the story says (1 otherwise). Every process
    it starts (the server, each host's swtpm and its vTMs) is stopped by PID before it returns."""
    console = console or Console()
    say = _Narrator(console, fast=fast)
    console.print(
        Panel.fit(
            "[bold]vroot[/bold] — virtualized roots of trust (ISO/IEC 27070)\n"
            "Hosts prove their boot to an attestation server; VMs get virtual TPMs rooted in their host's\n"
            "TPM, and each VM's verdict is joined with its host's. vTMs move only to hosts that just proved\n"
            "themselves trustworthy, and keep their sealed secrets.",
            border_style="cyan",
        )
    )
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="vroot-demo-", dir="/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o711)  # each vTM's swtpm runs as its own uid (when root) and must pass through
    started = time.monotonic()
    try:
        return _Story(say, base, keep=keep).run()
    except VrootError as exc:
        say.bad(f"the demo stopped: {exc.diagnostics()}")
        return 1
    finally:
        console.print(f"[dim]({time.monotonic() - started:.1f} s)[/dim]")
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)


class _Story(IncidentSteps):
    """The steps, in order; `run()` returns 0 when each behaved as told."""

    def __init__(self, say: _Narrator, base: Path, *, keep: bool = False) -> None:
        self.say = say
        self.keep = keep
        self.console = say.console
        self.base = base
        self.ca_dir = base / "manufacturer-ca"
        self.vms = {name: str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.demo.vroot")) for name in VMS}
        self.on = dict(VMS)  # VM name -> the host its vTM runs on now
        self.ids = {f"host:{h}": h for h in HOSTS} | {f"vm:{vm}": f"VM {name}" for name, vm in self.vms.items()}
        self.checks: list[tuple[str, bool]] = []  # (what, held): the story holds when all did
        self.server: DemoServer | None = None
        self.hosts: dict[str, DemoHost] = {}
        self.sealed: dict[str, tuple[str, bytes]] = {}

    def expect(self, what: str, held: bool) -> bool:
        self.checks.append((what, held))
        return held

    def host_dir(self, host: str) -> Path:
        return self.base / host

    def vms_on(self, host: str) -> dict[str, str]:
        """The VMs (name -> UUID) whose vTMs run on `host` now."""
        return {name: vm for name, vm in self.vms.items() if self.on[name] == host}

    def run(self) -> int:
        try:
            self._provision()
            self._start_server()
            self._enroll()
            for host in HOSTS:
                self.hosts[host] = DemoHost(self.host_dir(host))
            self._boot()
            self._baseline()
            self._vtms()
            self._guests_enroll()
            self._attest_trusted()
            self.run_incident()
            if self.keep:
                self._keep_running()
        finally:
            self._close()
        return self._summary()

    def _keep_running(self) -> None:
        """Leave the server and the hosts up for the operator to explore, until Enter or Ctrl-C."""
        assert self.server is not None
        self.console.print()
        self.console.print(Panel.fit(
            f"Dashboard: [bold]{self.server.url}/ui/[/bold]  (operator token: {self.server.token})\n"
            f"The server's CA (for curl --cacert, or to trust in a browser): {self.server.ca}\n"
            f"API: vroot attest host-a --server {self.server.url} --ca {self.server.ca} --token …\n"
            "Press Enter (or Ctrl-C) to stop the server and the hosts.",
            title="the demo's server and hosts are still running", border_style="cyan"))  # fmt: skip
        try:
            input()
        except (EOFError, KeyboardInterrupt):
            pass

    def _close(self) -> None:
        """Stop every host (its guests, task loop, vTMs and TM; the hosts side by side, as each waits
        for its long polls to end), then the server: each by PID, each even when another failed."""
        errors: list[BaseException] = []
        try:
            if self.hosts:
                with ThreadPoolExecutor(len(self.hosts), thread_name_prefix="vroot-demo-close") as pool:
                    stopping = [pool.submit(host.close) for host in self.hosts.values()]
                errors += [exc for exc in (f.exception() for f in stopping) if exc is not None]
        finally:
            if self.server is not None:
                code = self.server.stop()
                self.console.print(f"[dim]server process {self.server.pid} stopped (exit {code})[/dim]")
        if errors:
            raise errors[0]

    # -- the steps --------------------------------------------------------------------------------

    def _provision(self) -> None:
        from vroot.host import HostConfig, init_host

        self.say.step("Provision three hosts' TMs", "clause 5.2, HW-F1..F3",
                      "Three simulated hosts, host-a, host-b and host-c: each TM is a swtpm process (a real TPM "
                      "2.0). vroot creates each host's EK (certified by a test manufacturer CA), AK, and vTM-manager "
                      "key, usable only in the host's trusted state.")  # fmt: skip
        for host in self.say.progress(HOSTS, "provisioning TMs"):
            config = HostConfig(host_id=host, mode="simulate", trusted_pcrs=TRUSTED_PCRS)
            keys = init_host(self.host_dir(host), config=config, now=datetime.now(UTC),
                             serial=int.from_bytes(os.urandom(8), "big") >> 1, manufacturer_ca_dir=self.ca_dir)  # fmt: skip
            pcrs = ", ".join(map(str, sorted(keys.trusted.pcrs)))
            self.say.ok(f"{host}: EK certificate, AK, vTM-manager key; trusted state: {BANK.bank} PCRs {pcrs} "
                        "(firmware, its configuration, Secure Boot policy)")  # fmt: skip
        self.say.record("hosts provisioned", "HW-F1..F3", f"{len(HOSTS)} TMs: EK certificate, AK, vTM-manager key")

    def _start_server(self) -> None:
        self.say.step("Start the attestation server", "clause 5 (cloud OS), 5.5.2, 6.4",
                      "`vroot server init` makes the PCA, the operations CA, the result-signing key, the migration "
                      "controller's task-signing key, a TLS certificate and the database; `vroot server run` serves "
                      "HTTPS on loopback. It trusts the test TM manufacturer CA.")  # fmt: skip
        self.server = DemoServer.start(self.base / "server", manufacturer_ca=self.ca_dir)
        self.op = self.server.operator()
        self.say.ok(
            f"vroot server run: process {self.server.pid} on {self.server.url} (agents trust tls/ca.pem)"
        )
        self.say.ok("operator token printed once by init (only its SHA-256 is stored; not shown here)")
        self.say.record("server running", "RA server, PCA, MC (6.4)", f"HTTPS, SQLite, process {self.server.pid}")

    def _enroll(self) -> None:
        from cryptography import x509

        from vroot.agent import enroll_host
        from vroot.pki import is_virtual_tm_certificate

        assert self.server is not None
        self.say.step("The hosts enroll by credential activation", "clause 6.4, RA-1, HW-F2",
                      "Each host sends its EK certificate, EK and AK; the PCA checks the EK certificate and answers "
                      "with a credential (TPM2_MakeCredential to the EK, for the AK's name) that only this TM can "
                      "activate. The host activates it and gets its AK certificate and a client certificate.")  # fmt: skip
        enrolled = 0
        for host in HOSTS:
            creds = enroll_host(self.host_dir(host), self.server.url, self.server.ca)
            ak = x509.load_pem_x509_certificate((creds.directory / "ak-cert.pem").read_bytes())
            record = self.op.get(f"/v1/agents/{creds.agent_id}")
            self.say.ok(f"{creds.agent_id}: {record['state']}; AK certificate '{ak.subject.rfc4514_string()}' "
                        f"from '{ak.issuer.rfc4514_string()}'")  # fmt: skip
            enrolled += record["state"] == "active" and not is_virtual_tm_certificate(ak)
        self.say.ok("mutual TLS from now on: each agent's client certificate, the server's operations CA")
        self.expect("hosts enrolled", enrolled == len(HOSTS))
        self.say.record("hosts enrolled", "RA-1", f"{enrolled} hosts: credential activation; AK certificates")

    def _boot(self) -> None:
        assert self.server is not None
        self.say.step("The hosts boot, measuring each stage before it runs", "clause 6.2, TT-1, TT-2, IM-1",
                      "CRTM → firmware → boot loader → kernel → VMM → vTM manager: digests into PCRs, descriptions "
                      "into a TCG log and an IMA log. Each host's task loop starts: it long-polls the server and "
                      "opens no port.")  # fmt: skip
        for name, host in self.say.progress(self.hosts.items(), "booting hosts", total=len(self.hosts)):
            verified, chain = deep_quote(host)
            if name == HOSTS[0]:
                self.console.print(chain_table(chain, BANK))
            self.say.ok(f"{name}: a local check of its deep quote: {len(verified.pcrs[BANK])} PCRs match the "
                        "replayed logs")  # fmt: skip
            host.answer_server(self.server)

    def _baseline(self) -> None:
        self.say.step("The operator learns a baseline, sets a policy group", "clause 6.4, RA-5",
                      "`vroot baseline learn` reads host-a's known-good boot (the three hosts boot the same files, "
                      "so one baseline serves them all); the baseline and a policy (event PCRs 0-9, IMA allowlist "
                      "required) go to the server; the hosts join group 'hosts'.")  # fmt: skip
        manifest, baseline = learnt_baseline(self.host_dir(HOSTS[0]) / "logs", name="hosts")
        publish_library(self.op, group="hosts", baseline="hosts", manifest=manifest)
        groups = [self.op.request("PATCH", f"/v1/agents/host:{h}", json={"group": "hosts"})["group"] for h in HOSTS]
        pcrs = sorted({v.pcr for v in baseline.reference_values})
        self.say.ok(f"baseline hosts@1: {len(baseline.reference_values)} reference values on PCRs "
                    f"{', '.join(map(str, pcrs))}; IMA allowlist of the measured VMM files")  # fmt: skip
        self.say.ok(f"{', '.join(f'host:{h}' for h in HOSTS)} are in group '{groups[0]}'")
        self.say.record("baseline learnt, policy set", "RA-5", "from the known-good boot")

    def _vtms(self) -> None:
        from vroot.measure import VM_CHAIN, write_images

        self.say.step("Four VMs get their vTMs: three on host-a, one on host-c", "clause 5.3, VMM-F1..F4, VMM-F6, DP-3",
                      "Each vTM is a swtpm whose state is encrypted with its own key, sealed in its host's TM to the "
                      "host's trusted state; its vEK is certified inside the host TM; its launch is measured into "
                      "PCR 14. Then the vEK certificate chain of VM 'web' is checked link by link.")  # fmt: skip
        table = Table(title="vTMs")
        for column in ("VM", "host", "UUID", "vEK name", "QEMU -chardev socket"):
            table.add_column(column, overflow="fold")
        for name, vm in self.vms.items():
            status = self.hosts[self.on[name]].call("POST", "/v1/vtms", {"vm_uuid": vm})
            endpoint = str(Path(status["endpoint"]).relative_to(self.base))
            table.add_row(name, self.on[name], vm, status["vek_name"][:16] + "…", endpoint)
        self.console.print(table)
        self.say.record("vTMs created", "VMM-F1, VMM-F2", f"{len(self.vms)} vTMs, one per VM")
        self.console.print(vek_tree(self.hosts["host-a"], self.vms["web"], self.ca_dir))
        self.say.record("vEK chain verified", "VMM-F4, VMM-S3", "CA → EK → AK → vTM-manager key → vEK")

        self.say.step("Each VM boots and seals a secret to its vPCRs", "clause 6.2-6.5, TT-3, VM-F3, DP-2",
                      "The VM chain (virtual firmware → boot loader → kernel → applications) is measured into the "
                      "vTM; each VM seals a secret (its disk key) to vPCRs 0-9.")  # fmt: skip
        self.vm_images = write_images(self.base / "vm-images", VM_CHAIN).path
        for name, vm in self.vms.items():
            host = self.hosts[self.on[name]]
            host.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(self.vm_images)})
            secret = f"disk key of {name}".encode()
            body = {"data": base64.b64encode(secret).decode(), "pcrs": list(range(10))}
            self.sealed[name] = (host.call("POST", f"/v1/vtms/{vm}/seal", body)["blob"], secret)
            self.say.ok(f"VM {name} on {self.on[name]}: booted, secret sealed to its vPCRs 0-9")
        self.say.record("guest secrets sealed", "DP-2", f"{len(self.sealed)} secrets")

    def _guests_enroll(self) -> None:
        from vroot.host import HostPaths
        from vroot.vtm import VtmPaths

        self.say.step("The VMs' guest attesters enroll", "clause 6.4, RA-1, VMM-F4, VMM-S3",
                      "Each guest sends its vEK certificate; the PCA checks it chains to the vTM-manager key that "
                      "its host's AK certified at enrollment, and certifies a vAK in the vTM by credential "
                      "activation. (Each host agent plays its VMs' guest attesters: `vroot host run "
                      "--simulate-guests`.) A VM baseline is learnt from VM 'web's boot for group 'vms'.")  # fmt: skip
        logs = VtmPaths(HostPaths(self.host_dir("host-a")).vtm(self.vms["web"])).guest
        manifest, _ = learnt_baseline(logs, name="vms")
        publish_library(self.op, group="vms", baseline="vms", manifest=manifest)
        messages = [m for host in self.hosts.values() for m in host.sync_guests()]
        enrolled = sum(self._guest_enrolled(name, messages) for name in self.vms)
        self.expect("guests enrolled", enrolled == len(self.vms))
        self.say.record("guests enrolled", "RA-1, VMM-F4, VMM-S3",
                        f"{enrolled} vAKs certified; each vEK chains to its host")  # fmt: skip

    def _guest_enrolled(self, name: str, messages: list[str]) -> bool:
        """Show one VM's guest record; whether it enrolled just now on the host its vTM runs on."""
        from cryptography import x509

        from vroot.pki import is_virtual_tm_certificate

        vm = self.vms[name]
        agent = self.op.get(f"/v1/agents/vm:{vm}")
        vak = x509.load_pem_x509_certificate(agent["ak_certificate"].encode())
        self.say.ok(f"VM {name}: vm:{vm[:8]}… {agent['state']} on {agent['host_id']}, group '{agent['group']}', "
                    "vAK certificate marked virtual")  # fmt: skip
        return (f"vm:{vm}: enrolled" in messages and agent["state"] == "active"
                and agent["host_id"] == f"host:{self.on[name]}" and is_virtual_tm_certificate(vak))  # fmt: skip

    def attest(self, title: str, agents: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Attest `agents` (default: every host and VM) at once; show the joint verdicts; the results."""
        results = attest_all(self.op, agents if agents is not None else list(self.ids))
        self.console.print(verdict_table(results, self.ids, title=title))
        return results

    def _attest_trusted(self) -> None:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        from vroot.attestation.ear import verify_ear

        self.say.step("The server attests the hosts and their VMs", "clause 6.4, RA-2..RA-6, VMM-F5",
                      "A single-use nonce each; each host answers with a quote over its nonce; the VMs quote their "
                      "vTMs, and host-a vouches for its three in ONE deep quote over a Merkle root of their "
                      "challenges. Each VM's verdict is joint: its own appraisal, its host's, and the binding.")  # fmt: skip
        results = self.attest("joint verdicts, as `vroot attest` reports them")
        on_a = [r for a, r in results.items() if a.startswith("vm:") and r.get("host_id") == "host:host-a"]
        deep = {r.get("host_result_id") for r in on_a}
        trusted = all(r["verdict"] == "trusted" for r in results.values())
        if trusted and len(deep) == 1:
            self.say.ok(f"one deep quote of host-a (its result #{deep.pop()}) vouched for all {len(on_a)} of its VMs")
        assert self.server is not None
        key = load_pem_public_key(self.server.operator().get("/v1/result-key"))
        checked = bound = 0
        for agent_id, result in results.items():
            ear = verify_ear(result["ear"], public_key=key, now=datetime.now(UTC))  # type: ignore[arg-type]
            checked += ear.subject == agent_id
            joint = ear.claims.get("submods", {}).get(agent_id, {}).get("vroot.joint")
            bound += bool(joint and joint.get("bound") and joint.get("host") == "trusted")
        self.say.ok(f"{bound} VMs bound to their host's deep quote: each leaf in the quoted Merkle root, each vEK "
                    "from that host's vTM-manager key, each vTM launched there (PCR 14)")  # fmt: skip
        policies = dict.fromkeys(str(r.get("policy_id")) for r in results.values())
        self.say.ok(f"appraised under policies {', '.join(policies)} (group@version/baseline@version)")
        self.say.ok(f"{checked} signed EARs verified offline with the server's result key (/v1/result-key)")
        self.expect(
            "trusted before tampering", trusted and checked == len(results) and bound == len(self.vms)
        )
        self.say.record("hosts and VMs attested", "RA-2..RA-6, VMM-F5",
                        "trusted; each joint verdict names its host; signed EARs")  # fmt: skip

    def _summary(self) -> int:
        console = self.console
        summary = Table(title="summary")
        for column in ("what", "requirement", "result"):
            summary.add_column(column)
        for row in self.say.results:
            summary.add_row(*row)
        console.print()
        console.print(summary)
        failed = [what for what, held in self.checks if not held]
        failed += [what for what in EXPECTED if what not in {w for w, _ in self.checks}]
        if not failed:
            console.print("[bold green]Demo complete.[/bold green]")
            return 0
        console.print(f"[bold red]Demo did not behave as expected: {', '.join(failed)}.[/bold red]")
        return 1
