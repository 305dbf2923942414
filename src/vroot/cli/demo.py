"""`vroot demo`: the main job, told step by step. Grows with every part of vroot."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    fast: bool = typer.Option(False, "--fast", help="No pauses (for tests)."),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="Keep the demo's files here (default: a temporary directory, removed after)."
    ),
) -> None:
    """Run the guided demo: an attestation server, a host that enrolls and proves its boot, its VMs
    with vTMs rooted in its TPM and joint verdicts; a tampered host turns them all untrusted.

    Every process it starts (`vroot server run`, the host's swtpm, the vTMs) is stopped by PID
    before it exits; exit 0 when the story held, 1 otherwise."""
    from vroot.demo import run_demo

    code = run_demo(fast=fast, workdir=workdir)
    if code:
        raise typer.Exit(code)
