"""The guided demo: what `make demo` and `vroot demo` show. Each part of vroot extends it.

The story (issues 2, 3 and 4): a simulated host whose TM is a swtpm is provisioned (EK
certificate, AK, vTM-manager key); an attestation server (`vroot server run`, a real process on
loopback) is started; the host enrolls with it by credential activation and boots (measured boot);
the operator learns a baseline from that known-good boot and puts the host in a policy group.
Three VMs get vTMs rooted in the host TM (their vEK certificate chain is shown and checked), boot
(measured into their vTMs), seal secrets, and their guest attesters enroll with the server. The
server attests the host and the VMs: joint verdicts, one deep quote of the host for all three VMs.
Then the host's boot loader is tampered with: the host and every VM on it turn untrusted, with
the finding that says why (PCR 4, the boot loader's event); a change of the firmware (inside the
state the vTM keys are sealed to) stops the vTMs from starting at all; with the good files back
everything is trusted again and the VMs unseal their secrets.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from vroot._demo_host import DemoHost, deep_quote, flip_first_byte, learnt_baseline, vek_tree
from vroot._demo_server import DemoServer, attest_all, publish_library
from vroot._demo_views import chain_table, findings_table, verdict_table
from vroot.errors import VrootError
from vroot.tpm2 import HashAlg

__all__ = ["run_demo"]

BANK = HashAlg.SHA256
VMS = ("web", "db", "batch")
# The vTM state keys are sealed to the firmware, its configuration and the Secure Boot policy
# (PCRs 0, 1, 7): a boot loader change (PCR 4) is for the RA server to catch, a firmware change
# stops the vTMs from starting.
TRUSTED_PCRS = (0, 1, 7)
# What must hold for the story to be told (each step's `expect`).
EXPECTED = (
    "host enrolled",
    "guests enrolled",
    "trusted before tampering",
    "untrusted after tampering",
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
            time.sleep(0.6)

    def ok(self, text: str) -> None:
        self.console.print(f"  [green]✓[/green] {text}")

    def bad(self, text: str) -> None:
        self.console.print(f"  [red]✗[/red] {text}")

    def record(self, what: str, clause: str, outcome: str) -> None:
        self.results.append((what, clause, outcome))


def run_demo(*, fast: bool = False, workdir: Path | None = None, console: Console | None = None) -> int:
    """Run the demo; return 0 when every step behaved as the story says (1 otherwise). Every process
    it starts (the server, the host's swtpm and its vTMs) is stopped by PID before it returns."""
    console = console or Console()
    say = _Narrator(console, fast=fast)
    console.print(
        Panel.fit(
            "[bold]vroot[/bold] — virtualized roots of trust (ISO/IEC 27070)\n"
            "A host proves its boot to an attestation server; its VMs get virtual TPMs rooted in the\n"
            "host's TPM, and each VM's verdict is joined with its host's.",
            border_style="cyan",
        )
    )
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="vroot-demo-", dir="/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o711)  # each vTM's swtpm runs as its own uid (when root) and must pass through
    started = time.monotonic()
    try:
        return _Story(say, base).run()
    except VrootError as exc:
        say.bad(f"the demo stopped: {exc.diagnostics()}")
        return 1
    finally:
        console.print(f"[dim]({time.monotonic() - started:.1f} s)[/dim]")
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)


