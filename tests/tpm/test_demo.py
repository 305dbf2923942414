"""`make demo` (`vroot demo --fast`): the story holds, told by the real command, and nothing it
started is left running. One run of the demo (about 15 s) is shared by every test here.

The story (issues 2 to 5): a server process is started, three swtpm hosts enroll (RA-1), baselines
are learnt (RA-5), three VMs on host-a and one on host-c get vTMs whose guests enroll (RA-1,
VMM-F4), the server's joint verdicts are trusted (RA-2..RA-6, VMM-F5); a tampered boot loader makes
host-c AND its VM untrusted with the host's PCR 4 finding (RA-4, RA-5); the migration controller
refuses host-c as a destination (MC-S3, MC-S4) and draining host-a moves its three vTMs to host-b,
never host-c (MC-F1..F3, MIG-4..MIG-10, VMM-S4, VMM-S5); each moved VM unseals on host-b the secret
it sealed on host-a (DP-4) and its joint verdict names host-b; a changed firmware keeps host-c's
vTM from starting (VMM-S2); restored, host-c is trusted again and a destination once more (DP-3)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.tpm


@dataclass(frozen=True)
class DemoRun:
    code: int
    out: str
    err: str
    workdir: Path

    def step(self, title: str) -> str:
        """The text of the step whose heading starts with `title` (up to the next step's heading)."""
        match = re.search(rf"^\d+\. {re.escape(title)}.*?(?=^\d+\. |\Z)", self.out, re.M | re.S)
        assert match, f"no step {title!r} in:\n{self.out[-3000:]}"
        return match.group(0)


def _processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line mentions `text` (the demo's unique work directory)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoRun]:
    workdir = Path(tempfile.mkdtemp(prefix="vrd", dir="/tmp"))  # short: vTM sockets live under it
    env = {**os.environ, "COLUMNS": "200", "PYTHONIOENCODING": "utf-8", "TSS2_LOG": "all+NONE"}
    try:
        # --keep: at the end the demo shows the dashboard's address and waits for Enter (given here)
        out = subprocess.run([sys.executable, "-m", "vroot.cli.entry", "demo", "--fast", "--keep", "--workdir",
                              str(workdir)], input="\n", capture_output=True, text=True, timeout=120, env=env,
                             check=False)  # fmt: skip
        yield DemoRun(code=out.returncode, out=out.stdout, err=out.stderr, workdir=workdir)
    finally:
        for pid in _processes_mentioning(str(workdir)):  # only if the demo left one: the last test says so
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


HOST_ROWS = ("host-a", "host-b", "host-c")
ON_A = ("VM web", "VM db", "VM batch")


def _rows(text: str, width: int = 5) -> dict[str, list[str]]:
    """Table rows in `text` with `width` cells, by their first cell (host-a, VM web, ...): a verdict
    table has 5 cells, the migrations table 8, the placement table 4."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == width and (cells[0] in HOST_ROWS or cells[0].startswith("VM ")):
            rows[cells[0]] = cells
    return rows


def test_demo_command_exits_zero_and_tells_the_whole_story(demo):
    assert demo.code == 0, (demo.out[-3000:], demo.err[-3000:])
    assert "Demo complete." in demo.out
    assert re.search(r"^\(\d+\.\d s\)$", demo.out, re.M)  # its wall time
    summary = demo.out.rsplit("summary", 1)[-1]  # the table with requirement IDs, last
    for row in ("hosts enrolled │ RA-1", "hosts and VMs attested │ RA-2..RA-6, VMM-F5",
                "tampered host detected │ RA-4, RA-5", "untrusted host refused as a destination │ MC-S3, MC-S4",
                "host-a drained: vTMs moved │ MC-F1..F3, MIG-4..MIG-10, VMM-S4, VMM-S5",
                "secrets survive the move │ DP-4", "joint verdicts name the new host │ RA-4, MIG-10",
                "vTM keys held back │ VMM-S2, DP-3", "vEK chain verified │ VMM-F4, VMM-S3"):  # fmt: skip
        what, req = row.split(" │ ")
        assert re.search(rf"│ {re.escape(what)}\s+│ {re.escape(req)}\s+│", summary), row
    for clause in ("clause 5.5.2", "clause 5.5.3, 6.6", "clause 6.6, DP-4"):
        assert clause in demo.out


def test_the_demo_ends_with_the_dashboards_address_until_enter(demo):
    kept = demo.out.split("the demo's server and hosts are still running", 1)[-1]
    assert re.search(r"Dashboard: https://127\.0\.0\.1:\d+/ui/", kept), kept[:500]
    assert "Press Enter (or Ctrl-C) to stop the server and the hosts." in kept
    assert kept.index("Press Enter") < kept.index("server process")  # stopped only after Enter


def test_ra1_hosts_and_guests_enroll_with_the_server(demo):
    text = demo.step("The hosts enroll by credential")
    for host in HOST_ROWS:
        assert f"host:{host}: active; AK certificate 'CN=host:{host}" in text
    guests = demo.step("The VMs' guest attesters enroll")
    assert len(re.findall(r"active on host:host-a, group 'vms', vAK certificate marked virtual", guests)) == 3
    assert len(re.findall(r"VM cache: vm:\S+ active on host:host-c, group 'vms'", guests)) == 1


def test_ra2_ra6_vmm_f5_joint_verdicts_trusted_before_tampering(demo):
    text = demo.step("The server attests the hosts and their VMs")
    rows = _rows(text)
    assert sorted(rows) == ["VM batch", "VM cache", "VM db", "VM web", "host-a", "host-b", "host-c"]
    assert {rows[r][1] for r in rows} == {"TRUSTED"}
    assert {re.sub(r"#\d+", "#N", rows[vm][2]) for vm in ON_A} == {"host:host-a #N TRUSTED"}
    assert len({rows[vm][2] for vm in ON_A}) == 1  # one host result: one deep quote for host-a's three VMs
    assert re.sub(r"#\d+", "#N", rows["VM cache"][2]) == "host:host-c #N TRUSTED"
    assert {r[3] for r in rows.values()} == {"affirming"}
    assert {r[4] for r in rows.values()} == {"none"}
    assert "appraised under policies hosts@1/hosts@1, vms@1/vms@1" in text
    assert "one deep quote of host-a" in text and "vouched for all 3 of its VMs" in text
    assert "4 VMs bound to their host's deep quote" in text
    assert "7 signed EARs verified offline" in text


def test_ra4_ra5_tampered_boot_loader_makes_host_c_and_its_vm_untrusted(demo):
    text = demo.step("Someone changes host-c's boot loader")
    rows = _rows(text)
    assert {r: rows[r][1] for r in ("host-c", "VM cache")} == {"host-c": "UNTRUSTED", "VM cache": "UNTRUSTED"}
    assert {rows[r][1] for r in ("host-a", "host-b", *ON_A)} == {"TRUSTED"}  # the others are untouched
    assert re.sub(r"#\d+", "#N", rows["VM cache"][2]) == "host:host-c #N UNTRUSTED"
    assert {rows[r][3] for r in ("host-c", "VM cache")} == {"contraindicated"}
    assert {rows[r][4] for r in ("host-c", "VM cache")} == {"2 (PCR 4)"}  # the host's two PCR 4 findings
    # the host's finding says why: the boot loader's event on PCR 4 is not in the baseline
    assert re.search(
        r"baseline\.event\.unknown\s*│\s*4\s*│\s*\d+\s*│ PCR 4 event \d+ \(EV_EFI_BOOT_SERVICES_APPLICATION",
        text,
    )
    assert "stage boot-loader differs from the known-good boot (PCR 4)" in text
    assert "VM cache: UNTRUSTED — host.baseline.event.unknown (PCR 4, seen host:host-c)" in text


def test_mc_s3_s4_the_untrusted_host_is_refused_as_a_destination(demo):
    text = demo.step("host-a must go down for maintenance")
    assert re.search(r"host:host-b: TRUSTED \(result #\d+\)", text)
    assert re.search(r"host:host-c: UNTRUSTED \(result #\d+\)", text)
    rows = _rows(text, width=4)
    assert rows["host-b"][1:3] == ["CHOSEN", "-"]
    assert rows["host-c"][1:3] == ["refused", "untrusted"] and "latest verdict untrusted" in rows["host-c"][3]
    assert rows["host-a"][1:3] == ["refused", "source"]
    assert "host-c refused as a destination: untrusted" in text


def test_mc_f1_f3_mig4_10_draining_host_a_moves_every_vtm_to_host_b_never_host_c(demo):
    text = demo.step("The operator drains host-a")
    assert "host:host-a draining: 3 migrations started" in text  # `vroot host drain host-a`
    assert len(re.findall(r"^  migration [0-9a-f-]{36}$", text, re.M)) == 3
    rows = _rows(text, width=8)
    assert sorted(rows) == sorted(ON_A)
    for vm in ON_A:
        assert rows[vm][1] == "host-a → host-b" and rows[vm][7] == "completed", rows[vm]
        assert all(re.fullmatch(r"\d+", ms) for ms in rows[vm][2:7]), rows[vm]  # each step's ms, the total
    assert "→ host-c" not in text
    assert "3 of 3 vTMs moved to host-b, none to host-c" in text
    assert "host-a runs none of them any more" in text


def test_dp4_each_moved_vm_unseals_on_host_b_and_its_joint_verdict_names_host_b(demo):
    text = demo.step("On host-b the moved VMs unseal their secrets")
    for vm in ("web", "db", "batch"):
        assert f"VM {vm}: the secret sealed on host-a unsealed on host-b" in text
    rows = _rows(text)
    assert sorted(rows) == sorted(["host-b", *ON_A])
    assert {rows[r][1] for r in rows} == {"TRUSTED"}
    assert {re.sub(r"#\d+", "#N", rows[vm][2]) for vm in ON_A} == {"host:host-b #N TRUSTED"}
    assert "3 joint verdicts name host:host-b" in text


def test_vmm_s2_changed_firmware_keeps_host_cs_vtm_from_starting(demo):
    text = demo.step("A changed firmware on host-c")
    assert text.count("vTM refused to start (host PCRs 0 (sha256) differ from the trusted state)") == 1
    assert "VM cache: vTM refused to start" in text


def test_dp3_restored_host_c_is_trusted_again_and_a_destination_once_more(demo):
    text = demo.step("host-c's good files are restored")
    assert "VM cache: vTM running, secret unsealed" in text
    rows = _rows(text)
    assert {r: rows[r][1] for r in rows} == {"host-c": "TRUSTED", "VM cache": "TRUSTED"}
    assert "host-c and its VM are trusted again" in text
    assert "placement of VM web (now on host-b): destination host:host-c" in text
    assert "host-a refused: draining" in text


def test_nothing_the_demo_started_is_left_running(demo):
    [server_pid] = {
        int(p) for p in re.findall(r"vroot server run: process (\d+) on https://127\.0\.0\.1:\d+", demo.out)
    }
    assert f"server process {server_pid} stopped (exit 0)" in demo.out
    assert _processes_mentioning(str(demo.workdir)) == []  # no swtpm (host TM, vTMs), no server
    try:
        cmdline = Path(f"/proc/{server_pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    assert str(demo.workdir).encode() not in cmdline


def test_a_step_that_fails_still_stops_the_server_and_every_swtpm(monkeypatch):
    """A step failing mid-story (here: the baseline step, with the server, the host TM and its agent
    running) ends the demo with exit 1 and the reason, and still stops every process by PID."""
    from rich.console import Console

    import vroot.demo
    from vroot.errors import Unavailable
    from vroot.tm.swtpm import running_pids

    def broken(self):  # noqa: ANN001, ANN202
        raise Unavailable("injected: the baseline library is away")

    monkeypatch.setattr(vroot.demo._Story, "_baseline", broken)
    workdir = Path(tempfile.mkdtemp(prefix="vrf", dir="/tmp"))
    console = Console(record=True, width=200, force_terminal=False)
    try:
        code = vroot.demo.run_demo(fast=True, workdir=workdir, console=console)
        text = console.export_text()
        assert code == 1, text[-2000:]
        assert "the demo stopped: injected: the baseline library is away" in text
        [pid] = re.findall(r"vroot server run: process (\d+) on", text)
        assert f"server process {pid} stopped" in text
        assert running_pids() == ()
        assert _processes_mentioning(str(workdir)) == []
    finally:
        for pid in _processes_mentioning(str(workdir)):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)
