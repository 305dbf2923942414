"""The guided demo: what `make demo` and `vroot demo` show. Each part of vroot extends it.

First version (issue 2): a simulated host whose TM is a swtpm measures its boot chain (CRTM →
firmware → boot loader → kernel → VMM → vTM manager), quotes its PCRs, and a verifier proves the
quote and the logs; then one boot file is changed, the host reboots, and the verifier shows which
PCR and which stage differ from the known-good boot.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from vroot.errors import VrootError
from vroot.eventlog import parse_ima_log, parse_tcg_log, replay_ima_log, replay_tcg_log
from vroot.measure import HOST_CHAIN, BootRecord, diff_stages, measured_boot, verify_chain, write_images
from vroot.tpm2 import HashAlg

QUOTED_PCRS = tuple(range(11))
BANK = HashAlg.SHA256


class _Narrator:
    def __init__(self, console: Console, *, fast: bool) -> None:
        self.console = console
        self.fast = fast
        self.step_no = 0

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


@contextmanager
def _host_tm(state_dir: Path) -> Iterator[tuple[object, object]]:
    """A simulated host's TM: a swtpm started (and stopped by PID) around the block."""
    from vroot.tm import TmClient, start_swtpm

    sock = state_dir / "tm.sock"
    proc = start_swtpm(state_dir, unix_path=sock)
    try:
        with TmClient.open(proc.tcti) as tm:
            yield proc, tm
    finally:
        proc.stop()


def _chain_table(record: BootRecord, title: str) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("stage")
    table.add_column("measured by")
    table.add_column("PCR", justify="right")
    table.add_column("log")
    table.add_column(f"{BANK.bank} extended", overflow="fold")
    for m in record.plan.measurements:
        if m.stage is not None and m.stage.name.startswith("separator-") and m.stage.pcr != 0:
            continue
        name = m.stage.name if m.stage else "boot_aggregate"
        if m.stage and m.stage.name.startswith("separator-"):
            name = "separators (PCR 0-7)"
        by = m.stage.measured_by if m.stage else "kernel"
        log = "TCG" if m.tcg_index is not None else "IMA"
        table.add_row(name, by, str(m.pcr), log, m.digests[BANK].hex()[:16] + "…")
    return table


def _boot_and_quote(tm, images, ek, ak_blob, nonce: bytes):  # noqa: ANN001
    record = measured_boot(tm, HOST_CHAIN, images)
    with tm.load(ek, ak_blob) as ak:
        attest, signature = tm.quote(ak, {BANK: QUOTED_PCRS}, nonce)
        ak_public = ak.public
    return record, attest, signature, ak_public


def _verify(record: BootRecord, attest: bytes, signature: bytes, ak_public: bytes, nonce: bytes):  # noqa: ANN201
    """The verifier's side: replay the logs into claimed PCRs, prove them with the quote, check the chain."""
    from vroot.attestation.quote import verify_quote
    from vroot.tpm2 import parse_public

    tcg = parse_tcg_log(record.tcg_log, source="host TCG log")
    ima = parse_ima_log(record.ima_log, source="host IMA log")
    claimed = dict(replay_tcg_log(tcg)[BANK])
    claimed.update(replay_ima_log(ima, banks=(BANK,))[BANK])
    quote = verify_quote(
        attest,
        signature,
        parse_public(ak_public),
        nonce=nonce,
        pcrs={BANK: {i: claimed[i] for i in QUOTED_PCRS}},
    )
    chain = verify_chain(HOST_CHAIN, tcg, ima)
    return quote, chain