class _Story:
    """The steps, in order; `run()` returns 0 when each behaved as told."""

    def __init__(self, say: _Narrator, base: Path) -> None:
        self.say = say
        self.console = say.console
        self.base = base
        self.host_dir = base / "host-a"
        self.ca_dir = base / "manufacturer-ca"
        self.vms = {name: str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.demo.vroot")) for name in VMS}
        self.ids = {"host:host-a": "host-a", **{f"vm:{vm}": f"VM {name}" for name, vm in self.vms.items()}}
        self.checks: list[tuple[str, bool]] = []  # (what, held): the story holds when all did
        self.server: DemoServer | None = None
        self.host: DemoHost | None = None

    def expect(self, what: str, held: bool) -> bool:
        self.checks.append((what, held))
        return held

    def run(self) -> int:
        try:
            self._provision()
            self._start_server()
            self._enroll()
            self.host = DemoHost(self.host_dir)
            self._boot()
            self._baseline()
            self._vtms()
            self._guests_enroll()
            self._attest_trusted()
            self._tamper_boot_loader()
            self._tamper_firmware()
            self._restore()
        finally:
            try:
                if self.host is not None:
                    self.host.close()
            finally:
                if self.server is not None:
                    code = self.server.stop()
                    self.console.print(f"[dim]server process {self.server.pid} stopped (exit {code})[/dim]")
        return self._summary()

    # -- the steps --------------------------------------------------------------------------------

    def _provision(self) -> None:
        from vroot.host import HostConfig, init_host

        self.say.step("Provision a host's TM", "clause 5.2, HW-F1..F3",
                      "A simulated host: its TM is a swtpm process (a real TPM 2.0). vroot creates the EK (certified by "
                      "a test manufacturer CA), an AK, and the vTM-manager key, usable only in the host's trusted "
                      "state.")  # fmt: skip
        config = HostConfig(host_id="host-a", mode="simulate", trusted_pcrs=TRUSTED_PCRS)
        keys = init_host(self.host_dir, config=config, now=datetime.now(UTC),
                         serial=int.from_bytes(os.urandom(8), "big") >> 1, manufacturer_ca_dir=self.ca_dir)  # fmt: skip
        pcrs = ", ".join(map(str, sorted(keys.trusted.pcrs)))
        self.say.ok(
            f"trusted state: {BANK.bank} PCRs {pcrs} (firmware, its configuration, Secure Boot policy)"
        )
        self.say.record("host provisioned", "HW-F1..F3", "EK certificate, AK, vTM-manager key")

    def _start_server(self) -> None:
        self.say.step("Start the attestation server", "clause 5 (cloud OS), 6.4",
                      "`vroot server init` makes the PCA, the operations CA, the result-signing key, a TLS "
                      "certificate and the database; `vroot server run` serves HTTPS on loopback. It trusts "
                      "the test TM manufacturer CA.")  # fmt: skip
        self.server = DemoServer.start(self.base / "server", manufacturer_ca=self.ca_dir)
        self.op = self.server.operator()
        self.say.ok(
            f"vroot server run: process {self.server.pid} on {self.server.url} (agents trust tls/ca.pem)"
        )
        self.say.ok("operator token printed once by init (only its SHA-256 is stored; not shown here)")
        self.say.record("server running", "RA server, PCA (6.4)", f"HTTPS, SQLite, process {self.server.pid}")

    def _enroll(self) -> None:
        from cryptography import x509

        from vroot.agent import enroll_host
        from vroot.pki import is_virtual_tm_certificate

        assert self.server is not None
        self.say.step("The host enrolls by credential activation", "clause 6.4, RA-1, HW-F2",
                      "The host sends its EK certificate, EK and AK; the PCA checks the EK certificate and answers "
                      "with a credential (TPM2_MakeCredential to the EK, for the AK's name) that only this TM can "
                      "activate. The host activates it and gets its AK certificate and a client certificate.")  # fmt: skip
        creds = enroll_host(self.host_dir, self.server.url, self.server.ca)
        ak = x509.load_pem_x509_certificate((creds.directory / "ak-cert.pem").read_bytes())
        record = self.op.get(f"/v1/agents/{creds.agent_id}")
        self.say.ok(f"{creds.agent_id}: {record['state']}; AK certificate '{ak.subject.rfc4514_string()}' "
                    f"from '{ak.issuer.rfc4514_string()}'")  # fmt: skip
        self.say.ok("mutual TLS from now on: the agent's client certificate, the server's operations CA")
        self.expect("host enrolled", record["state"] == "active" and not is_virtual_tm_certificate(ak))
        self.say.record("host enrolled", "RA-1", "credential activation; AK certificate from the PCA")

    def _boot(self) -> None:
        assert self.host is not None
        self.say.step("The host boots, measuring each stage before it runs", "clause 6.2, TT-1, TT-2, IM-1",
                      "CRTM → firmware → boot loader → kernel → VMM → vTM manager: digests into PCRs, descriptions "
                      "into a TCG log and an IMA log. The host's task loop starts: it long-polls the server and "
                      "opens no port.")  # fmt: skip
        verified, chain = deep_quote(self.host)
        self.console.print(chain_table(chain, BANK))
        self.say.ok(
            f"a local check of the host's deep quote: {len(verified.pcrs[BANK])} PCRs match the replayed logs"
        )
        assert self.server is not None
        self.host.answer_server(self.server)

    def _baseline(self) -> None:
        self.say.step("The operator learns a baseline, sets a policy group", "clause 6.4, RA-5",
                      "`vroot baseline learn` reads the known-good boot's TCG and IMA logs; the baseline and a policy "
                      "(event PCRs 0-9, IMA allowlist required) go to the server; host-a joins group 'hosts'.")  # fmt: skip
        manifest, baseline = learnt_baseline(self.host_dir / "logs", name="hosts")
        publish_library(self.op, group="hosts", baseline="hosts", manifest=manifest)
        agent = self.op.request("PATCH", "/v1/agents/host:host-a", json={"group": "hosts"})
        pcrs = sorted({v.pcr for v in baseline.reference_values})
        self.say.ok(f"baseline hosts@1: {len(baseline.reference_values)} reference values on PCRs "
                    f"{', '.join(map(str, pcrs))}; IMA allowlist of the measured VMM files")  # fmt: skip
        self.say.ok(f"host:host-a is in group '{agent['group']}'")
        self.say.record("baseline learnt, policy set", "RA-5", "from the known-good boot")

    def _vtms(self) -> None:
        from vroot.measure import VM_CHAIN, write_images

        host = self.host
        assert host is not None
        self.say.step("Three VMs get their vTMs", "clause 5.3, VMM-F1..F4, VMM-F6, DP-3",
                      "Each vTM is a swtpm whose state is encrypted with its own key, sealed in the host TM to the "
                      "host's trusted state; its vEK is certified inside the host TM; its launch is measured into "
                      "PCR 14.")  # fmt: skip
        table = Table(title="vTMs on host-a")
        for column in ("VM", "UUID", "vEK name", "QEMU -chardev socket"):
            table.add_column(column, overflow="fold")
        for name, vm in self.vms.items():
            status = host.call("POST", "/v1/vtms", {"vm_uuid": vm})
            endpoint = str(Path(status["endpoint"]).relative_to(self.base))
            table.add_row(name, vm, status["vek_name"][:16] + "…", endpoint)
        self.console.print(table)
        self.say.record("vTMs created", "VMM-F1, VMM-F2", f"{len(self.vms)} vTMs, one per VM")

        self.say.step("The vEK certificate chain of VM 'web'", "VMM-F4, VMM-S3",
                      "From the manufacturer CA to the vEK: every link checked.")  # fmt: skip
        self.console.print(vek_tree(host, self.vms["web"], self.ca_dir))
        self.say.record("vEK chain verified", "VMM-F4, VMM-S3", "CA → EK → AK → vTM-manager key → vEK")

        self.say.step("Each VM boots and seals a secret to its vPCRs", "clause 6.2-6.5, TT-3, VM-F3, DP-2",
                      "The VM chain (virtual firmware → boot loader → kernel → applications) is measured into the "
                      "vTM; each VM seals a secret to vPCRs 0-9.")  # fmt: skip
        self.vm_images = write_images(self.base / "vm-images", VM_CHAIN).path
        self.sealed: dict[str, tuple[str, bytes]] = {}
        for name, vm in self.vms.items():
            host.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(self.vm_images)})
            secret = f"disk key of {name}".encode()
            body = {"data": base64.b64encode(secret).decode(), "pcrs": list(range(10))}
            self.sealed[name] = (host.call("POST", f"/v1/vtms/{vm}/seal", body)["blob"], secret)
            self.say.ok(f"VM {name}: booted, secret sealed to its vPCRs 0-9")
        self.say.record("guest secrets sealed", "DP-2", f"{len(self.sealed)} secrets")

    def _guests_enroll(self) -> None:
        from cryptography import x509

        from vroot.host import HostPaths
        from vroot.pki import is_virtual_tm_certificate
        from vroot.vtm import VtmPaths

        host = self.host
        assert host is not None
        self.say.step("The VMs' guest attesters enroll", "clause 6.4, RA-1, VMM-F4, VMM-S3",
                      "Each guest sends its vEK certificate; the PCA checks it chains to the vTM-manager key that "
                      "host-a's AK certified at enrollment, and certifies a vAK in the vTM by credential activation. "
                      "(The host agent plays each VM's guest attester: `vroot host run --simulate-guests`.) A VM "
                      "baseline is learnt from VM 'web's boot for group 'vms'.")  # fmt: skip
        logs = VtmPaths(HostPaths(self.host_dir).vtm(self.vms["web"])).guest
        manifest, _ = learnt_baseline(logs, name="vms")
        publish_library(self.op, group="vms", baseline="vms", manifest=manifest)
        messages = host.sync_guests()
        enrolled = 0
        for name, vm in self.vms.items():
            agent = self.op.get(f"/v1/agents/vm:{vm}")
            vak = x509.load_pem_x509_certificate(agent["ak_certificate"].encode())
            good = (f"vm:{vm}: enrolled" in messages and agent["state"] == "active"
                    and agent["host_id"] == "host:host-a" and is_virtual_tm_certificate(vak))  # fmt: skip
            enrolled += good
            self.say.ok(f"VM {name}: vm:{vm[:8]}… {agent['state']} on {agent['host_id']}, group '{agent['group']}', "
                        "vAK certificate marked virtual")  # fmt: skip
        self.expect("guests enrolled", enrolled == len(self.vms))
        self.say.record(
            "guests enrolled", "RA-1, VMM-F4, VMM-S3", f"{enrolled} vAKs certified; vEKs chain to host-a"
        )

    def _attest(self, title: str) -> dict[str, dict[str, Any]]:
        """Attest host-a and its three VMs at once; show the joint verdicts; the results."""
        results = attest_all(self.op, list(self.ids))
        self.console.print(verdict_table(results, self.ids, title=title))
        return results

    def _attest_trusted(self) -> None:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        from vroot.attestation.ear import verify_ear

        self.say.step("The server attests the host and its VMs", "clause 6.4, RA-2..RA-6, VMM-F5",
                      "A single-use nonce each; host-a answers with a quote over its nonce; the three VMs quote their "
                      "vTMs, and host-a vouches for all three in ONE deep quote over a Merkle root of their "
                      "challenges. Each VM's verdict is joint: its own appraisal, its host's, and the binding.")  # fmt: skip
        results = self._attest("joint verdicts, as `vroot attest` reports them")
        vm_results = [r for a, r in results.items() if a.startswith("vm:")]
        deep = {r.get("host_result_id") for r in vm_results}
        trusted = all(r["verdict"] == "trusted" for r in results.values())
        if trusted and len(deep) == 1:
            self.say.ok(
                f"one deep quote of host-a (its result #{deep.pop()}) vouched for all {len(vm_results)} VMs"
            )
        key = load_pem_public_key(self.server.operator().get("/v1/result-key")) if self.server else None
        checked = bound = 0
        for agent_id, result in results.items():
            ear = verify_ear(result["ear"], public_key=key, now=datetime.now(UTC))  # type: ignore[arg-type]
            checked += ear.subject == agent_id
            joint = ear.claims.get("submods", {}).get(agent_id, {}).get("vroot.joint")
            bound += bool(joint and joint.get("bound") and joint.get("host") == "trusted")
        self.say.ok(f"{bound} VMs bound to host-a's deep quote: each leaf in the quoted Merkle root, each vEK from "
                    "host-a's vTM-manager key, each vTM launched on host-a (PCR 14)")  # fmt: skip
        policies = dict.fromkeys(str(r.get("policy_id")) for r in results.values())
        self.say.ok(f"appraised under policies {', '.join(policies)} (group@version/baseline@version)")
        self.say.ok(f"{checked} signed EARs verified offline with the server's result key (/v1/result-key)")
        self.expect(
            "trusted before tampering", trusted and checked == len(results) and bound == len(self.vms)
        )
        self.say.record("host and VMs attested", "RA-2..RA-6, VMM-F5",
                        "trusted; joint verdicts name host-a; signed EARs")  # fmt: skip

    def _reboot_and_boot_vms(self) -> list[str]:
        """Reboot the host; boot each VM whose vTM started again. The reboot's messages."""
        host = self.host
        assert host is not None
        messages = host.call("POST", "/v1/reboot", {})["messages"]
        running = {v["vm_uuid"] for v in host.call("GET", "/v1/vtms")["vtms"] if v["running"]}
        for vm in self.vms.values():
            if vm in running:
                host.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(self.vm_images)})
        return messages

    def _tamper_boot_loader(self) -> None:
        from vroot.measure import HOST_CHAIN, ImageDir, diff_stages, plan_boot

        assert self.host is not None
        self.say.step("Someone changes the host's boot loader", "clause 6.3, 6.4, RA-4, RA-5",
                      "One byte of bootloader.efi is flipped and the host reboots. PCR 4 is outside the state the "
                      "vTM keys are sealed to, so the vTMs start and the VMs boot as before: their own evidence is "
                      "fine. The server must see through them to the host.")  # fmt: skip
        images = ImageDir(self.host_dir / "images")
        golden = plan_boot(HOST_CHAIN, images.read, banks=(BANK,))
        loader = images.path / "bootloader.efi"
        self.loader_bytes = flip_first_byte(loader)
        self._reboot_and_boot_vms()
        _, chain = deep_quote(self.host)
        diffs = diff_stages(golden, chain, bank=BANK)
        changed = [d.stage for d in diffs]
        results = self._attest("joint verdicts after the boot loader changed")
        host = results["host:host-a"]
        self.console.print(findings_table(host["findings"], title="host-a's findings"))
        pcr4 = [f for f in host["findings"] if f.get("pcr") == 4]
        for d in diffs:
            self.say.bad(f"stage {d.stage} differs from the known-good boot (PCR {d.pcr}): the event the server "
                         "did not find in the baseline is the firmware's measurement of the boot loader")  # fmt: skip
        vms_untrusted = 0
        for agent_id, result in results.items():
            if agent_id == "host:host-a":
                continue
            why = [f for f in result["findings"] if f["id"].startswith("host.") and f.get("pcr") == 4]
            vms_untrusted += (
                result["verdict"] == "untrusted" and result["host_verdict"] == "untrusted" and bool(why)
            )
            if why:
                self.say.bad(f"{self.ids[agent_id]}: UNTRUSTED — {why[0]['id']} (PCR 4, seen {why[0]['seen']}); "
                             "its own evidence appraised trusted")  # fmt: skip
        self.console.print("[dim]$ vroot attest vm:<web> --server … --ca …[/dim]")
        cli = self._vroot_attest(f"vm:{self.vms['web']}")
        self.console.print(cli.stdout.rstrip(), markup=False, highlight=False, soft_wrap=True)
        held = (host["verdict"] == "untrusted" and bool(pcr4) and changed == ["boot-loader"]
                and vms_untrusted == len(self.vms) and cli.returncode == 1 and "UNTRUSTED" in cli.stdout)  # fmt: skip
        self.expect("untrusted after tampering", held)
        self.say.record("tampered host detected", "RA-4, RA-5",
                        f"host and {vms_untrusted} VMs untrusted: PCR 4, stage {', '.join(changed)}")  # fmt: skip

    def _vroot_attest(self, agent_id: str) -> subprocess.CompletedProcess[str]:
        """`vroot attest AGENT` as an operator types it (the token from the environment)."""
        assert self.server is not None
        env = {**os.environ, "VROOT_TOKEN": self.server.token, "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "vroot.cli.entry", "attest", agent_id, "--server", self.server.url,
             "--ca", str(self.server.ca), "--wait", "60"],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip

    def _tamper_firmware(self) -> None:
        assert self.host is not None
        self.say.step("A changed firmware: the vTMs do not start", "clause 6.5, VMM-S2, DP-3",
                      "The boot loader is put back, and one byte of firmware.bin is flipped instead: PCR 0 is in "
                      "the state the vTM keys are sealed to, so the host TM refuses to unseal them.")  # fmt: skip
        (self.host_dir / "images" / "bootloader.efi").write_bytes(self.loader_bytes)
        firmware = self.host_dir / "images" / "firmware.bin"
        self.firmware_bytes = flip_first_byte(firmware)
        messages = self._reboot_and_boot_vms()
        refused = [m for m in messages if "not started" in m]
        for name, vm in self.vms.items():
            reason = next((m for m in refused if vm in m), "")
            match = re.search(r"host PCRs [0-9, ]+ \(\w+\) differ", reason)
            self.say.bad(f"VM {name}: vTM refused to start ({match.group(0) if match else reason} from the trusted "
                         "state)")  # fmt: skip
        self.expect("vTMs refused on changed firmware",
                    len(refused) == len(self.vms) and all("PCRs 0 " in m for m in refused))  # fmt: skip
        self.say.record(
            "vTM keys held back", "VMM-S2, DP-3", f"{len(refused)} vTMs refused: host PCR 0 changed"
        )

    def _restore(self) -> None:
        host = self.host
        assert host is not None
        self.say.step("The good files are restored", "DP-3, RA-5",
                      "The host reboots into its trusted state: the vTMs start, each VM boots and unseals its "
                      "secret, and the server trusts the host and its VMs again.")  # fmt: skip
        (self.host_dir / "images" / "firmware.bin").write_bytes(self.firmware_bytes)
        self._reboot_and_boot_vms()
        unsealed = 0
        for name, vm in self.vms.items():
            blob, secret = self.sealed[name]
            got = base64.b64decode(host.call("POST", f"/v1/vtms/{vm}/unseal", {"blob": blob})["data"])
            unsealed += got == secret
            self.say.ok(f"VM {name}: vTM running, secret unsealed")
        results = self._attest("joint verdicts after the restore")
        trusted = all(r["verdict"] == "trusted" for r in results.values())
        if trusted:
            self.say.ok("host-a and its three VMs are trusted again")
        self.expect("trusted after restore", trusted and unsealed == len(self.vms))
        self.say.record(
            "secrets back, trusted again", "DP-3, RA-5", f"{unsealed} secrets unsealed; 4 verdicts trusted"
        )

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
