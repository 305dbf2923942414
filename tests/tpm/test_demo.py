"""`make demo` (`vroot demo --fast`): the story holds, told by the real command, and nothing it
started is left running. One run of the demo (about 10 s) is shared by every test here.

The story: a server process is started, a swtpm host enrolls (RA-1), baselines are learnt (RA-5),
three VMs get vTMs whose guests enroll (RA-1, VMM-F4), the server's joint verdicts are trusted
(RA-2..RA-6, VMM-F5); a tampered boot loader makes the host AND its three VMs untrusted with the
host's PCR 4 finding (RA-4, RA-5); a changed firmware keeps the vTMs from starting (VMM-S2); the
restored host and VMs are trusted again and the VMs unseal their secrets (DP-3)."""

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
        out = subprocess.run([sys.executable, "-m", "vroot.cli.entry", "demo", "--fast", "--workdir", str(workdir)],
                             capture_output=True, text=True, timeout=120, env=env, check=False)  # fmt: skip
        yield DemoRun(code=out.returncode, out=out.stdout, err=out.stderr, workdir=workdir)
    finally:
        for pid in _processes_mentioning(str(workdir)):  # only if the demo left one: the last test says so
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


def _rows(text: str) -> dict[str, list[str]]:
    """Table rows of a verdict table in `text`, by their first cell (host-a, VM web, ...)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 5 and (cells[0] == "host-a" or cells[0].startswith("VM ")):
            rows[cells[0]] = cells
    return rows


def test_demo_command_exits_zero_and_tells_the_whole_story(demo):
    assert demo.code == 0, (demo.out[-3000:], demo.err[-3000:])
    assert "Demo complete." in demo.out
    assert re.search(r"^\(\d+\.\d s\)$", demo.out, re.M)  # its wall time
    summary = demo.out.rsplit("summary", 1)[-1]  # the table with requirement IDs, last
    for row in ("host enrolled │ RA-1", "host and VMs attested │ RA-2..RA-6, VMM-F5", "tampered host detected │ RA-4, RA-5",
                "vTM keys held back │ VMM-S2, DP-3", "vEK chain verified │ VMM-F4, VMM-S3"):  # fmt: skip
        what, req = row.split(" │ ")
        assert re.search(rf"│ {re.escape(what)}\s+│ {re.escape(req)}\s+│", summary), row


def test_ra1_host_and_guests_enroll_with_the_server(demo):
    assert "host:host-a: active; AK certificate 'CN=host:host-a" in demo.step(
        "The host enrolls by credential"
    )
    guests = demo.step("The VMs' guest attesters enroll")
    assert len(re.findall(r"active on host:host-a, group 'vms', vAK certificate marked virtual", guests)) == 3


def test_ra2_ra6_vmm_f5_joint_verdicts_trusted_before_tampering(demo):
    text = demo.step("The server attests the host and its VMs")
    rows = _rows(text)
    assert sorted(rows) == ["VM batch", "VM db", "VM web", "host-a"]
    assert [rows[r][1] for r in sorted(rows)] == ["TRUSTED"] * 4
    assert {re.sub(r"#\d+", "#N", rows[vm][2]) for vm in ("VM web", "VM db", "VM batch")} == {
        "host:host-a #N TRUSTED"
    }
    assert (
        len({rows[vm][2] for vm in ("VM web", "VM db", "VM batch")}) == 1
    )  # one host result: one deep quote
    assert {r[3] for r in rows.values()} == {"affirming"}
    assert {r[4] for r in rows.values()} == {"none"}
    assert "appraised under policies hosts@1/hosts@1, vms@1/vms@1" in text
    assert "one deep quote of host-a" in text and "vouched for all 3 VMs" in text
    assert "3 VMs bound to host-a's deep quote" in text
    assert "4 signed EARs verified offline" in text


def test_ra4_ra5_tampered_boot_loader_makes_the_host_and_every_vm_untrusted(demo):
    text = demo.step("Someone changes the host's boot loader")
    rows = _rows(text)
    assert [rows[r][1] for r in sorted(rows)] == ["UNTRUSTED"] * 4
    assert {re.sub(r"#\d+", "#N", rows[vm][2]) for vm in ("VM web", "VM db", "VM batch")} == {
        "host:host-a #N UNTRUSTED"}  # fmt: skip
    assert {r[3] for r in rows.values()} == {"contraindicated"}
    assert {r[4] for r in rows.values()} == {"2 (PCR 4)"}  # the host's two PCR 4 findings, in every row
    # the host's finding says why: the boot loader's event on PCR 4 is not in the baseline
    assert re.search(
        r"baseline\.event\.unknown\s*│\s*4\s*│\s*\d+\s*│ PCR 4 event \d+ \(EV_EFI_BOOT_SERVICES_APPLICATION",
        text,
    )
    assert "stage boot-loader differs from the known-good boot (PCR 4)" in text
    for vm in ("web", "db", "batch"):
        assert f"VM {vm}: UNTRUSTED — host.baseline.event.unknown (PCR 4, seen host:host-a)" in text
    # `vroot attest vm:<web>` as an operator runs it: the joint verdict, the host named, its finding
    assert re.search(r"^verdict\s+UNTRUSTED$", text, re.M)
    assert re.search(
        r"^host\s+host:host-a \(its result #\d+: UNTRUSTED; the verdict above is the joint one\)", text, re.M
    )
    assert re.search(r"error\s+host\.baseline\.event\.unknown\s+4\s+\d+\s+host host:host-a: PCR 4", text)


def test_vmm_s2_changed_firmware_keeps_the_vtms_from_starting(demo):
    text = demo.step("A changed firmware: the vTMs do not start")
    assert text.count("vTM refused to start (host PCRs 0 (sha256) differ from the trusted state)") == 3


def test_dp3_restored_host_is_trusted_again_and_vms_unseal(demo):
    text = demo.step("The good files are restored")
    assert text.count("vTM running, secret unsealed") == 3
    rows = _rows(text)
    assert [rows[r][1] for r in sorted(rows)] == ["TRUSTED"] * 4
    assert "host-a and its three VMs are trusted again" in text


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