def run_demo(*, fast: bool = False, workdir: Path | None = None, console: Console | None = None) -> int:
    """Run the demo; return 0 when every step behaved as the story says (1 otherwise)."""
    console = console or Console()
    say = _Narrator(console, fast=fast)
    console.print(
        Panel.fit(
            "[bold]vroot[/bold] — virtualized roots of trust (ISO/IEC 27070)\n"
            "Part 1: a host measures its boot into its TM, and a verifier proves it.",
            border_style="cyan",
        )
    )
    with tempfile.TemporaryDirectory(prefix="vroot-demo-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        try:
            return _story(say, base)
        except VrootError as exc:
            say.bad(f"the demo stopped: {exc.diagnostics()}")
            return 1


def _story(say: _Narrator, base: Path) -> int:
    console = say.console
    images = write_images(base / "host-images", HOST_CHAIN)
    state = base / "host-tm"
    state.mkdir(exist_ok=True)
    os.chmod(state, 0o700)

    say.step(
        "A simulated host with a real TPM 2.0",
        "clause 5.2 hardware layer, HW-F1..F3",
        f"The host's TM is a swtpm process; its boot components are real files in {images.path}.",
    )
    with _host_tm(state) as (proc, tm):
        banks = ", ".join(b.bank for b in tm.pcr_banks())
        say.ok(f"swtpm pid {proc.pid} answers TPM2 commands; PCR banks: {banks}")
        ek = tm.create_primary_ek("ecc")
        ak_blob = tm.create_ak(ek, "ecc")
        say.ok("EK (ECC P-256, TCG template) and a restricted signing AK created inside the TM")

        say.step(
            "Measured boot: each stage measures the next before it runs",
            "clause 6.2 transitive trust, TT-1, TT-2, IM-1",
            "CRTM → firmware → boot loader → kernel → VMM → vTM manager. Digests go to PCRs, "
            "descriptions to a TCG log and an IMA log.",
        )
        nonce = os.urandom(32)
        golden, attest, signature, ak_public = _boot_and_quote(tm, images, ek, ak_blob, nonce)
        console.print(_chain_table(golden, "host boot chain"))
        ek.close()

    say.step(
        "Remote verification of the quote and the logs",
        "clause 6.4, HW-F2, RA-2",
        "A verifier with the AK's public key checks the quote's signature and nonce, replays both logs "
        "into PCR values and requires the quote to cover exactly those values.",
    )
    quote, _ = _verify(golden, attest, signature, ak_public, nonce)
    say.ok(
        f"quote signature valid, nonce fresh, PCR digest {quote.pcr_digest.hex()[:16]}… matches the replay"
    )
    say.ok(
        f"TCG log ({len(parse_tcg_log(golden.tcg_log).events)} events) and IMA log replay to the quoted PCRs"
    )
    say.ok("every link of the chain was measured before it ran")

    say.step(
        "Someone changes the host's boot loader",
        "clause 6.3 integrity measurement",
        "One byte of bootloader.efi is flipped and the host reboots (the TM's PCRs reset).",
    )
    loader = images.path / "bootloader.efi"
    data = bytearray(loader.read_bytes())
    data[100] ^= 0xFF
    loader.write_bytes(bytes(data))
    with _host_tm(state) as (_, tm):
        ek = tm.create_primary_ek("ecc")  # same seed, same EK: the AK blob loads again
        nonce2 = os.urandom(32)
        tampered, attest2, signature2, ak_public2 = _boot_and_quote(tm, images, ek, ak_blob, nonce2)
        ek.close()
    quote2, chain2 = _verify(tampered, attest2, signature2, ak_public2, nonce2)
    say.ok("the quote is still genuine and the logs still replay: the TM reports honestly what booted")
    differences = diff_stages(golden.plan, chain2, bank=BANK)
    pcrs_changed = [i for i in QUOTED_PCRS if quote.pcrs[BANK][i] != quote2.pcrs[BANK][i]]
    table = Table(title="compared with the known-good boot")
    table.add_column("stage")
    table.add_column("PCR", justify="right")
    table.add_column("expected", overflow="fold")
    table.add_column("seen", overflow="fold")
    for d in differences:
        table.add_row(d.stage, str(d.pcr), d.expected.hex()[:16] + "…", (d.seen or b"").hex()[:16] + "…")
    console.print(table)
    for d in differences:
        say.bad(f"stage {d.stage}: digest differs from the known-good boot (PCR {d.pcr})")
    say.bad(f"quoted PCRs that differ: {', '.join(map(str, pcrs_changed))}")
    story_holds = [d.stage for d in differences] == ["boot-loader"] and pcrs_changed[:1] == [4]
    console.print()
    if story_holds:
        console.print(
            "[bold green]Demo complete:[/bold green] the tampered boot loader was found, by PCR and by stage."
        )
        return 0
    console.print("[bold red]Demo did not behave as expected.[/bold red]")
    return 1
