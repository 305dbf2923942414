"""The second half of the demo's story (issue 5): host-c's boot loader is tampered with and host-c
turns untrusted; the operator drains host-a and the migration controller moves every vTM of host-a
to host-b, never to host-c; each moved VM unseals, on host-b, the secret it sealed on host-a (DP-4)
and its joint verdict names host-b; a changed firmware keeps host-c's vTM from starting, and with
the good files back host-c is trusted again and a destination once more.

`IncidentSteps` is a part of the demo's `_Story` (vroot.demo), which provides what is declared
below: the narrator, the running server and hosts, the VMs and where they run, their sealed secrets.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vroot._demo_host import DemoHost, deep_quote, flip_first_byte
from vroot._demo_server import DemoServer, attest_all, follow_migrations
from vroot._demo_views import findings_table, migrations_table, placement_table, step_ms
from vroot.tpm2 import HashAlg

__all__ = ["IncidentSteps"]

BANK = HashAlg.SHA256
TAMPERED = "host-c"  # the host whose boot files change
DRAINED = "host-a"  # the host the operator empties for maintenance
SAFE = "host-b"  # the only host left that may take its vTMs


class IncidentSteps:
    say: Any
    console: Any
    base: Path
    op: Any
    server: DemoServer | None
    hosts: dict[str, DemoHost]
    vms: dict[str, str]
    on: dict[str, str]
    ids: dict[str, str]
    sealed: dict[str, tuple[str, bytes]]
    vm_images: Path
    expect: Callable[[str, bool], bool]
    attest: Callable[..., dict[str, dict[str, Any]]]
    host_dir: Callable[[str], Path]
    vms_on: Callable[[str], dict[str, str]]

    def run_incident(self) -> None:
        self._tamper_boot_loader()
        moved = self._drain()
        self._after_move(moved)
        self._tamper_firmware()
        self._restore()

    def _reboot_and_boot_vms(self, host: str) -> list[str]:
        """Reboot `host`; boot each of its VMs whose vTM started again. The reboot's messages."""
        agent = self.hosts[host]
        messages = agent.call("POST", "/v1/reboot", {})["messages"]
        running = agent.running_vtms()
        for vm in self.vms_on(host).values():
            if vm in running:
                agent.call("POST", f"/v1/vtms/{vm}/boot", {"image_dir": str(self.vm_images)})
        return messages

    def _vroot(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`vroot ARGS --server … --ca …` as an operator types it (the token from the environment)."""
        assert self.server is not None
        env = {**os.environ, "VROOT_TOKEN": self.server.token, "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "vroot.cli.entry", *args, "--server", self.server.url, "--ca", str(self.server.ca)],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip

    def _tamper_boot_loader(self) -> None:
        from vroot.measure import HOST_CHAIN, ImageDir, diff_stages, plan_boot

        self.say.step("Someone changes host-c's boot loader", "clause 6.3, 6.4, RA-4, RA-5",
                      "One byte of host-c's bootloader.efi is flipped and host-c reboots. PCR 4 is outside the state "
                      "the vTM keys are sealed to, so its vTM starts and VM cache boots as before: its own evidence is "
                      "fine. The server must see through it to the host.")  # fmt: skip
        images = ImageDir(self.host_dir(TAMPERED) / "images")
        golden = plan_boot(HOST_CHAIN, images.read, banks=(BANK,))
        self.loader_bytes = flip_first_byte(images.path / "bootloader.efi")
        self._reboot_and_boot_vms(TAMPERED)
        _, chain = deep_quote(self.hosts[TAMPERED])
        diffs = diff_stages(golden, chain, bank=BANK)
        changed = [d.stage for d in diffs]
        results = self.attest("joint verdicts after host-c's boot loader changed")
        host = results[f"host:{TAMPERED}"]
        self.console.print(findings_table(host["findings"], title="host-c's findings"))
        pcr4 = [f for f in host["findings"] if f.get("pcr") == 4]
        for d in diffs:
            self.say.bad(f"stage {d.stage} differs from the known-good boot (PCR {d.pcr}): the event the server "
                         "did not find in the baseline is the firmware's measurement of the boot loader")  # fmt: skip
        vms_untrusted = 0
        for name, vm in self.vms_on(TAMPERED).items():
            result = results[f"vm:{vm}"]
            why = [f for f in result["findings"] if f["id"].startswith("host.") and f.get("pcr") == 4]
            vms_untrusted += (
                result["verdict"] == "untrusted" and result["host_verdict"] == "untrusted" and bool(why)
            )
            if why:
                self.say.bad(f"VM {name}: UNTRUSTED — {why[0]['id']} (PCR 4, seen {why[0]['seen']}); its own "
                             "evidence appraised trusted")  # fmt: skip
        others = [r for a, r in results.items() if a != f"host:{TAMPERED}" and r.get("host_id") != f"host:{TAMPERED}"]
        if all(r["verdict"] == "trusted" for r in others):
            self.say.ok(f"host-a, host-b and the VMs on host-a stay trusted ({len(others)} verdicts)")
        held = (host["verdict"] == "untrusted" and bool(pcr4) and changed == ["boot-loader"]
                and vms_untrusted == len(self.vms_on(TAMPERED)) and all(r["verdict"] == "trusted" for r in others))  # fmt: skip
        self.expect("untrusted after tampering", held)
        self.say.record("tampered host detected", "RA-4, RA-5",
                        f"host-c and its {vms_untrusted} VM untrusted: PCR 4, stage {', '.join(changed)}")  # fmt: skip

    def _drain(self) -> dict[str, str]:
        """Drain host-a; the VMs (name -> UUID) that moved to host-b."""
        self.say.step("host-a must go down for maintenance: where can its vTMs go?", "clause 5.5.2, MC-S3, MC-S4",
                      "The migration controller sends a vTM only to a host whose latest verdict is trusted and younger "
                      "than \\[migration] max_verdict_age_seconds (120 s), so the server attests the three hosts now. "
                      "`GET /v1/placement/{vm}` is the controller's dry run (`vroot migrate VM --dry-run`): where "
                      "VM web would go, and why every other host is refused.")  # fmt: skip
        verdicts = attest_all(self.op, [f"host:{h}" for h in sorted(self.hosts)])
        for agent_id, r in verdicts.items():
            line = f"{agent_id}: {r['verdict'].upper()} (result #{r['id']})"
            (self.say.ok if r["verdict"] == "trusted" else self.say.bad)(line)
        placement = self.op.get(f"/v1/placement/{self.vms['web']}")
        self.console.print(placement_table(placement, self.ids, title="placement of VM web (GET /v1/placement)"))
        codes = {r["host"]: r["code"] for r in placement["refusals"]}
        reasons = {r["host"]: r["reason"] for r in placement["refusals"]}
        refused = self.expect("untrusted host refused as a destination",
                              placement["destination"] == f"host:{SAFE}" and codes.get(f"host:{TAMPERED}") == "untrusted")  # fmt: skip
        if refused:
            self.say.bad(f"host-c refused as a destination: untrusted, its {reasons[f'host:{TAMPERED}']}")
            at = datetime.fromisoformat(verdicts[f"host:{SAFE}"]["created_at"])
            self.say.ok(f"host-b chosen: its trusted verdict is {(datetime.now(UTC) - at).total_seconds():.0f} s old "
                        "(at most 120 s)")  # fmt: skip
        self.say.record("untrusted host refused as a destination", "MC-S3, MC-S4",
                        f"host-c: {codes.get(f'host:{TAMPERED}')}; host-b chosen")  # fmt: skip

        leaving = self.vms_on(DRAINED)
        self.say.step("The operator drains host-a: its vTMs move to host-b", "clause 5.5.3, 6.6, MC-F1..F3, MIG-4..MIG-10, VMM-S4, VMM-S5",
                      "For each VM the controller signs the tasks (MC-F2, VMM-S5): host-b certifies a migration "
                      "target key with its AK over the migration's nonce (MIG-4); host-a locks the vTM and exports "
                      "its complete state in a blob only host-b's TM can open (MIG-5, MIG-6, VMM-S4); host-b imports "
                      "it, seals it to its own trusted state, issues a new vEK certificate and proves the vTM live with "
                      "its vPCRs (MIG-7, MIG-10); commit, and host-a destroys its copy (MIG-8, MIG-9).")  # fmt: skip
        self.console.print("[dim]$ vroot host drain host-a --server … --ca …[/dim]")
        cli = self._vroot("host", "drain", DRAINED)
        self.console.print((cli.stdout + cli.stderr).rstrip(), markup=False, highlight=False, soft_wrap=True)
        ids = re.findall(r"migration ([0-9a-f-]{36})", cli.stdout)
        done = follow_migrations(self.op, ids) if ids else []
        by_vm = {m["vm_uuid"]: m for m in done}
        self.console.print(migrations_table([by_vm[vm] for vm in leaving.values() if vm in by_vm], self.ids,
                                            title="migrations (GET /v1/migrations/{id}): each step's time"))  # fmt: skip
        moved = {name: vm for name, vm in leaving.items()
                 if by_vm.get(vm, {}).get("state") == "completed" and by_vm[vm]["destination"] == f"host:{SAFE}"}  # fmt: skip
        to_tampered = [m for m in done if m["destination"] == f"host:{TAMPERED}"]
        if done:
            first = min(datetime.fromisoformat(m["created_at"]) for m in done)
            last = max(datetime.fromisoformat(m["updated_at"]) for m in done)
            totals = sorted(sum(v or 0.0 for v in step_ms(m).values()) for m in done)
            self.say.ok(f"{len(moved)} of {len(leaving)} vTMs moved to host-b, none to host-c; "
                        f"{(last - first).total_seconds():.1f} s from the drain to the last commit, "
                        f"{totals[len(totals) // 2]:.0f} ms median per migration (its steps' sum)")  # fmt: skip
        left_on_a, on_b = self.hosts[DRAINED].running_vtms(), self.hosts[SAFE].running_vtms()
        gone = all(vm not in left_on_a and not (self._vtm_dir(DRAINED, vm)).exists() for vm in moved.values())
        if gone:
            self.say.ok("host-a runs none of them any more: its copies (state, sealed key, process) are destroyed")
        for name in moved:
            self.on[name] = SAFE
        self.expect("host-a evacuated to host-b only",
                    cli.returncode == 0 and len(moved) == len(leaving) == len(ids) and not to_tampered and gone
                    and set(moved.values()) <= on_b)  # fmt: skip
        self.say.record("host-a drained: vTMs moved", "MC-F1..F3, MIG-4..MIG-10, VMM-S4, VMM-S5",
                        f"{len(moved)} to host-b, {len(to_tampered)} to host-c; source copies destroyed")  # fmt: skip
        return moved

    def _vtm_dir(self, host: str, vm: str) -> Path:
        from vroot.host import HostPaths

        return HostPaths(self.host_dir(host)).vtm(vm)

    def _after_move(self, moved: dict[str, str]) -> None:
        self.say.step("On host-b the moved VMs unseal their secrets; their verdicts name host-b", "clause 6.6, DP-4, RA-4, MIG-10",
                      "host-a's guest attesters of the moved VMs stop (their vTMs are gone there); host-b's enroll "
                      "them, with the vEK certificates host-b issued. Each VM unseals the secret it sealed on host-a "
                      "before the move; the server attests host-b and the moved VMs (one deep quote of host-b).")  # fmt: skip
        stopped = self.hosts[DRAINED].sync_guests()
        enrolled = self.hosts[SAFE].sync_guests()
        unsealed = 0
        for name, vm in moved.items():
            blob, secret = self.sealed[name]
            got = base64.b64decode(self.hosts[SAFE].call("POST", f"/v1/vtms/{vm}/unseal", {"blob": blob})["data"])
            unsealed += got == secret
            if got == secret:
                self.say.ok(f"VM {name}: the secret sealed on host-a unsealed on host-b")
        results = self.attest("joint verdicts after the move", [f"host:{SAFE}", *(f"vm:{vm}" for vm in moved.values())])
        named = sum(results[f"vm:{vm}"]["verdict"] == "trusted" and results[f"vm:{vm}"]["host_id"] == f"host:{SAFE}"
                    for vm in moved.values())  # fmt: skip
        guests = all(f"vm:{vm}: vTM not running, guest stopped" in stopped and f"vm:{vm}: enrolled" in enrolled
                     for vm in moved.values())  # fmt: skip
        if named == len(moved):
            self.say.ok(f"{named} joint verdicts name host:host-b, vouched for by host-b's deep quote")
        self.expect("secrets unsealed after the move", bool(moved) and unsealed == len(moved))
        self.expect("joint verdicts name the new host",
                    bool(moved) and named == len(moved) and guests and results[f"host:{SAFE}"]["verdict"] == "trusted")  # fmt: skip
        self.say.record("secrets survive the move", "DP-4", f"{unsealed} secrets sealed on host-a unsealed on host-b")
        self.say.record("joint verdicts name the new host", "RA-4, MIG-10", f"{named} VMs trusted on host:host-b")

    def _tamper_firmware(self) -> None:
        self.say.step("A changed firmware on host-c: its vTM does not start", "clause 6.5, VMM-S2, DP-3",
                      "host-c's boot loader is put back, and one byte of its firmware.bin is flipped instead: PCR 0 "
                      "is in the state the vTM keys are sealed to, so host-c's TM refuses to unseal them.")  # fmt: skip
        images = self.host_dir(TAMPERED) / "images"
        (images / "bootloader.efi").write_bytes(self.loader_bytes)
        self.firmware_bytes = flip_first_byte(images / "firmware.bin")
        messages = self._reboot_and_boot_vms(TAMPERED)
        refused = [m for m in messages if "not started" in m]
        for name, vm in self.vms_on(TAMPERED).items():
            reason = next((m for m in refused if vm in m), "")
            match = re.search(r"host PCRs [0-9, ]+ \(\w+\) differ", reason)
            self.say.bad(f"VM {name}: vTM refused to start ({match.group(0) if match else reason} from the trusted "
                         "state)")  # fmt: skip
        self.expect("vTMs refused on changed firmware",
                    len(refused) == len(self.vms_on(TAMPERED)) and all("PCRs 0 " in m for m in refused))  # fmt: skip
        self.say.record("vTM keys held back", "VMM-S2, DP-3", f"{len(refused)} vTM refused: host PCR 0 changed")

    def _restore(self) -> None:
        self.say.step("host-c's good files are restored", "DP-3, RA-5, MC-S4",
                      "host-c reboots into its trusted state: its vTM starts, VM cache boots and unseals its secret, "
                      "the server trusts host-c and its VM again, and the controller would take host-c as a "
                      "destination once more (host-a stays drained until the operator ends the drain).")  # fmt: skip
        host = self.hosts[TAMPERED]
        (self.host_dir(TAMPERED) / "images" / "firmware.bin").write_bytes(self.firmware_bytes)
        self._reboot_and_boot_vms(TAMPERED)
        unsealed = 0
        here = self.vms_on(TAMPERED)
        for name, vm in here.items():
            blob, secret = self.sealed[name]
            got = base64.b64decode(host.call("POST", f"/v1/vtms/{vm}/unseal", {"blob": blob})["data"])
            unsealed += got == secret
            self.say.ok(f"VM {name}: vTM running, secret unsealed")
        results = self.attest("joint verdicts after the restore",
                              [f"host:{TAMPERED}", *(f"vm:{vm}" for vm in here.values())])  # fmt: skip
        trusted = all(r["verdict"] == "trusted" for r in results.values())
        if trusted:
            self.say.ok("host-c and its VM are trusted again")
        placement = self.op.get(f"/v1/placement/{self.vms['web']}")
        codes = {r["host"]: r["code"] for r in placement["refusals"]}
        self.say.ok(f"placement of VM web (now on host-b): {placement['explanation']}; "
                    f"host-a refused: {codes.get(f'host:{DRAINED}')}")  # fmt: skip
        self.expect("trusted after restore",
                    trusted and unsealed == len(here) and placement["destination"] == f"host:{TAMPERED}")  # fmt: skip
        self.say.record("host-c trusted again", "DP-3, RA-5, MC-S4",
                        f"{unsealed} secret unsealed; a destination again")  # fmt: skip
